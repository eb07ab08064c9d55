package driver

import (
	"context"
	"fmt"
	"maps"

	"golang.org/x/sys/unix"
)

// Tmpfs is the "tmpfs" backend: a tmpfs of exactly the size option,
// mounted at the first Mount and unmounted, with its data, at the last
// Unmount.
type Tmpfs struct {
	Mounter Mounter
	// DefaultSize is the size of volumes created without one, in Docker's
	// size syntax.
	DefaultSize string
}

// tmpfsMode is the mode of a tmpfs root unless set, as tmpfs itself does.
const tmpfsMode = 0o1777

// Parse accepts size, uid, gid and mode.
func (t *Tmpfs) Parse(raw map[string]string) (map[string]string, error) {
	size := Option{Name: "size", Form: "a size such as 512k, 100m or 1g", Default: t.DefaultSize, Canon: CanonSize}
	return ParseOptions("tmpfs", raw, []Option{size, OptUID, OptGID, OptMode})
}

// Create has nothing to prepare: the tmpfs exists only while mounted.
func (t *Tmpfs) Create(context.Context, *Volume) error { return nil }

// Mount mounts a new tmpfs of the volume's size, owner and mode. It
// refuses while containers may still use an earlier tmpfs of the volume
// that holdfast lost: a new one would be empty and diverge from it.
func (t *Tmpfs) Mount(_ context.Context, v *Volume) error {
	if n := len(v.Leases); n > 0 {
		return fmt.Errorf("volume %s is still used by %d containers started before holdfast restarted, and its tmpfs lives on only inside them; stop those containers, then start this one again", v.Name, n)
	}
	data := fmt.Sprintf("size=%d,mode=%04o", Size(v.Options), ModeOf(v.Options, tmpfsMode))
	for _, k := range []string{"uid", "gid"} {
		if id, ok := v.Options[k]; ok {
			data += "," + k + "=" + id
		}
	}
	return t.Mounter.Mount("holdfast-"+v.Name, v.Mountpoint, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, data)
}

// Unmount unmounts the tmpfs; its data is gone.
func (t *Tmpfs) Unmount(_ context.Context, v *Volume) error {
	return UnmountPath(t.Mounter, v.Mountpoint)
}

// Remove has nothing to do: a tmpfs keeps nothing while unmounted.
func (t *Tmpfs) Remove(context.Context, *Volume) error { return nil }

// Status reports the size and, while mounted, the usage.
func (t *Tmpfs) Status(v *Volume) map[string]any {
	st := map[string]any{"size": Size(v.Options)}
	if v.Mounted {
		maps.Copy(st, Usage(v.Mountpoint))
	}
	return st
}
