package usage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// batch is how many names a walk reads from a directory at a time: the
// most it holds per directory level.
const batch = 64

// statxMask is what a walk asks of each entry.
const statxMask = unix.STATX_TYPE | unix.STATX_MODE | unix.STATX_NLINK | unix.STATX_INO | unix.STATX_BLOCKS | unix.STATX_MNT_ID

// statxFlags: never follow a symlink, never trigger an automount, and take
// the attributes the kernel has (no round trip to a server).
const statxFlags = unix.AT_SYMLINK_NOFOLLOW | unix.AT_NO_AUTOMOUNT | unix.AT_STATX_DONT_SYNC

// frame is one directory level a walk is inside: the open directory and
// the names of its current batch not yet visited.
type frame struct {
	dir     *os.File
	pending []os.DirEntry
	read    bool // a batch was read
	done    bool
}

// inode identifies a file across the walk.
type inode struct {
	dev uint64
	ino uint64
}

// walker is the state of one walk.
type walker struct {
	ctx      context.Context
	cfg      Config
	now      func() time.Time
	deadline time.Time
	dev      uint64
	mnt      uint64
	hasMnt   bool
	links    map[inode]struct{}
	stack    []*frame
	r        Result
	// What made the result incomplete or an overcount, counted.
	unreadable, tooDeep, overLinks int64
	stopped                        string
}

// walk measures the tree at root within cfg's budgets. It never follows a
// symlink (directories are opened relative to their parent with
// O_NOFOLLOW, so a path swapped for a symlink during the walk is not
// entered) and never enters another mount.
func walk(ctx context.Context, root string, cfg Config, now func() time.Time) Result {
	w := &walker{ctx: ctx, cfg: cfg, now: now, links: map[inode]struct{}{}}
	w.r.Started = now()
	w.deadline = w.r.Started.Add(cfg.MaxDuration)
	defer w.closeAll()
	if err := w.open(root); err != nil {
		w.r.Err = err.Error()
		w.r.Took = now().Sub(w.r.Started)
		return w.r
	}
	for len(w.stack) > 0 && w.stopped == "" {
		w.step()
	}
	w.r.Took = now().Sub(w.r.Started)
	w.describe()
	return w.r
}

// open opens the root, counts it and notes its device and mount.
func (w *walker) open(root string) error {
	fd, err := openDir(unix.AT_FDCWD, root)
	if err != nil {
		return fmt.Errorf("open %s: %w", root, err)
	}
	dir := os.NewFile(uintptr(fd), root)
	var st unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|statxFlags, statxMask, &st); err != nil {
		dir.Close()
		return fmt.Errorf("statx %s: %w", root, err)
	}
	w.dev = unix.Mkdev(st.Dev_major, st.Dev_minor)
	w.mnt, w.hasMnt = st.Mnt_id, st.Mask&unix.STATX_MNT_ID != 0
	w.count(&st)
	w.stack = append(w.stack, &frame{dir: dir})
	return nil
}

// step visits the next entry of the innermost directory, reading its next
// batch of names when the last is used up, and leaves it when done.
func (w *walker) step() {
	f := w.stack[len(w.stack)-1]
	if len(f.pending) == 0 {
		if f.done || !w.refill(f) {
			f.dir.Close()
			w.stack = w.stack[:len(w.stack)-1]
			return
		}
	}
	e := f.pending[0]
	f.pending = f.pending[1:]
	w.visit(f, e.Name())
}

// refill reads f's next batch of names, checking the budgets first. It
// reports whether there are names to visit.
func (w *walker) refill(f *frame) bool {
	if w.stopped = w.overBudget(); w.stopped != "" {
		return false
	}
	if w.cfg.pause != nil && !f.read {
		w.cfg.pause(f.dir.Name())
	}
	f.read = true
	ents, err := f.dir.ReadDir(batch)
	if err != nil && !errors.Is(err, io.EOF) {
		w.unreadable++
	}
	if err != nil {
		f.done = true
	}
	f.pending = ents
	return len(ents) > 0
}

// overBudget says why the walk must stop now, or "".
func (w *walker) overBudget() string {
	switch {
	case w.ctx.Err() != nil:
		return "the walk was cancelled"
	case w.r.Entries >= w.cfg.MaxEntries:
		return fmt.Sprintf("the walk stopped at its budget of %d entries", w.cfg.MaxEntries)
	case !w.now().Before(w.deadline):
		return fmt.Sprintf("the walk stopped at its budget of %v", w.cfg.MaxDuration)
	}
	return ""
}

// visit counts the entry name of f and enters it if it is a directory on
// the same mount.
func (w *walker) visit(f *frame, name string) {
	parent := int(f.dir.Fd())
	var st unix.Statx_t
	if err := unix.Statx(parent, name, statxFlags, statxMask, &st); err != nil {
		if !errors.Is(err, unix.ENOENT) { // removed since it was listed
			w.unreadable++
		}
		return
	}
	if unix.Mkdev(st.Dev_major, st.Dev_minor) != w.dev || (w.hasMnt && st.Mask&unix.STATX_MNT_ID != 0 && st.Mnt_id != w.mnt) {
		return // a mountpoint: what is mounted there is not this volume's
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if !isDir && st.Nlink > 1 && !w.firstLink(&st) {
		return
	}
	w.count(&st)
	if !isDir {
		return
	}
	if len(w.stack) > w.cfg.MaxDepth {
		w.tooDeep++
		return
	}
	fd, err := openDir(parent, name)
	if err != nil {
		if !errors.Is(err, unix.ENOENT) {
			w.unreadable++
		}
		return
	}
	w.stack = append(w.stack, &frame{dir: os.NewFile(uintptr(fd), f.dir.Name()+"/"+name)})
}

// firstLink says whether st, a file with several links, is met for the
// first time. Once MaxLinks such inodes are remembered, every further
// one counts as first, and is noted as a possible overcount.
func (w *walker) firstLink(st *unix.Statx_t) bool {
	k := inode{dev: w.dev, ino: st.Ino}
	if _, seen := w.links[k]; seen {
		return false
	}
	if len(w.links) >= w.cfg.MaxLinks {
		w.overLinks++
		return true
	}
	w.links[k] = struct{}{}
	return true
}

func (w *walker) count(st *unix.Statx_t) {
	w.r.Entries++
	w.r.Bytes += int64(st.Blocks) * 512
}

// describe writes what made the result a lower bound or an overcount.
func (w *walker) describe() {
	var why []string
	if w.stopped != "" {
		why = append(why, w.stopped)
	}
	if w.unreadable > 0 {
		why = append(why, fmt.Sprintf("%d entries could not be read", w.unreadable))
	}
	if w.tooDeep > 0 {
		why = append(why, fmt.Sprintf("%d directories deeper than %d levels were not entered", w.tooDeep, w.cfg.MaxDepth))
	}
	w.r.Incomplete = strings.Join(why, "; ")
	if w.overLinks > 0 {
		w.r.Overcount = fmt.Sprintf("%d hard links past the first %d multiply-linked files may be counted more than once", w.overLinks, w.cfg.MaxLinks)
	}
}

func (w *walker) closeAll() {
	for _, f := range w.stack {
		f.dir.Close()
	}
	w.stack = nil
}

// openDir opens the directory name in dirfd to read it, with O_NOATIME
// where the kernel allows it (the owner, or CAP_FOWNER): measuring a
// volume must not change the access times a backup keeps.
func openDir(dirfd int, name string) (int, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(dirfd, name, flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = unix.Openat(dirfd, name, flags, 0)
	}
	return fd, err
}
