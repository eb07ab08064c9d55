package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fixture is one way of running holdfast that every scenario runs against.
type fixture struct {
	kind string // "managed" or "legacy"
	// driver is what -d and --volume-driver take, and what dockerd records
	// as the volume's Driver.
	driver string
	// stateRoot is the host folder holding the driver's state and volume data.
	stateRoot string
	// keyDir is the host folder the driver reads crypt key files from.
	keyDir string
	// mountRoot is the host folder under which the driver's mounts appear.
	mountRoot string
	// socket is the host path of the plugin's socket, for holdfast's admin
	// commands.
	socket string
	// restart restarts the plugin (not dockerd).
	restart func(t *testing.T)
	// logs returns the plugin's log so far.
	logs func() string
}

// scenario is one end-to-end check, run once per fixture.
type scenario struct {
	name string
	fn   func(t *testing.T, f *fixture)
}

func TestManaged(t *testing.T) {
	requireE2E(t)
	runScenarios(t, newManaged(t))
}

func TestLegacy(t *testing.T) {
	requireE2E(t)
	runScenarios(t, newLegacy(t))
}

func runScenarios(t *testing.T, f *fixture) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			logStart := len(f.logs())
			// Registered first, so it runs after the scenario's own cleanups.
			t.Cleanup(func() {
				f.checkNothingLeft(t)
				if t.Failed() {
					if l := f.logs(); len(l) > logStart {
						t.Logf("%s plugin log during this scenario:\n%s", f.kind, tail(l[logStart:], 80))
					}
				}
			})
			start := time.Now()
			sc.fn(t, f)
			t.Logf("%s/%s: %s", f.kind, sc.name, time.Since(start).Round(100*time.Millisecond))
		})
	}
}

// checkNothingLeft fails t when a scenario left containers, volumes of the
// driver or mounts behind, and removes them.
func (f *fixture) checkNothingLeft(t *testing.T) {
	if ids := strings.Fields(mustOut(dockerE(t, "ps", "-aq", "--filter", "label="+labelKey))); len(ids) > 0 {
		t.Errorf("containers left behind: %v", ids)
		_, _ = dockerE(t, append([]string{"rm", "-f"}, ids...)...)
	}
	if vols := strings.Fields(mustOut(dockerE(t, "volume", "ls", "-q", "--filter", "driver="+f.driver))); len(vols) > 0 {
		t.Errorf("%s volumes left behind: %v", f.driver, vols)
		for _, v := range vols {
			_, _ = dockerE(t, "volume", "rm", "-f", v)
		}
	}
	if loops := loopsFor("/volumes/hfe2e-"); len(loops) > 0 {
		t.Errorf("loop devices left behind: %v", loops)
	}
	// The driver unmounts asynchronously to nothing; a mount still there
	// after every volume is gone is a leak.
	if m := mountsUnder(f.mountRoot); len(m) > 0 {
		time.Sleep(time.Second)
		if m = mountsUnder(f.mountRoot); len(m) > 0 {
			t.Errorf("mounts left behind under %s: %v", f.mountRoot, m)
		}
	}
}

func mustOut(out string, _ error) string { return out }

// loopsFor lists the loop devices whose backing file path contains substr.
func loopsFor(substr string) []string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.Contains(string(b), substr) {
			out = append(out, filepath.Base(filepath.Dir(filepath.Dir(f)))+"="+strings.TrimSpace(string(b)))
		}
	}
	return out
}

// ---- naming and object helpers ----------------------------------------------

// name returns a per-fixture object name, e.g. hfe2e-m-named.
func (f *fixture) name(suffix string) string {
	return "hfe2e-" + f.kind[:1] + "-" + suffix
}

// volume creates a volume with the fixture's driver and the suite label,
// and removes it when the test ends (a failing removal fails the test).
func (f *fixture) volume(t *testing.T, suffix string, args ...string) string {
	t.Helper()
	name := f.name(suffix)
	full := append([]string{"volume", "create", "--driver", f.driver, "--label", labelKey + "=" + runID}, args...)
	docker(t, append(full, name)...)
	t.Cleanup(func() { removeVolume(t, name) })
	return name
}

// removeVolume removes a volume if dockerd still has it; failing to
// (in use, driver error) fails the test.
func removeVolume(t *testing.T, name string) {
	t.Helper()
	_, err := dockerE(t, "volume", "rm", name)
	if err != nil && !strings.Contains(err.Error(), "no such volume") {
		t.Errorf("cleanup: %v", err)
	}
}

// runC runs a throw-away container and returns its output.
func runC(t *testing.T, opts []string, cmd ...string) string {
	t.Helper()
	return docker(t, runArgs(false, "", opts, cmd)...)
}

// runCFails runs a throw-away container that must fail, returning its error text.
func runCFails(t *testing.T, opts []string, cmd ...string) string {
	t.Helper()
	return dockerFails(t, runArgs(false, "", opts, cmd)...)
}

// startC starts a detached container that is removed when the test ends.
func startC(t *testing.T, name string, opts []string, cmd ...string) string {
	t.Helper()
	docker(t, runArgs(true, name, opts, cmd)...)
	t.Cleanup(func() { removeContainer(t, name) })
	return name
}

func removeContainer(t *testing.T, name string) {
	t.Helper()
	if _, err := dockerE(t, "rm", "-f", name); err != nil && !strings.Contains(err.Error(), "No such container") {
		t.Errorf("cleanup: %v", err)
	}
}

func runArgs(detach bool, name string, opts, cmd []string) []string {
	args := []string{"run", "--network", "none", "--label", labelKey + "=" + runID}
	if detach {
		args = append(args, "-d", "--name", name)
	} else {
		args = append(args, "--rm")
	}
	args = append(args, opts...)
	args = append(args, testImage)
	return append(args, cmd...)
}

// execC runs a command in a running container.
func execC(t *testing.T, c string, cmd ...string) string {
	t.Helper()
	return docker(t, append([]string{"exec", c}, cmd...)...)
}

// ---- managed plugin -----------------------------------------------------------

func newManaged(t *testing.T) *fixture {
	name := envOr("HOLDFAST_E2E_PLUGIN", "holdfast")
	ref := name + ":latest"
	if enabled, err := dockerE(t, "plugin", "inspect", "--format", "{{.Enabled}}", name); err == nil {
		if vols := volumeNames(t, "driver="+ref); len(vols) > 0 {
			t.Fatalf("plugin %s exists and has volumes %v: the e2e suite replaces that plugin; remove them first, "+
				"or set HOLDFAST_E2E_PLUGIN to another name", name, vols)
		}
		t.Logf("replacing existing plugin %s (enabled: %s)", name, enabled)
		docker(t, "plugin", "rm", "-f", name)
	}
	build := exec.Command(filepath.Join(repoRoot, "plugin", "build.sh"), name)
	build.Env = append(os.Environ(), "HOLDFAST_BIN="+holdfastBin)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("plugin/build.sh %s: %v\n%s", name, err, out)
	}
	dir := fixtureDir(t, "managed")
	state, keys := filepath.Join(dir, "state"), filepath.Join(dir, "keys")
	mkdirs(t, state, keys)
	t.Cleanup(func() {
		// Volumes are gone by now (each scenario checks); force in case.
		if _, err := dockerE(t, "plugin", "disable", "-f", name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if _, err := dockerE(t, "plugin", "rm", "-f", name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	docker(t, "plugin", "set", name, "state.source="+state, "keys.source="+keys, "HOLDFAST_LOG_LEVEL=debug")
	docker(t, "plugin", "enable", name)
	id := docker(t, "plugin", "inspect", "--format", "{{.Id}}", name)
	f := &fixture{
		kind:      "managed",
		driver:    ref,
		stateRoot: state,
		keyDir:    keys,
		mountRoot: filepath.Join(dockerRoot, "plugins", id, "propagated-mount"),
		socket:    filepath.Join("/run/docker/plugins", id, "holdfast.sock"),
	}
	f.restart = func(t *testing.T) {
		docker(t, "plugin", "disable", "-f", name)
		docker(t, "plugin", "enable", name)
	}
	f.logs = func() string {
		// The plugin's stdout and stderr land in dockerd's log, tagged plugin=ID.
		b, _ := os.ReadFile(dockerdLog)
		var sb strings.Builder
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "plugin="+id) {
				sb.WriteString(l)
				sb.WriteByte('\n')
			}
		}
		return sb.String()
	}
	return f
}

// ---- legacy daemon -------------------------------------------------------------

// legacyName is the driver name of the legacy daemon: distinct from the
// managed plugin's, since dockerd caches a legacy driver by name until it
// restarts.
const legacyName = "holdfast-legacy"

type legacy struct {
	args    []string
	env     []string
	logPath string
	socket  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func newLegacy(t *testing.T) *fixture {
	dir := fixtureDir(t, "legacy")
	root, mounts, keys := filepath.Join(dir, "root"), filepath.Join(dir, "mounts"), filepath.Join(dir, "keys")
	mkdirs(t, keys)
	l := &legacy{
		socket:  "/run/docker/plugins/" + legacyName + ".sock",
		logPath: filepath.Join(workDir, "legacy.log"),
		// --key-dir as HOLDFAST_KEY_DIR: the environment is how the managed
		// plugin is configured, so the legacy suite exercises it too.
		env: []string{"HOLDFAST_KEY_DIR=" + keys},
	}
	l.args = []string{"--socket", l.socket, "--root", root, "--mount-root", mounts, "--log-level", "debug"}
	if answers(l.socket) {
		t.Fatalf("something already serves %s: stop it first", l.socket)
	}
	l.start(t)
	t.Cleanup(func() {
		l.stop(t)
		// dockerd caches a legacy driver by name until it restarts: with the
		// daemon gone, every later `docker volume ls` (and inspect of an
		// unknown name) would wait 15 s for it.
		restartDockerd(t)
	})
	f := &fixture{
		kind:      "legacy",
		driver:    legacyName,
		stateRoot: root,
		keyDir:    keys,
		mountRoot: mounts,
		socket:    l.socket,
		logs: func() string {
			b, _ := os.ReadFile(l.logPath)
			return string(b)
		},
	}
	f.restart = func(t *testing.T) {
		// A crash, not a shutdown: the daemon gets no chance to clean up.
		l.kill(t)
		l.start(t)
	}
	return f
}

func (l *legacy) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(l.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s e2e starts %s %s\n", time.Now().Format(time.RFC3339), holdfastBin, strings.Join(l.args, " "))
	cmd := exec.Command(holdfastBin, l.args...)
	cmd.Env = append(os.Environ(), l.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, and SIGTERM should the test binary die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", holdfastBin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	l.mu.Lock()
	l.cmd, l.done = cmd, done
	l.mu.Unlock()
	t.Logf("started legacy daemon, pid %d: %s %s", cmd.Process.Pid, holdfastBin, strings.Join(l.args, " "))
	deadline := time.Now().Add(20 * time.Second)
	for !answers(l.socket) {
		select {
		case <-done:
			b, _ := os.ReadFile(l.logPath)
			t.Fatalf("legacy daemon exited (%v) before serving %s; log:\n%s", cmd.ProcessState, l.socket, tail(string(b), 30))
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(l.logPath)
			t.Fatalf("legacy daemon does not answer on %s after 20 s; log:\n%s", l.socket, tail(string(b), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *legacy) kill(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	cmd, done := l.cmd, l.done
	l.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	t.Logf("killed legacy daemon (pid %d) with SIGKILL", cmd.Process.Pid)
}

// stop shuts the daemon down as a service manager would, and checks it
// removed its socket: a stale socket makes every dockerd request to the
// driver hang 30 s before failing.
func (l *legacy) stop(t *testing.T) {
	l.mu.Lock()
	cmd, done := l.cmd, l.done
	l.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Errorf("legacy daemon (pid %d) still runs 20 s after SIGTERM; killing it", cmd.Process.Pid)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
	if _, err := os.Stat(l.socket); err == nil {
		t.Errorf("legacy daemon left its socket %s after SIGTERM", l.socket)
		_ = os.Remove(l.socket)
	}
	if t.Failed() {
		b, _ := os.ReadFile(l.logPath)
		t.Logf("legacy daemon log (%s):\n%s", l.logPath, tail(string(b), 60))
	}
}

// answers reports whether a volume plugin answers Plugin.Activate on socket.
func answers(socket string) bool {
	c := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}},
	}
	resp, err := c.Post("http://plugin/Plugin.Activate", "application/vnd.docker.plugins.v1.2+json", strings.NewReader("{}"))
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var b [256]byte
	n, _ := resp.Body.Read(b[:])
	return resp.StatusCode == http.StatusOK && strings.Contains(string(b[:n]), "VolumeDriver")
}

// ---- folders -------------------------------------------------------------------

// fixtureDir makes a folder under the run's work dir and removes it at the
// end, refusing to descend into anything still mounted there.
func fixtureDir(t *testing.T, name string) string {
	dir := filepath.Join(workDir, name)
	mkdirs(t, dir)
	t.Cleanup(func() {
		if m := mountsUnder(dir); len(m) > 0 {
			t.Errorf("mounts left under %s: %v (lazily unmounting them)", dir, m)
			for i := len(m) - 1; i >= 0; i-- {
				_ = syscall.Unmount(m[i], syscall.MNT_DETACH)
			}
		}
		if os.Getenv("HOLDFAST_E2E_KEEP") == "1" || t.Failed() {
			t.Logf("kept %s for inspection", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return dir
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}
