// Package treetest builds a directory tree holding every kind of file a
// volume backup must keep, and compares trees entry by entry, for the tests
// of internal/archive, the driver's backup and restore, and the admin
// command. It is a test helper: nothing outside tests imports it.
package treetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// SparseName is the 200 MiB sparse file Build makes at the tree's root.
const SparseName = "sparse.img"

// SparseSize is its apparent size.
const SparseSize = 200 << 20

// Build makes every kind of file an archive must keep under root: names
// with tabs and non-ASCII characters, a 200 MiB sparse file and one of
// holes only, hard links, user.*, trusted.* and (where the kernel allows)
// security.* xattrs, a fifo, device nodes, symlinks, odd owners (4242:4343)
// and modes (setuid, setgid, sticky, 0000), and old times (1990 and 1950).
// It returns the sparse file's path.
func Build(t testing.TB, root string) string {
	t.Helper()
	old := time.Date(1990, 3, 4, 5, 6, 7, 123456789, time.UTC)
	older := time.Date(1950, 3, 4, 5, 6, 7, 0, time.UTC)
	must := func(err error) { t.Helper(); require.NoError(t, err) }
	must(os.WriteFile(filepath.Join(root, "tab\tname"), []byte("tab\n"), 0o644))
	uni := filepath.Join(root, "naïve-日本語 ü")
	must(os.Mkdir(uni, 0o755))
	must(os.WriteFile(filepath.Join(uni, "ñ\tfile"), []byte("unicode"), 0o640))

	sparse := filepath.Join(root, SparseName)
	f, err := os.Create(sparse)
	must(err)
	_, err = f.WriteAt([]byte("head"), 0)
	must(err)
	_, err = f.WriteAt(bytes.Repeat([]byte{0x5a}, 8192), 100<<20)
	must(err)
	must(f.Truncate(SparseSize))
	must(f.Close())
	holes := filepath.Join(root, "all-holes")
	must(os.WriteFile(holes, nil, 0o600))
	must(os.Truncate(holes, 1<<20))
	must(os.WriteFile(filepath.Join(root, "empty"), nil, 0o644))

	must(os.WriteFile(filepath.Join(root, "linked"), []byte("one inode"), 0o644))
	must(os.Link(filepath.Join(root, "linked"), filepath.Join(uni, "second name")))
	must(os.Link(filepath.Join(root, "linked"), filepath.Join(root, "third name")))

	x := filepath.Join(root, "xattrs")
	must(os.WriteFile(x, []byte("x"), 0o644))
	must(unix.Lsetxattr(x, "user.plain", []byte("value"), 0))
	must(unix.Lsetxattr(x, "user.binary", []byte{0, 1, 2, 0xff, 0}, 0))
	must(unix.Lsetxattr(x, "trusted.root-only", []byte("t"), 0))
	if err := unix.Lsetxattr(x, "security.holdfast-test", []byte("s"), 0); err != nil {
		t.Logf("no security.* xattr on %s: %v", root, err)
	}
	must(unix.Lsetxattr(uni, "user.on-dir", []byte("d"), 0))

	must(unix.Mkfifo(filepath.Join(root, "fifo"), 0o620))
	must(unix.Mknod(filepath.Join(root, "null-like"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(root, "block"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 200))))
	must(os.Symlink("/absolute/inside/the/container", filepath.Join(root, "abs-link")))
	must(os.Symlink("../linked", filepath.Join(uni, "rel-link")))
	must(unix.Lsetxattr(filepath.Join(root, "abs-link"), "trusted.on-link", []byte("l"), 0))
	must(os.Lchown(filepath.Join(root, "abs-link"), 4242, 4343))

	odd := filepath.Join(root, "odd-owner")
	must(os.WriteFile(odd, []byte("4242:4343"), 0o640))
	must(os.Chown(odd, 4242, 4343))
	setuid := filepath.Join(root, "setuid")
	must(os.WriteFile(setuid, []byte("#!/bin/sh\n"), 0o755))
	must(os.Chown(setuid, 4242, 4343))
	must(unix.Chmod(setuid, 0o6755))
	sticky := filepath.Join(root, "sticky")
	must(os.Mkdir(sticky, 0o755))
	must(unix.Chmod(sticky, 0o1777))
	none := filepath.Join(sticky, "mode-zero")
	must(os.WriteFile(none, []byte("0"), 0o600))
	must(os.Chmod(none, 0))
	must(os.Chown(none, 65534, 65534))

	for _, p := range []string{filepath.Join(root, "tab\tname"), none, sparse, odd, filepath.Join(uni, "ñ\tfile")} {
		must(os.Chtimes(p, old.Add(time.Hour), old))
	}
	must(os.Chtimes(setuid, older, older))
	must(unix.Lutimes(filepath.Join(root, "abs-link"), []unix.Timeval{unix.NsecToTimeval(old.UnixNano()), unix.NsecToTimeval(old.UnixNano())}))
	must(os.Chtimes(sticky, old, old)) // after their contents: they set their mtime
	must(os.Chtimes(uni, old, old))
	must(os.Chown(root, 1000, 1000))
	must(os.Chmod(root, 0o750))
	must(unix.Lsetxattr(root, "user.root-dir", []byte("r"), 0))
	must(os.Chtimes(root, old, old))
	return sparse
}

// Entry is what a restore must keep of one file, compared field by field
// (ctime and inode numbers cannot be kept; hard links are compared as the
// group of names sharing an inode).
type Entry struct {
	Mode, UID, GID uint32
	Size           int64
	Mtime, Atime   unix.Timespec // atime zero for symlinks (reading them may touch it)
	Rdev           uint64
	Link           string
	Xattrs         map[string]string
	Data           string // SHA-256 of a regular file's data segments, in order
	Segments       string // a regular file's data segments (SEEK_DATA/SEEK_HOLE)
	LinkGroup      string // the first name sharing this inode, when Nlink > 1
}

// Tree is a snapshot of a tree: "." is its root.
type Tree map[string]Entry

// Snapshot records every entry beneath root, reading contents with
// O_NOATIME so taking it changes no atime.
func Snapshot(t testing.TB, root string) Tree {
	t.Helper()
	out := Tree{}
	inodes := map[uint64]string{}
	for _, p := range walk(t, root) {
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(p, &st))
		e := Entry{Mode: st.Mode, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim, Atime: st.Atim, Rdev: st.Rdev}
		var err error
		e.Xattrs, err = Xattrs(p)
		require.NoError(t, err)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			e.Link, err = os.Readlink(p)
			require.NoError(t, err)
			e.Atime = unix.Timespec{}
		case unix.S_IFREG:
			e.Size = st.Size
			e.Data, e.Segments = fileData(t, p, st.Size)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
			if first, ok := inodes[st.Ino]; ok {
				e.LinkGroup = first
			} else {
				inodes[st.Ino], e.LinkGroup = rel, rel
			}
		}
		out[rel] = e
	}
	return out
}

// Xattrs reads every extended attribute of p, not following a symlink.
func Xattrs(p string) (map[string]string, error) {
	out := map[string]string{}
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ENOTSUP) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs of %s: %w", p, err)
	}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("read xattr %s of %s: %w", name, p, err)
		}
		out[name] = string(v[:m])
	}
	return out, nil
}

// walk lists root and everything beneath it, sorted, statting each
// directory before reading it with O_NOATIME, so listing touches no atime.
func walk(t testing.TB, root string) []string {
	t.Helper()
	names := []string{root}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME, 0)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fd), root)
	children, err := f.Readdirnames(-1)
	f.Close()
	require.NoError(t, err)
	sort.Strings(children)
	for _, c := range children {
		p := filepath.Join(root, c)
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(p, &st))
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			names = append(names, walk(t, p)...)
		} else {
			names = append(names, p)
		}
	}
	return names
}

func fileData(t testing.TB, p string, size int64) (sum, segs string) {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME, 0)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	// The data segments and their bytes: with the size, all there is to a
	// file (holes read as zeros), and no 200 MiB of zeros to hash, which
	// takes a minute of emulated CPU in the guest.
	hash := sha256.New()
	var parts []string
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) || (err == nil && d >= size) {
			break
		}
		require.NoError(t, err)
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		require.NoError(t, err)
		h = min(h, size)
		parts = append(parts, strconv.FormatInt(d, 10)+"+"+strconv.FormatInt(h-d, 10))
		n, err := io.Copy(hash, io.NewSectionReader(f, d, h-d))
		require.NoError(t, err)
		require.Equal(t, h-d, n, "read %s at %d", p, d)
		off = h
	}
	return hex.EncodeToString(hash.Sum(nil)), strings.Join(parts, ",")
}

// RequireSame compares two snapshots entry by entry, naming the first
// entry and field that differ.
func RequireSame(t testing.TB, want, got Tree) {
	t.Helper()
	for _, name := range sortedNames(want) {
		g, ok := got[name]
		require.True(t, ok, "restored tree lacks %q", name)
		require.Equal(t, want[name], g, "entry %q differs", name)
	}
	for _, name := range sortedNames(got) {
		_, ok := want[name]
		require.True(t, ok, "restored tree has %q, the source did not", name)
	}
}

func sortedNames(tr Tree) []string {
	names := make([]string, 0, len(tr))
	for n := range tr {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// RequireSparse checks that the sparse file Build made, at p, is still
// 200 MiB with less than 1 MiB allocated: its holes were kept.
func RequireSparse(t testing.TB, p string) {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(p, &st))
	require.EqualValues(t, SparseSize, st.Size)
	require.Less(t, st.Blocks*512, int64(1<<20), "the 200 MiB sparse file came back with %d KiB allocated: its holes were filled", st.Blocks/2)
}

// Allocated is the bytes the filesystem holds for file p.
func Allocated(t testing.TB, p string) int64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(p, &st))
	return st.Blocks * 512
}
