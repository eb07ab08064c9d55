package driver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
)

// Remove deletes a volume that has no leases, and its data. Once its
// remove intent is durable the volume is never served again: a step that
// fails after it makes the answer an error, and the removal is completed
// by the next Remove of the name, a Create of it, or the next start.
func (d *Driver) Remove(req *volume.RemoveRequest) error {
	e, v, err := d.lockAny(req.Name)
	if err != nil {
		return err
	}
	defer e.op.Unlock()
	if v.Phase == PhaseRemoving {
		if err := d.resumeRemove(v); err != nil {
			return fmt.Errorf("remove %s: %w", v.Name, err)
		}
		d.drop(v.Name, e)
		return nil
	}
	if len(v.Leases) > 0 && !inUse(v) {
		return errorf(ErrInUse, "volume %s is being read by holdfast (a backup, or a Create with from=%s); remove it when that ends", v.Name, v.Name)
	}
	if n := len(v.Leases); n > 0 {
		return errorf(ErrInUse, "volume %s is in use by %d mounts; stop the containers using it first", v.Name, n)
	}
	b, err := d.backend(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), shortOpTimeout)
	defer cancel()
	if v.Mounted {
		err := d.unmount(ctx, b, v)
		d.setRecord(e, v.clone())
		if err != nil {
			return fmt.Errorf("remove %s: %w", v.Name, err)
		}
	}
	if err := d.releaseForRemove(ctx, b, v); err != nil {
		return fmt.Errorf("remove %s: %w", v.Name, err)
	}
	if err := d.markRemoving(v); err != nil {
		return fmt.Errorf("remove %s: %w", v.Name, err)
	}
	v.Phase = PhaseRemoving
	d.setRecord(e, v.clone())
	// releaseForRemove checked the directory under the op lock a moment ago:
	// the mount table is not read again before the move to the trash, and
	// purge reads it before deleting anything.
	if err := d.removeVolume(ctx, b, v, true); err != nil {
		return fmt.Errorf("remove %s: %w; the removal has begun and cannot be undone: run docker volume rm %s again to complete it (holdfast also completes it at its next start)", v.Name, err, v.Name)
	}
	d.drop(v.Name, e)
	return nil
}

// releaseForRemove recovers an unmounted volume (its backend releases
// devices, keys, a mount a crash left below its directory) and checks that
// the directory can be removed. Nothing is destroyed yet.
func (d *Driver) releaseForRemove(ctx context.Context, b Backend, v *Volume) error {
	if r, ok := b.(Recoverer); ok {
		if err := r.Recover(ctx, v); err != nil {
			return err
		}
	}
	return d.checkRemovable(v.Dir)
}

// resumeRemove completes the removal of v, whose remove intent is durable
// but whose removal failed before.
func (d *Driver) resumeRemove(v *Volume) error {
	ctx, cancel := context.WithTimeout(context.Background(), shortOpTimeout)
	defer cancel()
	return d.removeVolume(ctx, d.cfg.Backends[v.Type], v, false)
}

// removeVolume removes v, whose remove intent is durable: the backend's
// storage (a generated key is destroyed), the record, then the directory.
// Each step is done again harmlessly when it was done before. checked
// says the caller has just checked v's directory (checkRemovable).
func (d *Driver) removeVolume(ctx context.Context, b Backend, v *Volume, checked bool) error {
	if b != nil {
		if err := b.Remove(ctx, v); err != nil {
			return err
		}
	}
	if err := d.store.Delete(v.Name); err != nil {
		return err
	}
	if checked {
		if err := d.trash(v.Dir); err != nil {
			return err
		}
		d.removeMountpoint(v)
		return nil
	}
	return d.removeStorage(ctx, nil, v)
}

// removeStorage removes what exists of v's storage, trashes its directory (in one rename, intent included) and removes its mountpoint; the
// caller deletes the record, if there is one.
func (d *Driver) removeStorage(ctx context.Context, b Backend, v *Volume) error {
	if b != nil {
		if err := b.Remove(ctx, v); err != nil {
			return err
		}
	}
	if err := d.checkRemovable(v.Dir); err != nil {
		return err
	}
	if err := d.trash(v.Dir); err != nil {
		return err
	}
	d.removeMountpoint(v)
	return nil
}

// removeMountpoint removes v's mountpoint directory if it is there and
// empty: a crash between making and removing it may leave it.
func (d *Driver) removeMountpoint(v *Volume) {
	if err := os.Remove(v.Mountpoint); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.cfg.Log.WithError(err).WithField("volume", v.Name).Warn("mountpoint left behind")
	}
}

// checkRemovable checks that dir is a real directory directly under
// Root/volumes (not a symlink out of it), or missing, and that nothing is
// mounted at or below it.
func (d *Driver) checkRemovable(dir string) error {
	parent := filepath.Join(d.cfg.Root, "volumes")
	if filepath.Dir(dir) != parent || filepath.Base(dir) == ".." {
		return fmt.Errorf("refusing to remove %s: not a volume directory under %s", dir, parent)
	}
	fi, err := os.Lstat(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("refusing to remove %s: it is not a directory (a symlink?); inspect it by hand", dir)
	}
	mounts, err := d.cfg.Mounter.Mountpoints(dir)
	if err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	if len(mounts) > 0 {
		return fmt.Errorf("refusing to remove %s: %s mounted there; unmount first",
			dir, strings.Join(slices.Sorted(maps.Keys(mounts)), ", "))
	}
	return nil
}

// trashDir holds the directories of removed volumes until they are purged.
func (d *Driver) trashDir() string { return filepath.Join(d.cfg.Root, "trash") }

// trash moves dir, already checked by checkRemovable, into the trash and
// deletes it in the background: a volume of a million files would
// otherwise outlast dockerd's one-minute deadline for Remove. Close waits
// for the purge; start-up purges what a crash left in the trash. Entries
// are named by time and count, never by the volume's name, which may
// already be as long as a file name can be.
func (d *Driver) trash(dir string) error {
	name := strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatUint(d.trashed.Add(1), 36)
	dst := filepath.Join(d.trashDir(), name)
	if err := d.renameAs("move to the trash", dir, dst); err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("move %s to the trash: %w", dir, err)
	}
	d.purging.Add(1)
	go func() {
		defer d.purging.Done()
		d.purge(dst)
	}()
	return nil
}

// trashEntries lists what the trash holds.
func (d *Driver) trashEntries() []string {
	ents, err := os.ReadDir(d.trashDir())
	if err != nil {
		d.cfg.Log.WithError(err).Error("cannot read the trash")
	}
	paths := make([]string, len(ents))
	for i, ent := range ents {
		paths[i] = filepath.Join(d.trashDir(), ent.Name())
	}
	return paths
}

// WaitPurged waits until the trash entries handed to the background so
// far are purged (or left, with a log line, because
// something is mounted in them).
func (d *Driver) WaitPurged() { d.purging.Wait() }

// purge deletes one entry of the trash unless something is mounted in it.
func (d *Driver) purge(path string) {
	log := d.cfg.Log.WithField("path", path)
	mounts, err := d.cfg.Mounter.Mountpoints(path)
	if err == nil && len(mounts) > 0 {
		err = fmt.Errorf("refusing to delete: %s mounted there; unmount, then restart holdfast or delete it by hand",
			strings.Join(slices.Sorted(maps.Keys(mounts)), ", "))
	}
	if err == nil {
		err = os.RemoveAll(path)
	}
	if err != nil {
		log.WithError(err).Error("a removed volume's directory is left in the trash")
	}
}
