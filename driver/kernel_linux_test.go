package driver

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/volfs"
	"github.com/holdfast/holdfast/internal/volfs/volfstest"
)

// kernelDriver is a driver on the real kernel mount table; its mounts are
// detached when the test ends.
func kernelDriver(t *testing.T, root string) *Driver {
	t.Helper()
	log, _ := test.NewNullLogger()
	m := volfs.KernelMounter{}
	d, err := New(Config{
		Root: root, MountRoot: filepath.Join(root, "mounts"), Scope: "local", BootID: "test",
		Mounter: m, Log: log,
		Backends: RealBackends(m),
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		d.Close()
		mounts, _ := m.Mountpoints(d.cfg.MountRoot)
		for mp := range mounts {
			unix.Unmount(mp, unix.MNT_DETACH)
		}
	})
	return d
}

func TestKernelTmpfsSizeLimit(t *testing.T) {
	volfstest.RequireRoot(t, "mounts tmpfs and bind mounts for real")
	d := kernelDriver(t, t.TempDir())
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "small", Options: map[string]string{"type": "tmpfs", "size": "8m"}}))
	res, err := d.Mount(&volume.MountRequest{Name: "small", ID: "a"})
	require.NoError(t, err)

	info := volfstest.MountOf(t, res.Mountpoint)
	require.NotNil(t, info, "tmpfs in /proc/self/mountinfo")
	assert.Equal(t, "tmpfs", info.FSType)
	assert.Contains(t, info.VFSOptions, "size=8192k")
	assert.Contains(t, strings.Split(info.Options, ","), "nosuid", "no setuid programs from a volume")
	assert.Contains(t, strings.Split(info.Options, ","), "nodev", "no device nodes from a volume")
	var st unix.Statfs_t
	require.NoError(t, unix.Statfs(res.Mountpoint, &st))
	assert.EqualValues(t, 8<<20, st.Blocks*uint64(st.Bsize))

	f, err := os.Create(filepath.Join(res.Mountpoint, "big"))
	require.NoError(t, err)
	defer f.Close()
	chunk := bytes.Repeat([]byte{0xA5}, 1<<20)
	var werr error
	written := 0
	for range 9 {
		n, err := f.Write(chunk)
		written += n
		if err != nil {
			werr = err
			break
		}
	}
	require.Error(t, werr, "writing 9 MiB into an 8 MiB tmpfs must fail")
	assert.True(t, errors.Is(werr, syscall.ENOSPC), "want ENOSPC, got %v", werr)
	assert.LessOrEqual(t, written, 8<<20)

	get, err := d.Get(&volume.GetRequest{Name: "small"})
	require.NoError(t, err)
	assert.EqualValues(t, 8<<20, get.Volume.Status["size"])
	assert.NotZero(t, get.Volume.Status["used"])

	// Data is gone after the last Unmount.
	require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: "small", ID: "a"}))
	assert.Nil(t, volfstest.MountOf(t, res.Mountpoint))
	res, err = d.Mount(&volume.MountRequest{Name: "small", ID: "b"})
	require.NoError(t, err)
	assert.NoFileExists(t, filepath.Join(res.Mountpoint, "big"))
}

func TestKernelOwnerAndMode(t *testing.T) {
	volfstest.RequireRoot(t, "mounts tmpfs and bind mounts for real")
	d := kernelDriver(t, t.TempDir())
	for _, typ := range []string{"local", "tmpfs"} {
		name := "owned-" + typ
		opts := map[string]string{"type": typ, "uid": "1234", "gid": "2345", "mode": "1770"}
		require.NoError(t, d.Create(&volume.CreateRequest{Name: name, Options: opts}))
		res, err := d.Mount(&volume.MountRequest{Name: name, ID: "a"})
		require.NoError(t, err)
		fi, err := os.Stat(res.Mountpoint)
		require.NoError(t, err)
		st := fi.Sys().(*syscall.Stat_t)
		assert.EqualValues(t, 1234, st.Uid, typ)
		assert.EqualValues(t, 2345, st.Gid, typ)
		assert.Equal(t, os.ModeDir|os.ModeSticky|0o770, fi.Mode(), typ)
	}
	// Defaults: Docker's _data mode for local, tmpfs' own for tmpfs.
	for typ, want := range map[string]os.FileMode{"local": 0o755, "tmpfs": os.ModeSticky | 0o777} {
		name := "plain-" + typ
		require.NoError(t, d.Create(&volume.CreateRequest{Name: name, Options: map[string]string{"type": typ}}))
		res, err := d.Mount(&volume.MountRequest{Name: name, ID: "a"})
		require.NoError(t, err)
		fi, err := os.Stat(res.Mountpoint)
		require.NoError(t, err)
		assert.Equal(t, os.ModeDir|want, fi.Mode(), typ)
	}
}

func TestKernelLocalVolume(t *testing.T) {
	volfstest.RequireRoot(t, "mounts tmpfs and bind mounts for real")
	root := t.TempDir()
	d := kernelDriver(t, root)
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "keep"}))
	res, err := d.Mount(&volume.MountRequest{Name: "keep", ID: "a"})
	require.NoError(t, err)
	info := volfstest.MountOf(t, res.Mountpoint)
	require.NotNil(t, info, "bind mount in /proc/self/mountinfo")
	require.NoError(t, os.WriteFile(filepath.Join(res.Mountpoint, "f"), []byte("data"), 0o644))

	err = d.Remove(&volume.RemoveRequest{Name: "keep"})
	require.ErrorIs(t, err, ErrInUse)
	assert.FileExists(t, filepath.Join(res.Mountpoint, "f"))

	require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: "keep", ID: "a"}))
	assert.Nil(t, volfstest.MountOf(t, res.Mountpoint))
	res, err = d.Mount(&volume.MountRequest{Name: "keep", ID: "b"})
	require.NoError(t, err)
	got, err := os.ReadFile(filepath.Join(res.Mountpoint, "f"))
	require.NoError(t, err)
	assert.Equal(t, "data", string(got), "data survives an unmount")
	require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: "keep", ID: "b"}))
	require.NoError(t, d.Remove(&volume.RemoveRequest{Name: "keep"}))
	assert.NoDirExists(t, filepath.Join(root, "volumes", "keep"))
}

func TestKernelRemoveNeverDeletesThroughAMount(t *testing.T) {
	volfstest.RequireRoot(t, "mounts tmpfs and bind mounts for real")
	root := t.TempDir()
	d := kernelDriver(t, root)
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "victim"}))
	// Someone else's data bind-mounted inside the volume's directory.
	other := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(other, "precious"), []byte("x"), 0o600))
	inner := filepath.Join(root, "volumes", "victim", "data")
	require.NoError(t, unix.Mount(other, inner, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(inner, unix.MNT_DETACH) })

	err := d.Remove(&volume.RemoveRequest{Name: "victim"})
	require.ErrorContains(t, err, "refusing to remove")
	assert.FileExists(t, filepath.Join(other, "precious"))
}
