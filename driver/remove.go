package driver

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

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

// trashDir holds the directories of removed volumes until they are deleted.
func (d *Driver) trashDir() string { return filepath.Join(d.cfg.Root, "trash") }

// trash moves dir, already checked by checkRemovable, into the trash and
// deletes it in the background: a volume of a million files would
// otherwise outlast dockerd's one-minute deadline for Remove. Close waits
// for the deletions; start-up finishes those a crash cut short.
func (d *Driver) trash(dir string) error {
	dst := filepath.Join(d.trashDir(), filepath.Base(dir)+"."+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Rename(dir, dst); err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("move %s to the trash: %w", dir, err)
	}
	d.deleting.Add(1)
	go func() {
		defer d.deleting.Done()
		d.deleteTrashed(dst)
	}()
	return nil
}

// emptyTrash deletes what the trash holds: removals a crash cut short.
func (d *Driver) emptyTrash() {
	ents, err := os.ReadDir(d.trashDir())
	if err != nil {
		d.cfg.Log.WithError(err).Error("cannot read the trash")
	}
	for _, ent := range ents {
		d.deleteTrashed(filepath.Join(d.trashDir(), ent.Name()))
	}
}

// deleteTrashed deletes one entry of the trash unless something is
// mounted in it.
func (d *Driver) deleteTrashed(path string) {
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
