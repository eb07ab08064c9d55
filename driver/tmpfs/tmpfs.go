// Package tmpfs is holdfast's "tmpfs" volume type: a tmpfs of a fixed
// size, in RAM, mounted at the first Mount and gone, with its data, at the
// last Unmount.
package tmpfs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/volfs"
)

// Backend is the "tmpfs" backend: a tmpfs of exactly the size option,
// mounted at the first Mount and unmounted, with its data, at the last
// Unmount.
type Backend struct {
	Mounter volfs.Mounter
	// DefaultSize is the size of volumes created without one, in Docker's
	// size syntax.
	DefaultSize string
}

// New returns the tmpfs backend on mounter; volumes created without a
// size get defaultSize, in Docker's size syntax.
func New(mounter volfs.Mounter, defaultSize string) *Backend {
	return &Backend{Mounter: mounter, DefaultSize: defaultSize}
}

// rootMode is the mode of a tmpfs root unless set, as tmpfs itself does.
const rootMode = 0o1777

// Parse accepts holdfast's typed options (size, uid, gid, mode,
// nr_inodes, noexec, ro) and Docker's local driver form of the same
// volume: device=tmpfs and o=size=…,uid=…,gid=…,mode=…,nr_inodes=… with the
// mount flags noexec, exec, ro, rw, nosuid and nodev. Both spellings give
// the same canonical options; an option given twice with different values
// is refused, naming both. A size left out is LeftToDefault: DefaultSize is
// a setting that may change, and a Create repeated without size must match
// the volume made under an earlier default.
func (b *Backend) Parse(raw map[string]string) (map[string]string, error) {
	size := driver.Option{Name: "size", Form: "a size such as 512k, 100m or 1g", Canon: driver.CanonOrDefault(driver.CanonAbsSize)}
	p := driver.NewFormParser("tmpfs", []driver.Option{size, driver.OptUID, driver.OptGID, driver.OptMode, optNrInodes, driver.OptNoexec, driver.OptRO})
	rest := maps.Clone(raw)
	o := rest["o"]
	delete(rest, "o")
	if dev, ok := rest["device"]; ok {
		delete(rest, "device")
		if dev != "tmpfs" && dev != "none" {
			return nil, fmt.Errorf("%w device=%q for type=tmpfs: a tmpfs has no device; write device=tmpfs (Docker's local driver takes it as the mount's source name) or leave it out", driver.ErrInvalidOption, dev)
		}
	}
	if err := p.Top(rest); err != nil {
		return nil, err
	}
	for _, w := range driver.SplitO(o) {
		where := "o=" + w.String()
		var err error
		switch {
		case w.Key == "encryption":
			return nil, fmt.Errorf("%w o for type=tmpfs: %s", driver.ErrInvalidOption, driver.EncryptionHint)
		case driver.Sensitive(w.Key):
			return nil, fmt.Errorf("%w o for type=tmpfs: %s is not a tmpfs option, and every Docker user can read a volume's options with docker volume inspect", driver.ErrInvalidOption, w.Key)
		case w.HasValue && slices.Contains([]string{"size", "uid", "gid", "mode", "nr_inodes"}, w.Key):
			err = p.Set(w.Key, w.Value, where)
		case w.HasValue:
			p.Unknown(w)
		case w.Key == "noexec" || w.Key == "exec":
			err = p.Set("noexec", strconv.FormatBool(w.Key == "noexec"), where)
		case w.Key == "ro" || w.Key == "rw":
			err = p.Set("ro", strconv.FormatBool(w.Key == "ro"), where)
		case w.Key == "nosuid" || w.Key == "nodev" || w.Key == "defaults":
			// Always so: holdfast mounts every tmpfs nosuid,nodev.
		case w.Key == "suid" || w.Key == "dev":
			return nil, fmt.Errorf("%w o for type=tmpfs: %s: holdfast always mounts tmpfs volumes nosuid,nodev, so that no container can leave a setuid program or a device node for another", driver.ErrInvalidOption, w.Key)
		default:
			p.Unknown(w)
		}
		if err != nil {
			return nil, err
		}
	}
	out, err := p.Finish("size, uid, gid, mode, nr_inodes, noexec, exec, ro, rw, nosuid, nodev")
	if err != nil {
		return nil, err
	}
	if _, ok := out["size"]; !ok {
		out["size"] = driver.LeftToDefault
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
func (b *Backend) Create(_ context.Context, v *driver.Volume) error {
	if v.Options["size"] != driver.LeftToDefault {
		return nil
	}
	n, err := driver.CanonSize(b.DefaultSize)
	if err != nil {
		return fmt.Errorf("default tmpfs size %q (--tmpfs-size): %w", b.DefaultSize, err)
	}
	v.Options["size"] = n
	return nil
}

// Mount mounts a new tmpfs of the volume's size, owner and mode. It
// refuses while containers may still use an earlier tmpfs of the volume
// that holdfast lost: a new one would be empty and diverge from it.
func (b *Backend) Mount(_ context.Context, v *driver.Volume) error {
	if n := len(v.Leases); n > 0 {
		return fmt.Errorf("volume %s is still used by %d containers started before holdfast restarted, and its tmpfs lives on only inside them; stop those containers, then start this one again", v.Name, n)
	}
	size := volfs.Size(v.Options)
	if size <= 0 {
		// size=0 would be a tmpfs without limit.
		return fmt.Errorf("volume %s has no valid size (%q) in its record; remove it and create it again", v.Name, v.Options["size"])
	}
	data, flags := mountArgs(size, v.Options)
	return b.Mounter.Mount("holdfast-"+v.Name, v.Mountpoint, "tmpfs", flags, data)
}

// mountArgs returns the mount data and flags of a tmpfs of size bytes
// with the volume's options: always nosuid and nodev, noexec and read-only
// when asked.
func mountArgs(size int64, opts map[string]string) (string, uintptr) {
	data := fmt.Sprintf("size=%d,mode=%04o", size, driver.ModeOf(opts, rootMode))
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
func (b *Backend) Unmount(_ context.Context, v *driver.Volume) error {
	return volfs.UnmountPath(b.Mounter, v.Mountpoint)
}

// Remove has nothing to do: a tmpfs keeps nothing while unmounted.
func (b *Backend) Remove(context.Context, *driver.Volume) error { return nil }

// Status reports the size and, while mounted, the usage.
func (b *Backend) Status(v *driver.Volume) map[string]any {
	st := map[string]any{"size": volfs.Size(v.Options)}
	if v.Mounted {
		maps.Copy(st, volfs.Usage(v.Mountpoint))
	}
	return st
}

// Meter reports the size and what the tmpfs holds: nothing while unmounted.
func (b *Backend) Meter(v *driver.Volume) driver.Measure {
	m := driver.Measure{Size: volfs.Size(v.Options), UsedKnown: true}
	if v.Mounted {
		used, ok := volfs.Usage(v.Mountpoint)["used"].(uint64)
		m.Used, m.UsedKnown = int64(used), ok
	}
	return m
}

// optNrInodes is tmpfs's limit on the number of files.
var optNrInodes = driver.Option{Name: "nr_inodes", Form: "a number of inodes such as 10000 or 64k (0: no limit)", Canon: canonCount}

var countSyntax = regexp.MustCompile(`^([0-9]+)([kKmMgG]?)$`)

// canonCount accepts a count with the kernel's binary suffixes (k, m, g),
// as the tmpfs nr_inodes option does, and returns it as a number.
func canonCount(s string) (string, error) {
	m := countSyntax.FindStringSubmatch(s)
	if m == nil {
		if strings.HasSuffix(s, "%") {
			return "", errors.New("a percentage of RAM changes with the host; give a number")
		}
		return "", errors.New("not a number")
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	shift := uint(0)
	if m[2] != "" {
		shift = 10 * uint(strings.Index("kmg", strings.ToLower(m[2]))+1)
	}
	if err != nil || n > (1<<63-1)>>shift {
		return "", errors.New("too large")
	}
	return strconv.FormatUint(n<<shift, 10), nil
}
