package driver

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/volfs"
)

// Tmpfs is the "tmpfs" backend: a tmpfs of exactly the size option,
// mounted at the first Mount and unmounted, with its data, at the last
// Unmount.
type Tmpfs struct {
	Mounter volfs.Mounter
	// DefaultSize is the size of volumes created without one, in Docker's
	// size syntax.
	DefaultSize string
}

// tmpfsMode is the mode of a tmpfs root unless set, as tmpfs itself does.
const tmpfsMode = 0o1777

// Parse accepts holdfast's typed options (size, uid, gid, mode,
// nr_inodes, noexec, ro) and Docker's local driver form of the same
// volume: device=tmpfs and o=size=…,uid=…,gid=…,mode=…,nr_inodes=… with the
// mount flags noexec, exec, ro, rw, nosuid and nodev. Both spellings give
// the same canonical options; an option given twice with different values
// is refused, naming both. A size left out is LeftToDefault: DefaultSize is
// a setting that may change, and a Create repeated without size must match
// the volume made under an earlier default.
func (t *Tmpfs) Parse(raw map[string]string) (map[string]string, error) {
	size := Option{Name: "size", Form: "a size such as 512k, 100m or 1g", Canon: CanonOrDefault(canonTmpfsSize)}
	p := newFormParser("tmpfs", []Option{size, OptUID, OptGID, OptMode, OptNrInodes, OptNoexec, OptRO})
	rest := maps.Clone(raw)
	o := rest["o"]
	delete(rest, "o")
	if dev, ok := rest["device"]; ok {
		delete(rest, "device")
		if dev != "tmpfs" && dev != "none" {
			return nil, fmt.Errorf("%w device=%q for type=tmpfs: a tmpfs has no device; write device=tmpfs (Docker's local driver takes it as the mount's source name) or leave it out", ErrInvalidOption, dev)
		}
	}
	if err := p.top(rest); err != nil {
		return nil, err
	}
	for _, w := range splitO(o) {
		where := "o=" + w.String()
		var err error
		switch {
		case w.key == "encryption":
			return nil, fmt.Errorf("%w o for type=tmpfs: %s", ErrInvalidOption, encryptionHint)
		case Sensitive(w.key):
			return nil, fmt.Errorf("%w o for type=tmpfs: %s is not a tmpfs option, and every Docker user can read a volume's options with docker volume inspect", ErrInvalidOption, w.key)
		case w.hasValue && slices.Contains([]string{"size", "uid", "gid", "mode", "nr_inodes"}, w.key):
			err = p.set(w.key, w.value, where)
		case w.hasValue:
			p.unknownWord(w)
		case w.key == "noexec" || w.key == "exec":
			err = p.set("noexec", strconv.FormatBool(w.key == "noexec"), where)
		case w.key == "ro" || w.key == "rw":
			err = p.set("ro", strconv.FormatBool(w.key == "ro"), where)
		case w.key == "nosuid" || w.key == "nodev" || w.key == "defaults":
			// Always so: holdfast mounts every tmpfs nosuid,nodev.
		case w.key == "suid" || w.key == "dev":
			return nil, fmt.Errorf("%w o for type=tmpfs: %s: holdfast always mounts tmpfs volumes nosuid,nodev, so that no container can leave a setuid program or a device node for another", ErrInvalidOption, w.key)
		default:
			p.unknownWord(w)
		}
		if err != nil {
			return nil, err
		}
	}
	out, err := p.finish("size, uid, gid, mode, nr_inodes, noexec, exec, ro, rw, nosuid, nodev")
	if err != nil {
		return nil, err
	}
	if _, ok := out["size"]; !ok {
		out["size"] = LeftToDefault
	}
	return out, nil
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
	size := volfs.Size(v.Options)
	if size <= 0 {
		// size=0 would be a tmpfs without limit.
		return fmt.Errorf("volume %s has no valid size (%q) in its record; remove it and create it again", v.Name, v.Options["size"])
	}
	data, flags := tmpfsMountArgs(size, v.Options)
	return t.Mounter.Mount("holdfast-"+v.Name, v.Mountpoint, "tmpfs", flags, data)
}

// tmpfsMountArgs returns the mount data and flags of a tmpfs of size bytes
// with the volume's options: always nosuid and nodev, noexec and read-only
// when asked.
func tmpfsMountArgs(size int64, opts map[string]string) (string, uintptr) {
	data := fmt.Sprintf("size=%d,mode=%04o", size, ModeOf(opts, tmpfsMode))
	for _, k := range []string{"uid", "gid", "nr_inodes"} {
		if n, ok := opts[k]; ok {
			data += "," + k + "=" + n
		}
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if opts["noexec"] == "true" {
		flags |= unix.MS_NOEXEC
	}
	if opts["ro"] == "true" {
		flags |= unix.MS_RDONLY
	}
	return data, flags
}

// Unmount unmounts the tmpfs; its data is gone.
func (t *Tmpfs) Unmount(_ context.Context, v *Volume) error {
	return volfs.UnmountPath(t.Mounter, v.Mountpoint)
}

// Remove has nothing to do: a tmpfs keeps nothing while unmounted.
func (t *Tmpfs) Remove(context.Context, *Volume) error { return nil }

// Status reports the size and, while mounted, the usage.
func (t *Tmpfs) Status(v *Volume) map[string]any {
	st := map[string]any{"size": volfs.Size(v.Options)}
	if v.Mounted {
		maps.Copy(st, volfs.Usage(v.Mountpoint))
	}
	return st
}

// Meter reports the size and what the tmpfs holds: nothing while unmounted.
func (t *Tmpfs) Meter(v *Volume) Measure {
	m := Measure{Size: volfs.Size(v.Options), UsedKnown: true}
	if v.Mounted {
		used, ok := volfs.Usage(v.Mountpoint)["used"].(uint64)
		m.Used, m.UsedKnown = int64(used), ok
	}
	return m
}
