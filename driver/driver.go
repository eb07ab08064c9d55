package driver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/volfs"
)

// Deadlines for backend work, inside dockerd's own per-call timeouts
// (2 minutes for Create and Mount, 1 minute for the rest).
const (
	longOpTimeout  = 110 * time.Second
	shortOpTimeout = 55 * time.Second
)

// DefaultType is the type of volumes created without --opt type=.
const DefaultType = "local"

// Config wires a Driver.
type Config struct {
	// Root holds the state database and the volumes' private directories.
	Root string
	// MountRoot is where volumes are mounted for Docker.
	MountRoot string
	// Scope is "local" or "global", answered to Capabilities.
	Scope string
	// BootID identifies the running kernel boot.
	BootID string
	// Mounter is the mount table; backends are given the same one.
	Mounter volfs.Mounter
	// Backends maps each volume type to its backend.
	Backends map[string]Backend
	// Log receives the driver's own messages.
	Log logrus.FieldLogger
	// Faults fails steps on purpose, for tests; nil in production.
	Faults *failpoint.Set
	// SampleInterval is how often backends are asked for their volumes'
	// size and usage (see Meter); DefaultSampleInterval when zero.
	SampleInterval time.Duration
}

// Driver is holdfast's volume.Driver. It owns the map of volumes: mu guards
// the map and every entry's record; an entry's op lock serialises the
// requests that change that volume, so a slow backend blocks only its own
// volume and never Get or List.
type Driver struct {
	cfg   Config
	store *Store

	mu   sync.Mutex
	vols map[string]*entry
	// list is List's answer, built again after any record changed (nil).
	list []*volume.Volume
	// purging counts the trash entries being purged in the background.
	purging sync.WaitGroup
	// trashed numbers the entries moved to the trash by this process.
	trashed atomic.Uint64
	// views numbers the views opened by this process (OpenView).
	views atomic.Uint64
	// measures holds the last sample of each volume's size and usage.
	measures map[string]Measure
	// sampling runs sample until stopSampling is closed.
	sampling     sync.WaitGroup
	stopSampling chan struct{}
	stopOnce     sync.Once
}

type entry struct {
	op  sync.Mutex
	vol *Volume // nil until created and after removal
}

// New opens the state under cfg.Root, reconciles it with the mount table
// and the boot id, and returns the driver. Close releases it.
func New(cfg Config) (*Driver, error) {
	var err error
	// Root only, at every level: see volfs.PrivateDir.
	if cfg.Root, err = volfs.PrivateDir(cfg.Root, "--root", cfg.Log); err != nil {
		return nil, err
	}
	if cfg.MountRoot, err = volfs.PrivateDir(cfg.MountRoot, "--mount-root", cfg.Log); err != nil {
		return nil, err
	}
	for _, dir := range []string{"volumes", "trash", "views"} {
		if _, err := volfs.PrivateDir(filepath.Join(cfg.Root, dir), "--root", cfg.Log); err != nil {
			return nil, err
		}
	}
	if err := volfs.PrivateFile(filepath.Join(cfg.Root, "holdfast.db"), cfg.Log); err != nil {
		return nil, err
	}
	store, err := OpenStore(filepath.Join(cfg.Root, "holdfast.db"))
	if err != nil {
		return nil, err
	}
	store.faults = cfg.Faults
	d := &Driver{cfg: cfg, store: store, vols: map[string]*entry{}}
	if err := d.reconcile(); err != nil {
		store.Close()
		return nil, err
	}
	interval := cfg.SampleInterval
	if interval <= 0 {
		interval = DefaultSampleInterval
	}
	d.stopSampling = make(chan struct{})
	d.sampling.Add(1)
	go d.sample(interval, d.stopSampling)
	return d, nil
}

// Close waits for the trash entries being purged and closes the state
// database. Mounted volumes stay mounted.
func (d *Driver) Close() error {
	d.stopOnce.Do(func() { close(d.stopSampling) })
	d.sampling.Wait()
	d.WaitPurged()
	return d.store.Close()
}

// Create creates a volume, or succeeds without change if it exists with
// the same options. A removal holdfast could not complete is completed
// first.
func (d *Driver) Create(req *volume.CreateRequest) error {
	if err := ValidateName(req.Name); err != nil {
		return err
	}
	// dockerd prefixes Create errors with "create NAME:" itself.
	typ, b, opts, err := d.parse(req.Options)
	if err != nil {
		return err
	}
	e := d.lockEntry(req.Name)
	defer e.op.Unlock()
	if cur := d.record(e); cur != nil {
		if cur.Phase != PhaseRemoving {
			return sameVolume(cur, typ, requested(opts))
		}
		if err := d.resumeRemove(cur); err != nil {
			return fmt.Errorf("an earlier volume %s is still being removed and its removal failed again: %w", cur.Name, err)
		}
		d.setRecord(e, nil)
	}
	if from, ok := opts[OptFrom]; ok {
		if err := d.checkSource(req.Name, from); err != nil {
			d.drop(req.Name, e)
			return err
		}
	}
	v := d.newVolume(req.Name, typ, opts)
	if err := d.create(b, v); err != nil {
		d.drop(req.Name, e)
		return err
	}
	d.setRecord(e, v)
	return nil
}

// lockEntry returns name's entry, made if missing, with its op lock held.
// It retries when the entry was dropped (a failed Create or a Remove) while
// it waited for the lock.
func (d *Driver) lockEntry(name string) *entry {
	for {
		d.mu.Lock()
		e := d.vols[name]
		if e == nil {
			e = &entry{}
			d.vols[name] = e
		}
		d.mu.Unlock()
		e.op.Lock()
		d.mu.Lock()
		current := d.vols[name] == e
		d.mu.Unlock()
		if current {
			return e
		}
		e.op.Unlock()
	}
}

// parse splits off the type and from=, and checks the other options
// against the type's backend.
func (d *Driver) parse(raw map[string]string) (string, Backend, map[string]string, error) {
	typ := DefaultType
	from, hasFrom := "", false
	rest := make(map[string]string, len(raw))
	for k, v := range raw {
		switch k {
		case "type":
			typ = CanonType(v)
		case OptFrom:
			from, hasFrom = v, true
		default:
			rest[k] = v
		}
	}
	b, ok := d.cfg.Backends[typ]
	if !ok {
		return "", nil, nil, unknownType(typ, rest, slices.Sorted(maps.Keys(d.cfg.Backends)))
	}
	opts, err := b.Parse(rest)
	if err == nil && hasFrom {
		err = checkFrom(typ, from)
		if opts == nil {
			opts = map[string]string{}
		}
		opts[OptFrom] = from
	}
	return typ, b, opts, err
}

// sameVolume answers a Create for an existing volume.
func sameVolume(cur *Volume, typ string, opts map[string]string) error {
	if cur.Type != typ {
		return errorf(ErrConflict, "volume %s exists with type=%s, not type=%s; nothing was changed: remove it first or use another name",
			cur.Name, cur.Type, typ)
	}
	if diff := DiffOptions(cur.Options, opts); len(diff) > 0 {
		return errorf(ErrConflict, "volume %s exists with other options (%s); nothing was changed: remove it first or use another name",
			cur.Name, strings.Join(diff, "; "))
	}
	return nil
}

func (d *Driver) newVolume(name, typ string, opts map[string]string) *Volume {
	v := &Volume{
		Name:      name,
		Type:      typ,
		Options:   opts,
		CreatedAt: time.Now().UTC().Truncate(time.Second),
		Phase:     PhaseCreating,
	}
	d.setPaths(v)
	return v
}

func (d *Driver) setPaths(v *Volume) {
	v.Dir = filepath.Join(d.cfg.Root, "volumes", v.Name)
	v.Mountpoint = filepath.Join(d.cfg.MountRoot, v.Name)
}

// create has the backend make v and commits its record: one commit, with
// a create intent in v's directory covering a crash before it. On failure
// it leaves nothing behind.
func (d *Driver) create(b Backend, v *Volume) error {
	ctx, cancel := context.WithTimeout(context.Background(), longOpTimeout)
	defer cancel()
	if err := d.makeVolumeDir(ctx, v); err != nil {
		return volfs.RootFull(err, v.Dir)
	}
	err := d.writeRecord(v, creatingFile)
	if err == nil {
		err = b.Create(ctx, v)
	}
	if err == nil && v.Options[OptFrom] != "" {
		err = d.copyFrom(ctx, b, v)
	}
	// What the backend made, and the volume's directory itself, must be
	// durable before the commit: a power cut after it would otherwise
	// leave a record whose directory is gone.
	if err == nil {
		err = d.syncDir(v.Dir)
	}
	if err == nil {
		err = d.syncDirAs("sync volumes directory", filepath.Dir(v.Dir))
	}
	if err == nil {
		v.Phase = PhaseReady
		err = d.store.Put(v)
	}
	if err != nil {
		if v.Mounted {
			// The copy of from= failed to unmount it: once more, as the
			// removal needs it gone.
			if uerr := d.unmount(ctx, b, v); uerr != nil {
				err = errors.Join(err, uerr)
			}
		}
		if derr := d.removeStorage(ctx, b, v); derr != nil {
			d.cfg.Log.WithError(derr).WithField("volume", v.Name).Error("a failed Create left storage behind; holdfast removes it at its next start, or before a volume of this name is created")
		}
		return volfs.RootFull(err, v.Dir)
	}
	if err := d.markCreated(v); err != nil {
		d.cfg.Log.WithError(err).WithField("volume", v.Name).Warn("create intent left behind; holdfast turns it into the volume's record at its next start")
	}
	return nil
}

// makeVolumeDir makes v's private directory. A directory left there by an
// interrupted request is cleared first; anything else is refused, never
// reused or deleted.
func (d *Driver) makeVolumeDir(ctx context.Context, v *Volume) error {
	err := d.step("mkdir volume directory")
	if err == nil {
		err = os.Mkdir(v.Dir, 0o700)
	}
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := d.clearLeftover(ctx, v.Dir); err != nil {
		return err
	}
	return os.Mkdir(v.Dir, 0o700)
}

// lock finds the entry of a ready volume and takes its op lock. The caller
// must unlock e.op. It returns a copy of the record to work on.
func (d *Driver) lock(name string) (*entry, *Volume, error) {
	e, v, err := d.lockAny(name)
	if err == nil && v.Phase != PhaseReady {
		e.op.Unlock()
		return nil, nil, errorf(ErrNotFound, "no such volume: %s (an earlier removal of it is not complete: docker volume rm %s completes it)", name, name)
	}
	return e, v, err
}

// lockAny is lock for a volume in any phase.
func (d *Driver) lockAny(name string) (*entry, *Volume, error) {
	if err := ValidateName(name); err != nil {
		return nil, nil, err
	}
	d.mu.Lock()
	e := d.vols[name]
	d.mu.Unlock()
	if e == nil {
		return nil, nil, errorf(ErrNotFound, "no such volume: %s", name)
	}
	e.op.Lock()
	v := d.record(e)
	if v == nil {
		e.op.Unlock()
		return nil, nil, errorf(ErrNotFound, "no such volume: %s", name)
	}
	return e, v, nil
}

// record returns a copy of e's record, or nil.
func (d *Driver) record(e *entry) *Volume {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.vol == nil {
		return nil
	}
	return e.vol.clone()
}

// setRecord publishes v as e's record. v must already be in the store.
func (d *Driver) setRecord(e *entry, v *Volume) {
	d.mu.Lock()
	e.vol = v
	d.list = nil
	d.mu.Unlock()
}

// save stores v and publishes it.
func (d *Driver) save(e *entry, v *Volume) error {
	if err := d.store.Put(v); err != nil {
		return err
	}
	d.setRecord(e, v.clone())
	return nil
}

// drop drops e from the map if it is still the entry of name.
func (d *Driver) drop(name string, e *entry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e.vol = nil
	d.list = nil
	if d.vols[name] == e {
		delete(d.vols, name)
	}
}

func (d *Driver) backend(v *Volume) (Backend, error) {
	b, ok := d.cfg.Backends[v.Type]
	if !ok {
		return nil, errorf(ErrUnknownType, "volume %s has type %q, which this build of holdfast does not support", v.Name, v.Type)
	}
	return b, nil
}

// step names a fallible step, which tests may fail on purpose.
func (d *Driver) step(name string) error { return d.cfg.Faults.Check(name) }

// Path returns the mountpoint of a mounted volume, and "" otherwise.
func (d *Driver) Path(req *volume.PathRequest) (*volume.PathResponse, error) {
	v, err := d.get(req.Name)
	if err != nil {
		return nil, err
	}
	return &volume.PathResponse{Mountpoint: mountpoint(v)}, nil
}

// Get describes a volume from the state alone.
func (d *Driver) Get(req *volume.GetRequest) (*volume.GetResponse, error) {
	v, err := d.get(req.Name)
	if err != nil {
		return nil, err
	}
	res := apiVolume(v)
	res.Status = d.status(v)
	return &volume.GetResponse{Volume: res}, nil
}

// List lists the volumes from the state alone. The answer is kept until
// a record changes: dockerd lists often, and a list of 10,000 volumes takes
// milliseconds to build.
func (d *Driver) List() (*volume.ListResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.list == nil {
		d.list = d.buildList()
	}
	return &volume.ListResponse{Volumes: d.list}, nil
}

// buildList describes every ready volume, sorted by name. d.mu is held.
func (d *Driver) buildList() []*volume.Volume {
	vols := make([]*volume.Volume, 0, len(d.vols))
	for _, e := range d.vols {
		if e.vol != nil && e.vol.Phase == PhaseReady {
			vols = append(vols, apiVolume(e.vol))
		}
	}
	slices.SortFunc(vols, func(a, b *volume.Volume) int { return strings.Compare(a.Name, b.Name) })
	return vols
}

// Capabilities answers the configured scope.
func (d *Driver) Capabilities() *volume.CapabilitiesResponse {
	return &volume.CapabilitiesResponse{Capabilities: volume.Capability{Scope: d.cfg.Scope}}
}

// get returns a copy of a ready volume's record without taking its op lock.
func (d *Driver) get(name string) (*Volume, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.vols[name]
	if e == nil || e.vol == nil || e.vol.Phase != PhaseReady {
		return nil, errorf(ErrNotFound, "no such volume: %s", name)
	}
	return e.vol.clone(), nil
}

// apiVolume describes v for Get and List.
func apiVolume(v *Volume) *volume.Volume {
	return &volume.Volume{Name: v.Name, Mountpoint: mountpoint(v), CreatedAt: v.CreatedAt.Format(time.RFC3339)}
}

// mountpoint is where v is mounted, or "" while it is not.
func mountpoint(v *Volume) string {
	if v.Mounted {
		return v.Mountpoint
	}
	return ""
}

// status builds Get's Status: the common fields, then the backend's.
func (d *Driver) status(v *Volume) map[string]any {
	st := map[string]any{
		"type":    v.Type,
		"mounted": v.Mounted,
		"leases":  len(v.Leases),
	}
	if from, ok := v.Options[OptFrom]; ok {
		st[OptFrom] = from
		st["fromCopy"] = v.Info[infoFromCopy]
	}
	if b, ok := d.cfg.Backends[v.Type]; ok {
		maps.Copy(st, b.Status(v))
	} else {
		st["error"] = fmt.Sprintf("type %q is not supported by this build of holdfast", v.Type)
	}
	return st
}
