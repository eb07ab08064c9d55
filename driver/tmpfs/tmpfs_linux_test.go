package tmpfs

import (
	"path/filepath"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/volfs"
	"github.com/holdfast/holdfast/internal/volfs/volfstest"
)

// tmpfsDriver is a driver on the real kernel whose tmpfs volumes default
// to defaultSize; Close it before opening another on the same root. Its
// mounts are detached when the test ends.
func tmpfsDriver(t *testing.T, root, defaultSize string) *driver.Driver {
	t.Helper()
	log, _ := test.NewNullLogger()
	m := volfs.KernelMounter{}
	d, err := driver.New(driver.Config{
		Root: root, MountRoot: filepath.Join(root, "mounts"), Scope: "local", BootID: "test",
		Mounter: m, Log: log,
		Backends: map[string]driver.Backend{"tmpfs": &Backend{Mounter: m, DefaultSize: defaultSize}},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		d.Close()
		mounts, _ := m.Mountpoints(filepath.Join(root, "mounts"))
		for mp := range mounts {
			unix.Unmount(mp, unix.MNT_DETACH)
		}
	})
	return d
}

func tmpfsCreate(d *driver.Driver, name string, opts map[string]string) error {
	return d.Create(&volume.CreateRequest{Name: name, Options: opts})
}

// TestTmpfsKeepsItsSizeWhenTheDefaultChanges: a volume created without size
// gets the default in force then, for good; after a restart with another
// --tmpfs-size the same Create (Swarm repeats it before every task) still
// matches it, and the volume still mounts at its own size.
func TestTmpfsKeepsItsSizeWhenTheDefaultChanges(t *testing.T) {
	volfstest.RequireRoot(t, "mounts tmpfs for real")
	root := t.TempDir()
	d := tmpfsDriver(t, root, "64m")
	noSize := map[string]string{"type": "tmpfs"}
	require.NoError(t, tmpfsCreate(d, "scratch", noSize))
	require.NoError(t, tmpfsCreate(d, "fixed", map[string]string{"type": "tmpfs", "size": "8m"}))
	require.NoError(t, d.Close())
	store, err := driver.OpenStore(filepath.Join(root, "holdfast.db"))
	require.NoError(t, err)
	rec, err := store.All()
	require.NoError(t, err)
	require.NoError(t, store.Close())
	for _, v := range rec {
		assert.NotEqual(t, driver.LeftToDefault, v.Options["size"], "%s: the record holds the size in force", v.Name)
	}

	d = tmpfsDriver(t, root, "128m")
	require.NoError(t, tmpfsCreate(d, "scratch", noSize), "the same Create under another default")
	require.NoError(t, tmpfsCreate(d, "scratch", map[string]string{"type": "tmpfs", "size": "64m"}), "the size in force written out")
	require.NoError(t, tmpfsCreate(d, "scratch", map[string]string{"type": "tmpfs", "size": "default"}), "size=default is size left out")
	err = tmpfsCreate(d, "scratch", map[string]string{"type": "tmpfs", "size": "128m"})
	require.ErrorIs(t, err, driver.ErrConflict, "an explicit other size")
	assert.Contains(t, err.Error(), `size: existing "67108864", requested "134217728"`)
	err = tmpfsCreate(d, "scratch", map[string]string{"type": "tmpfs", "uid": "5"})
	require.ErrorIs(t, err, driver.ErrConflict, "other options still count")
	assert.NotContains(t, err.Error(), "size")

	// A size given at create is kept; a Create without size does not ask
	// for another one.
	require.NoError(t, tmpfsCreate(d, "fixed", noSize))
	require.ErrorIs(t, tmpfsCreate(d, "fixed", map[string]string{"type": "tmpfs", "size": "16m"}), driver.ErrConflict)

	for name, want := range map[string]uint64{"scratch": 64 << 20, "fixed": 8 << 20} {
		get, err := d.Get(&volume.GetRequest{Name: name})
		require.NoError(t, err)
		assert.EqualValues(t, want, get.Volume.Status["size"], "%s: Status shows the size in force", name)
		res, err := d.Mount(&volume.MountRequest{Name: name, ID: "c1"})
		require.NoError(t, err)
		var st unix.Statfs_t
		require.NoError(t, unix.Statfs(res.Mountpoint, &st))
		assert.Equal(t, want, st.Blocks*uint64(st.Bsize), "%s mounts at its own size", name)
		require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: name, ID: "c1"}))
	}

	// A new volume gets the default in force now.
	require.NoError(t, tmpfsCreate(d, "fresh", noSize))
	get, err := d.Get(&volume.GetRequest{Name: "fresh"})
	require.NoError(t, err)
	assert.EqualValues(t, 128<<20, get.Volume.Status["size"])
}

// TestTmpfsRecordOfEarlierHoldfast: records written before sizes were
// deferred hold the default of their time as "size"; they are the form
// Create still writes, and match a Create without size under any default.
func TestTmpfsRecordOfEarlierHoldfast(t *testing.T) {
	volfstest.RequireRoot(t, "mounts tmpfs for real")
	root := t.TempDir()
	d := tmpfsDriver(t, root, "64m")
	require.NoError(t, d.Close())
	store, err := driver.OpenStore(filepath.Join(root, "holdfast.db"))
	require.NoError(t, err)
	require.NoError(t, store.Put(&driver.Volume{Name: "old", Type: "tmpfs", Options: map[string]string{"size": "4194304", "mode": "1770"}, Phase: driver.PhaseReady}))
	require.NoError(t, store.Close())

	d = tmpfsDriver(t, root, "128m")
	require.NoError(t, tmpfsCreate(d, "old", map[string]string{"type": "tmpfs", "mode": "1770"}))
	require.NoError(t, tmpfsCreate(d, "old", map[string]string{"type": "tmpfs", "mode": "1770", "size": "4m"}))
	require.ErrorIs(t, tmpfsCreate(d, "old", map[string]string{"type": "tmpfs", "mode": "1770", "size": "128m"}), driver.ErrConflict)
	res, err := d.Mount(&volume.MountRequest{Name: "old", ID: "c1"})
	require.NoError(t, err)
	var st unix.Statfs_t
	require.NoError(t, unix.Statfs(res.Mountpoint, &st))
	assert.EqualValues(t, 4<<20, st.Blocks*uint64(st.Bsize))
}
