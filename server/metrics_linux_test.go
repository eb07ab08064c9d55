package server

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/driver/tmpfs"
	"github.com/holdfast/holdfast/internal/metrics"
	"github.com/holdfast/holdfast/internal/plugintest"
	"github.com/holdfast/holdfast/internal/usage"
	"github.com/holdfast/holdfast/internal/volfs"
)

// metricsPlugin is holdfast in this process with real local and tmpfs
// backends, a "slow" type whose Mount blocks, and metrics on a loopback
// port.
type metricsPlugin struct {
	client *plugintest.Client
	url    string
	slow   *blockingBackend
}

func startMetricsPlugin(t *testing.T) *metricsPlugin {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: local and tmpfs volumes are mounted for real (make test runs as root)")
	}
	dir := t.TempDir()
	log, _ := test.NewNullLogger()
	walker := usage.New(usage.Config{Refresh: 20 * time.Millisecond})
	t.Cleanup(walker.Close)
	m := volfs.KernelMounter{}
	slow := &blockingBackend{entered: make(chan struct{}, 1), release: make(chan struct{})}
	d, err := driver.New(driver.Config{
		Root: filepath.Join(dir, "root"), MountRoot: filepath.Join(dir, "mnt"), Scope: "local",
		BootID: "b", Mounter: m, Log: log, SampleInterval: 20 * time.Millisecond,
		Backends: map[string]driver.Backend{
			"local": &local.Backend{Mounter: m, Walker: walker},
			"tmpfs": &tmpfs.Backend{Mounter: m, DefaultSize: "16m"},
			"slow":  slow,
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		d.Close()
		unix.Unmount(filepath.Join(dir, "mnt"), unix.MNT_DETACH)
	})
	met := metrics.New(d)
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sock := filepath.Join(dir, "holdfast.sock")
	l, err := Listen(sock, os.Getgid())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { met.Serve(ctx, ml); done <- struct{}{} }()
	go func() { Serve(ctx, l, Instrument(d, log).Record(met)); done <- struct{}{} }()
	t.Cleanup(func() {
		close(slow.release)
		cancel()
		<-done
		<-done
	})
	return &metricsPlugin{client: plugintest.NewClient(sock), url: "http://" + ml.Addr().String() + "/metrics", slow: slow}
}

// scrape fetches /metrics and returns its samples, keyed by the line's
// name and labels as written (labels sorted, as the text format does).
func (p *metricsPlugin) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	res, err := http.Get(p.url)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Contains(t, res.Header.Get("Content-Type"), "text/plain")
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, line)
		out[line[:i]] = v
	}
	return out
}

func (p *metricsPlugin) call(t *testing.T, op string, req any) error {
	t.Helper()
	return p.client.Call("VolumeDriver."+op, req, nil)
}

func TestMetricsFollowRequests(t *testing.T) {
	p := startMetricsPlugin(t)
	const createOK = `holdfast_requests_total{op="Create",result="ok"}`
	const createErr = `holdfast_requests_total{op="Create",result="error"}`
	before := p.scrape(t)
	assert.Zero(t, before[createOK], "no request yet")

	require.NoError(t, p.call(t, "Create", volume.CreateRequest{Name: "data", Options: map[string]string{}}))
	require.NoError(t, p.call(t, "Create", volume.CreateRequest{Name: "scratch", Options: map[string]string{"type": "tmpfs", "size": "8m"}}))
	require.Error(t, p.call(t, "Create", volume.CreateRequest{Name: "bad", Options: map[string]string{"type": "zfs"}}))
	require.NoError(t, p.call(t, "Get", volume.GetRequest{Name: "data"}))
	s := p.scrape(t)
	assert.Equal(t, 2.0, s[createOK])
	assert.Equal(t, 1.0, s[createErr])
	assert.Equal(t, 1.0, s[`holdfast_requests_total{op="Get",result="ok"}`])
	assert.Equal(t, 3.0, s[`holdfast_request_duration_seconds_count{op="Create"}`])
	// Size and usage come from the driver's background sample.
	waitFor(t, "the tmpfs volume's size", func() bool {
		return p.scrape(t)[`holdfast_volume_size_bytes{type="tmpfs",volume="scratch"}`] == 8<<20
	})
	assert.Equal(t, 0.0, s[`holdfast_volume_mounted{type="local",volume="data"}`])
	_, hasSize := s[`holdfast_volume_size_bytes{type="local",volume="data"}`]
	assert.False(t, hasSize, "a local volume has no size")

	// Mount: mounted and leases follow, for both types.
	var mres volume.MountResponse
	require.NoError(t, p.client.Call("VolumeDriver.Mount", volume.MountRequest{Name: "data", ID: "c1"}, &mres))
	require.NoError(t, p.client.Call("VolumeDriver.Mount", volume.MountRequest{Name: "data", ID: "c2"}, &mres))
	dataMnt := mres.Mountpoint
	require.NoError(t, p.client.Call("VolumeDriver.Mount", volume.MountRequest{Name: "scratch", ID: "c1"}, &mres))
	scratchMnt := mres.Mountpoint
	s = p.scrape(t)
	assert.Equal(t, 1.0, s[`holdfast_volume_mounted{type="local",volume="data"}`])
	assert.Equal(t, 2.0, s[`holdfast_volume_leases{type="local",volume="data"}`])
	assert.Equal(t, 1.0, s[`holdfast_volume_mounted{type="tmpfs",volume="scratch"}`])
	assert.Equal(t, 1.0, s[`holdfast_volume_leases{type="tmpfs",volume="scratch"}`])
	assert.Equal(t, 3.0, s[`holdfast_requests_total{op="Mount",result="ok"}`])

	// Used bytes: appear, and grow after data is written.
	const dataUsed = `holdfast_volume_used_bytes{type="local",volume="data"}`
	const scratchUsed = `holdfast_volume_used_bytes{type="tmpfs",volume="scratch"}`
	var used0 float64
	waitFor(t, "a figure for the local volume", func() bool {
		v, ok := p.scrape(t)[dataUsed]
		used0 = v
		return ok
	})
	scratch0 := p.scrape(t)[scratchUsed]
	require.NoError(t, os.WriteFile(filepath.Join(dataMnt, "f"), make([]byte, 3<<20), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(scratchMnt, "f"), make([]byte, 2<<20), 0o644))
	waitFor(t, "the local volume's figure to grow by 3 MiB", func() bool {
		return p.scrape(t)[dataUsed] >= used0+3<<20
	})
	waitFor(t, "the tmpfs volume's figure to grow by 2 MiB", func() bool {
		return p.scrape(t)[scratchUsed] >= scratch0+2<<20
	})

	// Unmount: leases drop, then the mount goes at the last.
	require.NoError(t, p.call(t, "Unmount", volume.UnmountRequest{Name: "data", ID: "c1"}))
	s = p.scrape(t)
	assert.Equal(t, 1.0, s[`holdfast_volume_leases{type="local",volume="data"}`])
	assert.Equal(t, 1.0, s[`holdfast_volume_mounted{type="local",volume="data"}`])
	require.NoError(t, p.call(t, "Unmount", volume.UnmountRequest{Name: "data", ID: "c2"}))
	require.NoError(t, p.call(t, "Unmount", volume.UnmountRequest{Name: "scratch", ID: "c1"}))
	s = p.scrape(t)
	assert.Equal(t, 0.0, s[`holdfast_volume_leases{type="local",volume="data"}`])
	assert.Equal(t, 0.0, s[`holdfast_volume_mounted{type="local",volume="data"}`])
	assert.Equal(t, 0.0, s[`holdfast_volume_mounted{type="tmpfs",volume="scratch"}`])
	assert.Equal(t, 3.0, s[`holdfast_requests_total{op="Unmount",result="ok"}`])

	// Remove: the volume's series go, an error counts as one.
	require.NoError(t, p.call(t, "Remove", volume.RemoveRequest{Name: "scratch"}))
	require.Error(t, p.call(t, "Remove", volume.RemoveRequest{Name: "scratch"}))
	s = p.scrape(t)
	_, still := s[`holdfast_volume_mounted{type="tmpfs",volume="scratch"}`]
	assert.False(t, still, "a removed volume has no series")
	assert.Equal(t, 1.0, s[`holdfast_requests_total{op="Remove",result="ok"}`])
	assert.Equal(t, 1.0, s[`holdfast_requests_total{op="Remove",result="error"}`])
}

// TestMetricsAnswerWhileAMountBlocks: a backend stuck in Mount holds its
// own volume only; /metrics answers meanwhile, and shows the volume
// unmounted with no lease.
func TestMetricsAnswerWhileAMountBlocks(t *testing.T) {
	p := startMetricsPlugin(t)
	require.NoError(t, p.call(t, "Create", volume.CreateRequest{Name: "stuck", Options: map[string]string{"type": "slow"}}))
	go p.call(t, "Mount", volume.MountRequest{Name: "stuck", ID: "c1"})
	<-p.slow.entered // the backend is now blocked in Mount
	s := p.scrape(t)
	assert.Equal(t, 0.0, s[`holdfast_volume_mounted{type="slow",volume="stuck"}`])
	assert.Equal(t, 0.0, s[`holdfast_volume_leases{type="slow",volume="stuck"}`])
	_, counted := s[`holdfast_requests_total{op="Mount",result="ok"}`]
	assert.False(t, counted, "the blocked Mount has not been answered")
}

// waitFor polls cond until it holds; the deadline only turns a hang into
// a failure.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
