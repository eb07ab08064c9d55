package loop

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/loopdev"
	"github.com/holdfast/holdfast/internal/snapshot"
	"github.com/holdfast/holdfast/internal/volfs"
)

// cloneLimit bounds the freeze around the image's reflink copy, which
// takes milliseconds: a copy that outlasts it is not point-in-time.
const cloneLimit = 30 * time.Second

// What a snapshot keeps in its directory.
func snapImage(dir string) string { return filepath.Join(dir, "image") }
func snapFS(dir string) string    { return filepath.Join(dir, "fs") }

// FreezeDir is where the volume's filesystem is mounted.
func (b *Backend) FreezeDir(v *driver.Volume) string { return stagingDir(v) }

// Snapshot freezes the volume's filesystem, clones its image by reflink
// into dir, thaws it (always, within cloneLimit), and mounts the clone
// read-only. Without reflinks on --root it wraps driver.ErrNoSnapshot.
func (b *Backend) Snapshot(ctx context.Context, v *driver.Volume, dir string) (string, error) {
	err := snapshot.CloneFrozen(stagingDir(v), backingFile(v), snapImage(dir), cloneLimit, func() error { return b.step("clone image") })
	if errors.Is(err, snapshot.ErrNoReflink) {
		return "", fmt.Errorf("%w: %v", driver.ErrNoSnapshot, err)
	}
	if err != nil {
		return "", err
	}
	if err := b.mountSnapshot(dir, v.Options["fs"]); err != nil {
		return "", errors.Join(err, b.ReleaseSnapshot(ctx, dir))
	}
	return filepath.Join(snapFS(dir), "data"), nil
}

// mountSnapshot attaches the clone to a loop device and mounts it.
func (b *Backend) mountSnapshot(dir, fs string) error {
	if err := b.step("attach snapshot"); err != nil {
		return err
	}
	dev, err := loopdev.Attach(snapImage(dir))
	if err != nil {
		return fmt.Errorf("attach the snapshot: %w", err)
	}
	defer dev.Close() // the mount holds it
	err = b.step("mount snapshot")
	if err == nil {
		err = mountReadOnly(b.Mounter, dev.Path, snapFS(dir), fs)
	}
	return err
}

// mountReadOnly mounts the filesystem fs on dev read-only at target, as
// a snapshot is mounted: without replaying a journal (the clone is of a
// frozen filesystem, and must stay as it is), nodev, nosuid, and for xfs
// with the source's UUID allowed twice.
func mountReadOnly(m volfs.Mounter, dev, target, fs string) error {
	if err := os.MkdirAll(target, 0o700); err != nil {
		return err
	}
	data := "noload"
	if fs == loopdev.FSXFS {
		data = "norecovery,nouuid"
	}
	return m.Mount(dev, target, fs, unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, data)
}

// ReleaseSnapshot unmounts and detaches a snapshot in dir and deletes its
// image; harmless where there is none.
func (b *Backend) ReleaseSnapshot(_ context.Context, dir string) error {
	if err := volfs.UnmountPath(b.Mounter, snapFS(dir)); err != nil {
		return err
	}
	if err := loopdev.Detach(snapImage(dir)); err != nil {
		return err
	}
	if err := os.Remove(snapImage(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
