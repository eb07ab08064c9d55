// Package treetest builds, for tests, a directory tree holding every kind
// of file a copy of a volume must keep, and compares trees entry by entry.
// (internal/archive's tests have their own copy, on its internals.)
package treetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// SparseName is the 200 MiB sparse file Build makes.
const SparseName = "sparse.img"

// Build makes in root: names with tabs and non-ASCII characters, a 200 MiB
// sparse file, hard links, xattrs (user and trusted), a fifo, device nodes,
// symlinks, odd owners and modes (setuid, sticky, mode 0), old mtimes.
func Build(t *testing.T, root string) {
	t.Helper()
	old := time.Date(1950, 3, 4, 5, 6, 7, 123456789, time.UTC)
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
	_, err = f.WriteAt(bytes.Repeat([]byte("m"), 8192), 100<<20)
	must(err)
	must(f.Truncate(200 << 20))
	must(f.Close())
	must(os.WriteFile(filepath.Join(root, "linked"), []byte("one inode"), 0o644))
	must(os.Link(filepath.Join(root, "linked"), filepath.Join(uni, "second name")))
	x := filepath.Join(root, "xattrs")
	must(os.WriteFile(x, []byte("x"), 0o644))
	must(unix.Lsetxattr(x, "user.plain", []byte("value"), 0))
	must(unix.Lsetxattr(x, "user.binary", []byte{0, 1, 2, 0xff, 0}, 0))
	must(unix.Lsetxattr(x, "trusted.root-only", []byte("t"), 0))
	must(unix.Lsetxattr(uni, "user.on-dir", []byte("d"), 0))
	must(unix.Mkfifo(filepath.Join(root, "fifo"), 0o620))
	must(unix.Mknod(filepath.Join(root, "null-like"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(os.Symlink("/absolute/inside/the/container", filepath.Join(root, "abs-link")))
	must(os.Symlink("../linked", filepath.Join(uni, "rel-link")))
	must(os.Lchown(filepath.Join(root, "abs-link"), 4242, 2424))
	setuid := filepath.Join(root, "setuid")
	must(os.WriteFile(setuid, []byte("#!/bin/sh\n"), 0o755))
	must(os.Chown(setuid, 12345, 54321))
	must(unix.Chmod(setuid, 0o6755))
	sticky := filepath.Join(root, "sticky")
	must(os.Mkdir(sticky, 0o755))
	must(unix.Chmod(sticky, 0o1777))
	none := filepath.Join(sticky, "mode-zero")
	must(os.WriteFile(none, []byte("0"), 0o600))
	must(os.Chmod(none, 0))
	must(os.Chown(none, 65534, 65534))
	for _, p := range []string{filepath.Join(root, "tab\tname"), none, sparse, filepath.Join(uni, "ñ\tfile")} {
		must(os.Chtimes(p, old.Add(time.Hour), old))
	}
	must(os.Chtimes(sticky, old, old))
	must(os.Chtimes(uni, old, old))
}

// Entry is what a copy must keep of one file (inode numbers and ctime
// cannot be kept; hard links are compared as groups of names; atimes are
// left out: reading a tree may touch them).
type Entry struct {
	Mode, UID, GID uint32
	Size           int64
	Mtime          unix.Timespec
	Rdev           uint64
	Link           string
	Xattrs         map[string]string
	Data           string // SHA-256 of a regular file's contents
	Segments       string // a regular file's data segments (holes between)
	LinkGroup      string // the first name sharing this inode
}

// Snapshot records every entry below root, root itself excluded (a
// volume's root has its own owner and mode).
func Snapshot(t *testing.T, root string) map[string]Entry {
	t.Helper()
	out := map[string]Entry{}
	inodes := map[uint64]string{}
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := Entry{Mode: st.Mode, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim, Rdev: st.Rdev, Xattrs: xattrs(t, p)}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			e.Link, _ = os.Readlink(p)
		case unix.S_IFREG:
			e.Size = st.Size
			e.Data, e.Segments = data(t, p, st.Size)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
			if first, ok := inodes[st.Ino]; ok {
				e.LinkGroup = first
			} else {
				inodes[st.Ino], e.LinkGroup = rel, rel
			}
		}
		out[rel] = e
		return nil
	})
	require.NoError(t, err)
	return out
}

func xattrs(t *testing.T, p string) map[string]string {
	out := map[string]string{}
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ENOTSUP) {
		return out
	}
	require.NoError(t, err)
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || strings.HasPrefix(name, "security.") {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		require.NoError(t, err)
		out[name] = string(v[:m])
	}
	return out
}

func data(t *testing.T, p string, size int64) (string, string) {
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	var segs []string
	for off := int64(0); off < size; {
		start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		require.NoError(t, err)
		end, err := unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
		require.NoError(t, err)
		segs = append(segs, fmt.Sprintf("%d+%d", start, end-start))
		off = end
	}
	_, err = f.Seek(0, io.SeekStart)
	require.NoError(t, err)
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	return hex.EncodeToString(h.Sum(nil)), strings.Join(segs, ",")
}

// RequireSame compares two snapshots entry by entry, naming the first
// that differs.
func RequireSame(t *testing.T, want, got map[string]Entry) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[name]
		require.True(t, ok, "the copy lacks %q", name)
		require.Equal(t, want[name], g, "entry %q differs", name)
	}
	for name := range got {
		_, ok := want[name]
		require.True(t, ok, "the copy has %q, the source did not", name)
	}
}

// Allocated is the bytes the filesystem holds for file p.
func Allocated(t *testing.T, p string) int64 {
	var st unix.Stat_t
	require.NoError(t, unix.Stat(p, &st))
	return st.Blocks * 512
}
