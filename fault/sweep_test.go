package fault

import (
	"os"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/crypt"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/driver/loop"
	"github.com/holdfast/holdfast/driver/tmpfs"
	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/sweep"
	"github.com/holdfast/holdfast/internal/volfs"
)

// TestFailureSweep fails each step of each operation once, for every
// volume type this host runs (LUKS and NFS are swept in the guest), and
// checks the invariants after the failure and after the request is
// repeated (internal/sweep). make soak (HOLDFAST_SOAK=1) fails every
// occurrence of every step with more errors.
func TestFailureSweep(t *testing.T) {
	requireRoot(t)
	n := sweep.Run(t, sweep.Config{
		Types: []sweep.Type{
			{Label: "local", Opts: map[string]string{"type": "local", "uid": "1000", "mode": "0750"}, Keeps: true, From: true},
			{Label: "tmpfs", Opts: map[string]string{"type": "tmpfs", "size": "8m"}},
			{Label: "crypt-fscrypt", Opts: map[string]string{"type": "crypt", "size": "32m", "engine": "fscrypt"}, Keeps: true, From: true},
			{Label: "loop", Opts: map[string]string{"type": "loop", "size": "16m", "uid": "1000", "mode": "0750"}, Keeps: true, From: true},
		},
		New:  newSweptDriver,
		Full: os.Getenv("HOLDFAST_SOAK") == "1",
	})
	t.Logf("failure sweep: %d (operation, type, step, error) cases on the host", n)
}

// newSweptDriver is holdfast's driver with every backend of this host,
// each step going through faults.
func newSweptDriver(t *testing.T, dirs sweep.Dirs, faults *failpoint.Set, boot string) (*driver.Driver, error) {
	log := logrus.New()
	log.SetOutput(testWriter{t})
	m := volfs.FailingMounter{Mounter: volfs.KernelMounter{}, Faults: faults}
	return driver.New(driver.Config{
		Root: dirs.Root, MountRoot: dirs.MountRoot, Scope: "local", BootID: boot,
		Mounter: m, Log: log, Faults: faults,
		Backends: map[string]driver.Backend{
			"local": &local.Backend{Mounter: m, Faults: faults},
			"tmpfs": &tmpfs.Backend{Mounter: m, DefaultSize: "8m"},
			"crypt": &crypt.Backend{Mounter: m, KeyDir: dirs.KeyDir, Faults: faults},
			"loop":  &loop.Backend{Mounter: m, Faults: faults},
		},
	})
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}
