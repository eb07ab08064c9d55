package volfs

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// UnmountPath unmounts target. A target that is not mounted is fine; a busy
// one is detached lazily, so the kernel frees it when its last user leaves.
func UnmountPath(m Mounter, target string) error {
	err := m.Unmount(target, 0)
	switch {
	case err == nil, errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.EBUSY):
		return m.Unmount(target, unix.MNT_DETACH)
	default:
		return err
	}
}

// Owner is the owner and mode a volume's root is given.
type Owner struct {
	// UID and GID are left as they are when negative.
	UID, GID int
	Mode     uint32
}

// ApplyOwner sets the owner and mode of dir.
func ApplyOwner(dir string, o Owner) error {
	if o.UID >= 0 || o.GID >= 0 {
		if err := os.Lchown(dir, o.UID, o.GID); err != nil {
			return fmt.Errorf("set owner of %s: %w", dir, err)
		}
	}
	// os.Chmod drops setuid/setgid/sticky bits; unix.Chmod keeps them.
	if err := unix.Chmod(dir, o.Mode); err != nil {
		return fmt.Errorf("set mode of %s: %w", dir, err)
	}
	return nil
}

// Usage returns the used and available bytes of the filesystem at path,
// for Status. Only for local filesystems: statfs on a remote one can block.
func Usage(path string) map[string]any {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return map[string]any{"usageError": err.Error()}
	}
	bs := uint64(st.Bsize)
	return map[string]any{
		"used":      (st.Blocks - st.Bfree) * bs,
		"available": st.Bavail * bs,
	}
}

// Size returns the size option in bytes, or 0 when unset.
func Size(opts map[string]string) int64 {
	n, _ := strconv.ParseInt(opts["size"], 10, 64)
	return n
}

// SyncPath makes the file or directory at path durable: its content, or
// for a directory its entries, with its owner and mode.
func SyncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
