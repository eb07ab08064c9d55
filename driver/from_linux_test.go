package driver

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/volfs/volfstest"
)

// TestStartUndoesAnInterruptedFrom: a crash in the middle of a Create's
// copy leaves the new volume's create intent, the new volume mounted and
// half filled, and the source mounted under a view lease. The next start
// removes the new volume and drops the lease.
func TestStartUndoesAnInterruptedFrom(t *testing.T) {
	volfstest.RequireRoot(t, "mounts volumes for real")
	root := t.TempDir()
	d := kernelDriver(t, root)
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "src"}))
	ctx := context.Background()
	view, err := d.OpenView(ctx, "src", false)
	require.NoError(t, err)
	_ = view // never closed: the crash

	b := d.cfg.Backends["local"]
	v := d.newVolume("half", "local", map[string]string{OptFrom: "src"})
	require.NoError(t, d.makeVolumeDir(ctx, v))
	require.NoError(t, d.writeRecord(v, creatingFile))
	require.NoError(t, b.Create(ctx, v))
	require.NoError(t, d.mount(ctx, b, v))
	require.NoError(t, os.WriteFile(filepath.Join(v.Mountpoint, "part"), []byte("half a copy"), 0o600))
	require.NotNil(t, volfstest.MountOf(t, v.Mountpoint))

	require.NoError(t, d.store.Close())
	d = kernelDriver(t, root)
	_, err = d.Get(&volume.GetRequest{Name: "half"})
	assert.ErrorIs(t, err, ErrNotFound, "a Create whose copy was cut short is undone")
	assert.Nil(t, volfstest.MountOf(t, v.Mountpoint), "its mount is gone")
	d.WaitPurged()
	assert.NoDirExists(t, v.Dir)
	src, err := d.get("src")
	require.NoError(t, err)
	assert.Empty(t, src.Leases, "the view's lease is dropped")
	assert.False(t, src.Mounted, "and the source unmounted")
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "half", Options: map[string]string{OptFrom: "src"}}), "the name can be used again")
	require.NoError(t, d.Remove(&volume.RemoveRequest{Name: "src"}), "nothing holds the source")
}

// TestFill: fill mounts a volume under a view lease, lets fn write, and
// unmounts it; a failing fn is answered and leaves no lease.
func TestFill(t *testing.T) {
	volfstest.RequireRoot(t, "mounts volumes for real")
	d := kernelDriver(t, t.TempDir())
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "filled"}))
	require.NoError(t, d.fill(context.Background(), "filled", func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600)
	}))
	v, err := d.get("filled")
	require.NoError(t, err)
	assert.False(t, v.Mounted)
	assert.Empty(t, v.Leases)
	assert.FileExists(t, filepath.Join(v.Dir, "data", "f"))
	err = d.fill(context.Background(), "filled", func(string) error { return os.ErrPermission })
	assert.ErrorIs(t, err, os.ErrPermission)
	v, err = d.get("filled")
	require.NoError(t, err)
	assert.Empty(t, v.Leases)
}
