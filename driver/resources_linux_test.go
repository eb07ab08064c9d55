package driver

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/volfs/volfstest"
)

// smallFS is a small filesystem mounted in a temp dir for one test, to
// hold --root. It is unmounted when the test ends, after the driver's own
// cleanup (t.Cleanup runs last-registered first).
type smallFS struct {
	t       *testing.T
	dir     string
	fillers []string
}

// newSmallTmpfs mounts a tmpfs of size bytes with at most inodes inodes
// (unlimited when 0).
func newSmallTmpfs(t *testing.T, size int64, inodes int) *smallFS {
	t.Helper()
	volfstest.RequireRoot(t, "mounts tmpfs and bind mounts for real")
	s := &smallFS{t: t, dir: t.TempDir()}
	data := fmt.Sprintf("size=%d,mode=0755", size)
	if inodes > 0 {
		data += fmt.Sprintf(",nr_inodes=%d", inodes)
	}
	require.NoError(t, unix.Mount("holdfast-test", s.dir, "tmpfs", 0, data))
	t.Cleanup(s.unmount)
	return s
}

// newSmallExt4 mounts a fresh ext4 of size bytes (4 KiB blocks, no
// reserved blocks) from an image file through a loop device that detaches
// itself at the unmount.
func newSmallExt4(t *testing.T, size int64) *smallFS {
	t.Helper()
	volfstest.RequireRoot(t, "mounts tmpfs and bind mounts for real")
	img := filepath.Join(t.TempDir(), "root.img")
	require.NoError(t, os.WriteFile(img, nil, 0o600))
	require.NoError(t, os.Truncate(img, size))
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", img).CombinedOutput()
	require.NoError(t, err, "mkfs.ext4: %s", out)
	s := &smallFS{t: t, dir: t.TempDir()}
	out, err = exec.Command("mount", "-o", "loop", img, s.dir).CombinedOutput()
	require.NoError(t, err, "mount -o loop: %s", out)
	t.Cleanup(func() {
		s.unmount()
		out, _ := exec.Command("losetup", "-j", img).CombinedOutput()
		assert.Empty(t, string(out), "loop device of %s detached", img)
	})
	return s
}

func (s *smallFS) unmount() {
	if err := unix.Unmount(s.dir, 0); err != nil {
		s.t.Logf("unmount %s: %v; detaching", s.dir, err)
		unix.Unmount(s.dir, unix.MNT_DETACH)
	}
}

// free returns the bytes available to unprivileged users, as df shows.
func (s *smallFS) free() int64 {
	s.t.Helper()
	var st unix.Statfs_t
	require.NoError(s.t, unix.Statfs(s.dir, &st))
	return int64(st.Bavail) * st.Bsize
}

// freeInodes returns the free inodes.
func (s *smallFS) freeInodes() uint64 {
	s.t.Helper()
	var st unix.Statfs_t
	require.NoError(s.t, unix.Statfs(s.dir, &st))
	return st.Ffree
}

// fill allocates filler files until at most leave bytes are free.
func (s *smallFS) fill(leave int64) {
	s.t.Helper()
	for chunk := s.free() - leave; chunk >= 4096; {
		err := s.allocate(chunk)
		if errors.Is(err, unix.ENOSPC) {
			chunk /= 2
			continue
		}
		require.NoError(s.t, err)
		chunk = s.free() - leave
	}
}

// allocate creates one filler file of n bytes.
func (s *smallFS) allocate(n int64) error {
	path := filepath.Join(s.dir, fmt.Sprintf("filler-%d", len(s.fillers)))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	s.fillers = append(s.fillers, path)
	err = unix.Fallocate(int(f.Fd()), 0, 0, n)
	f.Close()
	if err != nil {
		os.Remove(path)
		s.fillers = s.fillers[:len(s.fillers)-1]
	}
	return err
}

// useInodes creates empty filler files until leave inodes are free.
func (s *smallFS) useInodes(leave uint64) {
	s.t.Helper()
	for s.freeInodes() > leave {
		path := filepath.Join(s.dir, fmt.Sprintf("filler-%d", len(s.fillers)))
		require.NoError(s.t, os.WriteFile(path, nil, 0o600))
		s.fillers = append(s.fillers, path)
	}
}

// release deletes the filler files.
func (s *smallFS) release() {
	s.t.Helper()
	for _, f := range s.fillers {
		require.NoError(s.t, os.Remove(f))
	}
	s.fillers = nil
}

// requireRootFullError checks that err says the filesystem holding --root
// has no room, names root and says what to do.
func requireRootFullError(t *testing.T, err error, root string) {
	t.Helper()
	require.Error(t, err)
	t.Logf("error: %v", err)
	for _, part := range []string{"not enough space on the filesystem holding --root", "(" + root + ")", "free space there or move --root to a larger filesystem"} {
		assert.Contains(t, err.Error(), part)
	}
}

// requireNothingOf checks that nothing of volume name exists: no
// directory, no record (in memory and committed), no mount under root.
func requireNothingOf(t *testing.T, d *Driver, name string) {
	t.Helper()
	assert.NoDirExists(t, filepath.Join(d.cfg.Root, "volumes", name))
	list, err := d.List()
	require.NoError(t, err)
	for _, v := range list.Volumes {
		assert.NotEqual(t, name, v.Name, "List shows the failed volume")
	}
	_, err = d.Get(&volume.GetRequest{Name: name})
	assert.ErrorIs(t, err, ErrNotFound)
	vols, err := d.store.All()
	require.NoError(t, err)
	for _, v := range vols {
		assert.NotEqual(t, name, v.Name, "the state database keeps a record (phase %s)", v.Phase)
	}
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(d.cfg.Root))
	require.NoError(t, err)
	assert.Empty(t, mounts, "nothing mounted under --root")
}

// lifecycle creates, mounts, writes, unmounts and removes a volume.
func lifecycle(t *testing.T, d *Driver, name string, opts map[string]string) {
	t.Helper()
	require.NoError(t, d.Create(&volume.CreateRequest{Name: name, Options: opts}))
	use(t, d, name)
}

// use mounts, writes, unmounts and removes a created volume.
func use(t *testing.T, d *Driver, name string) {
	t.Helper()
	res, err := d.Mount(&volume.MountRequest{Name: name, ID: "life"})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(res.Mountpoint, "f"), []byte("works"), 0o600))
	got, err := os.ReadFile(filepath.Join(res.Mountpoint, "f"))
	require.NoError(t, err)
	assert.Equal(t, "works", string(got))
	require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: name, ID: "life"}))
	require.NoError(t, d.Remove(&volume.RemoveRequest{Name: name}))
	assert.NoDirExists(t, filepath.Join(d.cfg.Root, "volumes", name))
}

// checkStore closes d, reopens its database and checks it: consistent
// pages, and exactly the records of want, all ready.
func checkStore(t *testing.T, d *Driver, want []string) {
	t.Helper()
	require.NoError(t, d.Close())
	st, err := OpenStore(filepath.Join(d.cfg.Root, "holdfast.db"))
	require.NoError(t, err, "the state database opens again")
	defer st.Close()
	require.NoError(t, st.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		return nil
	}))
	vols, err := st.All()
	require.NoError(t, err)
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
		assert.Equal(t, PhaseReady, v.Phase, v.Name)
	}
	assert.ElementsMatch(t, want, names)
}

// TestCreateOnFullRoot leaves 0, 1, 2, ... units (inodes or blocks) free
// on the filesystem holding --root and creates a volume each time, until
// a Create succeeds: so every step of Create that needs room there (the
// volume's directory, its files, the data directory, the state commit)
// fails once. Each failure must be clear and leave nothing; the Create
// that then has room works.
func TestCreateOnFullRoot(t *testing.T) {
	tests := []struct {
		name string
		fs   func(t *testing.T) *smallFS
		// exhaust leaves n units free.
		exhaust func(s *smallFS, n int)
		typ     string
		// mustFail: the volume's directory cannot be made with nothing
		// free. On a tmpfs, directories take no blocks.
		mustFail bool
	}{
		{"tmpfs inodes, local", smallInodes, useInodes, "local", true},
		{"tmpfs inodes, tmpfs", smallInodes, useInodes, "tmpfs", true},
		{"tmpfs blocks, local", smallTmpfs, fillBlocks, "local", false},
		{"tmpfs blocks, tmpfs", smallTmpfs, fillBlocks, "tmpfs", false},
		{"ext4 blocks, local", smallExt4, fillBlocks, "local", true},
		{"ext4 blocks, tmpfs", smallExt4, fillBlocks, "tmpfs", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.fs(t)
			d := kernelDriver(t, filepath.Join(s.dir, "root"))
			opts := map[string]string{"type": tt.typ}
			require.NoError(t, d.Create(&volume.CreateRequest{Name: "before", Options: opts}))
			failures := 0
			for n := 0; ; n++ {
				require.Less(t, n, 64, "Create still fails with %d units free", n)
				tt.exhaust(s, n)
				err := d.Create(&volume.CreateRequest{Name: "vol", Options: opts})
				s.release()
				if err == nil {
					t.Logf("%d free: created", n)
					break
				}
				t.Logf("%d free: %v", n, err)
				failures++
				requireRootFullError(t, err, d.cfg.Root)
				requireNothingOf(t, d, "vol")
			}
			if tt.mustFail {
				assert.NotZero(t, failures, "a Create with nothing free fails")
			}
			use(t, d, "vol")
			lifecycle(t, d, "before", opts)
			checkStore(t, d, nil)
		})
	}
}

func smallInodes(t *testing.T) *smallFS { return newSmallTmpfs(t, 16<<20, 64) }
func smallTmpfs(t *testing.T) *smallFS  { return newSmallTmpfs(t, 16<<20, 0) }
func smallExt4(t *testing.T) *smallFS   { return newSmallExt4(t, 16<<20) }
func useInodes(s *smallFS, n int)       { s.useInodes(uint64(n)) }
func fillBlocks(s *smallFS, n int)      { s.fill(int64(n) * 4096) }

// TestRootFullDuringCommit leaves two blocks free on --root's filesystem
// before each Create, until the state database needs to grow by more and
// cannot: that Create fails clearly and leaves nothing, the earlier
// volumes stay, and the database is intact and keeps working.
func TestRootFullDuringCommit(t *testing.T) {
	s := newSmallTmpfs(t, 16<<20, 0)
	d := kernelDriver(t, filepath.Join(s.dir, "root"))
	var created []string
	var err error
	name := ""
	for i := range 2000 {
		name = fmt.Sprintf("vol-%04d", i)
		// Two blocks: one for the volume's record file, one for the database.
		s.release()
		s.fill(2 * 4096)
		if err = d.Create(&volume.CreateRequest{Name: name}); err != nil {
			break
		}
		created = append(created, name)
	}
	t.Logf("%d volumes created with two blocks free before a Create failed", len(created))
	requireRootFullError(t, err, d.cfg.Root)
	assert.Contains(t, err.Error(), "holdfast.db", "the commit to the state database is what failed")
	requireNothingOf(t, d, name)
	list, lerr := d.List()
	require.NoError(t, lerr)
	assert.Len(t, list.Volumes, len(created), "every earlier volume is still listed")

	s.release()
	lifecycle(t, d, name, nil)
	checkStore(t, d, created)
}

// TestFullTmpfsVolume fills a tmpfs volume: ENOSPC inside it only; the
// other volumes and --root keep working.
func TestFullTmpfsVolume(t *testing.T) {
	s := newSmallTmpfs(t, 32<<20, 0)
	d := kernelDriver(t, filepath.Join(s.dir, "root"))
	vols := map[string]map[string]string{
		"full":  {"type": "tmpfs", "size": "8m"},
		"other": {"type": "tmpfs", "size": "8m"},
		"disk":  {},
	}
	mps := map[string]string{}
	for name, opts := range vols {
		require.NoError(t, d.Create(&volume.CreateRequest{Name: name, Options: opts}))
		res, err := d.Mount(&volume.MountRequest{Name: name, ID: "a"})
		require.NoError(t, err)
		mps[name] = res.Mountpoint
	}
	rootFree := s.free()

	err := writeFile(filepath.Join(mps["full"], "big"), 9<<20)
	require.Error(t, err, "writing 9 MiB into an 8 MiB tmpfs volume")
	assert.True(t, errors.Is(err, syscall.ENOSPC), "want ENOSPC, got %v", err)
	assert.Equal(t, rootFree, s.free(), "--root's filesystem is untouched")

	for _, name := range []string{"other", "disk"} {
		require.NoError(t, writeFile(filepath.Join(mps[name], "f"), 1<<20), name)
	}
	get, err := d.Get(&volume.GetRequest{Name: "full"})
	require.NoError(t, err)
	assert.EqualValues(t, 0, get.Volume.Status["available"])
	list, err := d.List()
	require.NoError(t, err)
	assert.Len(t, list.Volumes, 3)

	for _, name := range slices.Sorted(maps.Keys(vols)) {
		require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: name, ID: "a"}), name)
		require.NoError(t, d.Remove(&volume.RemoveRequest{Name: name}), name)
	}
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(d.cfg.Root))
	require.NoError(t, err)
	assert.Empty(t, mounts)
	checkStore(t, d, nil)
}

// writeFile writes n bytes to a new file, syncs it and returns the first
// error.
func writeFile(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{0xA5}, 1<<20)
	for written := 0; written < n; written += len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			return err
		}
	}
	return f.Sync()
}
