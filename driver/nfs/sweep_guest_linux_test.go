package nfs

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/guest"
	"github.com/holdfast/holdfast/internal/nfstest"
	"github.com/holdfast/holdfast/internal/sweep"
	"github.com/holdfast/holdfast/internal/volfs"
)

// TestGuestNFSFailureSweep is fault.TestFailureSweep for NFS volumes, which
// need the kernel's NFS client: each step of each operation is failed once
// against internal/nfstest's server, the invariants are checked, the
// request is repeated and must converge. The volume's data lives on the
// server, so the sweep's marker must survive every failure. "nfs" names the
// server by address as the other guest tests do; "nfs-name" by host name,
// which sweeps its resolution too.
func TestGuestNFSFailureSweep(t *testing.T) {
	guest.Require(t, "NFS client")
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts volumes and attaches devices for real (make vmtest runs as root in the guest)")
	}
	export := t.TempDir()
	srv, err := nfstest.Start(export)
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	opts := func(addr string) map[string]string {
		return map[string]string{
			"type":   "nfs",
			"o":      fmt.Sprintf("addr=%s,vers=3,port=%d,mountport=%d,nolock,proto=tcp,mountproto=tcp", addr, srv.Port, srv.Port),
			"device": ":/",
		}
	}
	// Each case starts on an empty export: a marker an earlier case left on
	// the server must not stand in for this case's.
	fresh := map[string]bool{}
	newDriver := func(t *testing.T, dirs sweep.Dirs, faults *failpoint.Set, boot string) (*driver.Driver, error) {
		if !fresh[dirs.Root] {
			fresh[dirs.Root] = true
			ents, err := os.ReadDir(export)
			require.NoError(t, err)
			for _, e := range ents {
				require.NoError(t, os.RemoveAll(filepath.Join(export, e.Name())))
			}
			// After the case's own checks: nothing of it stays mounted
			// from the server once the test is over.
			t.Cleanup(func() { detachUnder(dirs.Root, dirs.MountRoot) })
		}
		return newSweptNFS(t, dirs, faults, boot)
	}
	cases := sweep.RunCases(t, sweep.Config{
		Types: []sweep.Type{
			{Label: "nfs", Opts: opts(nfstest.Host), Keeps: true},
			{Label: "nfs-name", Opts: opts("localhost"), Keeps: true},
		},
		New:  newDriver,
		Full: os.Getenv("HOLDFAST_SOAK") == "1",
	})
	t.Logf("failure sweep: %d (operation, type, step, error) cases in the guest for nfs", len(cases))

	swept := map[string]map[string]bool{}
	for _, c := range cases {
		k := c.Op + "/" + c.Type
		if swept[k] == nil {
			swept[k] = map[string]bool{}
		}
		swept[k][c.Step] = true
	}
	for k, step := range map[string]string{
		"mount/nfs":        "mount nfs",
		"mount/nfs-name":   "resolve server name",
		"unmount last/nfs": "unmount",
	} {
		assert.True(t, swept[k][step], "%s: step %q was not swept; swept: %v", k, step, slices.Sorted(maps.Keys(swept[k])))
	}
}

// newSweptNFS is holdfast's driver with the nfs backend, each step going
// through faults.
func newSweptNFS(t *testing.T, dirs sweep.Dirs, faults *failpoint.Set, boot string) (*driver.Driver, error) {
	log := logrus.New()
	log.SetOutput(testLog{t})
	m := volfs.FailingMounter{Mounter: volfs.KernelMounter{}, Faults: faults}
	return driver.New(driver.Config{
		Root: dirs.Root, MountRoot: dirs.MountRoot, Scope: "global", BootID: boot,
		Mounter: m, Log: log, Faults: faults,
		Backends: map[string]driver.Backend{
			TypeNFS: &Backend{Mounter: m, Timeout: 10 * time.Second, Log: log, Faults: faults},
		},
	})
}

// detachUnder lazily detaches every mount under dirs.
func detachUnder(dirs ...string) {
	for _, dir := range dirs {
		infos, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
		for _, m := range infos {
			unix.Unmount(m.Mountpoint, unix.MNT_FORCE|unix.MNT_DETACH)
		}
	}
}

// testLog sends log lines to the test's log.
type testLog struct{ t *testing.T }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}
