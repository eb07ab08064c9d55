// Package driver implements holdfast's Docker volume driver: names, typed
// options, persistent state, mount-ID leases and dispatch to one Backend per
// volume type.
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
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
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
	Mounter Mounter
	// Backends maps each volume type to its backend.
	Backends map[string]Backend
	// Log receives the driver's own messages.
	Log logrus.FieldLogger
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
	// deleting counts the removed volumes' directories being deleted.
	deleting sync.WaitGroup
}

type entry struct {
	op  sync.Mutex
	vol *Volume // nil until created and after removal
}

// New opens the state under cfg.Root, reconciles it with the mount table
// and the boot id, and returns the driver. Close releases it.
func New(cfg Config) (*Driver, error) {
	var err error
	// Root only, at every level: see perm_linux.go.
	if cfg.Root, err = PrivateDir(cfg.Root, "--root", cfg.Log); err != nil {
		return nil, err
	}
	if cfg.MountRoot, err = PrivateDir(cfg.MountRoot, "--mount-root", cfg.Log); err != nil {
		return nil, err
	}
	for _, dir := range []string{"volumes", "trash"} {
		if _, err := PrivateDir(filepath.Join(cfg.Root, dir), "--root", cfg.Log); err != nil {
			return nil, err
		}
	}
	if err := privateFile(filepath.Join(cfg.Root, "holdfast.db"), cfg.Log); err != nil {
		return nil, err
	}
	store, err := OpenStore(filepath.Join(cfg.Root, "holdfast.db"))
	if err != nil {
		return nil, err
	}
	d := &Driver{cfg: cfg, store: store, vols: map[string]*entry{}}
	if err := d.reconcile(); err != nil {
		store.Close()
		return nil, err
	}
	return d, nil
}

// Close waits for the removed volumes' directories to be deleted and
// closes the state database. Mounted volumes stay mounted.
func (d *Driver) Close() error {
	d.deleting.Wait()
	return d.store.Close()
}

// Create creates a volume, or succeeds without change if it exists with
// the same options.
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
		return sameVolume(cur, typ, opts)
	}
	v := d.newVolume(req.Name, typ, opts)
	if err := d.create(b, v); err != nil {
		d.forget(req.Name, e)
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

// parse splits off the type and checks the options against its backend.
func (d *Driver) parse(raw map[string]string) (string, Backend, map[string]string, error) {
	typ := DefaultType
	rest := make(map[string]string, len(raw))
	for k, v := range raw {
		if k == "type" {
			typ = v
			continue
		}
		rest[k] = v
	}
	b, ok := d.cfg.Backends[typ]
	if !ok {
		return "", nil, nil, errorf(ErrUnknownType, "unknown volume type %q: known types are %s", typ,
			strings.Join(slices.Sorted(maps.Keys(d.cfg.Backends)), ", "))
	}
	opts, err := b.Parse(rest)
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
// an intent in v's directory covering a crash before it. On failure it
// leaves nothing behind.
func (d *Driver) create(b Backend, v *Volume) error {
	ctx, cancel := context.WithTimeout(context.Background(), longOpTimeout)
	defer cancel()
	if err := d.makeVolumeDir(ctx, v); err != nil {
		return RootFull(err, v)
	}
	err := writeIntent(v, intentCreate)
	if err == nil {
		err = b.Create(ctx, v)
	}
	if err == nil {
		v.Phase = PhaseReady
		err = d.store.Put(v)
	}
	if err != nil {
		if derr := d.discard(ctx, b, v); derr != nil {
			d.cfg.Log.WithError(derr).WithField("volume", v.Name).Error("a failed Create left storage behind; holdfast removes it at its next start")
		}
		return RootFull(err, v)
	}
	if err := dropIntent(v); err != nil {
		d.cfg.Log.WithError(err).WithField("volume", v.Name).Warn("intent file left behind; holdfast deletes it at its next start")
	}
	return nil
}

// makeVolumeDir makes v's private directory. A directory left there by an
// interrupted request is cleared first; anything else is refused, never
// reused or deleted.
func (d *Driver) makeVolumeDir(ctx context.Context, v *Volume) error {
	err := os.Mkdir(v.Dir, 0o700)
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := d.clearLeftover(ctx, v.Dir); err != nil {
		return err
	}
	return os.Mkdir(v.Dir, 0o700)
}

// discard removes what exists of v's storage, moves its directory to the
// trash (in one rename, intent included) and removes its mountpoint; the
// caller deletes the record, if there is one.
func (d *Driver) discard(ctx context.Context, b Backend, v *Volume) error {
	if b != nil {
		if err := b.Remove(ctx, v); err != nil {
			return err
		}
	}
	if err := d.checkRemovable(v.Dir); err != nil {
		return err
	}
	if err := d.trash(v.Dir); err != nil {
		return err
	}
	d.removeMountpoint(v)
	return nil
}

// removeMountpoint removes v's mountpoint directory if it is there and
// empty: a crash between making and removing it may leave it.
func (d *Driver) removeMountpoint(v *Volume) {
	if err := os.Remove(v.Mountpoint); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.cfg.Log.WithError(err).WithField("volume", v.Name).Warn("mountpoint left behind")
	}
}

// lock finds the entry of a ready volume and takes its op lock. The caller
// must unlock e.op. It returns a copy of the record to work on.
func (d *Driver) lock(name string) (*entry, *Volume, error) {
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

// forget drops e from the map if it is still the entry of name.
func (d *Driver) forget(name string, e *entry) {
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

// Mount takes a lease for req.ID, mounting the volume if it is the first.
func (d *Driver) Mount(req *volume.MountRequest) (*volume.MountResponse, error) {
	e, v, err := d.lock(req.Name)
	if err != nil {
		return nil, err
	}
	defer e.op.Unlock()
	if req.ID == "" {
		return nil, fmt.Errorf("mount %s: a mount ID is required (dockerd sends one with every Mount)", req.Name)
	}
	if _, ok := v.Leases[req.ID]; ok && v.Mounted {
		return &volume.MountResponse{Mountpoint: v.Mountpoint}, nil
	}
	b, err := d.backend(v)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), longOpTimeout)
	defer cancel()
	mountedNow := false
	if !v.Mounted {
		if err := d.mount(ctx, b, v); err != nil {
			return nil, fmt.Errorf("mount %s: %w", v.Name, err)
		}
		mountedNow = true
	}
	if v.Leases == nil {
		v.Leases = map[string]time.Time{}
	}
	v.Leases[req.ID] = time.Now().UTC()
	v.BootID = d.cfg.BootID
	if err := d.save(e, v); err != nil {
		if mountedNow {
			d.unmount(ctx, b, v)
		}
		return nil, fmt.Errorf("mount %s: %w", v.Name, err)
	}
	return &volume.MountResponse{Mountpoint: v.Mountpoint}, nil
}

// mount creates the mountpoint and mounts the backend on it.
func (d *Driver) mount(ctx context.Context, b Backend, v *Volume) error {
	if err := os.MkdirAll(v.Mountpoint, 0o755); err != nil {
		return fmt.Errorf("create mountpoint: %w", err)
	}
	if err := b.Mount(ctx, v); err != nil {
		os.Remove(v.Mountpoint)
		return err
	}
	v.Mounted = true
	return nil
}

// unmount unmounts the backend and removes the empty mountpoint.
func (d *Driver) unmount(ctx context.Context, b Backend, v *Volume) error {
	if err := b.Unmount(ctx, v); err != nil {
		return err
	}
	v.Mounted = false
	if err := os.Remove(v.Mountpoint); err != nil && !os.IsNotExist(err) {
		d.cfg.Log.WithError(err).WithField("volume", v.Name).Warn("mountpoint left behind")
	}
	return nil
}

// Unmount releases the lease req.ID and unmounts the volume when it was the
// last. An unknown ID is harmless. The release is committed before the
// unmount, so a crash in between leaves a mount that start-up removes
// rather than a lease that would never be released.
func (d *Driver) Unmount(req *volume.UnmountRequest) error {
	e, v, err := d.lock(req.Name)
	if err != nil {
		return err
	}
	defer e.op.Unlock()
	if _, ok := v.Leases[req.ID]; !ok {
		d.cfg.Log.WithFields(logrus.Fields{"volume": v.Name, "id": req.ID}).Debug("unmount of unknown mount ID ignored")
		return nil
	}
	delete(v.Leases, req.ID)
	if err := d.save(e, v); err != nil {
		return fmt.Errorf("unmount %s: %w", v.Name, err)
	}
	if len(v.Leases) > 0 || !v.Mounted {
		return nil
	}
	b, err := d.backend(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), shortOpTimeout)
	defer cancel()
	if err := d.unmount(ctx, b, v); err != nil {
		return fmt.Errorf("unmount %s: %w (the volume stays mounted; holdfast retries at the next Mount or Remove)", v.Name, err)
	}
	// Not committed: the stored record may still say mounted, and start-up
	// believes the mount table, not the record.
	d.setRecord(e, v.clone())
	return nil
}

// Remove deletes a volume that has no leases, and its data: a remove
// intent, the backend's storage, one commit, then the directory goes to
// the trash. A crash after the intent is completed at the next start.
func (d *Driver) Remove(req *volume.RemoveRequest) error {
	e, v, err := d.lock(req.Name)
	if err != nil {
		return err
	}
	defer e.op.Unlock()
	if n := len(v.Leases); n > 0 {
		return errorf(ErrInUse, "volume %s is in use by %d mounts; stop the containers using it first", v.Name, n)
	}
	b, err := d.backend(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), shortOpTimeout)
	defer cancel()
	if v.Mounted {
		if err := d.unmount(ctx, b, v); err != nil {
			return fmt.Errorf("remove %s: %w", v.Name, err)
		}
	}
	if err := d.readyToRemove(ctx, b, v); err != nil {
		return err
	}
	// The intent comes first: once the backend has destroyed anything
	// (a generated key), the removal must be completed, even after a crash.
	if err := writeIntent(v, intentRemove); err != nil {
		return fmt.Errorf("remove %s: %w", v.Name, err)
	}
	if err := b.Remove(ctx, v); err != nil {
		if derr := dropIntent(v); derr != nil {
			d.cfg.Log.WithError(derr).WithField("volume", v.Name).Error("intent file left behind: holdfast will complete this removal at its next start")
		}
		return fmt.Errorf("remove %s: %w", v.Name, err)
	}
	if err := d.store.Delete(v.Name); err != nil {
		return fmt.Errorf("remove %s: %w; holdfast completes the removal at its next start", v.Name, err)
	}
	// checkRemovable passed above, under the op lock.
	if err := d.trash(v.Dir); err != nil {
		d.cfg.Log.WithError(err).WithField("volume", v.Name).Error("the removed volume's directory is left behind; holdfast deletes it at its next start, or before a volume of this name is created")
	}
	d.removeMountpoint(v)
	d.forget(v.Name, e)
	return nil
}

// readyToRemove checks that v's directory can be deleted. A mount below
// it that a crash left (a crypt volume's filesystem) is released first
// through the backend's Recover: the volume has no leases and is not
// mounted, so nothing uses it.
func (d *Driver) readyToRemove(ctx context.Context, b Backend, v *Volume) error {
	err := d.checkRemovable(v.Dir)
	r, ok := b.(Recoverer)
	if err == nil || !ok {
		return err
	}
	if rerr := r.Recover(ctx, v); rerr != nil {
		return fmt.Errorf("%w (releasing it failed: %v)", err, rerr)
	}
	return d.checkRemovable(v.Dir)
}

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
	if b, ok := d.cfg.Backends[v.Type]; ok {
		maps.Copy(st, b.Status(v))
	} else {
		st["error"] = fmt.Sprintf("type %q is not supported by this build of holdfast", v.Type)
	}
	return st
}
