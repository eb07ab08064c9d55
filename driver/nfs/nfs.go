// Package nfs is holdfast's "nfs" volume type: an export of an NFS server,
// mounted by the kernel's NFS client with mount(2) at a volume's first lease
// and unmounted at its last. Every mount and unmount is bounded by a
// deadline, host names are resolved at each mount, the newest NFS version
// the server offers is negotiated, and failures say what the kernel
// reported and what to check.
package nfs

import (
	"context"
	"io"
	"net/netip"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/volfs"
)

// Volume types this package serves.
const (
	// TypeNFS negotiates NFS 4.2, 4.1, 4.0 and 3 unless o names a version.
	TypeNFS = "nfs"
	// TypeNFS4 negotiates NFSv4 only, like Docker's local driver with
	// --opt type=nfs4.
	TypeNFS4 = "nfs4"
)

// DefaultTimeout bounds each Mount and Unmount when Backend.Timeout is zero.
// It is well inside dockerd's 2-minute Mount timeout.
const DefaultTimeout = 30 * time.Second

// Keys of Volume.Info recorded at each Mount.
const (
	infoVersion = "version" // the NFS version mounted, e.g. "4.2"
	infoAddress = "address" // the server's IP address the name resolved to
	infoOptions = "options" // the mount flags and data given to the kernel
)

// Resolver looks up a server's host name; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Counters counts what the NFS backend does; *metrics.Metrics is one.
type Counters interface {
	// NFSMountAttempt counts one mount(2) of NFS version.
	NFSMountAttempt(version string)
	// NFSMountTimeout counts one mount(2) abandoned at its deadline.
	NFSMountTimeout()
}

// Backend is the "nfs" volume type. Use it by pointer: it remembers mount
// attempts abandoned at their deadline until the kernel lets go of them.
type Backend struct {
	// Mounter is the mount table.
	Mounter volfs.Mounter
	// Timeout bounds each Mount (name resolution and every version tried)
	// and each Unmount; DefaultTimeout when zero.
	Timeout time.Duration
	// Resolver resolves server names; net.DefaultResolver when nil.
	Resolver Resolver
	// Type is TypeNFS (when empty) or TypeNFS4.
	Type string
	// Log receives what happens after a call has returned, such as an
	// abandoned mount completing late and being removed. Discarded when nil.
	Log logrus.FieldLogger
	// Faults fails steps on purpose, for tests; nil in production. Mounts
	// and unmounts are steps of the Mounter (volfs.FailingMounter); this
	// names the backend's own: name resolution.
	Faults *failpoint.Set
	// Counters counts mount attempts and timeouts; none when nil.
	Counters Counters

	mu sync.Mutex
	// late holds the mount attempts abandoned at their deadline whose
	// mount(2) has not returned yet, by mountpoint.
	late map[string]*lateMount
	// shared replaces sharesSuperblock in tests.
	shared func(target string) bool
	// exports keeps the mounted exports' filesystem figures.
	exports *exportStats
}

// New returns the backend of type=nfs on mounter, with each Mount and
// Unmount bounded by timeout (DefaultTimeout when zero).
func New(mounter volfs.Mounter, timeout time.Duration, log logrus.FieldLogger) *Backend {
	return &Backend{Mounter: mounter, Timeout: timeout, Log: log}
}

// exportStats returns the backend's figures keeper, made at first use so
// that a Backend literal works too.
func (b *Backend) exportStats() *exportStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.exports == nil {
		b.exports = newExportStats()
	}
	return b.exports
}

func (b *Backend) typ() string {
	if b.Type == "" {
		return TypeNFS
	}
	return b.Type
}

func (b *Backend) timeout() time.Duration {
	if b.Timeout <= 0 {
		return DefaultTimeout
	}
	return b.Timeout
}

func (b *Backend) log() logrus.FieldLogger {
	if b.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		return l
	}
	return b.Log
}

// Parse accepts addr, device, share and o, in the forms Docker's local
// driver takes for NFS, and returns them as addr, device=:/path and o.
func (b *Backend) Parse(raw map[string]string) (map[string]string, error) {
	c, err := parse(b.typ(), raw)
	if err != nil {
		return nil, err
	}
	return c.options(), nil
}

// Create has nothing to prepare and does not contact the server: Swarm
// creates the volume on every node, whether the server is up or not.
func (b *Backend) Create(context.Context, *driver.Volume) error { return nil }

// Remove has nothing to do: the data lives on the server and stays there.
func (b *Backend) Remove(context.Context, *driver.Volume) error { return nil }

// Status reports the server, export, version and options: those in use
// while mounted, those requested otherwise. While mounted it adds the last
// figures of the export's filesystem (exportFilesystemSize, ...Used,
// ...Available, ...Age: the server's whole filesystem, not this volume's
// own usage), which the sampler takes (Meter): Status never asks the
// server.
func (b *Backend) Status(v *driver.Volume) map[string]any {
	c, err := configOf(b.typ(), v.Options)
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	st := map[string]any{"server": c.host, "export": c.export}
	if v.Mounted && v.Info[infoVersion] != "" {
		st["version"] = v.Info[infoVersion]
		st["address"] = v.Info[infoAddress]
		st["options"] = v.Info[infoOptions]
		b.exportStats().status(v.Mountpoint, st)
		return st
	}
	st["version"] = c.version
	if cand := c.candidates(b.typ()); len(cand) > 1 {
		st["version"] = "negotiated at mount: " + joinVersions(cand)
	}
	st["options"] = c.opts.redacted()
	return st
}

// Meter asks, in the background, for a mounted volume's export figures so
// that Status finds them fresh. An export has no size or usage of the
// volume's own, so the measure is empty.
func (b *Backend) Meter(v *driver.Volume) driver.Measure {
	if v.Mounted {
		b.exportStats().refresh(v.Mountpoint)
	}
	return driver.Measure{}
}
