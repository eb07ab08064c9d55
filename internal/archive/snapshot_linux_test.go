package archive

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// entryState is what a restore must keep of one file, compared field by
// field (ctime and inode numbers cannot be kept; hard links are compared as
// the group of names sharing an inode).
type entryState struct {
	Mode, UID, GID uint32
	Size           int64
	Mtime, Atime   unix.Timespec // atime zero for symlinks (reading them may touch it)
	Rdev           uint64
	Link           string
	Xattrs         map[string]string
	Data           string // SHA-256 of a regular file's contents
	Segments       string // a sparse file's data segments
	LinkGroup      string // the first name sharing this inode, when Nlink > 1
}

// snapshot records every entry beneath root ("." is root itself), reading
// contents with O_NOATIME so taking it changes no atime.
func snapshot(t *testing.T, root string) map[string]entryState {
	t.Helper()
	out := map[string]entryState{}
	inodes := map[uint64]string{}
	for _, p := range walkNoatime(t, root) {
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(p, &st))
		e := entryState{Mode: st.Mode, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim, Atime: st.Atim, Rdev: st.Rdev, Xattrs: map[string]string{}}
		dir, base := filepath.Split(p)
		dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
		require.NoError(t, err)
		if base == "" {
			base = "."
		}
		require.NoError(t, listXattrs(dfd, base, e.Xattrs))
		unix.Close(dfd)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
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

// walkNoatime lists root and everything beneath it, statting each
// directory before reading it with O_NOATIME, so listing touches no atime.
func walkNoatime(t *testing.T, root string) []string {
	t.Helper()
	names := []string{root}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME, 0)
	require.NoError(t, err)
	children, err := readNames(fd)
	unix.Close(fd)
	require.NoError(t, err)
	for _, c := range children {
		p := filepath.Join(root, c)
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(p, &st))
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			names = append(names, walkNoatime(t, p)...)
		} else {
			names = append(names, p)
		}
	}
	return names
}

func fileData(t *testing.T, p string, size int64) (sum, segs string) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME, 0)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	s, err := dataSegments(fd, size)
	require.NoError(t, err)
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	return hex.EncodeToString(h.Sum(nil)), encodeMap(s)
}

// requireSameTree compares two snapshots entry by entry, naming the first
// field that differs.
func requireSameTree(t *testing.T, want, got map[string]entryState) {
	t.Helper()
	for name, w := range want {
		g, ok := got[name]
		require.True(t, ok, "restored tree lacks %q", name)
		require.Equal(t, w, g, "entry %q differs", name)
	}
	for name := range got {
		_, ok := want[name]
		require.True(t, ok, "restored tree has %q, the source did not", name)
	}
}

// roundTrip writes src and reads the stream into a new empty directory.
func roundTrip(t *testing.T, src string) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	_, err := Write(&buf, src, WriteOptions{Skip: func(n, why string) { t.Errorf("skipped %s: %s", n, why) }})
	require.NoError(t, err)
	dst := t.TempDir()
	_, err = Read(bytes.NewReader(buf.Bytes()), dst, ReadOptions{})
	require.NoError(t, err)
	return dst, buf.Bytes()
}
