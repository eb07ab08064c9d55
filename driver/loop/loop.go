// Package loop is holdfast's "loop" volume type: a plain (unencrypted)
// ext4 or xfs filesystem of a fixed size in an image file under --root,
// allocated in full at Create and attached to a loop device while in use.
package loop

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/loopdev"
	"github.com/holdfast/holdfast/internal/volfs"
)

// Minimum sizes: ext4's journal and metadata need a few MiB, and
// mkfs.xfs refuses filesystems under 300 MiB.
const (
	minSize    = 16 << 20
	minSizeXFS = 300 << 20
)

// rootMode is the mode of the volume's root unless mode is given.
const rootMode = 0o755

// Backend is the "loop" backend.
type Backend struct {
	Mounter volfs.Mounter
	// Faults fails steps on purpose, for tests; nil in production.
	Faults *failpoint.Set
}

// New returns the loop backend on mounter.
func New(mounter volfs.Mounter) *Backend {
	return &Backend{Mounter: mounter}
}

// step names a fallible step, which tests may fail on purpose.
func (b *Backend) step(name string) error { return b.Faults.Check(name) }

var options = []driver.Option{
	{Name: "size", Form: "a size of at least 16m (300m with fs=xfs) such as 512m or 10g", Required: true, Canon: driver.CanonSize},
	{Name: "fs", Form: "ext4 or xfs", Default: loopdev.FSExt4, Canon: driver.CanonEnum(loopdev.FSExt4, loopdev.FSXFS)},
	driver.OptUID, driver.OptGID, driver.OptMode,
}

// Parse checks the options: size is required and must hold the
// filesystem.
func (b *Backend) Parse(raw map[string]string) (map[string]string, error) {
	opts, err := driver.ParseOptions("loop", raw, options)
	if err != nil {
		return nil, err
	}
	size := volfs.Size(opts)
	switch {
	case opts["fs"] == loopdev.FSXFS && size < minSizeXFS:
		return nil, fmt.Errorf("%w size=%q: an xfs filesystem needs at least 300m (mkfs.xfs refuses smaller ones); give size=300m or more, or use fs=ext4", driver.ErrInvalidOption, raw["size"])
	case size < minSize:
		return nil, fmt.Errorf("%w size=%q: a loop volume needs at least 16m", driver.ErrInvalidOption, raw["size"])
	}
	return opts, nil
}

// The image, the staging directory of its filesystem and the volume's
// root inside it, laid out as loopdev says.
func backingFile(v *driver.Volume) string { return loopdev.ImageFile(v.Dir) }
func stagingDir(v *driver.Volume) string  { return loopdev.StagingDir(v.Dir) }
func dataDir(v *driver.Volume) string     { return loopdev.RootDir(v.Dir) }

// Create makes the image with all its space allocated, the filesystem and
// the volume's root directory in it, and syncs the image. On error it
// leaves nothing behind; the driver deletes the volume's directory.
func (b *Backend) Create(ctx context.Context, v *driver.Volume) (err error) {
	defer func() {
		if err != nil {
			b.teardown(v)
		}
	}()
	err = b.step("allocate backing file")
	if err == nil {
		err = loopdev.AllocateImage(backingFile(v), volfs.Size(v.Options))
	}
	if err != nil {
		return volfs.RootFull(err, v.Dir)
	}
	if err := b.format(ctx, v); err != nil {
		return err
	}
	// The filesystem went through the loop device into the page cache:
	// durable before the driver commits the record.
	err = b.step("sync backing file")
	if err == nil {
		err = volfs.SyncPath(backingFile(v))
	}
	if err != nil {
		return fmt.Errorf("sync backing file: %w", err)
	}
	return nil
}

// format attaches the image, makes the filesystem and its root directory,
// and takes everything down again.
func (b *Backend) format(ctx context.Context, v *driver.Volume) error {
	dev, err := b.attach(v)
	if err != nil {
		return err
	}
	defer dev.Close()
	err = b.step("mkfs")
	if err == nil {
		err = loopdev.Mkfs(ctx, dev.Path, v.Options["fs"])
	}
	if err != nil {
		return err
	}
	if err := b.mountFS(dev.Path, v); err != nil {
		return err
	}
	err = b.step("mkdir volume root")
	if err == nil {
		err = os.Mkdir(dataDir(v), rootMode)
	}
	if err != nil {
		return fmt.Errorf("create volume root: %w", err)
	}
	err = b.step("set owner")
	if err == nil {
		err = volfs.ApplyOwner(dataDir(v), driver.OwnerOf(v.Options, rootMode))
	}
	if err != nil {
		return err
	}
	return b.teardown(v)
}

// attach returns the loop device already attached to the image (the
// filesystem on it may still be in use, detached lazily), or attaches
// one: mounting the same device again shares that filesystem, where a
// second device would mount the same image twice.
func (b *Backend) attach(v *driver.Volume) (*loopdev.Device, error) {
	if err := b.step("attach loop device"); err != nil {
		return nil, err
	}
	dev, err := loopdev.Acquire(backingFile(v))
	if err != nil {
		return nil, fmt.Errorf("attach the image of volume %s: %w", v.Name, err)
	}
	return dev, nil
}

// mountFS mounts the filesystem on dev at the staging directory.
func (b *Backend) mountFS(dev string, v *driver.Volume) error {
	return loopdev.MountStaging(b.Mounter, b.Faults, dev, v.Options["fs"], v.Dir)
}

// Mount attaches the image, mounts its filesystem and bind-mounts the
// volume's root at the mountpoint. On error everything it set up is taken
// down again. A volume without leases is first released of what an
// earlier Unmount that failed left, so its filesystem is never mounted
// twice over.
func (b *Backend) Mount(_ context.Context, v *driver.Volume) (err error) {
	if len(v.Leases) == 0 {
		if err := b.teardown(v); err != nil {
			return err
		}
	}
	if _, err := os.Stat(backingFile(v)); err != nil {
		return fmt.Errorf("the image of volume %s is missing (%w); restore it or remove the volume", v.Name, err)
	}
	defer func() {
		if err != nil {
			b.undoMount(v)
		}
	}()
	dev, err := b.attach(v)
	if err != nil {
		return err
	}
	defer dev.Close() // the mount holds the device now
	if err := b.mountFS(dev.Path, v); err != nil {
		return err
	}
	return b.Mounter.Mount(dataDir(v), v.Mountpoint, "", unix.MS_BIND, "")
}

// undoMount takes down what a failed Mount set up. While containers from
// before a restart may share the filesystem, it only drops holdfast's own
// mount of it: the device is theirs too.
func (b *Backend) undoMount(v *driver.Volume) {
	if len(v.Leases) == 0 {
		b.teardown(v)
		return
	}
	volfs.UnmountPath(b.Mounter, stagingDir(v))
}

// Unmount removes the bind mount, unmounts the filesystem and detaches
// the loop device. A volume still busy (a process has its working
// directory or a file open in it) is detached lazily: no new process can
// reach it, and the kernel releases the filesystem and then the loop
// device (autoclear) when the last of those processes lets go.
func (b *Backend) Unmount(_ context.Context, v *driver.Volume) error {
	if err := volfs.UnmountPath(b.Mounter, v.Mountpoint); err != nil {
		return err
	}
	return b.teardown(v)
}

// Recover releases what a crash left of an unmounted volume: a mounted
// filesystem, a loop device.
func (b *Backend) Recover(_ context.Context, v *driver.Volume) error { return b.teardown(v) }

// Remove takes down anything left; the driver then deletes the volume's
// directory with the image.
func (b *Backend) Remove(_ context.Context, v *driver.Volume) error { return b.teardown(v) }

// teardown unmounts the filesystem and detaches the loop device, whichever
// of them exist.
func (b *Backend) teardown(v *driver.Volume) error {
	var errs []error
	mounted, err := loopdev.StagingMounted(b.Mounter, v.Dir)
	if err != nil {
		return err
	}
	if mounted {
		errs = append(errs, volfs.UnmountPath(b.Mounter, stagingDir(v)))
	}
	errs = append(errs, loopdev.DetachImage(b.Faults, v.Dir))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release volume %s: %w", v.Name, err)
	}
	return nil
}

// Status reports the filesystem, the size asked for and, while mounted,
// the usage of the volume's own filesystem.
func (b *Backend) Status(v *driver.Volume) map[string]any {
	st := map[string]any{
		"fs":   v.Options["fs"],
		"size": volfs.Size(v.Options),
	}
	if v.Mounted {
		maps.Copy(st, volfs.Usage(v.Mountpoint))
	}
	return st
}

// Meter reports the size and, while mounted, what the volume's own
// filesystem holds; unmounted, its usage is not read.
func (b *Backend) Meter(v *driver.Volume) driver.Measure {
	m := driver.Measure{Size: volfs.Size(v.Options)}
	if v.Mounted {
		used, ok := volfs.Usage(v.Mountpoint)["used"].(uint64)
		m.Used, m.UsedKnown = int64(used), ok
	}
	return m
}
