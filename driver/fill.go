package driver

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"
)

// FillLeasePrefix starts the id of the internal lease fill holds while it
// fills a volume (a restore, or a clone with from=).
const FillLeasePrefix = "holdfast-fill-"

// fill mounts the freshly created volume name under an internal lease,
// calls fn with its mountpoint, syncs the filesystem (syncfs) and releases
// the lease, unmounting the volume unless a container mounted it
// meanwhile. The lease keeps the volume from being removed while fn runs; a
// crash in fn leaves it in the state, and start-up then removes the
// half-filled volume (see undoFill).
func (d *Driver) fill(ctx context.Context, name string, fn func(dir string) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	id := FillLeasePrefix + rand.Text()[:12]
	res, err := d.Mount(&volume.MountRequest{Name: name, ID: id})
	if err != nil {
		return err
	}
	defer func() {
		uerr := d.Unmount(&volume.UnmountRequest{Name: name, ID: id})
		if err == nil && uerr != nil {
			err = fmt.Errorf("filled %s, but: %w", name, uerr)
		}
	}()
	if err := fn(res.Mountpoint); err != nil {
		return err
	}
	return syncFS(res.Mountpoint)
}

// syncFS makes what was written to the filesystem holding dir durable.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s to sync it: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}
