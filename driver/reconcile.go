package driver

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	"github.com/sirupsen/logrus"
)

// reconcile loads the state and brings it in line with the running kernel.
// Requests interrupted by a crash are finished (Remove) or undone (Create).
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
	records := make(map[string]*Volume, len(vols))
	for _, v := range vols {
		d.setPaths(v)
		records[v.Name] = v
	}
	if err := d.sweep(records, mounts); err != nil {
		return err
	}
	d.deleting.Add(1)
	go func() {
		defer d.deleting.Done()
		d.emptyTrash()
	}()
	for _, v := range vols {
		if records[v.Name] == nil {
			continue // removed by sweep
		}
		log := d.cfg.Log.WithFields(logrus.Fields{"volume": v.Name, "type": v.Type})
		_, mounted := mounts[v.Mountpoint]
		if v.Phase != PhaseReady {
			// A record of holdfast before intents, caught mid-request.
			if err := d.finish(v, string(v.Phase), mounted); err != nil {
				log.WithError(err).Errorf("a %s interrupted by a crash could not be completed; holdfast retries at its next start", v.Phase)
			}
			continue
		}
		if err := d.adopt(v, mounted, log); err != nil {
			return err
		}
		d.vols[v.Name] = &entry{vol: v}
	}
	if n := len(vols); n > 0 {
		d.cfg.Log.WithField("volumes", len(d.vols)).Info("state loaded")
	}
	return nil
}

// sweep reads the volume directories: it completes the requests whose
// intents show they were interrupted, and clears what no record owns.
// Volumes it removes are deleted from records.
func (d *Driver) sweep(records map[string]*Volume, mounts map[string]string) error {
	dir := filepath.Join(d.cfg.Root, "volumes")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, ent := range ents {
		name := ent.Name()
		log := d.cfg.Log.WithField("volume", name)
		in, err := readIntent(filepath.Join(dir, name))
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
			if err := dropIntent(rec); err != nil {
				log.WithError(err).Warn("could not delete an intent file")
			}
		default:
			// An interrupted Create is undone; a Remove is completed.
			v := in.Volume
			d.setPaths(v)
			_, mounted := mounts[v.Mountpoint]
			if err := d.finish(v, in.Op, mounted); err != nil {
				log.WithError(err).Errorf("a %s interrupted by a crash could not be completed; holdfast retries at its next start", in.Op)
				continue
			}
			delete(records, name)
		}
	}
	return nil
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
// request's is finished, an empty one removed, anything else refused.
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
	if err := d.discard(ctx, d.cfg.Backends[v.Type], v); err != nil {
		return fmt.Errorf("clear what an interrupted %s of %s left: %w", in.Op, v.Name, err)
	}
	return nil
}

// finish removes a volume whose Create or Remove was interrupted (in both
// cases the volume must not exist): unmount, record, storage, directory.
// A remove intent stays in the directory until it goes to the trash with
// it, so a crash at any point here is finished at the next start.
func (d *Driver) finish(v *Volume, op string, mounted bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), shortOpTimeout)
	defer cancel()
	b := d.cfg.Backends[v.Type]
	if mounted && b != nil {
		if err := b.Unmount(ctx, v); err != nil {
			return err
		}
	}
	d.cfg.Log.WithField("volume", v.Name).Warnf("completing a %s interrupted by a crash: removing the volume", op)
	if fi, err := os.Lstat(v.Dir); err == nil && fi.IsDir() {
		if err := writeIntent(v, intentRemove); err != nil {
			return err
		}
	}
	if err := d.store.Delete(v.Name); err != nil {
		return err
	}
	return d.discard(ctx, b, v)
}

// adopt reconciles a ready volume's leases and mount with this boot.
func (d *Driver) adopt(v *Volume, mounted bool, log logrus.FieldLogger) error {
	before := v.clone()
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
	if v.Mounted == before.Mounted && v.BootID == before.BootID && maps.Equal(v.Leases, before.Leases) {
		return nil
	}
	return d.store.Put(v)
}

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
// that is not mounted.
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
