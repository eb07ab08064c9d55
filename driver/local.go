package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/usage"
)

// Local is the "local" backend: a directory under --root that keeps its
// data across unmounts, restarts and reboots, bind-mounted at the
// mountpoint while the volume has leases.
type Local struct {
	Mounter Mounter
	// Walker measures the volumes' own usage in the background; without
	// one, Status reports none.
	Walker *usage.Walker
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

// Remove stops measuring the volume; the driver removes its directory.
func (l *Local) Remove(_ context.Context, v *Volume) error {
	if l.Walker != nil {
		l.Walker.Forget(v.Name)
	}
	return nil
}

// Status reports the volume's own usage from the last background walk of
// its data directory (used, with usedAge in seconds since that walk began,
// usedEntries, and usedIncomplete or usedOvercount when the walk says so;
// usedError, or usedPending before the first walk), and the space still
// free on the filesystem holding --root, shared with everything else on
// it (filesystemAvailable).
func (l *Local) Status(v *Volume) map[string]any {
	st := map[string]any{}
	if u := Usage(dataDir(v)); u["available"] != nil {
		st["filesystemAvailable"] = u["available"]
	}
	if l.Walker == nil {
		return st
	}
	r := l.Walker.Read(v.Name, dataDir(v))
	switch {
	case !r.Measured:
		st["usedPending"] = "not yet measured: a background walk of the volume is scheduled"
	case r.Err != "":
		st["usedError"] = r.Err
	default:
		st["used"] = r.Bytes
		st["usedAge"] = int64(r.Age.Round(time.Second) / time.Second)
		st["usedEntries"] = r.Entries
		if r.Incomplete != "" {
			st["usedIncomplete"] = "a lower bound: " + r.Incomplete
		}
		if r.Overcount != "" {
			st["usedOvercount"] = r.Overcount
		}
	}
	return st
}

// Meter reports the last walk's figure, never waiting for one.
func (l *Local) Meter(v *Volume) Measure {
	if l.Walker == nil {
		return Measure{}
	}
	r := l.Walker.Read(v.Name, dataDir(v))
	return Measure{Used: r.Bytes, UsedKnown: r.Measured && r.Err == ""}
}
