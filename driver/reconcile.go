package driver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
)

// reconcile loads the state and brings it in line with the running kernel.
// Requests interrupted by a crash are resumed: a Remove is completed, a
// Create undone.
// After a reboot every lease is dropped and nothing is believed mounted.
// Within the same boot the leases are kept, a volume still mounted is
// adopted rather than mounted over, and a mount left with no lease (a crash
// between mount and commit, or between release and unmount) is unmounted.
func (d *Driver) reconcile() error {
	vols, err := d.store.All()
	if err != nil {
		return fmt.Errorf("load state: %w", err)
	}
	mounts, err := d.cfg.Mounter.Mountpoints(d.cfg.MountRoot)
	if err != nil {
		return err
	}
	d.clearViews()
	records := make(map[string]*Volume, len(vols))
	for _, v := range vols {
		d.setPaths(v)
		records[v.Name] = v
	}
	// What the trash holds now is what a crash cut short; the removals
	// resumed below purge their own entries.
	leftover := d.trashEntries()
	if err := d.sweep(records, mounts); err != nil {
		return err
	}
	d.purging.Add(1)
	go func() {
		defer d.purging.Done()
		for _, path := range leftover {
			d.purge(path)
		}
	}()
	var changed []*Volume
	for _, v := range vols {
		if records[v.Name] == nil {
			continue // removed by sweep
		}
		log := d.cfg.Log.WithFields(logrus.Fields{"volume": v.Name, "type": v.Type})
		_, mounted := mounts[v.Mountpoint]
		if v.Phase != PhaseReady {
			// A record of holdfast before intents, caught mid-request.
			op := intentRemove
			if v.Phase == PhaseCreating {
				op = intentCreate
			}
			if err := d.resume(v, op, mounted); err != nil {
				log.WithError(err).Errorf("a %s interrupted by a crash could not be completed; the volume stays out of service until docker volume rm %s, a create of it or holdfast's next start completes the removal", op, v.Name)
				v.Phase = PhaseRemoving
				d.vols[v.Name] = &entry{vol: v}
			}
			continue
		}
		if filling(v) {
			d.undoFill(v, mounted, log)
			continue
		}
		if d.adopt(v, mounted, log) {
			changed = append(changed, v)
		}
		d.vols[v.Name] = &entry{vol: v}
	}
	// One commit for every record start-up changed, however many.
	if err := d.store.PutAll(changed); err != nil {
		return err
	}
	if n := len(vols); n > 0 {
		d.cfg.Log.WithField("volumes", len(d.vols)).Info("state loaded")
	}
	return nil
}

// sweep reads the volume directories: it resumes the requests whose
// intents show they were interrupted, and clears what no record owns.
// Volumes it removes are deleted from records; a removal it cannot
// complete keeps its volume out of service (never served, never mounted)
// until a Remove or Create of the name, or the next start, completes it.
func (d *Driver) sweep(records map[string]*Volume, mounts map[string]string) error {
	dir := filepath.Join(d.cfg.Root, "volumes")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	intents := readIntents(dir, ents)
	for i, ent := range ents {
		name := ent.Name()
		log := d.cfg.Log.WithField("volume", name)
		in, err := intents[i].in, intents[i].err
		if err != nil {
			log.WithError(err).Error("left in place; inspect it by hand")
			continue
		}
		rec := records[name]
		switch {
		case in == nil && rec == nil:
			d.clearUnowned(filepath.Join(dir, name), log)
		case in == nil:
		case in.Op == intentCreate && rec != nil:
			// The Create was committed; only the intent was left.
			if err := d.dropCreateIntent(rec); err != nil {
				log.WithError(err).Warn("could not turn a create intent into the volume's record")
			}
		default:
			// An interrupted Create is undone; a Remove is completed.
			v := in.Volume
			d.setPaths(v)
			_, mounted := mounts[v.Mountpoint]
			delete(records, name)
			if err := d.resume(v, in.Op, mounted); err != nil {
				log.WithError(err).Errorf("a %s interrupted by a crash could not be completed; the volume stays out of service until docker volume rm %s, a create of it or holdfast's next start completes the removal", in.Op, name)
				v.Phase = PhaseRemoving
				d.vols[name] = &entry{vol: v}
			}
		}
	}
	return nil
}

type intentOf struct {
	in  *intent
	err error
}

// readIntents reads the intent of each volume directory in dir, from a
// few goroutines: start-up reads every volume's directory, and the four
// lookups each takes are what start-up with many volumes spends its time
// on.
func readIntents(dir string, ents []os.DirEntry) []intentOf {
	res := make([]intentOf, len(ents))
	workers := min(8, len(ents))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(ents); i = int(next.Add(1) - 1) {
				res[i].in, res[i].err = readIntent(filepath.Join(dir, ents[i].Name()))
			}
		}()
	}
	wg.Wait()
	return res
}

// clearUnowned deletes an empty directory no record owns: a Create that
// crashed before writing its intent. Anything else is left and reported:
// holdfast never deletes data it cannot account for.
func (d *Driver) clearUnowned(path string, log logrus.FieldLogger) {
	if err := os.Remove(path); err != nil {
		log.WithError(err).Warnf("%s belongs to no volume holdfast knows (lost state, or not made by holdfast); it is left in place: move it away", path)
	}
}

// clearLeftover clears the directory a new volume needs: an interrupted
// request's is resumed, an empty one deleted, anything else refused.
func (d *Driver) clearLeftover(ctx context.Context, dir string) error {
	in, err := readIntent(dir)
	if err != nil {
		return err
	}
	if in == nil {
		if os.Remove(dir) == nil {
			return nil
		}
		return fmt.Errorf("%s already exists but belongs to no volume holdfast knows (lost state, or not made by holdfast); move it away, then create the volume again", dir)
	}
	v := in.Volume
	d.setPaths(v)
	if err := d.removeStorage(ctx, d.cfg.Backends[v.Type], v); err != nil {
		return fmt.Errorf("clear what an interrupted %s of %s left: %w", in.Op, v.Name, err)
	}
	return nil
}

// resume removes a volume whose Create or Remove was interrupted (in both
// cases the volume must not exist): unmount, then the removal, with a
// durable remove intent first, so a crash at any point here is resumed
// at the next start.
func (d *Driver) resume(v *Volume, op string, mounted bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), shortOpTimeout)
	defer cancel()
	b := d.cfg.Backends[v.Type]
	if mounted && b != nil {
		if err := b.Unmount(ctx, v); err != nil {
			return err
		}
	}
	d.cfg.Log.WithField("volume", v.Name).Warnf("completing a %s interrupted by a crash: removing the volume", op)
	if op == intentCreate {
		if err := d.markCreateUndone(v); err != nil {
			return err
		}
	}
	return d.removeVolume(ctx, b, v, false)
}

// markCreateUndone turns the create intent in v's directory into a
// durable remove intent: the interrupted Create is undone by a removal.
func (d *Driver) markCreateUndone(v *Volume) error {
	if fi, err := os.Lstat(v.Dir); err != nil || !fi.IsDir() {
		return nil // nothing of it on disk
	}
	err := d.rename(filepath.Join(v.Dir, creatingFile), filepath.Join(v.Dir, removingFile))
	if errors.Is(err, os.ErrNotExist) {
		err = d.writeRecord(v, removingFile)
	}
	if err == nil {
		err = d.syncDir(v.Dir)
	}
	return err
}

// adopt reconciles a ready volume's leases and mount with this boot, and
// says whether its record changed.
func (d *Driver) adopt(v *Volume, mounted bool, log logrus.FieldLogger) bool {
	before := v.clone()
	dropViewLeases(v, log)
	if v.BootID != "" && v.BootID != d.cfg.BootID {
		if len(v.Leases) > 0 {
			log.WithField("leases", len(v.Leases)).Info("dropping leases taken before the last reboot")
		}
		v.Leases = nil
	}
	v.BootID = d.cfg.BootID
	v.Mounted = mounted
	switch {
	case mounted && len(v.Leases) == 0:
		log.Info("unmounting a mount left without leases by a crash")
		if err := d.unmountLeftover(v); err != nil {
			log.WithError(err).Warn("leftover mount stays; holdfast retries at the next Mount or Remove")
		}
	case mounted:
		log.WithField("leases", len(v.Leases)).Info("adopted a volume still mounted")
	case len(v.Leases) > 0 && before.Mounted:
		log.Warn("volume has leases but is no longer mounted here (a restart in a new mount namespace?); containers keep their mounts, and the next Mount shares them where the type allows")
	}
	if !v.Mounted && len(v.Leases) == 0 {
		d.recover(v, log)
	}
	// A record's boot id matters only while it has leases or a mount: an
	// idle volume's record is left as it is, so a start after a reboot
	// rewrites only the volumes that were in use.
	return v.Mounted != before.Mounted || !maps.Equal(v.Leases, before.Leases) ||
		(v.BootID != before.BootID && (v.Mounted || len(v.Leases) > 0))
}

// unmountLeftover unmounts a ready volume found mounted without leases.
func (d *Driver) unmountLeftover(v *Volume) error {
	b, err := d.backend(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), shortOpTimeout)
	defer cancel()
	return d.unmount(ctx, b, v)
}

// recover has the backend release what a crash may have left of a volume
// that is not mounted; a failure is logged, and the next Mount retries.
func (d *Driver) recover(v *Volume, log logrus.FieldLogger) {
	r, ok := d.cfg.Backends[v.Type].(Recoverer)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), shortOpTimeout)
	defer cancel()
	if err := r.Recover(ctx, v); err != nil {
		log.WithError(err).Warn("could not release what a crash left of this volume; its next Mount retries")
	}
}
