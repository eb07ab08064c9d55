// Package sweep fails every step of every operation, one at a time, on the
// real kernel, and checks holdfast's invariants after each failure and
// after the request is repeated:
//
//   - a Mount answer is the volume's own live mount, and Get's "mounted" is
//     what the mount table says;
//   - after a failed step the answer is an error, nothing of a volume that
//     does not exist is left (mount, loop device, mapping, key, directory,
//     record), and a volume that exists keeps its data;
//   - repeating the request once the fault is gone converges to the state
//     a first success gives;
//   - data is only deleted by a Remove that holdfast acknowledged.
//
// The steps come from the code: each case first runs its operation with
// every step recorded (internal/failpoint), then fails each recorded step
// in turn on a fresh --root.
package sweep

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/failpoint"
)

// Dirs are the directories of one case's plugin.
type Dirs struct {
	Root, MountRoot, KeyDir string
}

// Type is one volume type to sweep.
type Type struct {
	// Label names the type in subtests, e.g. "crypt-luks".
	Label string
	// Opts are the Create options, type included.
	Opts map[string]string
	// Keeps says the data survives an unmount (not tmpfs).
	Keeps bool
	// From says the type takes from=: the sweep runs a Create copying a
	// local volume with the marker in it.
	From bool
}

// Config says what to sweep.
type Config struct {
	Types []Type
	// New starts a driver on dirs with every step going through faults,
	// under boot id boot.
	New func(t *testing.T, dirs Dirs, faults *failpoint.Set, boot string) (*driver.Driver, error)
	// Full fails every occurrence of every step, with every error; else
	// the first occurrence of each step, with EIO and, for unmounts, EBUSY.
	Full bool
	// Only, when set and not Full, limits the sweep to the steps it
	// accepts: a slow environment sweeps there only what the host cannot.
	Only func(step string) bool
}

// Case is one (operation, type, step, error) case a sweep ran.
type Case struct {
	Op, Type, Step string
	// Nth is the occurrence of Step that failed, from 1.
	Nth int
	Err error
}

// Run sweeps every operation of every type. It returns the number of
// (operation, type, step, error) cases run.
func Run(t *testing.T, cfg Config) int { return len(RunCases(t, cfg)) }

// RunCases is Run returning the cases run, so that a test can check the
// steps it expects were swept.
func RunCases(t *testing.T, cfg Config) []Case {
	var cases []Case
	for _, typ := range cfg.Types {
		for _, o := range operations {
			if o.from && !typ.From {
				continue
			}
			t.Run(o.name+"/"+typ.Label, func(t *testing.T) { cases = append(cases, sweepOne(t, cfg, typ, o)...) })
		}
	}
	return cases
}

// sweepOne enumerates the steps of one operation and fails each in turn.
func sweepOne(t *testing.T, cfg Config, typ Type, o operation) []Case {
	e := newEnv(t, cfg, typ)
	o.setup(e)
	e.faults.Disarm()
	require.NoError(t, o.run(e), "%s without faults", o.name)
	e.settle()
	steps := e.faults.Steps()
	o.final(e)
	e.close()
	require.NotEmpty(t, steps, "%s runs no step", o.name)

	var cases []Case
	seen := map[string]int{}
	for _, step := range steps {
		seen[step]++
		if !cfg.Full && (seen[step] > 1 || cfg.Only != nil && !cfg.Only(step)) {
			continue
		}
		for _, ferr := range faultsFor(step, cfg.Full) {
			name := fmt.Sprintf("%s#%d/%v", step, seen[step], ferr)
			t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
				failStep(t, cfg, typ, o, step, seen[step], ferr)
			})
			cases = append(cases, Case{Op: o.name, Type: typ.Label, Step: step, Nth: seen[step], Err: ferr})
		}
	}
	return cases
}

// faultsFor lists the errors a step is failed with.
func faultsFor(step string, full bool) []error {
	errs := []error{syscall.EIO}
	if strings.HasPrefix(step, "unmount") {
		errs = append(errs, syscall.EBUSY)
	}
	if full {
		errs = append(errs, syscall.ENOSPC, syscall.EINTR)
	}
	return errs
}

// failStep runs o with the nth occurrence of step failing with ferr,
// checks the invariants, repeats the request and checks convergence.
func failStep(t *testing.T, cfg Config, typ Type, o operation, step string, nth int, ferr error) {
	e := newEnv(t, cfg, typ)
	defer e.close()
	o.setup(e)
	e.faults.Arm(step, nth, ferr)
	err := o.run(e)
	e.settle()
	fired := e.faults.Fired()
	e.faults.Disarm()
	if !fired {
		t.Errorf("%s (occurrence %d) was not reached when repeated (the operation answered %v): the operation's steps must not depend on chance", step, nth, err)
	}
	if err != nil {
		assert.NotContains(t, err.Error(), "%!", "a malformed error message")
	}
	e.consistent()
	o.failed(e, err)
	require.NoError(t, o.retry(e), "repeating %s once the fault is gone", o.name)
	e.consistent()
	o.final(e)
}

// env is one case's plugin on a fresh --root.
type env struct {
	t      *testing.T
	cfg    Config
	typ    Type
	dirs   Dirs
	faults *failpoint.Set
	d      *driver.Driver
	boot   string
}

// vol is the name of the volume each case works on.
const vol = "swept"

// marker is the file each case writes into a volume that keeps its data.
const marker = "marker"

// source is the local volume a Create with from= copies.
const source = "source"

func newEnv(t *testing.T, cfg Config, typ Type) *env {
	base := t.TempDir()
	e := &env{t: t, cfg: cfg, typ: typ, faults: &failpoint.Set{}, boot: "boot-1", dirs: Dirs{
		Root: filepath.Join(base, "root"), MountRoot: filepath.Join(base, "mnt"), KeyDir: filepath.Join(base, "keys"),
	}}
	e.start()
	return e
}

// start starts the driver, failing the test if it cannot.
func (e *env) start() {
	d, err := e.cfg.New(e.t, e.dirs, e.faults, e.boot)
	require.NoError(e.t, err)
	e.d = d
}

// settle waits for the driver's background work (deleting removed
// volumes' directories), whose steps count too.
func (e *env) settle() {
	if e.d != nil {
		e.d.WaitPurged()
	}
}

// close removes everything and checks that nothing is left.
func (e *env) close() {
	e.faults.Disarm()
	if e.d == nil {
		return
	}
	for _, id := range []string{"a", "b", "setup", "check"} {
		e.d.Unmount(&volume.UnmountRequest{Name: vol, ID: id})
	}
	e.d.Remove(&volume.RemoveRequest{Name: vol})
	e.d.Remove(&volume.RemoveRequest{Name: source})
	e.d.Close()
	e.d = nil
	e.requireGone()
}

// status is what Get says of the volume.
type status struct {
	exists  bool
	mounted bool
	leases  int
	mp      string
}

func (e *env) status() status {
	res, err := e.d.Get(&volume.GetRequest{Name: vol})
	if errors.Is(err, driver.ErrNotFound) {
		return status{}
	}
	require.NoError(e.t, err)
	leases, _ := res.Volume.Status["leases"].(int)
	mounted, _ := res.Volume.Status["mounted"].(bool)
	return status{exists: true, mounted: mounted, leases: leases, mp: res.Volume.Mountpoint}
}

// mountpoint is where the volume is presented.
func (e *env) mountpoint() string { return filepath.Join(e.dirs.MountRoot, vol) }

// live says whether the mount table has a mount at the mountpoint.
func (e *env) live() bool {
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(e.mountpoint()))
	require.NoError(e.t, err)
	return len(infos) > 0
}

// consistent checks that Get tells the truth about the mount table.
func (e *env) consistent() {
	if e.d == nil {
		return // a start that failed
	}
	st := e.status()
	if !st.exists {
		assert.False(e.t, e.live(), "a volume Get does not know is mounted at %s", e.mountpoint())
		return
	}
	assert.Equal(e.t, e.live(), st.mounted, "Get's mounted is what the mount table says")
	if st.mounted {
		assert.Equal(e.t, e.mountpoint(), st.mp)
	}
}

// requireLocked checks that nothing of the volume is attached: no mount
// anywhere under --root or --mount-root, no loop device, no mapping.
func (e *env) requireLocked() {
	e.t.Helper()
	for _, dir := range []string{e.dirs.Root, e.dirs.MountRoot} {
		infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
		require.NoError(e.t, err)
		assert.Empty(e.t, infos, "nothing mounted under %s", dir)
	}
	// A loop device another process holds open for a moment (any scan of
	// loop devices, in another test binary too) autoclears when closed.
	loops := e.loops()
	for end := time.Now().Add(5 * time.Second); len(loops) > 0 && time.Now().Before(end); loops = e.loops() {
		time.Sleep(10 * time.Millisecond)
	}
	assert.Empty(e.t, loops, "no loop device backed by a file under --root")
	assert.Empty(e.t, mappings(), "no device-mapper mapping")
}

// loops lists the loop devices whose backing file is under --root. A
// device another process holds open for a moment autoclears when closed.
func (e *env) loops() []string {
	var devs []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), e.dirs.Root+"/") {
			devs = append(devs, f)
		}
	}
	return devs
}

// requireGone checks that nothing of the volume is left: record,
// directory, mountpoint, key, mount, device.
func (e *env) requireGone() {
	e.t.Helper()
	e.requireLocked()
	assert.NoDirExists(e.t, filepath.Join(e.dirs.Root, "volumes", vol))
	assert.NoDirExists(e.t, e.mountpoint())
	keys, _ := os.ReadDir(e.dirs.KeyDir)
	assert.Empty(e.t, keys, "no key left in --key-dir")
}

// requireData mounts the volume (when it is not), reads the marker and
// unmounts it again.
func (e *env) requireData() {
	e.t.Helper()
	if !e.typ.Keeps {
		return
	}
	res, err := e.d.Mount(&volume.MountRequest{Name: vol, ID: "check"})
	require.NoError(e.t, err, "the volume's data must still be reachable")
	b, err := os.ReadFile(filepath.Join(res.Mountpoint, marker))
	require.NoError(e.t, err, "the volume's data is intact")
	assert.Equal(e.t, vol, string(b))
	require.NoError(e.t, e.d.Unmount(&volume.UnmountRequest{Name: vol, ID: "check"}))
}

func (e *env) create() error {
	return e.d.Create(&volume.CreateRequest{Name: vol, Options: e.typ.Opts})
}

func (e *env) mount(id string) error {
	res, err := e.d.Mount(&volume.MountRequest{Name: vol, ID: id})
	if err != nil {
		return err
	}
	if res.Mountpoint != e.mountpoint() || !e.live() {
		return fmt.Errorf("Mount answered %s, which is not the volume's live mount", res.Mountpoint)
	}
	return nil
}

func (e *env) unmount(id string) error {
	return e.d.Unmount(&volume.UnmountRequest{Name: vol, ID: id})
}

func (e *env) remove() error {
	err := e.d.Remove(&volume.RemoveRequest{Name: vol})
	if errors.Is(err, driver.ErrNotFound) {
		return nil // removed by the first try
	}
	return err
}

// restart stops the driver and starts it again, after a reboot when
// reboot is set (a new boot id: leases are dropped).
func (e *env) restart(reboot bool) error {
	if e.d != nil {
		e.d.Close()
		e.d = nil
	}
	if reboot {
		e.boot = "boot-2"
	}
	d, err := e.cfg.New(e.t, e.dirs, e.faults, e.boot)
	if err != nil {
		return err
	}
	e.d = d
	return nil
}

// created makes the volume, with the marker in it.
func (e *env) created() {
	require.NoError(e.t, e.create())
	if !e.typ.Keeps {
		return
	}
	require.NoError(e.t, e.mount("setup"))
	require.NoError(e.t, os.WriteFile(filepath.Join(e.mountpoint(), marker), []byte(vol), 0o600))
	require.NoError(e.t, e.unmount("setup"))
}

// withSource makes the local volume source, with the marker in it.
func (e *env) withSource() {
	require.NoError(e.t, e.d.Create(&volume.CreateRequest{Name: source, Options: map[string]string{"type": "local"}}))
	res, err := e.d.Mount(&volume.MountRequest{Name: source, ID: "setup"})
	require.NoError(e.t, err)
	require.NoError(e.t, os.WriteFile(filepath.Join(res.Mountpoint, marker), []byte(vol), 0o600))
	require.NoError(e.t, e.d.Unmount(&volume.UnmountRequest{Name: source, ID: "setup"}))
}

// createFrom creates the volume with from=source.
func (e *env) createFrom() error {
	opts := map[string]string{"from": source}
	for k, v := range e.typ.Opts {
		opts[k] = v
	}
	return e.d.Create(&volume.CreateRequest{Name: vol, Options: opts})
}

// requireSource checks the source is intact and not held: no lease.
func (e *env) requireSource() {
	e.t.Helper()
	res, err := e.d.Get(&volume.GetRequest{Name: source})
	require.NoError(e.t, err, "the source of from= is never lost")
	assert.Equal(e.t, 0, res.Volume.Status["leases"], "no lease is left on the source")
}

// operation is one request (or a start) swept.
type operation struct {
	// from marks operations run only for types with From.
	from  bool
	name  string
	setup func(*env)
	run   func(*env) error
	// failed checks the state right after the first try answered err.
	failed func(*env, error)
	// retry repeats the request, which must then succeed.
	retry func(*env) error
	// final checks the state the request, once successful, leaves.
	final func(*env)
}

var operations = []operation{
	{
		name:  "create",
		setup: func(*env) {},
		run:   (*env).create,
		failed: func(e *env, err error) {
			if err == nil {
				return
			}
			assert.False(e.t, e.status().exists, "a failed Create leaves no volume")
			e.requireGone()
		},
		retry: (*env).create,
		final: func(e *env) {
			assert.Equal(e.t, status{exists: true}, e.status())
			e.requireLocked()
		},
	},
	{
		from:  true,
		name:  "create from",
		setup: (*env).withSource,
		run:   (*env).createFrom,
		failed: func(e *env, err error) {
			e.requireSource()
			if err == nil {
				return
			}
			assert.False(e.t, e.status().exists, "a failed Create leaves no volume")
			e.requireGone()
		},
		retry: (*env).createFrom,
		final: func(e *env) {
			assert.Equal(e.t, status{exists: true}, e.status())
			e.requireLocked()
			e.requireSource()
			e.requireData()
		},
	},
	{
		name:  "mount",
		setup: (*env).created,
		run:   func(e *env) error { return e.mount("a") },
		failed: func(e *env, err error) {
			if err == nil {
				return
			}
			assert.Equal(e.t, status{exists: true}, e.status(), "a failed first Mount takes no lease")
			e.requireLocked()
		},
		retry: func(e *env) error { return e.mount("a") },
		final: func(e *env) {
			st := e.status()
			assert.True(e.t, st.mounted && st.leases == 1, "mounted with one lease: %+v", st)
			e.requireData()
		},
	},
	{
		name: "mount second",
		setup: func(e *env) {
			e.created()
			require.NoError(e.t, e.mount("a"))
		},
		run: func(e *env) error { return e.mount("b") },
		failed: func(e *env, err error) {
			if err == nil {
				return
			}
			st := e.status()
			assert.True(e.t, st.mounted && st.leases == 1, "the first lease keeps its mount: %+v", st)
		},
		retry: func(e *env) error { return e.mount("b") },
		final: func(e *env) {
			st := e.status()
			assert.True(e.t, st.mounted && st.leases == 2, "mounted with two leases: %+v", st)
			e.requireData()
		},
	},
	{
		name: "unmount last",
		setup: func(e *env) {
			e.created()
			require.NoError(e.t, e.mount("a"))
		},
		run:    func(e *env) error { return e.unmount("a") },
		failed: func(e *env, err error) { e.requireData() },
		retry:  func(e *env) error { return e.unmount("a") },
		final: func(e *env) {
			assert.Equal(e.t, status{exists: true}, e.status())
			e.requireLocked()
			e.requireData()
		},
	},
	{
		name:  "remove",
		setup: (*env).created,
		run:   (*env).remove,
		failed: func(e *env, err error) {
			if err == nil {
				return
			}
			if e.status().exists {
				e.requireData() // a Remove that failed before it began deletes nothing
			}
		},
		retry: (*env).remove,
		final: func(e *env) {
			assert.False(e.t, e.status().exists)
			e.requireGone()
			// The name can be used again.
			require.NoError(e.t, e.create())
		},
	},
	{
		name: "start after reboot",
		setup: func(e *env) {
			e.created()
			require.NoError(e.t, e.mount("a"))
		},
		run: func(e *env) error { return e.restart(true) },
		failed: func(e *env, err error) {
			if e.d != nil {
				assert.True(e.t, e.status().exists, "a start never loses a volume")
			}
		},
		retry: func(e *env) error { return e.restart(false) },
		final: func(e *env) {
			st := e.status()
			assert.True(e.t, st.exists && st.leases == 0, "leases of the last boot are dropped: %+v", st)
			if !st.mounted {
				e.requireLocked()
			}
			e.requireData()
		},
	},
	{
		name: "start completing a remove",
		setup: func(e *env) {
			e.created()
			e.faults.Arm("commit", 1, syscall.EIO)
			require.Error(e.t, e.remove(), "a Remove whose commit fails")
			require.False(e.t, e.status().exists, "the volume is out of service once its removal began")
		},
		run: func(e *env) error { return e.restart(false) },
		failed: func(e *env, err error) {
			if e.d != nil {
				assert.False(e.t, e.status().exists, "a removal that began is never undone")
			}
		},
		retry: func(e *env) error { return e.restart(false) },
		final: func(e *env) {
			assert.False(e.t, e.status().exists)
			e.requireGone()
		},
	},
}

// Steps lists the distinct steps the operations of cfg ran, for reports.
func Steps(seen []string) []string {
	out := slices.Clone(seen)
	slices.Sort(out)
	return slices.Compact(out)
}

// mappings lists the device-mapper mappings of the volume by their kernel
// names (without udev, a deferred close deletes the /dev/mapper node while
// the kernel keeps the mapping). The sweep cannot use driver/crypt's
// list: crypt's tests import the sweep.
func mappings() []string {
	var m []string
	files, _ := filepath.Glob("/sys/block/dm-*/dm/name")
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && strings.HasPrefix(string(b), "holdfast-"+vol+"-") {
			m = append(m, strings.TrimSpace(string(b)))
		}
	}
	return m
}
