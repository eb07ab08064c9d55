package driver

import (
	"slices"
	"strings"
	"time"

	"github.com/holdfast/holdfast/internal/metrics"
)

// DefaultSampleInterval is how often the driver asks backends for their
// volumes' size and usage when Config.SampleInterval is zero.
const DefaultSampleInterval = 10 * time.Second

// Meter is implemented by backends that can tell a volume's own size and
// usage from memory or local kernel state, without blocking. The driver
// asks in the background (see sample) and keeps the answers for
// VolumeStats, so that a metrics scrape never calls a backend.
type Meter interface {
	Meter(v *Volume) Measure
}

// Measure is a volume's own size and usage.
type Measure struct {
	// Size is the volume's limit in bytes; 0 when it has none.
	Size int64
	// Used is what the volume holds in bytes, when UsedKnown.
	Used      int64
	UsedKnown bool
}

// VolumeStats describes every ready volume from memory: mounted and leases
// from the records, size and usage from the last sample.
func (d *Driver) VolumeStats() []metrics.VolumeStat {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]metrics.VolumeStat, 0, len(d.vols))
	for name, e := range d.vols {
		if e.vol == nil || e.vol.Phase != PhaseReady {
			continue
		}
		m := d.measures[name]
		out = append(out, metrics.VolumeStat{Name: name, Type: e.vol.Type, Size: m.Size, Used: m.Used,
			UsedKnown: m.UsedKnown, Mounted: e.vol.Mounted, Leases: len(e.vol.Leases)})
	}
	slices.SortFunc(out, func(a, b metrics.VolumeStat) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// sample measures every volume whose backend is a Meter, every interval,
// until stop is closed.
func (d *Driver) sample(interval time.Duration, stop <-chan struct{}) {
	defer d.sampling.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		d.sampleOnce()
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// sampleOnce takes one sample of every volume.
func (d *Driver) sampleOnce() {
	d.mu.Lock()
	vols := make([]*Volume, 0, len(d.vols))
	for _, e := range d.vols {
		if e.vol != nil && e.vol.Phase == PhaseReady {
			vols = append(vols, e.vol.clone())
		}
	}
	d.mu.Unlock()
	got := make(map[string]Measure, len(vols))
	for _, v := range vols {
		if m, ok := d.cfg.Backends[v.Type].(Meter); ok {
			got[v.Name] = m.Meter(v)
		}
	}
	d.mu.Lock()
	d.measures = got
	d.mu.Unlock()
}
