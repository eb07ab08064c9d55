package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/internal/admin"
	"github.com/holdfast/holdfast/internal/volfs"
)

// serveAdmin serves a driver with the admin protocol on a socket in a
// directory any user may reach, so a test can call it as another user.
func serveAdmin(t *testing.T) (string, *driver.Driver) {
	t.Helper()
	dir, err := os.MkdirTemp("", "holdfast-admin-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o711))
	log, _ := test.NewNullLogger()
	m := volfs.NewFakeMounter()
	d, err := driver.New(driver.Config{
		Root: filepath.Join(dir, "root"), MountRoot: filepath.Join(dir, "mnt"), Scope: "local",
		BootID: "b", Mounter: m, Log: log, Backends: map[string]driver.Backend{"local": local.New(m, nil)},
	})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	sock := filepath.Join(dir, "holdfast.sock")
	l, err := Listen(sock, os.Getgid())
	require.NoError(t, err)
	require.NoError(t, os.Chmod(sock, 0o666)) // the peer check alone must refuse
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, Instrument(d, log).Admin(d)) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	return sock, d
}

// TestAdminOnThePluginSocket: the plugin socket answers the admin paths to
// root and the plugin protocol as before.
func TestAdminOnThePluginSocket(t *testing.T) {
	requireRootUser(t)
	sock, d := serveAdmin(t)
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "vol"}))
	vols, err := admin.NewClient(sock).Volumes(context.Background())
	require.NoError(t, err)
	require.Len(t, vols, 1)
	assert.Equal(t, "vol", vols[0].Name)

	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}, Timeout: 10 * time.Second}
	res, err := c.Post("http://plugin/VolumeDriver.List", contentType, strings.NewReader("{}"))
	require.NoError(t, err)
	defer res.Body.Close()
	var list volume.ListResponse
	require.NoError(t, json.NewDecoder(res.Body).Decode(&list))
	require.Len(t, list.Volumes, 1, "the plugin protocol is served as before")
}

// TestAdminRefusesNonRoot calls the admin protocol as uid 65534 through a
// real connection: its SO_PEERCRED credentials get it refused, with the
// fix named, while the socket itself would let it in.
func TestAdminRefusesNonRoot(t *testing.T) {
	requireRootUser(t)
	for _, tool := range []string{"setpriv", "curl"} {
		_, err := exec.LookPath(tool)
		require.NoError(t, err, "needs %s to call the socket as another user: make unit installs it (Debian: util-linux, curl)", tool)
	}
	sock, d := serveAdmin(t)
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "vol"}))
	for _, path := range []string{admin.PathList, admin.PathLeases + "?name=vol", admin.PathBackup + "?name=vol"} {
		out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
			"curl", "-sS", "--unix-socket", sock, "-w", "\n%{http_code}", "http://holdfast"+path).CombinedOutput()
		require.NoError(t, err, "%s", out)
		text := strings.TrimSpace(string(out))
		i := strings.LastIndexByte(text, '\n')
		require.Positive(t, i, "%s", text)
		body, code := text[:i], text[i+1:]
		assert.Equal(t, "403", code, "%s: %s", path, body)
		assert.Contains(t, body, "holdfast admin commands are for root only (you are uid 65534", path)
		assert.Contains(t, body, "run them with sudo")
	}
}

func requireRootUser(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the admin protocol answers root only")
	}
}
