package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
)

// errNotLive says the mount table has nothing at a volume's mountpoint.
var errNotLive = errors.New("nothing is mounted there")

// Mount takes a lease for req.ID, mounting the volume if it is the first.
// Its answer is always the volume's own live mount: a record that says
// mounted is checked against the mount table first, and a volume found
// unmounted is mounted again, never answered as the bare directory.
func (d *Driver) Mount(req *volume.MountRequest) (*volume.MountResponse, error) {
	e, v, err := d.lock(req.Name)
	if err != nil {
		return nil, err
	}
	defer e.op.Unlock()
	if req.ID == "" {
		return nil, fmt.Errorf("mount %s: a mount ID is required (dockerd sends one with every Mount)", req.Name)
	}
	b, err := d.backend(v)
	if err != nil {
		return nil, err
	}
	if v.Mounted {
		if err := d.checkLive(v); errors.Is(err, errNotLive) {
			d.cfg.Log.WithFields(logrus.Fields{"volume": v.Name, "leases": len(v.Leases)}).Warn("volume is no longer mounted at its mountpoint; mounting it again")
			v.Mounted = false
		} else if err != nil {
			return nil, fmt.Errorf("mount %s: %w", v.Name, err)
		}
	}
	if _, ok := v.Leases[req.ID]; ok && v.Mounted {
		return &volume.MountResponse{Mountpoint: v.Mountpoint}, nil
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
			delete(v.Leases, req.ID)
			d.release(ctx, e, b, v)
		}
		return nil, fmt.Errorf("mount %s: %w", v.Name, err)
	}
	return &volume.MountResponse{Mountpoint: v.Mountpoint}, nil
}

// mount creates the mountpoint, mounts the backend on it and checks that
// the mount is there.
func (d *Driver) mount(ctx context.Context, b Backend, v *Volume) error {
	err := d.step("mkdir mountpoint")
	if err == nil {
		err = os.MkdirAll(v.Mountpoint, 0o755)
	}
	if err != nil {
		return fmt.Errorf("create mountpoint: %w", err)
	}
	if err := b.Mount(ctx, v); err != nil {
		os.Remove(v.Mountpoint)
		return err
	}
	if err := d.checkLive(v); err != nil {
		if uerr := b.Unmount(ctx, v); uerr == nil {
			os.Remove(v.Mountpoint)
		}
		return fmt.Errorf("the %s backend mounted the volume, but checking the mount table failed: %w", v.Type, err)
	}
	v.Mounted = true
	return nil
}

// checkLive checks against the mount table that v is mounted at its
// mountpoint; errNotLive when it is not.
func (d *Driver) checkLive(v *Volume) error {
	mounts, err := d.cfg.Mounter.Mountpoints(v.Mountpoint)
	if err != nil {
		return err
	}
	if _, ok := mounts[v.Mountpoint]; !ok {
		return fmt.Errorf("%s: %w", v.Mountpoint, errNotLive)
	}
	return nil
}

// unmount unmounts the backend and removes the empty mountpoint. When the
// backend fails, v.Mounted is set from the mount table.
func (d *Driver) unmount(ctx context.Context, b Backend, v *Volume) error {
	if err := b.Unmount(ctx, v); err != nil {
		if lerr := d.checkLive(v); errors.Is(lerr, errNotLive) {
			v.Mounted = false
		}
		return err
	}
	v.Mounted = false
	if err := os.Remove(v.Mountpoint); err != nil && !os.IsNotExist(err) {
		d.cfg.Log.WithError(err).WithField("volume", v.Name).Warn("mountpoint left behind")
	}
	return nil
}

// Unmount releases the lease req.ID and unmounts the volume when it was the
// last. The release is committed before the unmount, so a crash in between
// leaves a mount that start-up removes rather than a lease that would never
// be released. An unknown ID is harmless; on a volume without leases it
// releases what an earlier Unmount that failed left.
func (d *Driver) Unmount(req *volume.UnmountRequest) error {
	e, v, err := d.lock(req.Name)
	if err != nil {
		return err
	}
	defer e.op.Unlock()
	b, err := d.backend(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), shortOpTimeout)
	defer cancel()
	if _, ok := v.Leases[req.ID]; !ok {
		d.cfg.Log.WithFields(logrus.Fields{"volume": v.Name, "id": req.ID}).Debug("unmount of unknown mount ID")
		if len(v.Leases) > 0 {
			return nil
		}
		return d.release(ctx, e, b, v)
	}
	delete(v.Leases, req.ID)
	if err := d.save(e, v); err != nil {
		return fmt.Errorf("unmount %s: %w", v.Name, err)
	}
	if len(v.Leases) > 0 {
		return nil
	}
	return d.release(ctx, e, b, v)
}

// release takes down a volume without leases: its mount, or what a failed
// unmount left of it (a backend's devices and keys). It publishes what the
// mount table then says, uncommitted: start-up believes the mount table,
// not the record.
func (d *Driver) release(ctx context.Context, e *entry, b Backend, v *Volume) error {
	var err error
	if v.Mounted {
		err = d.unmount(ctx, b, v)
	} else if r, ok := b.(Recoverer); ok {
		err = r.Recover(ctx, v)
	}
	d.setRecord(e, v.clone())
	if err != nil {
		return fmt.Errorf("unmount %s: %w (holdfast releases what is left at the next Mount, Unmount or Remove of this volume, or at its next start)", v.Name, err)
	}
	return nil
}
