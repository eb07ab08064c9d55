package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/failpoint"
)

// Local is the "local" backend: a directory under --root that keeps its
// data across unmounts, restarts and reboots, bind-mounted at the
// mountpoint while the volume has leases.
type Local struct {
	Mounter Mounter
	// Faults fails steps on purpose, for tests; nil in production.
	Faults *failpoint.Set
}

// localMode is the mode of a local volume's root, as Docker's _data.
const localMode = 0o755

// Parse accepts uid, gid and mode. Of Docker's local driver forms, the
// one without options is this type; size= (a project quota there) and
// device= or o= without a type are refused with what to write instead.
func (l *Local) Parse(raw map[string]string) (map[string]string, error) {
	if _, ok := raw["size"]; ok {
		return nil, fmt.Errorf("%w \"size\" for type=local: %s", ErrInvalidOption, quotaUnsupported)
	}
	for _, k := range []string{"device", "o"} {
		if _, ok := raw[k]; ok {
			return nil, fmt.Errorf("%w %q for type=local: device= and o= go with a type, as with Docker's local driver (missing required option: \"type\"): type=tmpfs device=tmpfs o=size=…, type=none o=bind device=/path, or type=nfs o=addr=… device=:/path", ErrInvalidOption, k)
		}
	}
	return ParseOptions("local", raw, []Option{OptUID, OptGID, OptMode})
}

func dataDir(v *Volume) string { return filepath.Join(v.Dir, "data") }

// Create makes the data directory with the requested owner and mode. A
// full --root is named as such, with the fix.
func (l *Local) Create(_ context.Context, v *Volume) error {
	dir := dataDir(v)
	err := l.Faults.Check("mkdir data directory")
	if err == nil {
		err = os.Mkdir(dir, localMode)
	}
	if err != nil {
		return RootFull(fmt.Errorf("create data directory: %w", err), v)
	}
	err = l.Faults.Check("set owner")
	if err == nil {
		err = ApplyOwner(dir, v.Options, localMode)
	}
	// Its owner and mode are durable with the record (the driver syncs
	// the entry): xfs keeps them apart from the parent's.
	if err == nil {
		err = l.Faults.Check("sync data directory")
	}
	if err == nil {
		err = syncPath(dir)
	}
	return RootFull(err, v)
}

func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Mount bind-mounts the data directory at the mountpoint.
func (l *Local) Mount(_ context.Context, v *Volume) error {
	dir := dataDir(v)
	if _, err := os.Lstat(dir); err != nil {
		return fmt.Errorf("data directory of volume %s is missing (%w); restore it or remove the volume", v.Name, err)
	}
	return l.Mounter.Mount(dir, v.Mountpoint, "", unix.MS_BIND, "")
}

// Unmount removes the bind mount.
func (l *Local) Unmount(_ context.Context, v *Volume) error {
	return UnmountPath(l.Mounter, v.Mountpoint)
}

// Remove has nothing to do: the driver removes the volume's directory.
func (l *Local) Remove(context.Context, *Volume) error { return nil }

// Status reports, while mounted, the usage of the filesystem holding the
// data: that is --root's filesystem, shared with everything else on it,
// not the volume's own usage, and the names say so.
func (l *Local) Status(v *Volume) map[string]any {
	if !v.Mounted {
		return nil
	}
	u := Usage(v.Mountpoint)
	if e, ok := u["usageError"]; ok {
		return map[string]any{"usageError": e}
	}
	return map[string]any{"filesystemUsed": u["used"], "filesystemAvailable": u["available"]}
}
