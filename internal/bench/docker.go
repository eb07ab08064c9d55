package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Engine calls dockerd's API on its Unix socket: one client and one
// connection pool for the whole run, never a CLI process per call.
type Engine struct {
	http *http.Client
}

// NewEngine returns a client for the engine listening on sock.
func NewEngine(sock string) *Engine {
	return &Engine{http: &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
		Timeout: 3 * time.Minute,
	}}
}

func (e *Engine) do(method, path string, body any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://docker"+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := e.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	msg, _ := io.ReadAll(res.Body)
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, res.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// Ping checks that the engine answers.
func (e *Engine) Ping() error { return e.do(http.MethodGet, "/_ping", nil) }

// CreateVolume creates a volume with driver.
func (e *Engine) CreateVolume(name, driver string) error {
	return e.do(http.MethodPost, "/volumes/create", map[string]string{"Name": name, "Driver": driver})
}

// RemoveVolume removes a volume.
func (e *Engine) RemoveVolume(name string) error {
	return e.do(http.MethodDelete, "/volumes/"+url.PathEscape(name), nil)
}

// Docker measures create + remove pairs through dockerd with driver
// against floor, the least a durable plugin does (Floor), and against
// Docker's local driver, taking turns pair by pair (B2).
func Docker(e *Engine, driver, floor string, pairs int) ([]Row, error) {
	drivers := []string{driver, floor, "local"}
	// Warm up every path: dockerd loads a plugin on first use.
	for _, d := range drivers {
		if _, err := pair(e, "bench-warm", d); err != nil {
			return nil, err
		}
	}
	lat := make([]durations, len(drivers))
	for i := range pairs {
		for j, d := range drivers {
			t, err := pair(e, fmt.Sprintf("bench-%d-%d", j, i), d)
			if err != nil {
				return nil, err
			}
			lat[j] = append(lat[j], t)
		}
	}
	hf, fl, local := lat[0], lat[1], lat[2]
	mean := func(d durations) float64 { return ms(d.sum()) / float64(pairs) }
	name := fmt.Sprintf("dockerd create+remove, %d pairs, holdfast vs", pairs)
	return []Row{
		atMost(compared("B2", name+" the floor plugin (median)", ms(hf.pct(50)), ms(fl.pct(50)), "ms"), 1.15, "ratio <= 1.15"),
		atMost(compared("B2", name+" the floor plugin (mean)", mean(hf), mean(fl), "ms"), 1.15, "ratio <= 1.15"),
		compared("B2", name+" -d local (median)", ms(hf.pct(50)), ms(local.pct(50)), "ms"),
		compared("B2", name+" -d local (mean)", mean(hf), mean(local), "ms"),
	}, nil
}

func pair(e *Engine, name, driver string) (time.Duration, error) {
	t := time.Now()
	if err := e.CreateVolume(name, driver); err != nil {
		return 0, err
	}
	if err := e.RemoveVolume(name); err != nil {
		return 0, err
	}
	return time.Since(t), nil
}
