package driver

import (
	"context"
	"fmt"
	"maps"

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
	for _, v := range vols {
		d.setPaths(v)
		log := d.cfg.Log.WithFields(logrus.Fields{"volume": v.Name, "type": v.Type})
		_, mounted := mounts[v.Mountpoint]
		if v.Phase != PhaseReady {
			if err := d.finish(v, mounted); err != nil {
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

// finish completes the removal of a volume whose Create or Remove was
// interrupted: in both cases the volume must not exist.
func (d *Driver) finish(v *Volume, mounted bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), shortOpTimeout)
	defer cancel()
	b := d.cfg.Backends[v.Type]
	if mounted && b != nil {
		if err := b.Unmount(ctx, v); err != nil {
			return err
		}
	}
	d.cfg.Log.WithField("volume", v.Name).Warnf("completing a %s interrupted by a crash: removing the volume", v.Phase)
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
