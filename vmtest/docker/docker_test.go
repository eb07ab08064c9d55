// Package docker drives holdfast through the docker CLI inside the qemu
// guest: a real dockerd with holdfast as its legacy plugin, NFS volumes
// from the guest's kernel NFS server. vmtest/build.sh runs it when
// VMTEST_PKGS has ./vmtest/docker; outside the guest every test skips.
package docker

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/guestdocker"
	"github.com/holdfast/holdfast/internal/nfsd"
)

func setup(t *testing.T) (*guestdocker.Node, *nfsd.Server) {
	t.Helper()
	guestdocker.Require(t)
	s := nfsd.Start(t)
	return guestdocker.Start(t), s
}

// volume creates a holdfast volume with opts (as --opt words) and removes
// it when the test ends.
func volume(t *testing.T, n *guestdocker.Node, name string, opts ...string) {
	t.Helper()
	args := []string{"volume", "create", "--driver", "holdfast"}
	for _, o := range opts {
		args = append(args, "--opt", o)
	}
	n.Must(t, append(args, name)...)
	t.Cleanup(func() { n.Docker(context.Background(), "volume", "rm", "-f", name) })
}

// runIn runs sh -c script in a busybox container with mounts (-v words).
func runIn(t *testing.T, n *guestdocker.Node, script string, mounts ...string) string {
	t.Helper()
	args := []string{"run", "--rm", "--network", "none"}
	for _, m := range mounts {
		args = append(args, "-v", m)
	}
	return n.Must(t, append(args, guestdocker.Image, "sh", "-c", script)...)
}

// nfsLine is the container's /proc/mounts line for /data.
const nfsLine = `grep " /data " /proc/mounts`

// The card's form, verbatim: Docker's local-driver options.
func TestGuestDockerCardForm(t *testing.T) {
	n, s := setup(t)
	e := s.Export(t, nfsd.Ext4, "")
	volume(t, n, "card", "type=nfs", "o=addr="+nfsd.Host+",rw", "device=:"+e.Dir)
	out := runIn(t, n, "echo from-a-container >/data/note && "+nfsLine, "card:/data")
	t.Log(out)
	assert.Contains(t, out, " nfs4 ")
	assert.Contains(t, out, "vers=4.2")
	got, err := os.ReadFile(filepath.Join(e.Dir, "note"))
	require.NoError(t, err)
	assert.Equal(t, "from-a-container\n", string(got))
}

// The share= form, with vers=3.
func TestGuestDockerShareForm(t *testing.T) {
	n, s := setup(t)
	e := s.Export(t, nfsd.Tmpfs, "")
	volume(t, n, "sharev3", "type=nfs", "share="+e.Share(), "o=vers=3")
	require.NoError(t, os.WriteFile(filepath.Join(e.Dir, "from-server"), []byte("hello"), 0o644))
	out := runIn(t, n, "cat /data/from-server && echo && "+nfsLine, "sharev3:/data")
	t.Log(out)
	assert.True(t, strings.HasPrefix(out, "hello\n"))
	assert.Contains(t, out, " nfs ")
	assert.Contains(t, out, "vers=3")
}

// A writer and two read-only readers at once, on one mount.
func TestGuestDockerWriterAndTwoReaders(t *testing.T) {
	n, s := setup(t)
	e := s.Export(t, nfsd.Ext4, "")
	volume(t, n, "web", "type=nfs", "share="+e.Share())
	n.Must(t, "run", "-d", "--name", "writer", "--network", "none", "-v", "web:/data", guestdocker.Image,
		"sh", "-c", "i=0; while true; do i=$((i+1)); echo $i >/data/counter; sleep 0.2; done")
	t.Cleanup(func() { n.Docker(context.Background(), "rm", "-f", "writer", "reader1", "reader2") })
	for _, r := range []string{"reader1", "reader2"} {
		n.Must(t, "run", "-d", "--name", r, "--network", "none", "-v", "web:/data:ro", guestdocker.Image, "sleep", "600")
	}
	st := n.Must(t, "volume", "inspect", "-f", "{{.Status.leases}} {{.Status.mounted}} {{.Status.version}}", "web")
	assert.Equal(t, "3 true 4.2", st, "three containers share one mount")
	for _, r := range []string{"reader1", "reader2"} {
		a := n.Must(t, "exec", r, "cat", "/data/counter")
		time.Sleep(time.Second)
		b := n.Must(t, "exec", r, "cat", "/data/counter")
		assert.NotEqual(t, a, b, "%s sees the writer's updates", r)
		_, err := n.Docker(context.Background(), "exec", r, "sh", "-c", "echo x >/data/counter")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "Read-only file system")
	}
	n.Must(t, "rm", "-f", "writer", "reader1")
	assert.Equal(t, "1 true", n.Must(t, "volume", "inspect", "-f", "{{.Status.leases}} {{.Status.mounted}}", "web"))
	n.Must(t, "rm", "-f", "reader2")
	assert.Equal(t, "0 false", n.Must(t, "volume", "inspect", "-f", "{{.Status.leases}} {{.Status.mounted}}", "web"))
}

// A named volume outlives the containers that used it.
func TestGuestDockerNamedVolumeSurvivesContainerRemoval(t *testing.T) {
	n, s := setup(t)
	e := s.Export(t, nfsd.Ext4, "")
	volume(t, n, "kept", "type=nfs", "share="+e.Share(), "o=vers=4.1")
	n.Must(t, "run", "--name", "first", "--network", "none", "-v", "kept:/data", guestdocker.Image, "sh", "-c", "echo kept >/data/f")
	n.Must(t, "rm", "first")
	assert.Contains(t, strings.Fields(n.Must(t, "volume", "ls", "-q")), "kept")
	assert.Equal(t, "kept", runIn(t, n, "cat /data/f", "kept:/data"))
}

// docker volume inspect shows the version negotiated while mounted, and
// the candidates otherwise.
func TestGuestDockerInspectShowsVersion(t *testing.T) {
	n, s := setup(t)
	e := s.Export(t, nfsd.Ext4, "")
	volume(t, n, "neg", "type=nfs", "share="+e.Share())
	assert.Equal(t, "negotiated at mount: 4.2, 4.1, 4.0, 3", n.Must(t, "volume", "inspect", "-f", "{{.Status.version}}", "neg"))
	n.Must(t, "run", "-d", "--name", "user", "--network", "none", "-v", "neg:/data", guestdocker.Image, "sleep", "600")
	t.Cleanup(func() { n.Docker(context.Background(), "rm", "-f", "user") })
	assert.Equal(t, "4.2 127.0.0.1", n.Must(t, "volume", "inspect", "-f", "{{.Status.version}} {{.Status.address}}", "neg"))
	s.Without(t, "4.2")
	n.Must(t, "rm", "-f", "user")
	n.Must(t, "run", "-d", "--name", "user", "--network", "none", "-v", "neg:/data", guestdocker.Image, "sleep", "600")
	assert.Equal(t, "4.1", n.Must(t, "volume", "inspect", "-f", "{{.Status.version}}", "neg"), "negotiated again at the next mount")
}

// Compose with driver_opts, if compose v2 is in the share.
func TestGuestDockerCompose(t *testing.T) {
	n, s := setup(t)
	if !guestdocker.HasCompose() {
		t.Skip("no docker-compose in the share: hack/docker.sh compose builds compose v2 into /var/cache/holdfast/compose on the host, and vmtest/docker.sh shares it when present")
	}
	e := s.Export(t, nfsd.Ext4, "")
	dir := t.TempDir()
	yaml := fmt.Sprintf(`services:
  app:
    image: %s
    network_mode: none
    command: ["sh", "-c", "echo from-compose >/data/c && grep ' /data ' /proc/mounts"]
    volumes:
      - site:/data
volumes:
  site:
    driver: holdfast
    driver_opts:
      type: nfs
      share: %s
      o: vers=4.2,hard
`, guestdocker.Image, e.Share())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(yaml), 0o644))
	f := filepath.Join(dir, "compose.yaml")
	out := n.Must(t, "compose", "-f", f, "-p", "vm", "up", "--no-color", "--abort-on-container-exit")
	t.Log(out)
	assert.Contains(t, out, "vers=4.2")
	got, err := os.ReadFile(filepath.Join(e.Dir, "c"))
	require.NoError(t, err)
	assert.Equal(t, "from-compose\n", string(got))
	assert.Equal(t, "nfs "+e.Share(), n.Must(t, "volume", "inspect", "-f", "{{.Status.type}} {{.Status.server}}:{{.Status.export}}", "vm_site"))
	n.Must(t, "compose", "-f", f, "-p", "vm", "down", "--volumes")
}

// A server that accepts connections and never answers: ls and inspect
// answer at once, docker run fails within --nfs-timeout with holdfast's
// message.
func TestGuestDockerServerDown(t *testing.T) {
	n, _ := setup(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	volume(t, n, "down", "type=nfs", "share=127.0.0.1:/export", fmt.Sprintf("o=port=%d,vers=4.2", port))

	type result struct {
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		_, err := n.Docker(context.Background(), "run", "--rm", "--network", "none", "-v", "down:/data", guestdocker.Image, "true")
		done <- result{err, time.Since(start)}
	}()
	time.Sleep(2 * time.Second) // docker run is waiting for the Mount
	for _, args := range [][]string{{"volume", "ls"}, {"volume", "inspect", "down"}} {
		t0 := time.Now()
		n.Must(t, args...)
		assert.Less(t, time.Since(t0), 3*time.Second, "docker %s answers while a Mount waits for the server", strings.Join(args, " "))
	}
	r := <-done
	require.Error(t, r.err)
	t.Logf("docker run failed after %v: %v", r.took.Round(time.Millisecond), r.err)
	assert.Less(t, r.took, guestdocker.NFSTimeout+10*time.Second, "within --nfs-timeout plus docker's own start-up")
	assert.Contains(t, r.err.Error(), "mount nfs 127.0.0.1:/export for volume down: no answer within 5s")
	assert.Contains(t, r.err.Error(), fmt.Sprintf("check that the server is up and that a firewall lets TCP port %d through, or raise --nfs-timeout", port))
	assert.Equal(t, "false 0", n.Must(t, "volume", "inspect", "-f", "{{.Status.mounted}} {{.Status.leases}}", "down"))
}
