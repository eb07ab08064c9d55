// Package bind is holdfast's "bind" volume type: an existing directory of
// the host, bind-mounted while containers use it, as Docker's local
// driver's type=none o=bind device=/path.
package bind

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

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/volfs"
)

// Backend is the "bind" backend: an existing directory of the host,
// bind-mounted at the mountpoint while containers use it. holdfast never
// creates, empties or deletes that directory, and changes its owner and
// mode only when uid, gid or mode are given.
type Backend struct {
	Mounter volfs.Mounter
	// Private are directories no bind volume may reach, by the flag that
	// sets them (--root, --mount-root, --key-dir): holdfast's state, other
	// volumes and keys. Paths with symlinks resolved.
	Private map[string]string
	// Allowed are the directories below which bind volumes may be
	// (--bind-paths); none: no bind volumes at all.
	Allowed []string
}

// New returns the bind backend on mounter: bind volumes may be below the
// directories allowed (none: no bind volumes) and never reach private,
// the directories of holdfast's own files by the flag that sets them.
func New(mounter volfs.Mounter, allowed []string, private map[string]string) *Backend {
	return &Backend{Mounter: mounter, Allowed: allowed, Private: private}
}

// Parse accepts device=/path (required) with uid, gid, mode, ro and rbind,
// and Docker's local driver form o=bind (or rbind, with ro or rw). The
// directory must exist, and is stored with symlinks resolved: the resolved
// path is checked against Private and is what later Mounts bind.
func (b *Backend) Parse(raw map[string]string) (map[string]string, error) {
	device := driver.Option{Name: "device", Form: "the absolute path of an existing host directory", Required: true, Canon: canonAbs}
	p := driver.NewFormParser(driver.TypeBind, []driver.Option{device, driver.OptUID, driver.OptGID, driver.OptMode, driver.OptRO, driver.BoolOption("rbind")})
	rest := maps.Clone(raw)
	o := rest["o"]
	delete(rest, "o")
	if _, ok := rest["device"]; !ok {
		return nil, fmt.Errorf("%w: type=%s requires option \"device\" (the absolute path of an existing host directory), as with Docker's local driver: type=none o=bind device=/srv/data", driver.ErrInvalidOption, driver.TypeBind)
	}
	if err := p.Top(rest); err != nil {
		return nil, err
	}
	for _, w := range driver.SplitO(o) {
		where := "o=" + w.String()
		var err error
		switch {
		case w.HasValue && slices.Contains([]string{"uid", "gid", "mode"}, w.Key):
			return nil, fmt.Errorf("%w o for type=%s: %s: a bind mount takes no %s (Docker's local driver passes it to the kernel, which ignores it); holdfast sets the directory's owner and mode with --opt %s=… at create", driver.ErrInvalidOption, driver.TypeBind, where, w.Key, w.Key)
		case w.Key == "encryption":
			return nil, fmt.Errorf("%w o for type=%s: %s", driver.ErrInvalidOption, driver.TypeBind, driver.EncryptionHint)
		case w.HasValue:
			p.Unknown(w)
		case w.Key == "bind" || w.Key == "defaults":
		case w.Key == "rbind":
			err = p.Set("rbind", "true", where)
		case w.Key == "ro" || w.Key == "rw":
			err = p.Set("ro", strconv.FormatBool(w.Key == "ro"), where)
		default:
			p.Unknown(w)
		}
		if err != nil {
			return nil, err
		}
	}
	out, err := p.Finish("bind, rbind, ro, rw")
	if err != nil {
		return nil, err
	}
	if out["device"], err = b.checkSource(out["device"]); err != nil {
		return nil, err
	}
	return out, nil
}

func canonAbs(s string) (string, error) {
	if !filepath.IsAbs(s) {
		return "", errors.New("not an absolute path")
	}
	return filepath.Clean(s), nil
}

// checkSource resolves the symlinks of dir and refuses a directory that
// does not exist, is not a directory, or overlaps one of Private. It
// returns the resolved path.
func (b *Backend) checkSource(dir string) (string, error) {
	if len(b.Allowed) == 0 {
		return "", fmt.Errorf("%w device=%s for type=%s: bind volumes are off here (--bind-paths is empty, as in the managed plugin, which sees no host directories but its own state and keys); use the legacy daemon (plugin/holdfast.service) for bind volumes", driver.ErrInvalidOption, dir, driver.TypeBind)
	}
	real, err := filepath.EvalSymlinks(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w device=%s for type=%s: bind source path does not exist: %s; the path must exist: create it first (holdfast never creates it)", driver.ErrInvalidOption, dir, driver.TypeBind, dir)
	}
	if err != nil {
		return "", fmt.Errorf("%w device=%s for type=%s: %v", driver.ErrInvalidOption, dir, driver.TypeBind, err)
	}
	via := ""
	if real != dir {
		via = fmt.Sprintf(" (%s resolves to %s through symlinks)", dir, real)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("%w device=%s for type=%s: %v", driver.ErrInvalidOption, dir, driver.TypeBind, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%w device=%s for type=%s: not a directory%s; a volume is a directory", driver.ErrInvalidOption, dir, driver.TypeBind, via)
	}
	if !slices.ContainsFunc(b.Allowed, func(a string) bool { return real == a || a == "/" || within(real, a) }) {
		return "", fmt.Errorf("%w device=%s for type=%s: %s is not below a directory of --bind-paths (%s)%s; add its parent there or bind another directory", driver.ErrInvalidOption, dir, driver.TypeBind, real, strings.Join(b.Allowed, ", "), via)
	}
	for _, flag := range slices.Sorted(maps.Keys(b.Private)) {
		priv := b.Private[flag]
		switch {
		case real == priv || within(real, priv):
			return "", fmt.Errorf("%w device=%s for type=%s: it is inside %s %s%s, where holdfast keeps its own files; bind a directory outside it", driver.ErrInvalidOption, dir, driver.TypeBind, flag, priv, via)
		case within(priv, real):
			return "", fmt.Errorf("%w device=%s for type=%s: it contains %s %s%s, holdfast's own files, which containers must not reach; bind a directory that does not contain it", driver.ErrInvalidOption, dir, driver.TypeBind, flag, priv, via)
		}
	}
	return real, nil
}

// within reports whether path is strictly inside dir; both clean and
// absolute.
func within(path, dir string) bool {
	if path == dir {
		return false
	}
	if dir == "/" {
		return true
	}
	return len(path) > len(dir) && path[:len(dir)] == dir && path[len(dir)] == '/'
}

// Create sets the directory's owner and mode when uid, gid or mode are
// given; otherwise it touches nothing.
func (b *Backend) Create(_ context.Context, v *driver.Volume) error {
	dir := v.Options["device"]
	if _, err := b.checkSource(dir); err != nil {
		return err
	}
	uid := int(driver.IntOption(v.Options, "uid", -1))
	gid := int(driver.IntOption(v.Options, "gid", -1))
	if uid >= 0 || gid >= 0 {
		if err := os.Lchown(dir, uid, gid); err != nil {
			return fmt.Errorf("set owner of %s: %w", dir, err)
		}
	}
	if _, ok := v.Options["mode"]; ok {
		// unix.Chmod keeps setuid/setgid/sticky bits; os.Chmod drops them.
		if err := unix.Chmod(dir, driver.ModeOf(v.Options, 0)); err != nil {
			return fmt.Errorf("set mode of %s: %w", dir, err)
		}
	}
	return nil
}

// Mount bind-mounts the directory (recursively with rbind), read-only with
// ro. The directory is opened without following any symlink, and that
// handle is mounted: a path changed into a symlink since the create is
// refused, never followed.
func (b *Backend) Mount(_ context.Context, v *driver.Volume) error {
	dir := v.Options["device"]
	fd, err := openNoSymlinks(dir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	src := "/proc/self/fd/" + strconv.Itoa(fd)
	flags := uintptr(unix.MS_BIND)
	if v.Options["rbind"] == "true" {
		flags |= unix.MS_REC
	}
	if err := b.Mounter.Mount(src, v.Mountpoint, "", flags, ""); err != nil {
		return fmt.Errorf("bind-mount %s: %w", dir, err)
	}
	if v.Options["ro"] != "true" {
		return nil
	}
	// A bind mount takes its flags only from a remount; keep the flags the
	// source's mount has (nosuid, nodev, noexec, atime), which the kernel
	// requires where they are locked.
	ro := uintptr(unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY) | keptFlags(v.Mountpoint)
	if err := b.Mounter.Mount("", v.Mountpoint, "", ro, ""); err != nil {
		volfs.UnmountPath(b.Mounter, v.Mountpoint)
		return fmt.Errorf("make the bind mount of %s read-only: %w", dir, err)
	}
	return nil
}

// keptFlags returns the per-mount flags of the mount at path that a
// remount must repeat.
func keptFlags(path string) uintptr {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0
	}
	var out uintptr
	for st0, ms := range map[int64]uintptr{
		unix.ST_NOSUID: unix.MS_NOSUID, unix.ST_NODEV: unix.MS_NODEV, unix.ST_NOEXEC: unix.MS_NOEXEC,
		unix.ST_NOATIME: unix.MS_NOATIME, unix.ST_NODIRATIME: unix.MS_NODIRATIME, unix.ST_RELATIME: unix.MS_RELATIME,
	} {
		if st.Flags&st0 != 0 {
			out |= ms
		}
	}
	return out
}

// openNoSymlinks opens dir as an O_PATH handle, refusing a symlink at any
// component (openat2 RESOLVE_NO_SYMLINKS; on kernels without openat2, the
// path resolved first must be itself).
func openNoSymlinks(dir string) (int, error) {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS}
	fd, err := unix.Openat2(unix.AT_FDCWD, dir, &how)
	if errors.Is(err, unix.ENOSYS) {
		if real, rerr := filepath.EvalSymlinks(dir); rerr == nil && real != dir {
			err = unix.ELOOP
		} else {
			fd, err = unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		}
	}
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ENOENT):
		return -1, fmt.Errorf("bind source path does not exist: %s; the path must exist: create it again, or remove the volume", dir)
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
		real, _ := filepath.EvalSymlinks(dir)
		return -1, fmt.Errorf("bind source %s is now a symlink or has one in its path (to %s); holdfast binds only the directory the volume was created with: put it back, or remove the volume and create it with the path you mean", dir, real)
	case errors.Is(err, unix.ENOTDIR):
		return -1, fmt.Errorf("bind source %s is no longer a directory", dir)
	}
	return -1, fmt.Errorf("open bind source %s: %w", dir, err)
}

// Unmount removes the bind mount; the directory is untouched.
func (b *Backend) Unmount(_ context.Context, v *driver.Volume) error {
	return volfs.UnmountPath(b.Mounter, v.Mountpoint)
}

// Remove deletes nothing: the directory is the host's, as with Docker's
// local driver.
func (b *Backend) Remove(context.Context, *driver.Volume) error { return nil }

// Status reports the directory and, while mounted, the usage of its
// filesystem.
func (b *Backend) Status(v *driver.Volume) map[string]any {
	st := map[string]any{"device": v.Options["device"]}
	if v.Mounted {
		maps.Copy(st, volfs.Usage(v.Mountpoint))
	}
	return st
}
