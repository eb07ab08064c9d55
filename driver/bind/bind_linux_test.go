package bind

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/tmpfs"
	"github.com/holdfast/holdfast/internal/volfs"
	"github.com/holdfast/holdfast/internal/volfs/volfstest"
)

// formsKernelDriver is a driver on the real kernel with the tmpfs and bind
// backends, bind refusing root's directories.
func formsKernelDriver(t *testing.T) (*driver.Driver, string) {
	t.Helper()
	root := t.TempDir()
	log, _ := test.NewNullLogger()
	m := volfs.KernelMounter{}
	d, err := driver.New(driver.Config{
		Root: root, MountRoot: filepath.Join(root, "mounts"), Scope: "local", BootID: "test",
		Mounter: m, Log: log,
		Backends: map[string]driver.Backend{
			"tmpfs":         tmpfs.New(m, "64m"),
			driver.TypeBind: &Backend{Mounter: m, Allowed: []string{"/"}, Private: map[string]string{"--root": root}},
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		d.Close()
		mounts, _ := m.Mountpoints(filepath.Join(root, "mounts"))
		for mp := range mounts {
			unix.Unmount(mp, unix.MNT_DETACH)
		}
	})
	return d, root
}

func mountOpts(t *testing.T, path string) []string {
	t.Helper()
	mi := volfstest.MountOf(t, path)
	require.NotNil(t, mi, "%s is a mountpoint", path)
	return strings.Split(mi.Options, ",")
}

// TestKernelTmpfsLocalForm: Docker's local driver form of a tmpfs mounts
// with its size, owner, mode, inode limit and flags.
func TestKernelTmpfsLocalForm(t *testing.T) {
	volfstest.RequireRoot(t, "mounts tmpfs and bind mounts for real")
	d, _ := formsKernelDriver(t)
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "scratch", Options: map[string]string{
		"type": "tmpfs", "device": "tmpfs", "o": "size=8m,uid=1000,gid=1001,mode=0750,nr_inodes=100,noexec,nosuid,nodev"}}))
	res, err := d.Mount(&volume.MountRequest{Name: "scratch", ID: "c1"})
	require.NoError(t, err)
	mp := res.Mountpoint
	opts := mountOpts(t, mp)
	for _, f := range []string{"rw", "nosuid", "nodev", "noexec"} {
		assert.Contains(t, opts, f)
	}
	mi := volfstest.MountOf(t, mp)
	assert.Equal(t, "tmpfs", mi.FSType)
	assert.Contains(t, mi.VFSOptions, "size=8192k")
	assert.Contains(t, mi.VFSOptions, "nr_inodes=100")
	assert.Contains(t, mi.VFSOptions, "mode=750")
	assert.Contains(t, mi.VFSOptions, "uid=1000")
	assert.Contains(t, mi.VFSOptions, "gid=1001")
	var st unix.Stat_t
	require.NoError(t, unix.Stat(mp, &st))
	assert.EqualValues(t, 1000, st.Uid)
	assert.EqualValues(t, 0o750, st.Mode&0o7777)

	require.NoError(t, d.Create(&volume.CreateRequest{Name: "ro", Options: map[string]string{
		"type": "tmpfs", "size": "1m", "ro": "true"}}))
	res, err = d.Mount(&volume.MountRequest{Name: "ro", ID: "c2"})
	require.NoError(t, err)
	assert.Contains(t, mountOpts(t, res.Mountpoint), "ro")
	assert.ErrorIs(t, os.WriteFile(filepath.Join(res.Mountpoint, "f"), nil, 0o600), unix.EROFS)
}

// TestKernelBind: a bind volume shows the host directory's data, writes
// land there, ro is read-only, rbind carries submounts, Remove leaves
// every file, and nothing is chowned or chmodded unless asked.
func TestKernelBind(t *testing.T) {
	volfstest.RequireRoot(t, "mounts tmpfs and bind mounts for real")
	d, _ := formsKernelDriver(t)
	host := t.TempDir()
	require.NoError(t, os.Chmod(host, 0o711))
	require.NoError(t, os.WriteFile(filepath.Join(host, "kept"), []byte("host data"), 0o644))
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "web", Options: map[string]string{
		"type": "none", "o": "bind", "device": host}}))
	fi, err := os.Stat(host)
	require.NoError(t, err)
	assert.EqualValues(t, 0o711, fi.Mode().Perm(), "mode untouched without mode=")
	res, err := d.Mount(&volume.MountRequest{Name: "web", ID: "c1"})
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(res.Mountpoint, "kept"))
	require.NoError(t, err)
	assert.Equal(t, "host data", string(b))
	require.NoError(t, os.WriteFile(filepath.Join(res.Mountpoint, "new"), []byte("from container"), 0o644))
	require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: "web", ID: "c1"}))
	require.NoError(t, d.Remove(&volume.RemoveRequest{Name: "web"}))
	for f, want := range map[string]string{"kept": "host data", "new": "from container"} {
		b, err := os.ReadFile(filepath.Join(host, f))
		require.NoError(t, err, "Remove leaves %s", f)
		assert.Equal(t, want, string(b))
	}

	// ro, rbind: read-only, with the submount carried.
	sub := filepath.Join(host, "sub")
	require.NoError(t, os.Mkdir(sub, 0o755))
	require.NoError(t, unix.Mount("holdfast-test", sub, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { unix.Unmount(sub, unix.MNT_DETACH) })
	require.NoError(t, os.WriteFile(filepath.Join(sub, "in-sub"), nil, 0o644))
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "ro", Options: map[string]string{
		"type": "none", "o": "rbind,ro", "device": host}}))
	res, err = d.Mount(&volume.MountRequest{Name: "ro", ID: "c2"})
	require.NoError(t, err)
	assert.Contains(t, mountOpts(t, res.Mountpoint), "ro")
	assert.ErrorIs(t, os.WriteFile(filepath.Join(res.Mountpoint, "x"), nil, 0o600), unix.EROFS)
	assert.FileExists(t, filepath.Join(res.Mountpoint, "sub", "in-sub"), "rbind carries the submount")
	require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: "ro", ID: "c2"}))
	require.NoError(t, d.Remove(&volume.RemoveRequest{Name: "ro"}))
	assert.FileExists(t, filepath.Join(host, "kept"))
	assert.Nil(t, volfstest.MountOf(t, res.Mountpoint), "no mount left")

	// Plain bind: the submount is not carried.
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "plain", Options: map[string]string{
		"type": "bind", "device": host, "uid": "1000", "mode": "0750"}}))
	require.NoError(t, unix.Stat(host, new(unix.Stat_t)))
	var st unix.Stat_t
	require.NoError(t, unix.Stat(host, &st))
	assert.EqualValues(t, 1000, st.Uid, "uid= chowns the directory")
	assert.EqualValues(t, 0o750, st.Mode&0o7777, "mode= chmods it")
	res, err = d.Mount(&volume.MountRequest{Name: "plain", ID: "c3"})
	require.NoError(t, err)
	assert.NoFileExists(t, filepath.Join(res.Mountpoint, "sub", "in-sub"), "bind without rbind does not carry submounts")
	require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: "plain", ID: "c3"}))
}

// TestKernelBindRefusesASwappedSymlink: a directory replaced by a symlink
// after the create is refused at Mount, never followed.
func TestKernelBindRefusesASwappedSymlink(t *testing.T) {
	volfstest.RequireRoot(t, "mounts tmpfs and bind mounts for real")
	d, root := formsKernelDriver(t)
	host := filepath.Join(t.TempDir(), "data")
	require.NoError(t, os.Mkdir(host, 0o755))
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "web", Options: map[string]string{"type": "bind", "device": host}}))
	require.NoError(t, os.Remove(host))
	_, err := d.Mount(&volume.MountRequest{Name: "web", ID: "c1"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "bind source path does not exist: "+host)
	require.NoError(t, os.Symlink(root, host))
	_, err = d.Mount(&volume.MountRequest{Name: "web", ID: "c1"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is now a symlink")
	err = d.Create(&volume.CreateRequest{Name: "other", Options: map[string]string{"type": "none", "o": "bind", "device": host}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "it is inside --root")
	assert.Contains(t, err.Error(), "resolves to "+root)
}
