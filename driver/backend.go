package driver

import (
	"context"
	"maps"
	"time"
)

// Backend provides one volume type. The driver serialises calls per volume
// and decides when to call them: Mount at the first lease, Unmount when the
// last lease is released. Backends keep no state of their own between calls
// beyond what they store in Volume.Info.
type Backend interface {
	// Parse checks the options given to Create (without "type") and returns
	// their canonical form with defaults filled in.
	Parse(raw map[string]string) (map[string]string, error)
	// Create prepares the storage of a new volume. On error it must leave
	// nothing behind.
	Create(ctx context.Context, v *Volume) error
	// Mount makes the volume available at v.Mountpoint. v.Leases holds the
	// leases taken before this Mount: when there are any, containers may
	// still use an earlier mount that holdfast lost (a managed plugin
	// restarts in a new mount namespace), and the backend must share that
	// earlier mount's data or refuse; never present a second, diverging copy.
	Mount(ctx context.Context, v *Volume) error
	// Unmount undoes Mount.
	Unmount(ctx context.Context, v *Volume) error
	// Remove deletes the volume's storage. It is called only while the
	// volume is not mounted, and must succeed when there is nothing left.
	Remove(ctx context.Context, v *Volume) error
	// Status returns the type-specific fields of Get's Status. It must not
	// block: it may read v and local kernel state, never a remote server.
	Status(v *Volume) map[string]any
}

// Recoverer is implemented by backends that hold kernel objects besides
// the mount (loop devices, device-mapper mappings, keys). At start-up the
// driver calls Recover for every volume it does not find mounted, so that
// what a crash left half set up is released.
type Recoverer interface {
	Recover(ctx context.Context, v *Volume) error
}

// Phase is where a volume is in its life cycle. Records in PhaseCreating
// or PhaseRemoving at start-up belong to a request interrupted by a crash.
type Phase string

// Volume phases.
const (
	PhaseCreating Phase = "creating"
	PhaseReady    Phase = "ready"
	PhaseRemoving Phase = "removing"
)

// Volume is the persistent record of one volume.
type Volume struct {
	Name string
	Type string
	// Options are the canonical options, defaults filled in.
	Options   map[string]string
	CreatedAt time.Time
	Phase     Phase
	// Leases maps mount IDs to the time they were taken.
	Leases map[string]time.Time `json:",omitempty"`
	// Mounted is true while the backend is mounted at Mountpoint.
	Mounted bool
	// BootID is the kernel boot the leases and mount belong to.
	BootID string `json:",omitempty"`
	// Info holds facts a backend decided and must keep (e.g. the NFS
	// version negotiated). Never secrets.
	Info map[string]string `json:",omitempty"`

	// Dir is the volume's private directory under --root/volumes.
	Dir string `json:"-"`
	// Mountpoint is where the volume is presented to Docker.
	Mountpoint string `json:"-"`
}

// clone returns a deep copy of v.
func (v *Volume) clone() *Volume {
	c := *v
	c.Options = maps.Clone(v.Options)
	c.Info = maps.Clone(v.Info)
	c.Leases = maps.Clone(v.Leases)
	return &c
}
