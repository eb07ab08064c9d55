package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/driver/tmpfs"
	"github.com/holdfast/holdfast/internal/volfs"
)

// contentType is what dockerd sends with every plugin request.
const contentType = "application/vnd.docker.plugins.v1.2+json"

type plugin struct {
	t      *testing.T
	sock   string
	client *http.Client
	logs   *test.Hook
	cancel context.CancelFunc
	done   chan error
}

func startPlugin(t *testing.T) *plugin { return startWrapped(t, nil) }

// startWrapped serves the driver, wrapped by wrap when it is not nil.
func startWrapped(t *testing.T, wrap func(*driver.Driver) volume.Driver) *plugin {
	return startScoped(t, "local", wrap)
}

// startScoped is startWrapped with the given --scope.
func startScoped(t *testing.T, scope string, wrap func(*driver.Driver) volume.Driver) *plugin {
	dir := t.TempDir()
	log, hook := test.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	m := volfs.NewFakeMounter()
	d, err := driver.New(driver.Config{
		Root: filepath.Join(dir, "root"), MountRoot: filepath.Join(dir, "mnt"), Scope: scope,
		BootID: "b", Mounter: m, Log: log,
		Backends: map[string]driver.Backend{
			"local": &local.Backend{Mounter: m},
			"tmpfs": &tmpfs.Backend{Mounter: m, DefaultSize: "64m"},
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	sock := filepath.Join(dir, "holdfast.sock")
	l, err := Listen(sock, os.Getgid())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	p := &plugin{t: t, sock: sock, logs: hook, cancel: cancel, done: make(chan error, 1)}
	var vd volume.Driver = d
	if wrap != nil {
		vd = wrap(d)
	}
	go func() { p.done <- Serve(ctx, l, Instrument(vd, log)) }()
	p.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}, Timeout: 10 * time.Second}
	t.Cleanup(p.stop)
	return p
}

func (p *plugin) stop() {
	if p.cancel != nil {
		p.cancel()
		require.NoError(p.t, <-p.done)
		p.cancel = nil
	}
}

// call posts body to path as dockerd does and returns the status and the
// decoded JSON answer.
func (p *plugin) call(path, body string) (int, map[string]any) {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://plugin"+path, bytes.NewBufferString(body))
	require.NoError(p.t, err)
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", contentType)
	res, err := p.client.Do(req)
	require.NoError(p.t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(p.t, err)
	out := map[string]any{}
	require.NoError(p.t, json.Unmarshal(raw, &out), "body %q", raw)
	return res.StatusCode, out
}

func TestProtocol(t *testing.T) {
	p := startPlugin(t)
	ok := func(path, body string) map[string]any {
		t.Helper()
		code, out := p.call(path, body)
		require.Equal(t, http.StatusOK, code, "%s %s: %v", path, body, out)
		assert.NotContains(t, out, "Err")
		return out
	}
	fail := func(path, body, errPart string) {
		t.Helper()
		code, out := p.call(path, body)
		assert.Equal(t, http.StatusInternalServerError, code, "%s %s", path, body)
		assert.Contains(t, out["Err"], errPart, "%s %s", path, body)
	}

	assert.Equal(t, map[string]any{"Implements": []any{"VolumeDriver"}}, ok("/Plugin.Activate", ""))
	assert.Equal(t, map[string]any{"Capabilities": map[string]any{"Scope": "local"}}, ok("/VolumeDriver.Capabilities", ""))

	assert.Empty(t, ok("/VolumeDriver.Create", `{"Name":"web","Opts":{"type":"tmpfs","size":"1m"}}`))
	assert.Empty(t, ok("/VolumeDriver.Create", `{"Name":"plain","Opts":null}`))
	fail("/VolumeDriver.Create", `{"Name":"../etc","Opts":{}}`, "names must be")
	fail("/VolumeDriver.Create", `{"Name":"web","Opts":{"type":"tmpfs","size":"2m"}}`, "exists with other options")
	fail("/VolumeDriver.Create", `{"Name":"bad","Opts":{"type":"ceph"}}`, "known types are local, tmpfs")

	mp := ok("/VolumeDriver.Mount", `{"Name":"web","ID":"0123abcd"}`)["Mountpoint"]
	assert.NotEmpty(t, mp)
	fail("/VolumeDriver.Mount", `{"Name":"nope","ID":"0123abcd"}`, "no such volume: nope")
	fail("/VolumeDriver.Mount", `{"Name":"web"}`, "mount ID is required")

	assert.Equal(t, map[string]any{"Mountpoint": mp}, ok("/VolumeDriver.Path", `{"Name":"web"}`))
	fail("/VolumeDriver.Path", `{"Name":"nope"}`, "no such volume")

	got := ok("/VolumeDriver.Get", `{"Name":"web"}`)["Volume"].(map[string]any)
	assert.Equal(t, "web", got["Name"])
	assert.Equal(t, mp, got["Mountpoint"])
	assert.NotEmpty(t, got["CreatedAt"])
	st := got["Status"].(map[string]any)
	assert.Equal(t, "tmpfs", st["type"])
	assert.Equal(t, true, st["mounted"])
	assert.EqualValues(t, 1, st["leases"])
	assert.EqualValues(t, 1<<20, st["size"])
	fail("/VolumeDriver.Get", `{"Name":"nope"}`, "no such volume: nope")

	vols := ok("/VolumeDriver.List", "")["Volumes"].([]any)
	require.Len(t, vols, 2)
	assert.Equal(t, "plain", vols[0].(map[string]any)["Name"])

	fail("/VolumeDriver.Remove", `{"Name":"web"}`, "volume web is in use by 1 mounts")
	assert.Empty(t, ok("/VolumeDriver.Unmount", `{"Name":"web","ID":"0123abcd"}`))
	assert.Empty(t, ok("/VolumeDriver.Unmount", `{"Name":"web","ID":"0123abcd"}`))
	fail("/VolumeDriver.Unmount", `{"Name":"nope","ID":"x"}`, "no such volume")
	assert.Empty(t, ok("/VolumeDriver.Remove", `{"Name":"web"}`))
	fail("/VolumeDriver.Remove", `{"Name":"web"}`, "no such volume: web")
	assert.Equal(t, map[string]any{"Volumes": []any{map[string]any{"Name": "plain", "CreatedAt": vols[0].(map[string]any)["CreatedAt"]}}},
		ok("/VolumeDriver.List", "{}"))
}

func TestProtocolRejectsGarbage(t *testing.T) {
	p := startPlugin(t)
	code, out := p.call("/VolumeDriver.Create", "{not json")
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, out["Err"], "request body is not valid JSON", "dockerd shows Err of any non-200 answer")
	code, out = p.call("/VolumeDriver.Create", `{"Opts":{}}`)
	assert.Equal(t, http.StatusInternalServerError, code)
	assert.Contains(t, out["Err"], "names must be", "a missing name is an invalid name")
}

func TestRequestsAreLoggedWithSecretsRedacted(t *testing.T) {
	p := startPlugin(t)
	p.call("/VolumeDriver.Create", `{"Name":"vault","Opts":{"password":"hunter2"}}`)
	p.call("/VolumeDriver.Get", `{"Name":"missing"}`)
	entries := p.logs.AllEntries()
	require.Len(t, entries, 2)
	create := entries[0]
	assert.Equal(t, "Create", create.Data["op"])
	assert.Equal(t, "vault", create.Data["volume"])
	assert.NotEmpty(t, create.Data["duration"])
	assert.Error(t, create.Data[logrus.ErrorKey].(error))
	line, err := create.String()
	require.NoError(t, err)
	assert.NotContains(t, line, "hunter2")
	assert.Contains(t, line, "********")
	assert.Equal(t, "Get", entries[1].Data["op"])
	assert.Equal(t, logrus.DebugLevel, entries[1].Level, "reads dockerd makes all the time are not logged at info")
	assert.Equal(t, logrus.WarnLevel, create.Level)
}

func TestSocket(t *testing.T) {
	p := startPlugin(t)
	fi, err := os.Stat(p.sock)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o660), fi.Mode().Perm())
	assert.Equal(t, uint32(os.Getgid()), fi.Sys().(*syscall.Stat_t).Gid)

	_, err = Listen(p.sock, 0)
	assert.ErrorContains(t, err, "in use by a running plugin", "a live socket is never taken over")

	p.stop()
	assert.NoFileExists(t, p.sock, "the socket is removed at shutdown")
}

func TestStaleSocketIsReplaced(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "holdfast.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // as a crashed process leaves it
	require.FileExists(t, sock)
	l, err = Listen(sock, os.Getgid())
	require.NoError(t, err)
	l.Close()

	require.NoError(t, os.WriteFile(sock, nil, 0o600))
	_, err = Listen(sock, 0)
	assert.ErrorContains(t, err, "is not a socket")
}

// slow is a driver whose Mount waits until released.
type slow struct {
	*driver.Driver
	started, release chan struct{}
}

func (s *slow) Mount(r *volume.MountRequest) (*volume.MountResponse, error) {
	close(s.started)
	<-s.release
	return s.Driver.Mount(r)
}

func TestShutdownFinishesRequestsInFlight(t *testing.T) {
	sd := &slow{started: make(chan struct{}), release: make(chan struct{})}
	p := startWrapped(t, func(d *driver.Driver) volume.Driver { sd.Driver = d; return sd })
	p.call("/VolumeDriver.Create", `{"Name":"vol"}`)
	answered := make(chan map[string]any)
	go func() {
		code, out := p.call("/VolumeDriver.Mount", `{"Name":"vol","ID":"a"}`)
		assert.Equal(t, http.StatusOK, code)
		answered <- out
	}()
	<-sd.started
	p.cancel() // SIGTERM
	select {
	case <-p.done:
		t.Fatal("Serve returned while a request was in flight")
	case <-time.After(100 * time.Millisecond):
	}
	_, err := net.Dial("unix", p.sock)
	assert.Error(t, err, "no new connections during shutdown")
	close(sd.release)
	assert.NotEmpty(t, (<-answered)["Mountpoint"], "the request in flight got its answer")
	require.NoError(t, <-p.done)
	p.cancel = nil
}

// TestCapabilitiesDuringShutdown asks Capabilities, as dockerd may at any
// moment, on a connection opened before a shutdown began: while a request
// is in flight, while draining and after Serve returned. dockerd asks once
// and caches the answer, and takes an empty scope for local, so every
// answer must be the configured scope.
func TestCapabilitiesDuringShutdown(t *testing.T) {
	sd := &slow{started: make(chan struct{}), release: make(chan struct{})}
	p := startScoped(t, "global", func(d *driver.Driver) volume.Driver { sd.Driver = d; return sd })
	p.call("/VolumeDriver.Create", `{"Name":"vol"}`)

	// dockerd keeps its connection to the plugin open between requests.
	docker := &plugin{t: t, client: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", p.sock)
		},
		MaxConnsPerHost: 1,
	}, Timeout: 10 * time.Second}}
	capabilities := func(phase string) {
		t.Helper()
		code, out := docker.call("/VolumeDriver.Capabilities", "")
		assert.Equal(t, http.StatusOK, code, "%s: %v", phase, out)
		assert.Equal(t, map[string]any{"Capabilities": map[string]any{"Scope": "global"}}, out, phase)
		code, out = docker.call("/Plugin.Activate", "")
		assert.Equal(t, http.StatusOK, code, phase)
		assert.Equal(t, map[string]any{"Implements": []any{"VolumeDriver"}}, out, phase)
	}
	capabilities("before shutdown")

	answered := make(chan int)
	go func() {
		code, _ := p.call("/VolumeDriver.Mount", `{"Name":"vol","ID":"a"}`)
		answered <- code
	}()
	<-sd.started
	p.cancel() // SIGTERM
	capabilities("shutdown begun")
	// Draining: the other requests are refused from now on.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, out := docker.call("/VolumeDriver.Get", `{"Name":"vol"}`)
		if out["Err"] == ErrShuttingDown.Error() {
			break
		}
		require.True(t, time.Now().Before(deadline), "the plugin never started draining: %v", out)
		time.Sleep(10 * time.Millisecond)
	}
	capabilities("draining, a request in flight")
	close(sd.release)
	assert.Equal(t, http.StatusOK, <-answered, "the request in flight got its answer")
	require.NoError(t, <-p.done)
	p.cancel = nil
	code, out, err := docker.try("/VolumeDriver.Capabilities")
	assert.Error(t, err, "after Serve returned the connection is closed, never answered with an empty scope: %d %v", code, out)
}

// try posts an empty body to path and returns the status and the decoded
// answer, or the error of a connection that is gone.
func (p *plugin) try(path string) (int, map[string]any, error) {
	req, err := http.NewRequest(http.MethodPost, "http://plugin"+path, nil)
	require.NoError(p.t, err)
	res, err := p.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	out := map[string]any{}
	require.NoError(p.t, json.NewDecoder(res.Body).Decode(&out))
	return res.StatusCode, out, nil
}
