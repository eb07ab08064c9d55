package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/volume"

	"github.com/holdfast/holdfast/internal/snapshot"
	"github.com/holdfast/holdfast/internal/volfs"
)

// ViewLeasePrefix starts the ids of the leases holdfast takes for itself
// while a View is open (a backup, or the copy of a Create with from=).
// They keep the volume mounted and refuse its Remove like any lease;
// start-up drops them, since they never outlive the process.
const ViewLeasePrefix = "holdfast-view-"

// Notes a View gives when it is not exact.
const (
	NoteLive   = "live copy: files may change while they are read (containers use the volume)"
	NoteFrozen = "frozen for the whole transfer: writers in the containers using the volume blocked until it ended"
)

// MaxFreeze bounds how long a View holds a volume's filesystem frozen
// for the whole transfer; a transfer that lasts longer fails at Close.
const MaxFreeze = time.Hour

// ErrNoSnapshot is wrapped by a Snapshotter that cannot take a
// point-in-time copy here (--root has no reflinks, or the engine cannot):
// the view falls back to a live copy, or to a freeze when asked.
var ErrNoSnapshot = errors.New("no point-in-time copy here")

// Snapshotter is implemented by backends whose volumes have a filesystem
// of their own (loop, crypt), which can be frozen and copied at a point
// in time.
type Snapshotter interface {
	// FreezeDir is where the volume's own filesystem is mounted while v
	// is mounted, for FIFREEZE; "" when it has none.
	FreezeDir(v *Volume) string
	// Snapshot takes a point-in-time copy of mounted volume v into dir,
	// an empty private directory under --root, mounts it read-only and
	// returns the directory of its files. It wraps ErrNoSnapshot when it
	// cannot here. On error it leaves nothing behind but dir.
	Snapshot(ctx context.Context, v *Volume, dir string) (files string, err error)
	// ReleaseSnapshot takes down what Snapshot made in dir (mount,
	// devices, files); harmless on a directory it did not make. Start-up
	// calls it for what a crash left.
	ReleaseSnapshot(ctx context.Context, dir string) error
}

// View is a read-only look at a volume's files for backup and clone.
type View struct {
	Dir   string // the files, read-only to the caller
	Note  string // "" when exact; else how consistent (e.g. "live copy: files may change while they are read")
	close func() error
}

// Close releases the view: the copy, the freeze, the internal lease. It
// is safe to call more than once.
func (v *View) Close() error {
	if v.close == nil {
		return nil
	}
	c := v.close
	v.close = nil
	return c()
}

// frozenFile in a view's directory names the directory whose filesystem
// the view froze, so that start-up thaws it after a crash.
const frozenFile = "frozen"

// viewsDir holds the views' private directories.
func (d *Driver) viewsDir() string { return filepath.Join(d.cfg.Root, "views") }

// OpenView gives access to name's files: through its live mount when
// mounted, else by mounting it for the view's lifetime under an internal
// lease (id "holdfast-view-<n>") that is released by Close and never
// outlives the process (start-up drops such leases). A volume no
// container uses is exact. One in use is copied at a point in time where
// its backend and --root allow (Snapshotter), else it is a live copy, or,
// with freeze, frozen until Close.
func (d *Driver) OpenView(ctx context.Context, name string, freeze bool) (*View, error) {
	v, err := d.get(name)
	if err != nil {
		return nil, err
	}
	b, err := d.backend(v)
	if err != nil {
		return nil, err
	}
	n := strconv.FormatUint(d.views.Add(1), 10)
	id := ViewLeasePrefix + n
	if err := d.step("take view lease"); err != nil {
		return nil, err
	}
	res, err := d.Mount(&volume.MountRequest{Name: name, ID: id})
	if err != nil {
		return nil, fmt.Errorf("open a view of %s: %w", name, err)
	}
	release := func() error {
		// Once more if it fails: the lease would keep the volume mounted
		// and unremovable until the next start drops it.
		err := d.Unmount(&volume.UnmountRequest{Name: name, ID: id})
		if err != nil {
			err = d.Unmount(&volume.UnmountRequest{Name: name, ID: id})
		}
		return err
	}
	// Leases taken after this point are containers the copy cannot see
	// start: what is read may then change.
	v, err = d.get(name)
	if err != nil {
		release()
		return nil, err
	}
	if !inUse(v) {
		return &View{Dir: res.Mountpoint, close: release}, nil
	}
	view, err := d.viewInUse(ctx, b, v, n, freeze)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open a view of %s: %w", name, err), release())
	}
	inner := view.close
	view.close = func() error { return errors.Join(inner(), release()) }
	return view, nil
}

// inUse says whether v has leases other than views'.
func inUse(v *Volume) bool {
	for id := range v.Leases {
		if !strings.HasPrefix(id, ViewLeasePrefix) {
			return true
		}
	}
	return false
}

// viewInUse is the view of a volume containers use, mounted: a snapshot,
// a freeze or a live copy.
func (d *Driver) viewInUse(ctx context.Context, b Backend, v *Volume, n string, freeze bool) (*View, error) {
	s, ok := b.(Snapshotter)
	if !ok || s.FreezeDir(v) == "" {
		if freeze {
			return nil, errorf(ErrInvalidOption, "a type=%s volume cannot be frozen (only loop and crypt volumes have a filesystem of their own); copy it live without freeze, or stop the containers using it first", v.Type)
		}
		return &View{Dir: v.Mountpoint, Note: NoteLive, close: func() error { return nil }}, nil
	}
	dir := filepath.Join(d.viewsDir(), n)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, volfs.RootFull(fmt.Errorf("make view directory: %w", err), v.Dir)
	}
	drop := func() error { return d.dropView(ctx, dir, false) }
	// The snapshot freezes the filesystem for a moment: recorded first,
	// so that start-up thaws it if holdfast dies meanwhile.
	if err := d.recordFreeze(dir, s.FreezeDir(v)); err != nil {
		return nil, errors.Join(err, drop())
	}
	files, err := s.Snapshot(ctx, v, dir)
	if err == nil {
		err = d.unrecordFreeze(dir)
	}
	if err == nil {
		return &View{Dir: files, close: drop}, nil
	}
	if !errors.Is(err, ErrNoSnapshot) {
		return nil, errors.Join(err, drop())
	}
	if err := d.unrecordFreeze(dir); err != nil {
		return nil, errors.Join(err, drop())
	}
	d.cfg.Log.WithField("volume", v.Name).WithError(err).Debug("no point-in-time copy")
	if !freeze {
		return &View{Dir: v.Mountpoint, Note: NoteLive, close: drop}, nil
	}
	thaw, err := d.freeze(dir, s.FreezeDir(v))
	if err != nil {
		return nil, errors.Join(err, drop())
	}
	return &View{Dir: v.Mountpoint, Note: NoteFrozen, close: func() error { return errors.Join(thaw(), drop()) }}, nil
}

// freeze freezes the filesystem at fsDir, after recording it in the view's
// directory for start-up, until the returned func thaws it and drops the
// record.
func (d *Driver) freeze(viewDir, fsDir string) (func() error, error) {
	if err := d.recordFreeze(viewDir, fsDir); err != nil {
		return nil, err
	}
	hold, err := snapshot.Hold(fsDir, MaxFreeze)
	if err != nil {
		return nil, err
	}
	thaw := func() error {
		if err := hold(); err != nil {
			return err
		}
		return d.unrecordFreeze(viewDir)
	}
	if err := d.step("frozen"); err != nil {
		return nil, errors.Join(err, thaw())
	}
	return thaw, nil
}

// recordFreeze records in viewDir, durably, that the filesystem at fsDir
// is about to be frozen.
func (d *Driver) recordFreeze(viewDir, fsDir string) error {
	err := d.step("record freeze")
	if err == nil {
		err = writeSynced(filepath.Join(viewDir, frozenFile), []byte(fsDir))
	}
	if err != nil {
		return fmt.Errorf("record the freeze: %w", err)
	}
	return nil
}

// unrecordFreeze drops the record, once the filesystem is thawed: a view
// released later must not thaw what another froze since.
func (d *Driver) unrecordFreeze(viewDir string) error {
	if err := dropFile(filepath.Join(viewDir, frozenFile)); err != nil {
		return fmt.Errorf("drop the record of a freeze: %w", err)
	}
	return nil
}

// dropView releases what a view made in dir and deletes it. After a
// crash (crashed), a frozen filesystem still recorded there is thawed
// first; a running view thaws what it froze itself, and must not thaw a
// freeze that failed because another view holds one.
func (d *Driver) dropView(ctx context.Context, dir string, crashed bool) error {
	var errs []error
	if b, err := os.ReadFile(filepath.Join(dir, frozenFile)); err == nil && crashed {
		errs = append(errs, snapshot.Thaw(string(b)))
	}
	for _, b := range d.cfg.Backends {
		if s, ok := b.(Snapshotter); ok {
			errs = append(errs, s.ReleaseSnapshot(ctx, dir))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release view %s: %w", dir, err)
	}
	mounts, err := d.cfg.Mounter.Mountpoints(dir)
	if err == nil && len(mounts) > 0 {
		err = fmt.Errorf("release view %s: still mounted there", dir)
	}
	if err == nil {
		err = os.RemoveAll(dir)
	}
	return err
}

// clearViews releases what views a crash cut short left: a frozen
// filesystem, snapshots. It runs at start-up, before any volume is
// unmounted (a frozen filesystem cannot be).
func (d *Driver) clearViews() {
	ents, err := os.ReadDir(d.viewsDir())
	if err != nil {
		d.cfg.Log.WithError(err).Error("cannot read the views directory")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), shortOpTimeout)
	defer cancel()
	for _, ent := range ents {
		dir := filepath.Join(d.viewsDir(), ent.Name())
		d.cfg.Log.WithField("path", dir).Warn("releasing a view a crash left (a backup or a copy of a Create with from=)")
		if err := d.dropView(ctx, dir, true); err != nil {
			d.cfg.Log.WithError(err).Error("a view is left in place; holdfast retries at its next start")
		}
	}
}
