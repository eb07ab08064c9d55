package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// errBody is the body of every refusal, as the plugin protocol's own.
type errBody struct {
	Err string
}

// Handler answers the admin paths for d, to root only; ConnContext must be
// the server's ConnContext.
func Handler(d Driver) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathList, func(w http.ResponseWriter, r *http.Request) {
		vols, err := d.Volumes()
		reply(w, vols, err)
	})
	mux.HandleFunc("GET "+PathLeases, func(w http.ResponseWriter, r *http.Request) {
		name, ok := param(w, r, "name")
		if !ok {
			return
		}
		leases, err := d.Leases(name)
		reply(w, leases, err)
	})
	mux.HandleFunc("POST "+PathRelease, func(w http.ResponseWriter, r *http.Request) {
		name, ok := param(w, r, "name")
		id, ok2 := "", false
		if ok {
			id, ok2 = param(w, r, "id")
		}
		if !ok2 {
			return
		}
		did, err := d.Release(name, id)
		reply(w, map[string]string{"result": did}, err)
	})
	mux.HandleFunc("GET "+PathBackup, func(w http.ResponseWriter, r *http.Request) { backup(d, w, r) })
	mux.HandleFunc("POST "+PathRestore, func(w http.ResponseWriter, r *http.Request) { restore(d, w, r) })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := checkRoot(r.Context()); err != nil {
			refuse(w, http.StatusForbidden, err)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// param reads a required query parameter, refusing the request without it.
func param(w http.ResponseWriter, r *http.Request, key string) (string, bool) {
	v := r.URL.Query().Get(key)
	if v == "" {
		refuse(w, http.StatusBadRequest, fmt.Errorf("%s %s needs ?%s=", r.Method, r.URL.Path, key))
		return "", false
	}
	return v, true
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		refuse(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func refuse(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(errBody{Err: err.Error()})
}

// backup streams the volume; an error before the first byte is an error
// status, one after it the Holdfast-Error trailer the client checks.
func backup(d Driver, w http.ResponseWriter, r *http.Request) {
	name, ok := param(w, r, "name")
	if !ok {
		return
	}
	w.Header().Set("Trailer", trailerErr+", "+trailerNote)
	sw := &startWriter{w: w}
	note, err := d.Backup(r.Context(), name, sw, r.URL.Query().Get("freeze") == "1")
	if err != nil && !sw.started {
		w.Header().Del("Trailer")
		refuse(w, http.StatusInternalServerError, err)
		return
	}
	if !sw.started { // an empty stream: still send the header
		sw.start()
	}
	if err != nil {
		w.Header().Set(trailerErr, err.Error())
	}
	w.Header().Set(trailerNote, note)
}

// startWriter sends the status line with the first byte of the stream.
type startWriter struct {
	w       http.ResponseWriter
	started bool
}

func (s *startWriter) start() {
	s.w.Header().Set("Content-Type", "application/x-tar")
	s.w.WriteHeader(http.StatusOK)
	s.started = true
}

func (s *startWriter) Write(p []byte) (int, error) {
	if !s.started {
		s.start()
	}
	return s.w.Write(p)
}

func restore(d Driver, w http.ResponseWriter, r *http.Request) {
	name, ok := param(w, r, "name")
	if !ok {
		return
	}
	opts := map[string]string{}
	for _, kv := range r.URL.Query()["opt"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			refuse(w, http.StatusBadRequest, fmt.Errorf("option %q is not key=value (give --opt type=local, for example)", k))
			return
		}
		if _, twice := opts[k]; twice {
			refuse(w, http.StatusBadRequest, fmt.Errorf("option %q is given twice; give it once", k))
			return
		}
		opts[k] = v
	}
	res, err := d.Restore(r.Context(), name, opts, r.Body)
	reply(w, res, err)
}
