package driver

import (
	"context"
	"strings"

	"github.com/sirupsen/logrus"
)

// ownLease reports whether id is one of holdfast's own leases (a View's or
// fill's), never one dockerd took.
func ownLease(id string) bool {
	return strings.HasPrefix(id, ViewLeasePrefix) || strings.HasPrefix(id, FillLeasePrefix)
}

// dockerLeases counts the leases on v that dockerd took.
func dockerLeases(v *Volume) int {
	n := 0
	for id := range v.Leases {
		if !ownLease(id) {
			n++
		}
	}
	return n
}

// filling reports whether v holds a fill lease: a restore or clone was
// filling it when holdfast stopped.
func filling(v *Volume) bool {
	for id := range v.Leases {
		if strings.HasPrefix(id, FillLeasePrefix) {
			return true
		}
	}
	return false
}

// dropViewLeases drops the leases of views a stopped holdfast left: a view
// never outlives the process that opened it.
func dropViewLeases(v *Volume, log logrus.FieldLogger) {
	for id := range v.Leases {
		if strings.HasPrefix(id, ViewLeasePrefix) {
			log.WithField("lease", id).Info("dropping the lease of a backup or clone that ended with holdfast's last run")
			delete(v.Leases, id)
		}
	}
}

// undoFill removes, at start-up, a volume a restore or clone was filling
// when holdfast stopped: it was never acknowledged, and what it holds may
// be partial. A removal that fails keeps the volume out of service until
// docker volume rm, a create of the name or the next start completes it.
func (d *Driver) undoFill(v *Volume, mounted bool, log logrus.FieldLogger) {
	log.Warn("a restore or clone was filling this volume when holdfast stopped: removing the half-filled volume")
	ctx, cancel := context.WithTimeout(context.Background(), shortOpTimeout)
	defer cancel()
	b := d.cfg.Backends[v.Type]
	err := d.markRemoving(v)
	if err == nil && mounted && b != nil {
		err = b.Unmount(ctx, v)
	}
	if err == nil {
		err = d.removeVolume(ctx, b, v, false)
	}
	if err != nil {
		log.WithError(err).Errorf("the half-filled volume could not be removed; it stays out of service until docker volume rm %s, a create of it or holdfast's next start completes the removal", v.Name)
		v.Phase = PhaseRemoving
		d.vols[v.Name] = &entry{vol: v}
	}
}
