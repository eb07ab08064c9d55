package server

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/holdfast/holdfast/driver"
)

// ErrShuttingDown answers requests that arrive during shutdown, except
// Capabilities, which is always answered.
var ErrShuttingDown = errors.New("holdfast is shutting down; retry when it is back")

// Instrumented wraps a volume.Driver: it logs every request (operation,
// volume, duration, result; secret option values redacted; reads at debug
// level) and counts the
// requests in flight so that Drain can wait for them.
type Instrumented struct {
	d   volume.Driver
	log logrus.FieldLogger
	rec Recorder
	// admin answers /Holdfast.* when set (see Admin).
	admin http.Handler

	mu       sync.Mutex
	closing  bool
	inflight sync.WaitGroup
}

// Recorder counts answered requests and their durations; op is the
// operation as dockerd names it without "VolumeDriver." (Create, Get, ...).
// *metrics.Metrics is one.
type Recorder interface {
	ObserveRequest(op string, err error, took time.Duration)
}

// Instrument wraps d.
func Instrument(d volume.Driver, log logrus.FieldLogger) *Instrumented {
	return &Instrumented{d: d, log: log}
}

// Record makes s report every answered request to r, and returns s. Call
// it before serving.
func (s *Instrumented) Record(r Recorder) *Instrumented {
	s.rec = r
	return s
}

// Drain refuses new requests (but Capabilities) and waits for those in
// flight.
func (s *Instrumented) Drain() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.inflight.Wait()
}

// do runs one request and logs it.
func (s *Instrumented) do(op, name string, fields logrus.Fields, fn func() error) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrShuttingDown
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	defer s.inflight.Done()

	start := time.Now()
	err := fn()
	s.logDone(op, name, fields, start, err)
	return err
}

// logDone logs a request that started at start, and records it.
func (s *Instrumented) logDone(op, name string, fields logrus.Fields, start time.Time, err error) {
	took := time.Since(start)
	if s.rec != nil {
		s.rec.ObserveRequest(op, err, took)
	}
	log := s.log.WithFields(fields).WithFields(logrus.Fields{
		"op":       op,
		"duration": took.Round(time.Microsecond).String(),
	})
	if name != "" {
		log = log.WithField("volume", name)
	}
	switch {
	case quiet(op, err) && err != nil:
		log.WithError(err).Debug("request done")
	case quiet(op, err):
		log.Debug("request ok")
	case err != nil:
		log.WithError(err).Warn("request failed")
	default:
		log.Info("request ok")
	}
}

// quiet says whether a request is logged at debug level only: the reads
// dockerd makes all the time (docker volume ls, inspect, and a Get before
// every Create), when they succeed or find no such volume.
func quiet(op string, err error) bool {
	switch op {
	case "Get", "Path", "List", "Capabilities":
		return err == nil || errors.Is(err, driver.ErrNotFound)
	}
	return false
}

// Create logs and forwards.
func (s *Instrumented) Create(r *volume.CreateRequest) error {
	return s.do("Create", r.Name, logrus.Fields{"options": driver.Redact(r.Options)}, func() error {
		return s.d.Create(r)
	})
}

// Remove logs and forwards.
func (s *Instrumented) Remove(r *volume.RemoveRequest) error {
	return s.do("Remove", r.Name, nil, func() error { return s.d.Remove(r) })
}

// Mount logs and forwards.
func (s *Instrumented) Mount(r *volume.MountRequest) (res *volume.MountResponse, err error) {
	err = s.do("Mount", r.Name, logrus.Fields{"id": r.ID}, func() error {
		res, err = s.d.Mount(r)
		return err
	})
	return res, err
}

// Unmount logs and forwards.
func (s *Instrumented) Unmount(r *volume.UnmountRequest) error {
	return s.do("Unmount", r.Name, logrus.Fields{"id": r.ID}, func() error { return s.d.Unmount(r) })
}

// Path logs and forwards.
func (s *Instrumented) Path(r *volume.PathRequest) (res *volume.PathResponse, err error) {
	err = s.do("Path", r.Name, nil, func() error {
		res, err = s.d.Path(r)
		return err
	})
	return res, err
}

// Get logs and forwards.
func (s *Instrumented) Get(r *volume.GetRequest) (res *volume.GetResponse, err error) {
	err = s.do("Get", r.Name, nil, func() error {
		res, err = s.d.Get(r)
		return err
	})
	return res, err
}

// List logs and forwards.
func (s *Instrumented) List() (res *volume.ListResponse, err error) {
	err = s.do("List", "", nil, func() error {
		res, err = s.d.List()
		return err
	})
	return res, err
}

// Capabilities logs and forwards, also while shutting down and after
// Drain: dockerd asks once and caches the answer, and takes an empty scope
// for "local", so refusing it would make a --scope global plugin local
// until dockerd restarts. The driver answers it from its configuration,
// without touching state, so it needs no draining.
func (s *Instrumented) Capabilities() *volume.CapabilitiesResponse {
	start := time.Now()
	res := s.d.Capabilities()
	s.logDone("Capabilities", "", nil, start, nil)
	if res == nil {
		res = &volume.CapabilitiesResponse{}
	}
	return res
}
