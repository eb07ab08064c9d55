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

// Parse accepts size, uid, gid and mode. A size left out is LeftToDefault:
// DefaultSize is a setting that may change, and a Create repeated without
// size must match the volume made under an earlier default.
func (t *Tmpfs) Parse(raw map[string]string) (map[string]string, error) {
	size := Option{Name: "size", Form: "a size such as 512k, 100m or 1g", Default: LeftToDefault, Canon: CanonOrDefault(CanonSize)}
	return ParseOptions("tmpfs", raw, []Option{size, OptUID, OptGID, OptMode})
}

// Create decides the size of a volume created without one: DefaultSize,
// once and for good. The record keeps the size in force in its "size"
// option, whether given or defaulted, so a size written out is compared
// with it (a Create with size=64m matches a volume that got the default
// 64m), records made before sizes were deferred have the same form, and a
// restart with another DefaultSize changes no existing volume. Nothing
// else to prepare: the tmpfs exists only while mounted.
func (t *Tmpfs) Create(_ context.Context, v *Volume) error {
	if v.Options["size"] != LeftToDefault {
		return nil
	}
	n, err := CanonSize(t.DefaultSize)
	if err != nil {
		return fmt.Errorf("default tmpfs size %q (--tmpfs-size): %w", t.DefaultSize, err)
	}
	v.Options["size"] = n
	return nil
}

// Mount mounts a new tmpfs of the volume's size, owner and mode. It
// refuses while containers may still use an earlier tmpfs of the volume
// that holdfast lost: a new one would be empty and diverge from it.
func (t *Tmpfs) Mount(_ context.Context, v *Volume) error {
	if n := len(v.Leases); n > 0 {
		return fmt.Errorf("volume %s is still used by %d containers started before holdfast restarted, and its tmpfs lives on only inside them; stop those containers, then start this one again", v.Name, n)
	}
	size := Size(v.Options)
	if size <= 0 {
		// size=0 would be a tmpfs without limit.
		return fmt.Errorf("volume %s has no valid size (%q) in its record; remove it and create it again", v.Name, v.Options["size"])
	}
	data := fmt.Sprintf("size=%d,mode=%04o", size, ModeOf(v.Options, tmpfsMode))
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
