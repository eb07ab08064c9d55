package crypt

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/guest"
	"github.com/holdfast/holdfast/internal/sweep"
	"github.com/holdfast/holdfast/internal/volfs"
)

// TestLUKSFailureSweep is fault.TestFailureSweep for the LUKS engine, which
// needs dm-crypt: each step of each operation on a crypt volume is failed
// once, the invariants are checked (no mount, loop device or
// /dev/mapper/holdfast-swept-* mapping left by what failed), the request is
// repeated and must converge. HOLDFAST_SOAK=1 fails every occurrence of
// every step with more errors.
func TestLUKSFailureSweep(t *testing.T) {
	guest.Require(t, "dm-crypt")
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts volumes and attaches devices for real (make vmtest runs as root in the guest)")
	}
	full := os.Getenv("HOLDFAST_SOAK") == "1"
	cases := sweep.RunCases(t, sweep.Config{
		Types: []sweep.Type{
			{Label: "crypt-luks", Opts: map[string]string{"type": "crypt", "size": "32m", "engine": "luks", "uid": "1000", "mode": "0750"}, Keeps: true, From: true},
		},
		New:  newSweptLUKS,
		Full: full,
		// Under TCG a case takes ~10 s (luksFormat and mkfs at every
		// setup): make test sweeps here what only LUKS has, the
		// cryptsetup steps; the rest is the same code the host sweeps
		// with fscrypt, and make soak sweeps everything here too.
		Only: func(step string) bool { return strings.HasPrefix(step, "cryptsetup ") },
	})
	t.Logf("failure sweep: %d (operation, type, step, error) cases in the guest for crypt-luks", len(cases))

	// The steps that only LUKS has must have been swept where they run.
	swept := map[string][]string{}
	for _, c := range cases {
		swept[c.Op] = append(swept[c.Op], c.Step)
	}
	for op, steps := range map[string][]string{
		"create":       {"cryptsetup luksFormat", "cryptsetup open", "cryptsetup close"},
		"create from":  {"cryptsetup luksFormat", "cryptsetup open", "cryptsetup close"},
		"mount":        {"cryptsetup open"},
		"unmount last": {"cryptsetup close"},
		"remove":       {"delete key"},
	} {
		for _, step := range steps {
			if !full && !strings.HasPrefix(step, "cryptsetup ") {
				continue
			}
			assert.True(t, slices.Contains(swept[op], step), "%s: step %q was not swept; swept: %v", op, step, sweep.Steps(swept[op]))
		}
	}
}

// newSweptLUKS is holdfast's driver with the crypt backend (and local, the
// type of the sweep's from= source), each step going through faults.
func newSweptLUKS(t *testing.T, dirs sweep.Dirs, faults *failpoint.Set, boot string) (*driver.Driver, error) {
	log := logrus.New()
	log.SetOutput(testLog{t})
	m := volfs.FailingMounter{Mounter: volfs.KernelMounter{}, Faults: faults}
	return driver.New(driver.Config{
		Root: dirs.Root, MountRoot: dirs.MountRoot, Scope: "local", BootID: boot,
		Mounter: m, Log: log, Faults: faults,
		Backends: map[string]driver.Backend{
			"crypt": &Backend{Mounter: m, KeyDir: dirs.KeyDir, Faults: faults},
			"local": &local.Backend{Mounter: m, Faults: faults},
		},
	})
}

// testLog sends log lines to the test's log.
type testLog struct{ t *testing.T }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}
