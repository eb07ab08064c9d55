// Package metrics exports holdfast's Prometheus metrics: per-volume gauges
// read from a snapshot the driver keeps in memory (a scrape never calls a
// backend), request counts and durations recorded by the server, and NFS
// mount attempts and timeouts recorded by the NFS backend.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// VolumeStat is one volume as the snapshot holds it.
type VolumeStat struct {
	Name, Type string
	// Size is the volume's own limit in bytes; 0 when it has none.
	Size int64
	// Used is the volume's own usage in bytes, when UsedKnown.
	Used      int64
	UsedKnown bool
	Mounted   bool
	Leases    int
}

// Source gives the snapshot. VolumeStats must answer from memory.
type Source interface {
	VolumeStats() []VolumeStat
}

// Metrics holds holdfast's collectors on a registry of its own.
type Metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	durations   *prometheus.HistogramVec
	nfsAttempts *prometheus.CounterVec
	nfsTimeouts prometheus.Counter
}

// New registers the collectors; the volume gauges read src at each scrape.
func New(src Source) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_requests_total",
			Help: "Volume plugin requests answered, by operation (as dockerd names it, without VolumeDriver.) and result (ok or error).",
		}, []string{"op", "result"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "holdfast_request_duration_seconds",
			Help:    "Time to answer volume plugin requests, by operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"op"}),
		nfsAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_nfs_mount_attempts_total",
			Help: "NFS mount(2) calls made, by NFS version tried.",
		}, []string{"version"}),
		nfsTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_nfs_mount_timeouts_total",
			Help: "NFS mount(2) calls abandoned at --nfs-timeout because the server did not answer.",
		}),
	}
	m.reg.MustRegister(m.requests, m.durations, m.nfsAttempts, m.nfsTimeouts, volumeCollector{src},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveRequest records one answered request.
func (m *Metrics) ObserveRequest(op string, err error, took time.Duration) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.requests.WithLabelValues(op, result).Inc()
	m.durations.WithLabelValues(op).Observe(took.Seconds())
}

// NFSMountAttempt records one NFS mount(2) call of version.
func (m *Metrics) NFSMountAttempt(version string) { m.nfsAttempts.WithLabelValues(version).Inc() }

// NFSMountTimeout records one NFS mount(2) call abandoned at its deadline.
func (m *Metrics) NFSMountTimeout() { m.nfsTimeouts.Inc() }

// Handler serves the registry in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return mux
}

// Serve answers GET /metrics on l until ctx is done.
func (m *Metrics) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) {
		return e
	}
	return err
}

var (
	volLabels = []string{"volume", "type"}
	sizeDesc  = prometheus.NewDesc("holdfast_volume_size_bytes", "The volume's own size limit (tmpfs, crypt, quota-limited local); absent for volumes without one.", volLabels, nil)
	usedDesc  = prometheus.NewDesc("holdfast_volume_used_bytes", "The volume's own usage, as last measured (local: a background walk at most about 30 s old); absent until measured, and for nfs.", volLabels, nil)
	mntDesc   = prometheus.NewDesc("holdfast_volume_mounted", "1 while the volume is mounted, else 0.", volLabels, nil)
	leaseDesc = prometheus.NewDesc("holdfast_volume_leases", "Mount leases (containers using the volume).", volLabels, nil)
)

// volumeCollector turns the snapshot into gauges at each scrape.
type volumeCollector struct{ src Source }

func (c volumeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sizeDesc, usedDesc, mntDesc, leaseDesc} {
		ch <- d
	}
}

func (c volumeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, v := range c.src.VolumeStats() {
		gauge := func(d *prometheus.Desc, x float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, x, v.Name, v.Type)
		}
		if v.Size > 0 {
			gauge(sizeDesc, float64(v.Size))
		}
		if v.UsedKnown {
			gauge(usedDesc, float64(v.Used))
		}
		mounted := 0.0
		if v.Mounted {
			mounted = 1
		}
		gauge(mntDesc, mounted)
		gauge(leaseDesc, float64(v.Leases))
	}
}
