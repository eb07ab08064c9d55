// Package local is holdfast's "local" volume type, the default: a
// directory under --root that keeps its data across unmounts, restarts and
// reboots, bind-mounted while in use, optionally limited in size by a
// project quota.
package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/quota"
	"github.com/holdfast/holdfast/internal/usage"
	"github.com/holdfast/holdfast/internal/volfs"
)

// Backend is the "local" backend: a directory under --root that keeps its
// data across unmounts, restarts and reboots, bind-mounted at the
// mountpoint while the volume has leases.
type Backend struct {
	Mounter volfs.Mounter
	// Walker measures the volumes' own usage in the background; without
	// one, Status reports none.
	Walker *usage.Walker
	// Faults fails steps on purpose, for tests; nil in production.
	Faults *failpoint.Set

	// ids hands out the project ids of size-limited volumes.
	ids quota.Allocator
}

// New returns the local backend on mounter; walker measures the volumes'
// own usage in the background (none: Status reports none).
func New(mounter volfs.Mounter, walker *usage.Walker) *Backend {
	return &Backend{Mounter: mounter, Walker: walker}
}

// rootMode is the mode of a local volume's root, as Docker's _data.
const rootMode = 0o755

// infoProject is the Info key of a size-limited volume's project id.
const infoProject = "projectID"

// minQuotaSize is the smallest size: the data directory itself takes a
// block, and a few KiB hold no useful volume.
const minQuotaSize = 1 << 20

// optQuotaSize is size= of a local volume: a project quota, as with
// Docker's local driver.
var optQuotaSize = driver.Option{Name: "size", Form: "a size of at least 1m such as 100m or 1g", Canon: canonQuotaSize}

func canonQuotaSize(s string) (string, error) {
	n, err := driver.CanonAbsSize(s)
	if err != nil {
		return "", err
	}
	if b, _ := strconv.ParseInt(n, 10, 64); b < minQuotaSize {
		return "", errors.New("smaller than 1m")
	}
	return n, nil
}

// Parse accepts uid, gid, mode and size (a project quota, as size= of
// Docker's local driver). device= or o= without a type are refused with
// what to write instead.
func (b *Backend) Parse(raw map[string]string) (map[string]string, error) {
	for _, k := range []string{"device", "o"} {
		if _, ok := raw[k]; ok {
			return nil, fmt.Errorf("%w %q for type=local: device= and o= go with a type, as with Docker's local driver (missing required option: \"type\"): type=tmpfs device=tmpfs o=size=…, type=none o=bind device=/path, or type=nfs o=addr=… device=:/path", driver.ErrInvalidOption, k)
		}
	}
	return driver.ParseOptions("local", raw, []driver.Option{driver.OptUID, driver.OptGID, driver.OptMode, optQuotaSize})
}

func dataDir(v *driver.Volume) string { return filepath.Join(v.Dir, "data") }

// rootOf returns --root, the directory above v's volumes directory.
func rootOf(v *driver.Volume) string { return filepath.Dir(filepath.Dir(v.Dir)) }

// Create makes the data directory with the requested owner and mode and,
// with size, its project quota. A full --root is named as such, with the
// fix; so is a --root without project quotas when size is given.
func (b *Backend) Create(_ context.Context, v *driver.Volume) error {
	size := volfs.Size(v.Options)
	if size > 0 {
		if err := quota.Check(rootOf(v), "--root"); err != nil {
			return fmt.Errorf("size= (%s) for type=local is a project quota on the volume's directory: %w", volfs.HumanBytes(uint64(size)), err)
		}
	}
	dir := dataDir(v)
	err := b.Faults.Check("mkdir data directory")
	if err == nil {
		err = os.Mkdir(dir, rootMode)
	}
	if err != nil {
		return volfs.RootFull(fmt.Errorf("create data directory: %w", err), v.Dir)
	}
	err = b.Faults.Check("set owner")
	if err == nil {
		err = volfs.ApplyOwner(dir, driver.OwnerOf(v.Options, rootMode))
	}
	if err == nil && size > 0 {
		err = b.limit(v, dir, uint64(size))
	}
	// Its owner and mode are durable with the record (the driver syncs
	// the entry): xfs keeps them apart from the parent's.
	if err == nil {
		err = b.Faults.Check("sync data directory")
	}
	if err == nil {
		err = volfs.SyncPath(dir)
	}
	return volfs.RootFull(err, v.Dir)
}

// limit gives the empty data directory dir a project id of its own,
// recorded in v.Info, and sets the id's hard limit to size. On error the
// driver removes the directory, and Remove the limit.
func (b *Backend) limit(v *driver.Volume, dir string, size uint64) error {
	err := b.Faults.Check("assign project id")
	var id uint32
	if err == nil {
		id, err = b.ids.Assign(dir, v.Name)
	}
	if err != nil {
		return fmt.Errorf("give volume %s a project id: %w", v.Name, err)
	}
	if v.Info == nil {
		v.Info = map[string]string{}
	}
	v.Info[infoProject] = strconv.FormatUint(uint64(id), 10)
	err = b.Faults.Check("set project quota")
	if err == nil {
		err = quota.SetLimit(dir, id, size)
	}
	return err
}

// projectID returns the project id of v: the recorded one, or for a Create
// interrupted before its commit, the data directory's own if it is one of
// holdfast's. ok is false when v has none.
func projectID(v *driver.Volume) (id uint32, ok bool) {
	if n, err := strconv.ParseUint(v.Info[infoProject], 10, 32); err == nil {
		return uint32(n), true
	}
	id, err := quota.DirID(dataDir(v))
	return id, err == nil && quota.Owned(id)
}

// Mount bind-mounts the data directory at the mountpoint.
func (b *Backend) Mount(_ context.Context, v *driver.Volume) error {
	dir := dataDir(v)
	if _, err := os.Lstat(dir); err != nil {
		return fmt.Errorf("data directory of volume %s is missing (%w); restore it or remove the volume", v.Name, err)
	}
	return b.Mounter.Mount(dir, v.Mountpoint, "", unix.MS_BIND, "")
}

// Unmount removes the bind mount.
func (b *Backend) Unmount(_ context.Context, v *driver.Volume) error {
	return volfs.UnmountPath(b.Mounter, v.Mountpoint)
}

// Remove stops measuring the volume and clears the project quota of a
// size-limited volume; the driver removes the volume's directory. The id
// is free again once the files holding it are deleted.
func (b *Backend) Remove(_ context.Context, v *driver.Volume) error {
	if b.Walker != nil {
		b.Walker.Forget(v.Name)
	}
	if volfs.Size(v.Options) <= 0 {
		return nil
	}
	id, ok := projectID(v)
	if !ok {
		return nil
	}
	err := b.Faults.Check("clear project quota")
	if err == nil {
		err = quota.SetLimit(rootOf(v), id, 0)
	}
	if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOSYS) {
		// Quotas are off on --root now: no limit holds, and an id whose
		// stale limit returns with them is not free, so it is never reused.
		return nil
	}
	return err
}

// Status reports a size-limited volume's own size and usage, from its
// project quota. Otherwise it reports the volume's own usage from the last
// background walk of its data directory (used, with usedAge in seconds
// since that walk began, usedEntries, and usedIncomplete or usedOvercount
// when the walk says so; usedError, or usedPending before the first walk),
// and the space still free on the filesystem holding --root, shared with
// everything else on it (filesystemAvailable).
func (b *Backend) Status(v *driver.Volume) map[string]any {
	if volfs.Size(v.Options) > 0 {
		return quotaStatus(v)
	}
	st := map[string]any{}
	if u := volfs.Usage(dataDir(v)); u["available"] != nil {
		st["filesystemAvailable"] = u["available"]
	}
	if b.Walker == nil {
		return st
	}
	r := b.Walker.Read(v.Name, dataDir(v))
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
func (b *Backend) Meter(v *driver.Volume) driver.Measure {
	if b.Walker == nil {
		return driver.Measure{}
	}
	if volfs.Size(v.Options) > 0 {
		if id, ok := projectID(v); ok {
			if q, err := quota.Get(dataDir(v), id); err == nil {
				return driver.Measure{Size: volfs.Size(v.Options), Used: int64(q.Used), UsedKnown: true}
			}
		}
		return driver.Measure{}
	}
	r := b.Walker.Read(v.Name, dataDir(v))
	return driver.Measure{Used: r.Bytes, UsedKnown: r.Measured && r.Err == ""}
}

// quotaStatus is Status of a size-limited volume.
func quotaStatus(v *driver.Volume) map[string]any {
	st := map[string]any{"size": volfs.Size(v.Options)}
	id, ok := projectID(v)
	if !ok {
		st["usageError"] = "the volume has no project id in its record"
		return st
	}
	q, err := quota.Get(dataDir(v), id)
	if err != nil {
		st["usageError"] = err.Error()
		return st
	}
	st["projectID"] = id
	st["used"] = q.Used
	st["available"] = uint64(0)
	if q.Limit > q.Used {
		st["available"] = q.Limit - q.Used
	}
	return st
}
