package driver

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/docker/go-plugins-helpers/volume"
	"golang.org/x/sys/unix"
)

// fill mounts the volume name, freshly created, under an internal lease,
// calls fn with its mountpoint, makes what fn wrote durable (syncfs) and
// unmounts it. (A minimal version: wt-admin's replaces it.)
func (d *Driver) fill(ctx context.Context, name string, fn func(dir string) error) error {
	id := ViewLeasePrefix + strconv.FormatUint(d.views.Add(1), 10)
	res, err := d.Mount(&volume.MountRequest{Name: name, ID: id})
	if err != nil {
		return err
	}
	err = fn(res.Mountpoint)
	if err == nil {
		err = syncFS(res.Mountpoint)
	}
	return errors.Join(err, d.Unmount(&volume.UnmountRequest{Name: name, ID: id}))
}

// syncFS makes everything written to the filesystem holding dir durable.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
