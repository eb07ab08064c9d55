package driver

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/volfs/volfstest"
)

// Single failures found on the real kernel, each of which once lost data
// or kept it from being removed.

// TestRemoveOnFullRoot removes the volume whose data filled --root: the
// one action that frees space must not need any.
func TestRemoveOnFullRoot(t *testing.T) {
	s := newSmallTmpfs(t, 16<<20, 0)
	d := kernelDriver(t, filepath.Join(s.dir, "root"))
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "hog"}))
	res, err := d.Mount(&volume.MountRequest{Name: "hog", ID: "a"})
	require.NoError(t, err)
	werr := writeFile(filepath.Join(res.Mountpoint, "fill"), 32<<20)
	require.True(t, errors.Is(werr, syscall.ENOSPC), "want ENOSPC filling --root from inside the volume, got %v", werr)
	// The last pages, one at a time.
	f, err := os.Create(filepath.Join(res.Mountpoint, "last"))
	require.NoError(t, err)
	for werr = nil; werr == nil; _, werr = f.Write(make([]byte, 4096)) {
	}
	f.Close()
	require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: "hog", ID: "a"}))
	require.Zero(t, s.free(), "--root is full")

	require.NoError(t, d.Remove(&volume.RemoveRequest{Name: "hog"}), "Remove on a full --root")
	_, err = d.Get(&volume.GetRequest{Name: "hog"})
	assert.ErrorIs(t, err, ErrNotFound)
	d.purging.Wait()
	assert.Greater(t, s.free(), int64(8<<20), "the space is free again")
	lifecycle(t, d, "hog", nil)
}

// TestLongestNames uses a 255-byte name, the most a file name may have,
// for every type on this host: its trash entry once had a suffix that did
// not fit, so Remove answered success and left the data and the name.
func TestLongestNames(t *testing.T) {
	volfstest.RequireRoot(t, "mounts tmpfs and bind mounts for real")
	for _, typ := range []string{"local", "tmpfs"} {
		t.Run(typ, func(t *testing.T) {
			d := kernelDriver(t, t.TempDir())
			name := "v" + strings.Repeat("x", 254)
			require.NoError(t, ValidateName(name))
			for range 2 { // the name can be used again
				lifecycle(t, d, name, map[string]string{"type": typ})
				d.purging.Wait()
				assert.Empty(t, entries(t, d.trashDir()), "the trash is empty")
				_, err := d.Get(&volume.GetRequest{Name: name})
				assert.ErrorIs(t, err, ErrNotFound)
			}
		})
	}
}

// TestStartCannotCompleteARemove restarts after a crash during a Remove,
// with the removal unable to complete (something is mounted inside the
// volume's directory). The volume was once served again, mounted and
// written, and the removal completed at the following start deleted what
// had been written since. Now it stays out of service until the removal
// completes.
func TestStartCannotCompleteARemove(t *testing.T) {
	volfstest.RequireRoot(t, "mounts tmpfs and bind mounts for real")
	root := t.TempDir()
	d := kernelDriver(t, root)
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "half"}))
	v, err := d.get("half")
	require.NoError(t, err)
	require.NoError(t, writeIntent(d, v, intentRemove), "a crash after the remove intent")
	blocker := filepath.Join(v.Dir, "data", "blocker")
	require.NoError(t, os.Mkdir(blocker, 0o700))
	require.NoError(t, unix.Mount("blocker", blocker, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { unix.Unmount(blocker, unix.MNT_DETACH) })

	require.NoError(t, d.Close())
	d = kernelDriver(t, root)
	_, err = d.Get(&volume.GetRequest{Name: "half"})
	assert.ErrorIs(t, err, ErrNotFound, "a removal that began is never undone")
	list, err := d.List()
	require.NoError(t, err)
	assert.Empty(t, list.Volumes)
	_, err = d.Mount(&volume.MountRequest{Name: "half", ID: "a"})
	require.Error(t, err, "a volume being removed is never mounted")
	assert.Contains(t, err.Error(), "docker volume rm half")
	err = d.Remove(&volume.RemoveRequest{Name: "half"})
	require.Error(t, err, "still blocked")
	assert.Contains(t, err.Error(), "mounted there")

	require.NoError(t, unix.Unmount(blocker, 0))
	require.NoError(t, d.Remove(&volume.RemoveRequest{Name: "half"}), "the removal completes once the cause is gone")
	assert.NoDirExists(t, v.Dir)
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "half"}))
}

// TestBusyLastUnmount holds a local and a tmpfs volume busy at the last
// Unmount (a process's working directory in it, or a file open there):
// the Unmount succeeds, the mount is detached lazily, and the next Mount
// answers a live mount, never the bare mountpoint.
func TestBusyLastUnmount(t *testing.T) {
	volfstest.RequireRoot(t, "mounts tmpfs and bind mounts for real")
	for _, typ := range []string{"local", "tmpfs"} {
		for _, hold := range []string{"cwd", "open file"} {
			t.Run(typ+"/"+hold, func(t *testing.T) {
				d := kernelDriver(t, t.TempDir())
				require.NoError(t, d.Create(&volume.CreateRequest{Name: "held", Options: map[string]string{"type": typ}}))
				res, err := d.Mount(&volume.MountRequest{Name: "held", ID: "a"})
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(res.Mountpoint, "before"), []byte("a"), 0o600))
				script := "echo ready; exec sleep 600"
				if hold == "open file" {
					script = "exec 3<before; " + script
				}
				sh := exec.Command("sh", "-c", script)
				sh.Dir = res.Mountpoint
				out, err := sh.StdoutPipe()
				require.NoError(t, err)
				require.NoError(t, sh.Start())
				t.Cleanup(func() { sh.Process.Kill(); sh.Wait() })
				_, err = out.Read(make([]byte, 6))
				require.NoError(t, err)

				require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: "held", ID: "a"}))
				assert.Nil(t, volfstest.MountOf(t, res.Mountpoint), "detached")
				get, err := d.Get(&volume.GetRequest{Name: "held"})
				require.NoError(t, err)
				assert.Equal(t, false, get.Volume.Status["mounted"])

				res, err = d.Mount(&volume.MountRequest{Name: "held", ID: "b"})
				require.NoError(t, err)
				require.NotNil(t, volfstest.MountOf(t, res.Mountpoint), "Mount answers a live mount")
				_, err = os.Stat(filepath.Join(res.Mountpoint, "before"))
				if typ == "local" {
					assert.NoError(t, err, "a local volume's data is the same")
				} else {
					assert.ErrorIs(t, err, os.ErrNotExist, "a tmpfs is new after its last Unmount")
				}
				require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: "held", ID: "b"}))
				sh.Process.Kill()
				sh.Wait()
				require.NoError(t, d.Remove(&volume.RemoveRequest{Name: "held"}))
			})
		}
	}
}
