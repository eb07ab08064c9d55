package nfs

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/guest"
	"github.com/holdfast/holdfast/internal/nfstest"
	"github.com/holdfast/holdfast/internal/volfs"
)

// These tests mount with the kernel's NFS client from internal/nfstest's
// userspace NFSv3 server on 127.0.0.1, through the driver. They run in the
// qemu guest: vmtest/run.sh with a binary from
// CGO_ENABLED=0 go test -c -o /tmp/nfs.test ./driver/nfs.

// guestRig is a driver with an nfs backend on the kernel's mount table, and
// an NFS server.
type guestRig struct {
	t       *testing.T
	root    string
	timeout time.Duration
	log     *logrus.Logger
	hook    *test.Hook
	b       *Backend
	d       *driver.Driver
	srv     *nfstest.Server
	port    int
}

func newGuest(t *testing.T, timeout time.Duration) *guestRig {
	t.Helper()
	guest.Require(t, "NFS client")
	g := &guestRig{t: t, root: t.TempDir(), timeout: timeout}
	g.log, g.hook = test.NewNullLogger()
	g.log.SetLevel(logrus.DebugLevel)
	srv, err := nfstest.Start(t.TempDir())
	require.NoError(t, err)
	g.srv, g.port = srv, srv.Port
	g.start()
	t.Cleanup(g.cleanup)
	return g
}

// start opens the driver on g.root, as the plugin does at start-up, with
// a new backend.
func (g *guestRig) start() {
	g.t.Helper()
	m := volfs.KernelMounter{}
	g.b = &Backend{Mounter: m, Timeout: g.timeout, Log: g.log}
	d, err := driver.New(driver.Config{
		Root: g.root, MountRoot: filepath.Join(g.root, "mounts"), Scope: "global", BootID: "guest",
		Mounter: m, Log: g.log, Backends: map[string]driver.Backend{TypeNFS: g.b},
	})
	require.NoError(g.t, err)
	g.d = d
}

// cleanup detaches what the test left mounted and, if the server was
// stopped, brings it back on its port so the kernel lets go of requests
// still waiting for it.
func (g *guestRig) cleanup() {
	g.d.Close()
	infos, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(g.root))
	for _, m := range infos {
		unix.Unmount(m.Mountpoint, unix.MNT_FORCE|unix.MNT_DETACH)
	}
	if g.srv == nil {
		return // the kernel server (guest_nfsd_linux_test.go)
	}
	if s, err := nfstest.StartPort(g.srv.Dir, g.port); err == nil {
		time.Sleep(200 * time.Millisecond)
		s.Close()
	}
	g.srv.Close()
}

// localOpts are the options as users write them for Docker's local driver,
// for this server.
func (g *guestRig) localOpts() map[string]string {
	return map[string]string{
		"type":   "nfs",
		"o":      fmt.Sprintf("addr=127.0.0.1,vers=3,port=%d,mountport=%d,nolock,proto=tcp,mountproto=tcp", g.port, g.port),
		"device": ":/",
	}
}

func (g *guestRig) create(name string, opts map[string]string) {
	g.t.Helper()
	require.NoError(g.t, g.d.Create(&volume.CreateRequest{Name: name, Options: opts}))
}

func (g *guestRig) mount(name, id string) string {
	g.t.Helper()
	start := time.Now()
	res, err := g.d.Mount(&volume.MountRequest{Name: name, ID: id})
	require.NoError(g.t, err)
	g.t.Logf("Mount %s/%s took %v", name, id, time.Since(start).Round(time.Millisecond))
	return res.Mountpoint
}

func (g *guestRig) unmount(name, id string) {
	g.t.Helper()
	start := time.Now()
	require.NoError(g.t, g.d.Unmount(&volume.UnmountRequest{Name: name, ID: id}))
	g.t.Logf("Unmount %s/%s took %v", name, id, time.Since(start).Round(time.Millisecond))
}

func (g *guestRig) status(name string) map[string]any {
	g.t.Helper()
	res, err := g.d.Get(&volume.GetRequest{Name: name})
	require.NoError(g.t, err)
	return res.Volume.Status
}

// nfsMounts returns the NFS mounts at path.
func nfsMounts(t *testing.T, path string) []*mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	require.NoError(t, err)
	return infos
}

// answersAtOnce checks that List and Get answer quickly, from the state.
func answersAtOnce(t *testing.T, d *driver.Driver, name string) time.Duration {
	t.Helper()
	start := time.Now()
	_, err := d.List()
	require.NoError(t, err)
	_, err = d.Get(&volume.GetRequest{Name: name})
	require.NoError(t, err)
	took := time.Since(start)
	assert.Less(t, took, 500*time.Millisecond, "List and Get must not wait on the server")
	return took
}

func TestGuestLifecycle(t *testing.T) {
	g := newGuest(t, 0)
	g.create("data", g.localOpts())
	mp := g.mount("data", "a")

	infos := nfsMounts(t, mp)
	require.Len(t, infos, 1)
	assert.Equal(t, "nfs", infos[0].FSType)
	assert.Equal(t, "127.0.0.1:/", infos[0].Source)
	assert.Contains(t, infos[0].Options, "nosuid")
	assert.Contains(t, infos[0].Options, "nodev")
	assert.Contains(t, infos[0].VFSOptions, "vers=3")

	want := []byte("written through the kernel client\n")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "note"), want, 0o644))
	got, err := os.ReadFile(filepath.Join(g.srv.Dir, "note"))
	require.NoError(t, err)
	assert.Equal(t, want, got, "the server's directory has the file")
	require.NoError(t, os.WriteFile(filepath.Join(g.srv.Dir, "from-server"), []byte("hello"), 0o644))
	got, err = os.ReadFile(filepath.Join(mp, "from-server"))
	require.NoError(t, err)
	assert.Equal(t, "hello", string(got))

	assert.Equal(t, map[string]any{
		"type": "nfs", "mounted": true, "leases": 1,
		"server": "127.0.0.1", "export": "/", "version": "3", "address": "127.0.0.1",
		"options": fmt.Sprintf("rw,nosuid,nodev,port=%d,mountport=%d,nolock,proto=tcp,mountproto=tcp,vers=3,addr=127.0.0.1", g.port, g.port),
	}, withoutExportFigures(g.status("data")))

	g.unmount("data", "a")
	assert.Empty(t, nfsMounts(t, mp))
	assert.NoDirExists(t, mp)
	require.NoError(t, g.d.Remove(&volume.RemoveRequest{Name: "data"}))
	assert.FileExists(t, filepath.Join(g.srv.Dir, "note"), "Remove never deletes data on the server")
}

func TestGuestTwoLeasesShareOneMount(t *testing.T) {
	g := newGuest(t, 0)
	g.create("shared", g.localOpts())
	mp := g.mount("shared", "a")
	assert.Equal(t, mp, g.mount("shared", "b"))
	assert.Len(t, nfsMounts(t, mp), 1, "one kernel mount for both leases")
	assert.Equal(t, 2, g.status("shared")["leases"])

	g.unmount("shared", "a")
	assert.Len(t, nfsMounts(t, mp), 1, "still mounted for the other lease")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o644))
	g.unmount("shared", "b")
	assert.Empty(t, nfsMounts(t, mp))
}

func TestGuestRestartAdoptsMount(t *testing.T) {
	g := newGuest(t, 0)
	g.create("kept", g.localOpts())
	mp := g.mount("kept", "a")
	require.NoError(t, g.d.Close())

	g.start() // the plugin restarted: a new driver and backend on the same root
	st := g.status("kept")
	assert.Equal(t, true, st["mounted"])
	assert.Equal(t, 1, st["leases"])
	assert.Equal(t, "3", st["version"], "what was negotiated survives the restart")
	assert.Len(t, nfsMounts(t, mp), 1, "adopted, not mounted again")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "after-restart"), []byte("x"), 0o644))
	assert.FileExists(t, filepath.Join(g.srv.Dir, "after-restart"))

	assert.Equal(t, mp, g.mount("kept", "b"))
	assert.Len(t, nfsMounts(t, mp), 1)
	g.unmount("kept", "a")
	g.unmount("kept", "b")
	assert.Empty(t, nfsMounts(t, mp))
}

func TestGuestNegotiatesDownToV3(t *testing.T) {
	g := newGuest(t, 0)
	opts := map[string]string{
		"type":  "nfs",
		"share": "127.0.0.1:/",
		"o":     fmt.Sprintf("port=%d,mountport=%d,nolock,proto=tcp,mountproto=tcp", g.port, g.port),
	}
	g.create("auto", opts)
	assert.Equal(t, "negotiated at mount: 4.2, 4.1, 4.0, 3", g.status("auto")["version"])
	mp := g.mount("auto", "a")
	assert.Equal(t, "3", g.status("auto")["version"], "4.2, 4.1 and 4.0 refused by the v3-only server")
	infos := nfsMounts(t, mp)
	require.Len(t, infos, 1)
	assert.Contains(t, infos[0].VFSOptions, "vers=3")
	g.unmount("auto", "a")

	// vers=4 negotiates 4.x only, and says what each version gave.
	opts["o"] += ",vers=4"
	g.create("v4only", opts)
	_, err := g.d.Mount(&volume.MountRequest{Name: "v4only", ID: "a"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "[tried NFS 4.2, 4.1, 4.0: input/output error]")
	t.Log(err)
}

func TestGuestHostNameAndIPv6(t *testing.T) {
	g := newGuest(t, 0)
	o := fmt.Sprintf("vers=3,port=%d,mountport=%d,nolock,proto=tcp,mountproto=tcp", g.port, g.port)
	g.create("byname", map[string]string{"type": "nfs", "share": "localhost:/", "o": o})
	mp := g.mount("byname", "a")
	assert.Equal(t, "127.0.0.1", g.status("byname")["address"])
	infos := nfsMounts(t, mp)
	require.Len(t, infos, 1)
	assert.Equal(t, "localhost:/", infos[0].Source)
	g.unmount("byname", "a")

	// The test server listens on 127.0.0.1 only: reach it over IPv6
	// through a relay on [::1].
	p6 := relay(t, "[::1]:0", g.srv.Addr(), nil)
	o6 := fmt.Sprintf("vers=3,port=%d,mountport=%d,nolock,proto=tcp,mountproto=tcp", p6, p6)
	g.create("ipv6", map[string]string{"type": "nfs", "share": "[::1]:/", "o": o6})
	mp = g.mount("ipv6", "a")
	infos = nfsMounts(t, mp)
	require.Len(t, infos, 1)
	assert.Equal(t, "[::1]:/", infos[0].Source)
	assert.Contains(t, infos[0].VFSOptions, "proto=tcp6")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "v6"), []byte("over ipv6"), 0o644))
	got, err := os.ReadFile(filepath.Join(g.srv.Dir, "v6"))
	require.NoError(t, err)
	assert.Equal(t, "over ipv6", string(got))
	g.unmount("ipv6", "a")
}

func TestGuestRefusedSaysWhatToCheck(t *testing.T) {
	g := newGuest(t, 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there now
	g.create("refused", map[string]string{"type": "nfs", "share": "127.0.0.1:/export", "o": fmt.Sprintf("vers=3,port=%d,mountport=%d,proto=tcp,mountproto=tcp", port, port)})
	_, err = g.d.Mount(&volume.MountRequest{Name: "refused", ID: "a"})
	require.Error(t, err)
	assert.Equal(t, fmt.Sprintf("mount refused: mount nfs 127.0.0.1:/export for volume refused: connection refused (is an NFS server listening on 127.0.0.1:%d?)", port), err.Error())
}

func TestGuestUnansweredMountFailsAtDeadline(t *testing.T) {
	g := newGuest(t, 2*time.Second)
	silent := newSilentServer(t)
	g.create("silent", map[string]string{"type": "nfs", "share": "127.0.0.1:/export", "o": fmt.Sprintf("port=%d,mountport=%d", silent.port, silent.port)})

	type result struct {
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		_, err := g.d.Mount(&volume.MountRequest{Name: "silent", ID: "a"})
		done <- result{err, time.Since(start)}
	}()
	// While mount(2) waits for the server, List and Get answer at once.
	var slowest time.Duration
	for range 10 {
		slowest = max(slowest, answersAtOnce(t, g.d, "silent"))
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("slowest List+Get during the blocked Mount: %v", slowest)

	r := <-done
	t.Logf("Mount failed after %v: %v", r.took.Round(time.Millisecond), r.err)
	require.Error(t, r.err)
	assert.GreaterOrEqual(t, r.took, 2*time.Second)
	assert.Less(t, r.took, 3*time.Second, "the deadline bounds the whole Mount")
	assert.Contains(t, r.err.Error(), "mount silent: mount nfs 127.0.0.1:/export for volume silent: no answer within 2")
	assert.Contains(t, r.err.Error(), fmt.Sprintf("(NFS 4.2 to 127.0.0.1 did not answer; check that the server is up and that a firewall lets TCP port %d through, or raise --nfs-timeout", silent.port))

	st := g.status("silent")
	assert.Equal(t, false, st["mounted"])
	assert.Equal(t, 0, st["leases"])
	mp := filepath.Join(g.root, "mounts", "silent")
	assert.Empty(t, nfsMounts(t, mp))
	assert.NoDirExists(t, mp)

	// The server goes away for good: the kernel gives up the abandoned
	// mount(2), which leaves nothing behind.
	silent.cut()
	require.Eventually(t, func() bool {
		g.b.mu.Lock()
		defer g.b.mu.Unlock()
		return len(g.b.late) == 0
	}, 30*time.Second, 50*time.Millisecond)
	assert.Empty(t, nfsMounts(t, mp))
}

// TestGuestLateMountIsRemoved holds the server's answer until after the
// deadline, then lets it through: the mount that completes late is
// removed. It calls the backend directly, because through the driver the
// mountpoint is removed at the failure and the late mount(2) then fails
// by itself.
func TestGuestLateMountIsRemoved(t *testing.T) {
	g := newGuest(t, time.Second)
	gate := make(chan struct{})
	port := relay(t, "127.0.0.1:0", g.srv.Addr(), gate)
	opts, err := g.b.Parse(map[string]string{"share": "127.0.0.1:/", "o": fmt.Sprintf("vers=3,port=%d,mountport=%d,nolock,proto=tcp,mountproto=tcp", port, port)})
	require.NoError(t, err)
	mp := filepath.Join(t.TempDir(), "late")
	require.NoError(t, os.Mkdir(mp, 0o755))
	v := &driver.Volume{Name: "late", Type: TypeNFS, Options: opts, Mountpoint: mp}

	start := time.Now()
	err = g.b.Mount(context.Background(), v)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no answer within 1")
	t.Logf("Mount failed after %v", time.Since(start).Round(time.Millisecond))

	close(gate)
	require.Eventually(t, func() bool {
		g.b.mu.Lock()
		defer g.b.mu.Unlock()
		return len(g.b.late) == 0
	}, 30*time.Second, 50*time.Millisecond)
	assert.Empty(t, nfsMounts(t, mp), "the late mount was removed")
	assert.True(t, logged(g.hook, "an NFS mount abandoned at its deadline completed later; it was removed"))

	require.NoError(t, g.b.Mount(context.Background(), v), "mounts once the server answers in time")
	require.NoError(t, g.b.Unmount(context.Background(), v))
}

func TestGuestServerGoneWhileMounted(t *testing.T) {
	for _, inUse := range []bool{false, true} {
		t.Run(map[bool]string{false: "idle", true: "in use"}[inUse], func(t *testing.T) {
			g := newGuest(t, 5*time.Second)
			opts := g.localOpts()
			opts["o"] += ",actimeo=0" // every stat asks the server
			g.create("gone", opts)
			mp := g.mount("gone", "a")
			require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o644))
			require.NoError(t, g.srv.Close())

			stuck := make(chan error, 1)
			if inUse {
				// A process outside Docker waits on the dead server.
				go func() { _, err := os.Stat(filepath.Join(mp, "f")); stuck <- err }()
				time.Sleep(500 * time.Millisecond)
			}
			t.Logf("List+Get with the server gone: %v", answersAtOnce(t, g.d, "gone"))
			assert.Equal(t, true, g.status("gone")["mounted"])

			start := time.Now()
			require.NoError(t, g.d.Unmount(&volume.UnmountRequest{Name: "gone", ID: "a"}))
			took := time.Since(start)
			t.Logf("Unmount with the server gone took %v", took.Round(time.Millisecond))
			assert.Less(t, took, 5*time.Second, "within the deadline")
			assert.Empty(t, nfsMounts(t, mp))
			assert.Equal(t, false, g.status("gone")["mounted"])
			// A process waiting on the dead server holds the mount: umount2
			// fails with EBUSY at once instead of blocking, so the mount is
			// detached lazily, not forced (which would abort the requests of
			// every mount sharing the superblock).
			assert.Equal(t, inUse, logged(g.hook, "NFS mount busy: detaching it lazily; the kernel frees it when its last user is gone"))
			assert.False(t, logged(g.hook, "NFS mount not answering: forcing the unmount, which aborts requests waiting for the server"))
			if inUse {
				select {
				case err := <-stuck:
					t.Logf("the stuck stat returned: %v", err)
				case <-time.After(5 * time.Second):
					t.Log("the stuck stat still waits (the kernel frees it when the server returns)")
				}
			}
		})
	}
}

func logged(h *test.Hook, msg string) bool {
	for _, e := range h.AllEntries() {
		if e.Message == msg {
			return true
		}
	}
	return false
}

// relay forwards TCP connections from listen to target, each after gate
// is closed (nil: at once). It returns the port it listens on.
func relay(t *testing.T, listen, target string, gate chan struct{}) int {
	t.Helper()
	l, err := net.Listen("tcp", listen)
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
			go func() {
				if gate != nil {
					<-gate
				}
				u, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					return
				}
				mu.Lock()
				conns = append(conns, c, u)
				mu.Unlock()
				go func() { io.Copy(u, c); u.Close() }()
				io.Copy(c, u)
				c.Close()
			}()
		}
	}()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	port, _ := strconv.Atoi(p)
	return port
}

// silentServer accepts TCP connections and never answers, like an NFS
// server that hangs.
type silentServer struct {
	port  int
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newSilentServer(t *testing.T) *silentServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &silentServer{port: l.Addr().(*net.TCPAddr).Port, l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	t.Cleanup(s.cut)
	return s
}

// cut closes the listener and every connection: the kernel sees the
// server gone and gives up waiting.
func (s *silentServer) cut() {
	s.l.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}
