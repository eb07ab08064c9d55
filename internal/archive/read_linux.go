package archive

import (
	"archive/tar"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Errors Read wraps, so callers can tell bad input from a failing disk.
var (
	// ErrUnsafe marks an entry that would reach outside the target.
	ErrUnsafe = errors.New("unsafe archive entry")
	// ErrCorrupt marks a stream that is truncated, corrupt or inconsistent.
	ErrCorrupt = errors.New("corrupt or truncated archive")
)

// DefaultMaxFileSize is the largest file Read accepts unless told otherwise:
// ext4's limit with 4 KiB blocks.
const DefaultMaxFileSize = 16 << 40

// ReadOptions tunes Read.
type ReadOptions struct {
	// MaxFileSize bounds each file's size, holes included; 0 means
	// DefaultMaxFileSize.
	MaxFileSize int64
}

const stagingPrefix = ".holdfast-restore-"

type dirTimes struct {
	name         string
	atime, mtime time.Time
}

type unpacker struct {
	stage    int // the staging directory
	opts     ReadOptions
	seen     map[string]byte // cleaned name -> typeflag
	top      []string        // top-level names, in order
	dirs     []dirTimes      // times to set once the tree is in place
	root     *tar.Header
	ours     bool // the first entry says holdfast wrote the stream
	ended    bool
	sum      hash.Hash
	stats    Stats
	entryNum int
}

// Read unpacks the stream r into the directory target, which must hold none
// of the stream's names. On any error target is left as it was.
func Read(r io.Reader, target string, opts ReadOptions) (Stats, error) {
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	tfd, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return Stats{}, fmt.Errorf("open restore target %s: %w", target, err)
	}
	defer unix.Close(tfd)
	var before unix.Stat_t
	if err := unix.Fstat(tfd, &before); err != nil {
		return Stats{}, fmt.Errorf("stat %s: %w", target, err)
	}
	stageName := stagingPrefix + rand.Text()[:12]
	if err := unix.Mkdirat(tfd, stageName, 0o700); err != nil {
		return Stats{}, fmt.Errorf("make staging directory in %s: %w", target, err)
	}
	u := &unpacker{opts: opts, seen: map[string]byte{}, sum: sha256.New()}
	u.stage, err = openBeneath(tfd, stageName)
	if err == nil {
		err = u.unpack(tar.NewReader(r))
		unix.Close(u.stage)
	}
	if err == nil {
		err = u.commit(tfd, stageName)
	}
	if err != nil {
		os.RemoveAll(filepath.Join(target, stageName))
		restoreTimes(tfd, &before)
		return Stats{}, err
	}
	return u.stats, nil
}

// restoreTimes puts back the target's times the staging directory changed.
func restoreTimes(tfd int, st *unix.Stat_t) {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	unix.UtimesNanoAt(tfd, ".", ts, 0)
}

// unpack reads every entry into the staging directory.
func (u *unpacker) unpack(tr *tar.Reader) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: after entry %d: %v", ErrCorrupt, u.entryNum, err)
		}
		if u.ended {
			return fmt.Errorf("%w: entry %q after the end marker", ErrCorrupt, hdr.Name)
		}
		u.entryNum++
		if err := u.entry(hdr, tr); err != nil {
			return err
		}
	}
	if u.entryNum == 0 {
		return fmt.Errorf("%w: the stream holds no entries: it is empty or was cut short at its start", ErrCorrupt)
	}
	if u.ours && !u.ended {
		return fmt.Errorf("%w: the stream ends after %d entries without its end marker: it was cut short", ErrCorrupt, u.entryNum)
	}
	return nil
}

// entry unpacks one header and its data.
func (u *unpacker) entry(hdr *tar.Header, tr io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return u.end(hdr)
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if _, dup := u.seen[name]; dup {
		return fmt.Errorf("%w: %q appears twice", ErrCorrupt, hdr.Name)
	}
	if name == "." {
		return u.rootEntry(hdr)
	}
	u.seen[name] = hdr.Typeflag
	if err := u.create(name, hdr, tr); err != nil {
		if errors.Is(err, ErrUnsafe) || errors.Is(err, ErrCorrupt) {
			return err
		}
		return fmt.Errorf("unpack %q: %w", hdr.Name, err)
	}
	u.stats.Entries++
	if !strings.Contains(name, "/") {
		u.top = append(u.top, name)
	}
	return nil
}

// rootEntry keeps the root directory's header for the target itself.
func (u *unpacker) rootEntry(hdr *tar.Header) error {
	if u.entryNum != 1 || hdr.Typeflag != tar.TypeDir {
		return fmt.Errorf("%w: the root directory %q must be the first entry and a directory", ErrCorrupt, hdr.Name)
	}
	u.seen["."] = tar.TypeDir
	u.root = hdr
	u.ours = hdr.PAXRecords[recVersion] != ""
	if v := hdr.PAXRecords[recVersion]; u.ours && v != formatVersion {
		return fmt.Errorf("%w: stream format version %q, this holdfast reads %q: restore with the holdfast that wrote it", ErrCorrupt, v, formatVersion)
	}
	u.stats.Entries++
	return nil
}

// end checks the end marker against what was read.
func (u *unpacker) end(hdr *tar.Header) error {
	n, ok := hdr.PAXRecords[recEnd]
	if !ok {
		return nil // another tool's global header
	}
	if want := strconv.Itoa(u.stats.Entries); n != want {
		return fmt.Errorf("%w: the end marker counts %s entries, the stream held %s", ErrCorrupt, n, want)
	}
	if got := hex.EncodeToString(u.sum.Sum(nil)); hdr.PAXRecords[recSHA256] != got {
		return fmt.Errorf("%w: file data does not match the stream's SHA-256 (%s, read %s)", ErrCorrupt, hdr.PAXRecords[recSHA256], got)
	}
	u.ended = true
	return nil
}

// cleanName turns an entry name into a clean path relative to the target,
// refusing names that are empty, absolute, hold NUL or climb with "..".
func cleanName(name string) (string, error) {
	switch {
	case name == "" || strings.ContainsRune(name, 0):
		return "", fmt.Errorf("%w: empty name or a name with NUL (%q)", ErrUnsafe, name)
	case strings.HasPrefix(name, "/"):
		return "", fmt.Errorf("%w: absolute name %q: archives hold names relative to the volume", ErrUnsafe, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q climbs out of the volume with \"..\"", ErrUnsafe, name)
		}
	}
	return path.Clean(name), nil
}

// commit moves the unpacked entries from staging into the target, then
// gives the target the root entry's metadata and every directory its times.
// A failed move puts back what it moved.
func (u *unpacker) commit(tfd int, stageName string) error {
	sfd, err := openBeneath(tfd, stageName)
	if err != nil {
		return err
	}
	defer unix.Close(sfd)
	for i, n := range u.top {
		err := unix.Renameat2(sfd, n, tfd, n, unix.RENAME_NOREPLACE)
		if err == nil {
			continue
		}
		for _, back := range u.top[:i] {
			unix.Renameat2(tfd, back, sfd, back, unix.RENAME_NOREPLACE)
		}
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("restore target already holds %q: restore into an empty volume", n)
		}
		return fmt.Errorf("move %q into place: %w", n, err)
	}
	if err := unix.Unlinkat(tfd, stageName, unix.AT_REMOVEDIR); err != nil {
		return fmt.Errorf("remove staging directory: %w", err)
	}
	if u.root != nil {
		if err := setMeta(tfd, ".", u.root); err != nil {
			return fmt.Errorf("set the root directory's owner, mode and xattrs: %w", err)
		}
		u.dirs = append([]dirTimes{{".", u.root.AccessTime, u.root.ModTime}}, u.dirs...)
	}
	for i := len(u.dirs) - 1; i >= 0; i-- {
		d := u.dirs[i]
		if err := setTimes(tfd, d.name, d.atime, d.mtime); err != nil {
			return fmt.Errorf("set times of %q: %w", d.name, err)
		}
	}
	return nil
}
