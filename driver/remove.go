package driver

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// removeDir deletes dir, a volume's private directory, once checkRemovable
// allows it. A missing dir is fine.
func (d *Driver) removeDir(dir string) error {
	if err := d.checkRemovable(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
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
