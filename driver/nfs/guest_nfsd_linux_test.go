package nfs

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/nfsd"
)

// The TestGuestNfsd tests mount from Linux's kernel NFS server in the
// guest (internal/nfsd) through the driver: NFSv3 with rpcbind, mountd and
// statd, and NFSv4.0, 4.1 and 4.2, on ext4 and tmpfs exports. The tests of
// guest_linux_test.go use the userspace server where it is the better
// tool: a server that never answers, answers late, or is reached through a
// relay.

// kernelVersions are the versions every TestGuestNfsd test runs with, as
// subtests vers=3, vers=4.0, ...
var kernelVersions = []string{"3", "4.0", "4.1", "4.2"}

// newNfsd is a driver rig, as newGuest's, and the kernel NFS server.
func newNfsd(t *testing.T, timeout time.Duration) (*guestRig, *nfsd.Server) {
	t.Helper()
	s := nfsd.Start(t)
	g := &guestRig{t: t, root: t.TempDir(), timeout: timeout}
	g.log, g.hook = test.NewNullLogger()
	g.log.SetLevel(logrus.DebugLevel)
	g.start()
	t.Cleanup(g.cleanup)
	return g, s
}

// eachVersion runs f as subtests vers=3 ... vers=4.2.
func eachVersion(t *testing.T, f func(t *testing.T, vers string)) {
	for _, v := range kernelVersions {
		t.Run("vers="+v, func(t *testing.T) { f(t, v) })
	}
}

// fsType is what mountinfo shows for an NFS mount of vers.
func fsType(vers string) string {
	if vers == "3" {
		return "nfs"
	}
	return "nfs4"
}

func nfsOpts(e nfsd.Export, o string) map[string]string {
	m := map[string]string{"type": "nfs", "share": e.Share()}
	if o != "" {
		m["o"] = o
	}
	return m
}

func sha(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return sha256.Sum256(b)
}

func TestGuestNfsdLifecycle(t *testing.T) {
	eachVersion(t, func(t *testing.T, vers string) {
		for _, fs := range []string{nfsd.Ext4, nfsd.Tmpfs} {
			t.Run(filepath.Base(fs), func(t *testing.T) {
				g, s := newNfsd(t, 0)
				e := s.Export(t, fs, "")
				g.create("data", nfsOpts(e, "vers="+vers))
				mp := g.mount("data", "a")

				infos := nfsMounts(t, mp)
				require.Len(t, infos, 1)
				assert.Equal(t, fsType(vers), infos[0].FSType)
				assert.Equal(t, e.Share(), infos[0].Source)
				assert.Contains(t, infos[0].Options, "nosuid")
				assert.Contains(t, infos[0].Options, "nodev")
				assert.Contains(t, strings.Split(infos[0].VFSOptions, ","), "vers="+vers)
				assert.Contains(t, strings.Split(infos[0].VFSOptions, ","), "hard", "the kernel's default, which holdfast keeps")

				// A 4 MiB file written through holdfast is byte-identical on
				// the server, and one written on the server reads back alike.
				data := make([]byte, 4<<20)
				rand.Read(data)
				require.NoError(t, os.WriteFile(filepath.Join(mp, "blob"), data, 0o644))
				assert.Equal(t, sha256.Sum256(data), sha(t, filepath.Join(e.Dir, "blob")), "the server's file has the same bytes")
				require.NoError(t, os.WriteFile(filepath.Join(e.Dir, "from-server"), []byte("hello"), 0o644))
				got, err := os.ReadFile(filepath.Join(mp, "from-server"))
				require.NoError(t, err)
				assert.Equal(t, "hello", string(got))

				st := g.status("data")
				assert.Equal(t, true, st["mounted"])
				assert.Equal(t, 1, st["leases"])
				assert.Equal(t, vers, st["version"])
				assert.Equal(t, nfsd.Host, st["address"])
				assert.Equal(t, e.Dir, st["export"])
				assert.Equal(t, "rw,nosuid,nodev,vers="+vers+",addr=127.0.0.1", st["options"])
				checkExportFigures(t, g, "data", e.Dir)

				g.unmount("data", "a")
				assert.NotContains(t, g.status("data"), "exportFilesystemSize", "no figures while unmounted")
				assert.Empty(t, nfsMounts(t, mp))
				assert.NoDirExists(t, mp)
				require.NoError(t, g.d.Remove(&volume.RemoveRequest{Name: "data"}))
				assert.FileExists(t, filepath.Join(e.Dir, "blob"), "Remove never deletes data on the server")
			})
		}
	})
}

func TestGuestNfsdTwoLeasesShareOneMount(t *testing.T) {
	eachVersion(t, func(t *testing.T, vers string) {
		g, s := newNfsd(t, 0)
		e := s.Export(t, nfsd.Ext4, "")
		g.create("shared", nfsOpts(e, "vers="+vers))
		mp := g.mount("shared", "a")
		assert.Equal(t, mp, g.mount("shared", "b"))
		assert.Len(t, nfsMounts(t, mp), 1, "one kernel mount for both leases")
		assert.Equal(t, 2, g.status("shared")["leases"])

		g.unmount("shared", "a")
		assert.Len(t, nfsMounts(t, mp), 1, "still mounted for the other lease")
		require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o644))
		assert.FileExists(t, filepath.Join(e.Dir, "f"))
		g.unmount("shared", "b")
		assert.Empty(t, nfsMounts(t, mp))
	})
}

func TestGuestNfsdRestartAdoptsMount(t *testing.T) {
	eachVersion(t, func(t *testing.T, vers string) {
		g, s := newNfsd(t, 0)
		e := s.Export(t, nfsd.Ext4, "")
		g.create("kept", nfsOpts(e, "vers="+vers))
		mp := g.mount("kept", "a")
		require.NoError(t, g.d.Close())

		g.start() // the plugin restarted: a new driver and backend on the same root
		st := g.status("kept")
		assert.Equal(t, true, st["mounted"])
		assert.Equal(t, 1, st["leases"])
		assert.Equal(t, vers, st["version"], "what was negotiated survives the restart")
		assert.Len(t, nfsMounts(t, mp), 1, "adopted, not mounted again")
		require.NoError(t, os.WriteFile(filepath.Join(mp, "after-restart"), []byte("x"), 0o644))
		assert.FileExists(t, filepath.Join(e.Dir, "after-restart"))

		assert.Equal(t, mp, g.mount("kept", "b"))
		assert.Len(t, nfsMounts(t, mp), 1)
		g.unmount("kept", "a")
		g.unmount("kept", "b")
		assert.Empty(t, nfsMounts(t, mp))
	})
}

// TestGuestNfsdNegotiates: without vers holdfast tries 4.2 first, which
// the kernel server offers; vers=4 gets the newest 4.x, and a server that
// turned 4.2 off gets 4.1 either way.
func TestGuestNfsdNegotiates(t *testing.T) {
	check := func(t *testing.T, g *guestRig, name string, opts map[string]string, want string) {
		t.Helper()
		g.create(name, opts)
		mp := g.mount(name, "a")
		assert.Equal(t, want, g.status(name)["version"])
		infos := nfsMounts(t, mp)
		require.Len(t, infos, 1)
		assert.Equal(t, "nfs4", infos[0].FSType)
		assert.Contains(t, strings.Split(infos[0].VFSOptions, ","), "vers="+want)
		g.unmount(name, "a")
	}
	g, s := newNfsd(t, 0)
	e := s.Export(t, nfsd.Ext4, "")
	t.Logf("server offers %s", s.Versions())
	check(t, g, "auto", nfsOpts(e, ""), "4.2")
	check(t, g, "four", nfsOpts(e, "vers=4"), "4.2")

	s.Without(t, "4.2")
	t.Logf("server offers %s", s.Versions())
	check(t, g, "auto41", nfsOpts(e, ""), "4.1")
	check(t, g, "four41", nfsOpts(e, "vers=4"), "4.1")
}

// TestGuestNfsdLocks takes flock and fcntl locks through the volume and
// checks that the server holds them: a process on the server cannot take
// a conflicting lock on the exported file until holdfast's client lets go.
// NFSv3 locks go through lockd and rpc.statd, which the guest runs.
func TestGuestNfsdLocks(t *testing.T) {
	eachVersion(t, func(t *testing.T, vers string) {
		g, s := newNfsd(t, 0)
		e := s.Export(t, nfsd.Ext4, "")
		g.create("locks", nfsOpts(e, "vers="+vers))
		mp := g.mount("locks", "a")
		require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("locked"), 0o644))

		serverLock := func() error {
			f, err := os.OpenFile(filepath.Join(e.Dir, "f"), os.O_RDWR, 0)
			require.NoError(t, err)
			defer f.Close()
			lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
			return unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk) // released at Close
		}
		require.NoError(t, serverLock(), "no lock yet")

		for _, kind := range []string{"fcntl", "flock"} {
			f, err := os.OpenFile(filepath.Join(mp, "f"), os.O_RDWR, 0)
			require.NoError(t, err)
			if kind == "fcntl" {
				lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
				require.NoError(t, unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk), "fcntl lock through the volume")
			} else {
				require.NoError(t, unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB), "flock through the volume")
			}
			err = serverLock()
			assert.True(t, errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES), "%s: the server holds the lock: %v", kind, err)
			require.NoError(t, f.Close()) // releases the lock
			require.Eventually(t, func() bool { return serverLock() == nil }, 10*time.Second, 50*time.Millisecond, "%s: released on the server", kind)
		}
		g.unmount("locks", "a")
	})
}

// TestGuestNfsdServerRestartWhileMounted stops the server's threads while
// a volume is mounted with hard and writes to it: the write waits, and
// completes once the server is back, with nothing lost.
func TestGuestNfsdServerRestartWhileMounted(t *testing.T) {
	eachVersion(t, func(t *testing.T, vers string) {
		g, s := newNfsd(t, 0)
		e := s.Export(t, nfsd.Ext4, "")
		g.create("hard", nfsOpts(e, "vers="+vers+",hard"))
		mp := g.mount("hard", "a")
		before := bytes.Repeat([]byte("before the restart\n"), 1000)
		require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), before, 0o644))

		require.NoError(t, s.Stop())
		stopped := time.Now()
		t.Cleanup(func() { s.Resume() }) // should the test fail with the server down
		after := bytes.Repeat([]byte("written while the server was down\n"), 1000)
		done := make(chan error, 1)
		go func() {
			f, err := os.OpenFile(filepath.Join(mp, "f"), os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				if _, err = f.Write(after); err == nil {
					err = f.Sync()
				}
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			done <- err
		}()
		select {
		case err := <-done:
			t.Fatalf("the write returned while the server was down: %v", err)
		case <-time.After(3 * time.Second):
		}
		t.Logf("List+Get with the server down: %v", answersAtOnce(t, g.d, "hard"))

		require.NoError(t, s.Resume())
		select {
		case err := <-done:
			require.NoError(t, err, "with hard the write completes once the server is back")
			t.Logf("the write completed %v after the server stopped", time.Since(stopped).Round(time.Millisecond))
		case <-time.After(90 * time.Second):
			t.Fatal("the write still waits 90 s after the server came back")
		}
		want := append(append([]byte{}, before...), after...)
		assert.Equal(t, sha256.Sum256(want), sha(t, filepath.Join(e.Dir, "f")), "nothing lost: the server's file has both writes")
		g.unmount("hard", "a")
		assert.Empty(t, nfsMounts(t, mp))
	})
}

// TestGuestNfsdExportRemoved removes the export (exportfs -u) while a
// volume is mounted, then mounts a volume of the removed export.
func TestGuestNfsdExportRemoved(t *testing.T) {
	eachVersion(t, func(t *testing.T, vers string) {
		g, s := newNfsd(t, 5*time.Second)
		e := s.Export(t, nfsd.Ext4, "")
		g.create("gone", nfsOpts(e, "vers="+vers+",actimeo=0"))
		mp := g.mount("gone", "a")
		require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o644))

		require.NoError(t, s.Unexport(e))
		_, err := os.ReadDir(mp)
		t.Logf("listing the mounted volume after exportfs -u: %v", err)
		assert.Error(t, err, "the server refuses the removed export")
		t.Logf("List+Get: %v", answersAtOnce(t, g.d, "gone"))
		start := time.Now()
		g.unmount("gone", "a")
		assert.Less(t, time.Since(start), 5*time.Second)
		assert.Empty(t, nfsMounts(t, mp))

		_, err = g.d.Mount(&volume.MountRequest{Name: "gone", ID: "b"})
		require.Error(t, err)
		t.Logf("Mount of the removed export: %v", err)
		assert.Contains(t, err.Error(), "mount nfs "+e.Share()+" for volume gone: ")
		assert.Contains(t, err.Error(), "permission denied (the server refused access to "+e.Dir+"; check that it exports it to this host", "names the export and what to check")
		assert.Equal(t, false, g.status("gone")["mounted"])

		require.NoError(t, s.Reexport(e))
		g.mount("gone", "b")
		assert.FileExists(t, filepath.Join(mp, "f"), "the data was never touched")
		g.unmount("gone", "b")
	})
}

// TestGuestNfsdRootSquash: with root_squash, root in a container is nobody
// on the server, so files and directories owned by root are read-only to
// it, as the README says.
func TestGuestNfsdRootSquash(t *testing.T) {
	eachVersion(t, func(t *testing.T, vers string) {
		g, s := newNfsd(t, 0)
		e := s.Export(t, nfsd.Ext4, "rw,sync,no_subtree_check,root_squash,insecure")
		require.NoError(t, os.Chmod(e.Dir, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(e.Dir, "owned-by-root"), []byte("root's"), 0o644))
		require.NoError(t, os.Mkdir(filepath.Join(e.Dir, "open"), 0o755))
		require.NoError(t, os.Chmod(filepath.Join(e.Dir, "open"), 0o777)) // past the umask
		g.create("squashed", nfsOpts(e, "vers="+vers))
		mp := g.mount("squashed", "a")

		got, err := os.ReadFile(filepath.Join(mp, "owned-by-root"))
		require.NoError(t, err, "readable")
		assert.Equal(t, "root's", string(got))
		err = os.WriteFile(filepath.Join(mp, "owned-by-root"), []byte("x"), 0o644)
		assert.ErrorIs(t, err, unix.EACCES, "root's file is read-only to a squashed root")
		t.Logf("writing root's file: %v", err)
		err = os.WriteFile(filepath.Join(mp, "new"), []byte("x"), 0o644)
		assert.ErrorIs(t, err, unix.EACCES, "root's directory is read-only to a squashed root")

		require.NoError(t, os.WriteFile(filepath.Join(mp, "open", "new"), []byte("x"), 0o644), "a world-writable directory takes files")
		var st unix.Stat_t
		require.NoError(t, unix.Stat(filepath.Join(e.Dir, "open", "new"), &st))
		assert.Equal(t, uint32(65534), st.Uid, "owned by nobody on the server")
		g.unmount("squashed", "a")
	})
}

// TestGuestNfsdV4OnlyServerAskedForV3: a server without NFSv3 fails a
// vers=3 volume with a message saying so; without vers it mounts 4.2.
func TestGuestNfsdV4OnlyServerAskedForV3(t *testing.T) {
	g, s := newNfsd(t, 5*time.Second)
	e := s.Export(t, nfsd.Ext4, "")
	s.Without(t, "3")
	t.Logf("server offers %s", s.Versions())
	g.create("v3", nfsOpts(e, "vers=3"))
	_, err := g.d.Mount(&volume.MountRequest{Name: "v3", ID: "a"})
	require.Error(t, err)
	t.Logf("Mount vers=3: %v", err)
	assert.Contains(t, err.Error(), "mount nfs "+e.Share()+" for volume v3: ")
	assert.Contains(t, err.Error(), "does not offer NFS 3")
	assert.Equal(t, false, g.status("v3")["mounted"])

	g.create("auto", nfsOpts(e, ""))
	g.mount("auto", "a")
	assert.Equal(t, "4.2", g.status("auto")["version"])
	g.unmount("auto", "a")
}

// checkExportFigures waits for Status to show the export's filesystem
// figures and compares them with the server's own statfs of dir.
func checkExportFigures(t *testing.T, g *guestRig, name, dir string) {
	t.Helper()
	var st map[string]any
	res, err := g.d.Get(&volume.GetRequest{Name: name})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		g.b.exportStats().refresh(res.Volume.Mountpoint) // as the sampler does every 10 s
		st = g.status(name)
		_, ok := st["exportFilesystemSize"]
		return ok
	}, 30*time.Second, 50*time.Millisecond, "Status shows the export's figures once statfs answered")
	var fs unix.Statfs_t
	require.NoError(t, unix.Statfs(dir, &fs))
	size := float64(fs.Blocks) * float64(fs.Frsize)
	got, ok := st["exportFilesystemSize"].(uint64)
	require.True(t, ok, "exportFilesystemSize is a byte count: %#v", st["exportFilesystemSize"])
	assert.InDelta(t, size, float64(got), size*0.02, "the server's filesystem size")
	assert.Contains(t, st, "exportFilesystemUsed")
	assert.Contains(t, st, "exportFilesystemAvailable")
	assert.NotContains(t, st, "exportFilesystemError")
}
