package crypt

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/loopdev"
	"github.com/holdfast/holdfast/internal/volfs/volfstest"
)

// smallRoot is a rig whose --root is on a small tmpfs and whose --key-dir
// is on the same tmpfs or on a second one. Both are unmounted when the
// test ends, after the rig's own cleanup.
type smallRoot struct {
	*rig
	fs, keyFS string // the mountpoints holding --root and --key-dir
	fillers   []string
}

// newSmallRoot mounts a tmpfs of size bytes for --root and, when keySize
// is not 0, another of keySize bytes for --key-dir.
func newSmallRoot(t *testing.T, size, keySize int64) *smallRoot {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a small tmpfs as --root, attaches loop devices and mounts filesystems (make test runs as root)")
	}
	s := &smallRoot{fs: mountTmpfs(t, size)}
	s.keyFS = s.fs
	if keySize != 0 {
		s.keyFS = mountTmpfs(t, keySize)
	}
	r := &rig{t: t, root: filepath.Join(s.fs, "root"), keyDir: filepath.Join(s.keyFS, "keys"), logs: &bytes.Buffer{}}
	r.start()
	t.Cleanup(func() {
		r.d.Close()
		volfstest.DetachBelow(r.root)
		detachLoopsUnder(filepath.Join(r.root, "volumes"))
	})
	s.rig = r
	return s
}

// mountTmpfs mounts a tmpfs of size bytes in a temp dir until the test
// ends.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, unix.Mount("holdfast-test", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)))
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Logf("unmount %s: %v; detaching", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

// detachLoopsUnder detaches the loop devices of every backing file left
// under dir.
func detachLoopsUnder(dir string) {
	imgs, _ := filepath.Glob(filepath.Join(dir, "*", "backing.img"))
	for _, img := range imgs {
		loopdev.Detach(img)
	}
}

// free returns the bytes available on the filesystem at dir.
func (s *smallRoot) free(dir string) int64 {
	s.t.Helper()
	var st unix.Statfs_t
	require.NoError(s.t, unix.Statfs(dir, &st))
	return int64(st.Bavail) * st.Bsize
}

// fill allocates filler files in dir until at most leave bytes are free
// on its filesystem.
func (s *smallRoot) fill(dir string, leave int64) {
	s.t.Helper()
	for chunk := s.free(dir) - leave; chunk >= 4096; {
		path := filepath.Join(dir, fmt.Sprintf("filler-%d", len(s.fillers)))
		f, err := os.Create(path)
		require.NoError(s.t, err)
		err = unix.Fallocate(int(f.Fd()), 0, 0, chunk)
		f.Close()
		if errors.Is(err, unix.ENOSPC) {
			require.NoError(s.t, os.Remove(path))
			chunk /= 2
			continue
		}
		require.NoError(s.t, err)
		s.fillers = append(s.fillers, path)
		chunk = s.free(dir) - leave
	}
}

// release deletes the filler files.
func (s *smallRoot) release() {
	s.t.Helper()
	for _, f := range s.fillers {
		require.NoError(s.t, os.Remove(f))
	}
	s.fillers = nil
}

// allocated returns the bytes the filesystem holds for file.
func allocated(t *testing.T, file string) int64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(file, &st))
	return st.Blocks * 512
}

// requireNoVolume checks that nothing of a failed Create is left: no
// directory, no generated key, nothing attached, no record in List or in
// the reopened state database.
func (s *smallRoot) requireNoVolume(name string) {
	t := s.t
	t.Helper()
	assert.NoDirExists(t, filepath.Join(s.root, "volumes", name))
	assert.NoFileExists(t, filepath.Join(s.keyDir, generatedName(name)))
	s.requireLocked(name)
	list, err := s.api.List()
	require.NoError(t, err)
	for _, v := range list.Volumes {
		assert.NotEqual(t, name, v.Name, "List shows the failed volume")
	}
	require.NoError(t, s.d.Close())
	st, err := driver.OpenStore(filepath.Join(s.root, "holdfast.db"))
	require.NoError(t, err, "the state database opens again")
	vols, err := st.All()
	st.Close()
	require.NoError(t, err)
	for _, v := range vols {
		assert.NotEqual(t, name, v.Name, "the state database keeps a record (phase %s)", v.Phase)
	}
	s.start()
}

// lifecycle mounts, writes, unmounts and removes a created volume.
func (s *smallRoot) lifecycle(name string) {
	t := s.t
	t.Helper()
	mp := s.mount(name, "life")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("works"), 0o600))
	s.unmount(name, "life")
	mp = s.mount(name, "again")
	got, err := os.ReadFile(filepath.Join(mp, "f"))
	require.NoError(t, err)
	assert.Equal(t, "works", string(got))
	s.unmount(name, "again")
	require.NoError(t, s.api.Remove(&volume.RemoveRequest{Name: name}))
	assert.NoDirExists(t, filepath.Join(s.root, "volumes", name))
	assert.NoFileExists(t, filepath.Join(s.keyDir, generatedName(name)))
	s.requireLocked(name)
}

// TestCryptCreateOnFullRoot creates crypt volumes with less room left on
// the filesystems holding --root and --key-dir than they need: a clear
// error naming the full one, nothing half made; once there is room, the
// same Create works.
func TestCryptCreateOnFullRoot(t *testing.T) {
	const none = -1 // leave the filesystem as it is
	tests := []struct {
		name string
		// keySize is the size of --key-dir's own tmpfs; 0 puts --key-dir
		// on --root's.
		keySize   int64
		leave     int64 // bytes left free on --root's filesystem
		leaveKeys int64 // bytes left free on --key-dir's, when its own
		opts      map[string]string
		flags     []string // the error names one of these
	}{
		{"key dir full", 1 << 20, none, 0, map[string]string{"size": "32m"}, []string{"--key-dir"}},
		{"nothing free, key dir on the same filesystem", 0, 0, none, map[string]string{"size": "32m"}, []string{"--root", "--key-dir"}},
		{"nothing free, keyfile given", 0, 0, none, map[string]string{"size": "32m", "keyfile": "user.keyfile"}, []string{"--root"}},
		{"2 MiB free", 0, 2 << 20, none, map[string]string{"size": "32m"}, []string{"--root"}},
		{"size larger than the room left", 0, 48 << 20, none, map[string]string{"size": "64m"}, []string{"--root"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSmallRoot(t, 96<<20, tt.keySize)
			require.NoError(t, os.MkdirAll(s.keyDir, 0o700))
			userKey := filepath.Join(s.keyDir, "user.keyfile")
			require.NoError(t, os.WriteFile(userKey, pattern()[:KeySize], 0o600))
			opts := map[string]string{"type": "crypt"}
			maps.Copy(opts, tt.opts)
			if tt.leave != none {
				s.fill(s.fs, tt.leave)
			}
			if tt.leaveKeys != none {
				s.fill(s.keyFS, tt.leaveKeys)
			}

			err := s.api.Create(&volume.CreateRequest{Name: "vault", Options: opts})
			require.Error(t, err, "Create with %d bytes free", s.free(s.fs))
			t.Logf("error: %v", err)
			s.requireNoSpaceError(err, tt.flags)
			s.requireNoVolume("vault")
			assert.FileExists(t, userKey, "a user's key file is never destroyed")

			s.release()
			require.NoError(t, s.api.Create(&volume.CreateRequest{Name: "vault", Options: opts}))
			s.lifecycle("vault")
		})
	}
}

// requireNoSpaceError checks that err says which of flags names a full
// filesystem, with its directory and the fix.
func (s *smallRoot) requireNoSpaceError(err error, flags []string) {
	s.t.Helper()
	dirs := map[string]string{"--root": s.root, "--key-dir": s.keyDir}
	for _, flag := range flags {
		if strings.Contains(err.Error(), "holding "+flag+" ") {
			assert.Contains(s.t, err.Error(), "not enough space on the filesystem holding "+flag+" ("+dirs[flag]+")")
			assert.Contains(s.t, err.Error(), "free space there or move "+flag+" to a larger filesystem")
			return
		}
	}
	s.t.Errorf("error names none of %v as full: %v", flags, err)
}

// TestCryptImageIsAllocated checks that a crypt volume's backing file
// holds its whole size from Create on, so the volume can never outgrow
// the room on the filesystem holding --root.
func TestCryptImageIsAllocated(t *testing.T) {
	s := newSmallRoot(t, 128<<20, 0)
	free := s.free(s.fs)
	require.NoError(t, s.api.Create(&volume.CreateRequest{Name: "vault", Options: map[string]string{"type": "crypt", "size": "40m"}}))
	got := allocated(t, s.backing("vault"))
	t.Logf("engine %s: %d bytes allocated for a 40m volume, %d bytes less free on --root", s.status("vault")["engine"], got, free-s.free(s.fs))
	assert.EqualValues(t, 40<<20, got, "the backing file is allocated in full, mkfs punched no holes")
	require.NoError(t, s.api.Remove(&volume.RemoveRequest{Name: "vault"}))
	s.requireLocked("vault")
}

// TestFullCryptVolume fills a crypt volume to its size: ENOSPC inside it,
// the filesystem holding --root keeps its free space, and the plugin and
// the other volumes keep working.
func TestFullCryptVolume(t *testing.T) {
	s := newSmallRoot(t, 128<<20, 0)
	for _, name := range []string{"full", "other"} {
		require.NoError(t, s.api.Create(&volume.CreateRequest{Name: name, Options: map[string]string{"type": "crypt", "size": "40m"}}))
	}
	full, other := s.mount("full", "a"), s.mount("other", "a")
	rootFree := s.free(s.fs)

	err := fill(filepath.Join(full, "big"), 48<<20)
	assert.True(t, errors.Is(err, syscall.ENOSPC), "want ENOSPC writing 48 MiB into 40m, got %v", err)
	// Free space may grow meanwhile (ext4 settling its reservations, a
	// deletion in the background), never shrink.
	assert.GreaterOrEqual(t, s.free(s.fs), rootFree, "a full volume takes no room from --root")
	assert.LessOrEqual(t, allocated(t, s.backing("full")), int64(40<<20), "the image stays within its size")

	require.NoError(t, fill(filepath.Join(other, "f"), 1<<20), "the other volume still takes writes")
	assert.Less(t, s.status("full")["available"], uint64(64<<10), "Status shows the volume full")
	list, err := s.api.List()
	require.NoError(t, err)
	assert.Len(t, list.Volumes, 2)

	require.NoError(t, os.Remove(filepath.Join(full, "big")))
	require.NoError(t, fill(filepath.Join(full, "small"), 1<<20), "room again after deleting")
	s.unmount("full", "a")
	s.unmount("other", "a")
	for _, name := range []string{"full", "other"} {
		require.NoError(t, s.api.Remove(&volume.RemoveRequest{Name: name}))
		s.requireLocked(name)
	}
}
