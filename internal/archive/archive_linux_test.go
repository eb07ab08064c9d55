package archive

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	require.Zero(t, os.Geteuid(), "archive tests set owners, trusted.* xattrs and device nodes: run them as root (make unit does)")
}

// buildTree makes every kind of file an archive must keep, and returns the
// sparse file's path.
func buildTree(t *testing.T, root string) string {
	t.Helper()
	old := time.Date(1950, 3, 4, 5, 6, 7, 123456789, time.UTC)
	must := func(err error) { t.Helper(); require.NoError(t, err) }
	must(os.WriteFile(filepath.Join(root, "tab\tname"), []byte("tab\n"), 0o644))
	uni := filepath.Join(root, "naïve-日本語 ü")
	must(os.Mkdir(uni, 0o755))
	must(os.WriteFile(filepath.Join(uni, "ñ\tfile"), []byte("unicode"), 0o640))

	sparse := filepath.Join(root, "sparse.img")
	f, err := os.Create(sparse)
	must(err)
	_, err = f.WriteAt([]byte("head"), 0)
	must(err)
	_, err = f.WriteAt(make([]byte, 8192), 100<<20)
	must(err)
	_, err = f.WriteAt([]byte("middle"), 100<<20+4096)
	must(err)
	must(f.Truncate(200 << 20))
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
	must(unix.Lsetxattr(uni, "user.on-dir", []byte("d"), 0))

	must(unix.Mkfifo(filepath.Join(root, "fifo"), 0o620))
	must(unix.Mknod(filepath.Join(root, "null-like"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mknod(filepath.Join(root, "block"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 200))))
	must(os.Symlink("/absolute/inside/the/container", filepath.Join(root, "abs-link")))
	must(os.Symlink("../linked", filepath.Join(uni, "rel-link")))
	must(unix.Lsetxattr(filepath.Join(root, "abs-link"), "trusted.on-link", []byte("l"), 0))
	must(os.Lchown(filepath.Join(root, "abs-link"), 4242, 2424))

	setuid := filepath.Join(root, "setuid")
	must(os.WriteFile(setuid, []byte("#!/bin/sh\n"), 0o755))
	must(os.Chown(setuid, 12345, 54321))
	must(os.Chmod(setuid, 0o4755|os.ModeSetgid))
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
	must(unix.Lutimes(filepath.Join(root, "abs-link"), []unix.Timeval{unix.NsecToTimeval(old.UnixNano()), unix.NsecToTimeval(old.UnixNano())}))
	must(os.Chtimes(uni, old, old)) // after its contents: they set its mtime
	must(os.Chown(root, 1000, 1000))
	must(os.Chmod(root, 0o750))
	must(unix.Lsetxattr(root, "user.root-dir", []byte("r"), 0))
	must(os.Chtimes(root, old, old))
	return sparse
}

func TestRoundTripKeepsEveryKindOfFile(t *testing.T) {
	requireRoot(t)
	src := t.TempDir()
	sparse := buildTree(t, src)
	want := snapshot(t, src)
	dst, _ := roundTrip(t, src)
	requireSameTree(t, want, snapshot(t, dst))
	requireSameTree(t, want, snapshot(t, src)) // the backup changed no atime either

	var st unix.Stat_t
	require.NoError(t, unix.Stat(filepath.Join(dst, filepath.Base(sparse)), &st))
	require.EqualValues(t, 200<<20, st.Size)
	require.Less(t, st.Blocks*512, int64(1<<20), "the 200 MiB sparse file came back with %d KiB allocated: its holes were filled", st.Blocks/2)
	entries, err := os.ReadDir(dst)
	require.NoError(t, err)
	for _, e := range entries {
		require.NotContains(t, e.Name(), stagingPrefix, "the staging directory was left behind")
	}
}

// A stream of a tree that is not sparse carries exactly its data: a sparse
// map is written only where there are holes.
func TestSparseMapOnlyForHoles(t *testing.T) {
	requireRoot(t)
	src := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, "dense"), make([]byte, 1<<16), 0o644))
	_, stream := roundTrip(t, src)
	require.NotContains(t, string(stream), recMap)
}
