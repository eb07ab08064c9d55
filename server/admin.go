package server

import (
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/holdfast/holdfast/internal/admin"
)

// Admin makes s answer the admin protocol (/Holdfast.*, root only: see
// internal/admin) for a on the plugin socket besides the plugin protocol,
// and returns s. Call it before serving.
func (s *Instrumented) Admin(a admin.Driver) *Instrumented {
	s.admin = admin.Handler(a)
	return s
}

// routes answers /Holdfast.* with the admin handler, when there is one,
// and everything else with the plugin protocol.
func (s *Instrumented) routes() http.Handler {
	plugin := Handler(s, s.log)
	if s.admin == nil {
		return plugin
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, admin.Prefix) {
			plugin.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		s.admin.ServeHTTP(rec, r)
		s.log.WithFields(logrus.Fields{"admin": strings.TrimPrefix(r.URL.Path, admin.Prefix),
			"volume": r.URL.Query().Get("name"), "status": rec.status, "took": time.Since(start).Round(time.Millisecond)}).
			Info("admin request")
	})
}

// statusRecorder keeps the status an admin handler answered, for the log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Flush passes a streaming answer's flushes through.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
