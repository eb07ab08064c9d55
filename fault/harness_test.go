package fault

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver/crypt"
	"github.com/holdfast/holdfast/internal/plugintest"
)

// binPath is the holdfast binary under test, built once by TestMain.
var binPath string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain builds the binary (or takes HOLDFAST_FAULT_BIN) and runs the
// tests.
func runMain(m *testing.M) int {
	if bin := os.Getenv("HOLDFAST_FAULT_BIN"); bin != "" {
		binPath = bin
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "holdfast-fault-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault: temp dir for the binary:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "holdfast")
	cmd := exec.Command("go", "build", "-o", binPath, "./cmd/holdfast")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "fault: go build ./cmd/holdfast: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// requireRoot skips t unless it runs as root.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the fault suites run the plugin, which mounts volumes and attaches loop devices (make test runs as root)")
	}
}

// cryptMissing says why this host cannot run crypt volumes, or "".
func cryptMissing() string {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		return "mkfs.ext4 is not installed (Debian: e2fsprogs)"
	}
	_, errFS := os.Stat("/sys/fs/ext4/features/encryption")
	_, errDM := os.Stat("/dev/mapper/control")
	if errFS != nil && errDM != nil {
		return "the kernel has neither ext4 encryption nor device-mapper"
	}
	return ""
}

// requireCrypt skips t where crypt volumes cannot run.
func requireCrypt(t testing.TB) {
	t.Helper()
	if why := cryptMissing(); why != "" {
		t.Skip("crypt volumes cannot run here: " + why)
	}
}

// volPrefix starts every volume name the suites create, so the leak checks
// can tell their device-mapper mappings from those of other tests.
const volPrefix = "fz-"

// plugin is one holdfast under test: a binary run on its own temporary
// --root, --mount-root, --key-dir and socket, killed with SIGKILL and
// restarted on the same state at will. Every start logs (JSON) to its own
// file under logDir. When the test ends its cleanup kills the process,
// scans logs and database for key material, and unmounts and detaches
// whatever is left under base.
type plugin struct {
	t         testing.TB
	base      string // the temporary directory holding everything below
	root      string
	mountRoot string
	keyDir    string
	socket    string
	logDir    string
	args      []string // extra flags
	env       []string // extra environment

	client *plugintest.Client // replaced at every start
	cmd    *exec.Cmd
	exited chan struct{}
	logs   []string // one file per start
	starts int

	keys keyRing // key material seen in keyDir
}

// newPlugin prepares a plugin (not started) with extra flags.
func newPlugin(t testing.TB, args ...string) *plugin {
	t.Helper()
	base, err := os.MkdirTemp("", "hf-fault-")
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	// Paths are compared with mountinfo and loop backing files.
	if base, err = filepath.EvalSymlinks(base); err != nil {
		t.Fatalf("resolve temp dir: %v", err)
	}
	p := &plugin{
		t:         t,
		base:      base,
		root:      filepath.Join(base, "root"),
		mountRoot: filepath.Join(base, "mnt"),
		keyDir:    filepath.Join(base, "keys"),
		socket:    filepath.Join(base, "hf.sock"),
		logDir:    filepath.Join(base, "logs"),
		args:      args,
	}
	if err := os.Mkdir(p.logDir, 0o700); err != nil {
		t.Fatalf("log dir: %v", err)
	}
	t.Cleanup(p.cleanup)
	return p
}

// start launches the plugin and waits until it answers; it fails the test
// if the plugin exits or does not answer within 20 s.
func (p *plugin) start() {
	p.t.Helper()
	if err := p.launch(); err != nil {
		p.t.Fatalf("start holdfast: %v", err)
	}
	if err := p.waitReady(20 * time.Second); err != nil {
		p.kill()
		p.t.Fatalf("holdfast (start %d) did not come up: %v\n%s", p.starts, err, p.logTail(40))
	}
}

// launch starts the process without waiting for it.
func (p *plugin) launch() error {
	if p.cmd != nil {
		return errors.New("already running")
	}
	p.starts++
	logPath := filepath.Join(p.logDir, fmt.Sprintf("start-%04d.log", p.starts))
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	defer f.Close() // the child keeps its own descriptors
	args := append([]string{
		"--root", p.root, "--mount-root", p.mountRoot, "--key-dir", p.keyDir,
		"--socket", p.socket, "--log-format", "json",
	}, p.args...)
	cmd := exec.Command(binPath, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), p.env...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", binPath, err)
	}
	p.logs = append(p.logs, logPath)
	p.cmd, p.exited = cmd, make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		cmd.Wait()
		close(exited)
	}(cmd, p.exited)
	p.client = plugintest.NewClient(p.socket)
	return nil
}

// waitReady waits until the plugin answers Plugin.Activate.
func (p *plugin) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := p.client.Call("Plugin.Activate", struct{}{}, nil)
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("the process exited (%v)", p.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *plugin) kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}

// restart kills the plugin and starts it again on the same state.
func (p *plugin) restart() {
	p.t.Helper()
	p.kill()
	p.start()
}

// logTail returns the last n lines of the newest log.
func (p *plugin) logTail(n int) string {
	if len(p.logs) == 0 {
		return "(no log)"
	}
	b, err := os.ReadFile(p.logs[len(p.logs)-1])
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	lines = lines[max(0, len(lines)-n):]
	return p.logs[len(p.logs)-1] + ":\n" + strings.Join(lines, "\n")
}

// cleanup runs when the test ends: it stops the plugin, scans what it
// wrote for key material, and leaves no mount, loop device or file behind.
func (p *plugin) cleanup() {
	p.kill()
	p.collectKeys()
	p.scanArtifacts()
	if p.t.Failed() {
		p.t.Logf("holdfast log (%d starts): %s", p.starts, p.logTail(60))
	}
	if err := detachAll(p.base); err != nil {
		p.t.Errorf("cleanup: %v", err)
		return // never delete through a mount
	}
	if p.t.Failed() && os.Getenv("HOLDFAST_FAULT_KEEP") == "1" {
		p.t.Logf("HOLDFAST_FAULT_KEEP=1: logs and state kept in %s", p.base)
		return
	}
	if err := os.RemoveAll(p.base); err != nil {
		p.t.Errorf("cleanup: %v", err)
	}
}

// scanArtifacts fails the test if a key seen in keyDir appears in a log
// or in the state database.
func (p *plugin) scanArtifacts() {
	files := append(slices.Clone(p.logs), filepath.Join(p.root, "holdfast.db"))
	sc := p.keys.scanner()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			p.t.Errorf("secrets: scan %s: %v", f, err)
		}
		for _, h := range sc.scan(b) {
			p.t.Errorf("secrets: key material in %s: %s", f, h)
		}
	}
}

// collectKeys remembers the content of every file in keyDir.
func (p *plugin) collectKeys() {
	entries, _ := os.ReadDir(p.keyDir)
	for _, e := range entries {
		p.noteKeyFile(e.Name())
	}
}

// noteKeyFile remembers the content of keyDir/name, if it exists.
func (p *plugin) noteKeyFile(name string) {
	b, err := os.ReadFile(filepath.Join(p.keyDir, name))
	if err == nil && len(b) > 0 {
		p.keys.add(name, b)
	}
}

// detachAll unmounts everything mounted under dir, deepest first, and
// detaches every loop device whose backing file is under dir.
func detachAll(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	slices.SortFunc(mounts, func(a, b *mountinfo.Info) int { return len(b.Mountpoint) - len(a.Mountpoint) })
	for _, m := range mounts {
		unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		loops, err := loopsUnder(dir)
		if err != nil || len(loops) == 0 {
			break
		}
		for dev := range loops {
			clearLoop(dev)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loop devices still attached to files under %s: %v", dir, loops)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(dir)); len(left) > 0 {
		return fmt.Errorf("%d mounts left under %s, e.g. %s", len(left), dir, left[0].Mountpoint)
	}
	return nil
}

// clearLoop detaches a loop device, or marks it to detach once unused.
func clearLoop(dev string) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
}

// loopsUnder maps each loop device whose backing file is under dir to that
// file, without the kernel's " (deleted)" suffix.
func loopsUnder(dir string) (map[string]string, error) {
	paths, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // detached meanwhile
		}
		file := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		if within(dir, file) {
			dev := "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(path)))
			out[dev] = file
		}
	}
	return out, nil
}

// within reports whether path is dir or below it.
func within(dir, path string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// mountsUnder counts the mounts at each mountpoint under dir.
func mountsUnder(dir string) (map[string]int, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	out := map[string]int{}
	for _, m := range infos {
		out[m.Mountpoint]++
	}
	return out, nil
}

// mappings lists the device-mapper devices of the suites' volumes, from
// sysfs (a deferred close removes the /dev/mapper node before the mapping).
func mappings() []string {
	var out []string
	for _, m := range crypt.Mappings("holdfast-" + volPrefix) {
		out = append(out, m.Name)
	}
	return out
}

// Requests, as dockerd makes them. Each returns the plugin's error, or a
// transport error when the plugin is gone.

func (p *plugin) create(name string, opts map[string]string) error {
	return p.client.Call("VolumeDriver.Create", volume.CreateRequest{Name: name, Options: opts}, nil)
}

func (p *plugin) mount(name, id string) (string, error) {
	var res volume.MountResponse
	err := p.client.Call("VolumeDriver.Mount", volume.MountRequest{Name: name, ID: id}, &res)
	return res.Mountpoint, err
}

func (p *plugin) unmount(name, id string) error {
	return p.client.Call("VolumeDriver.Unmount", volume.UnmountRequest{Name: name, ID: id}, nil)
}

func (p *plugin) remove(name string) error {
	return p.client.Call("VolumeDriver.Remove", volume.RemoveRequest{Name: name}, nil)
}

func (p *plugin) get(name string) (*volume.Volume, error) {
	var res volume.GetResponse
	if err := p.client.Call("VolumeDriver.Get", volume.GetRequest{Name: name}, &res); err != nil {
		return nil, err
	}
	if res.Volume == nil {
		return nil, fmt.Errorf("get %s: answer without a volume", name)
	}
	return res.Volume, nil
}

// list returns the names List reports.
func (p *plugin) list() (map[string]bool, error) {
	var res volume.ListResponse
	if err := p.client.Call("VolumeDriver.List", struct{}{}, &res); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, v := range res.Volumes {
		out[v.Name] = true
	}
	return out, nil
}

// mustCreate, mustMount, mustUnmount and mustRemove fail the test on error.

func (p *plugin) mustCreate(name string, opts map[string]string) {
	p.t.Helper()
	if err := p.create(name, opts); err != nil {
		p.t.Fatalf("create %s %v: %v", name, opts, err)
	}
}

func (p *plugin) mustMount(name, id string) string {
	p.t.Helper()
	mp, err := p.mount(name, id)
	if err != nil {
		p.t.Fatalf("mount %s id %s: %v", name, id, err)
	}
	return mp
}

func (p *plugin) mustUnmount(name, id string) {
	p.t.Helper()
	if err := p.unmount(name, id); err != nil {
		p.t.Fatalf("unmount %s id %s: %v", name, id, err)
	}
}

func (p *plugin) mustRemove(name string) {
	p.t.Helper()
	if err := p.remove(name); err != nil {
		p.t.Fatalf("remove %s: %v", name, err)
	}
}

// leases returns Get's Status "leases" and "mounted" of name.
func (p *plugin) leases(name string) (int, bool, error) {
	v, err := p.get(name)
	if err != nil {
		return 0, false, err
	}
	return statusLeases(v)
}

// statusLeases reads "leases" and "mounted" from a Get answer.
func statusLeases(v *volume.Volume) (int, bool, error) {
	n, ok := v.Status["leases"].(float64)
	if !ok {
		return 0, false, fmt.Errorf("volume %s: Status has no numeric leases: %v", v.Name, v.Status)
	}
	mounted, ok := v.Status["mounted"].(bool)
	if !ok {
		return 0, false, fmt.Errorf("volume %s: Status has no boolean mounted: %v", v.Name, v.Status)
	}
	return int(n), mounted, nil
}

// mountID returns a random mount ID shaped like dockerd's: 64 hex digits.
func mountID(r *rand.Rand) string {
	return fmt.Sprintf("%016x%016x%016x%016x", r.Uint64(), r.Uint64(), r.Uint64(), r.Uint64())
}

// envInt reads a positive integer from the environment, or def.
func envInt(t testing.TB, name string, def uint64) uint64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: want a non-negative integer", name, s)
	}
	return n
}

// volDir, backingFile and stagingDir are where the driver keeps a volume.
func (p *plugin) volDir(name string) string      { return filepath.Join(p.root, "volumes", name) }
func (p *plugin) backingFile(name string) string { return filepath.Join(p.volDir(name), "backing.img") }
func (p *plugin) stagingDir(name string) string  { return filepath.Join(p.volDir(name), "fs") }
func (p *plugin) mountpoint(name string) string  { return filepath.Join(p.mountRoot, name) }

// eventually retries check until it reports no problem or timeout passes,
// and returns the last problems. Kernel objects may outlive the plugin by
// a moment: a child it ran (mkfs) keeps a loop device open until it exits.
func eventually(timeout time.Duration, check func() []string) (problems []string, retried bool) {
	deadline := time.Now().Add(timeout)
	for {
		problems = check()
		if len(problems) == 0 || time.Now().After(deadline) {
			return problems, retried
		}
		retried = true
		time.Sleep(25 * time.Millisecond)
	}
}

// waitFile waits until path exists.
func waitFile(ctx context.Context, path string) error {
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", path, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// keyRing is the key material a test has seen, safe for concurrent use.
type keyRing struct {
	mu   sync.Mutex
	keys map[string]secret // by content
	sc   *scanner          // for keys; nil when a key was added since
}

func (k *keyRing) add(label string, raw []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil {
		k.keys = map[string]secret{}
	}
	if _, ok := k.keys[string(raw)]; !ok {
		k.keys[string(raw)] = secret{label: label, raw: slices.Clone(raw)}
		k.sc = nil
	}
}

func (k *keyRing) all() []secret {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]secret, 0, len(k.keys))
	for _, s := range k.keys {
		out = append(out, s)
	}
	return out
}

// scanner returns a scanner for every key seen so far.
func (k *keyRing) scanner() *scanner {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sc == nil {
		secrets := make([]secret, 0, len(k.keys))
		for _, s := range k.keys {
			secrets = append(secrets, s)
		}
		k.sc = newScanner(secrets)
	}
	return k.sc
}

// volState is what a volume should look like to the leak checks.
type volState struct {
	typ    string
	leases int
	// userKey is set for crypt volumes with keyfile=: no generated key.
	userKey bool
}

// leakProblems compares the kernel and the files under the plugin's
// directories with want, the volumes that exist: only volumes with leases
// are mounted, each once (crypt and loop: the filesystem once too, on one
// loop device); no other mount, loop device or holdfast mapping; no file under
// --root, --mount-root or --key-dir that belongs to no volume, and an
// empty trash.
func (p *plugin) leakProblems(want map[string]volState) []string {
	var probs []string
	probs = append(probs, p.mountProblems(want)...)
	probs = append(probs, p.loopProblems(want)...)
	if m := mappings(); len(m) > 0 {
		probs = append(probs, fmt.Sprintf("device-mapper mappings left: %v", m))
	}
	probs = append(probs, p.rootProblems(want)...)
	probs = append(probs, p.keyProblems(want)...)
	return probs
}

// mountProblems checks mountinfo under the plugin's directories.
func (p *plugin) mountProblems(want map[string]volState) []string {
	expect := map[string]string{} // mountpoint -> volume
	for name, s := range want {
		if s.leases == 0 {
			continue
		}
		expect[p.mountpoint(name)] = name
		if onImage(s.typ) {
			expect[p.stagingDir(name)] = name
		}
	}
	have, err := mountsUnder(p.base)
	if err != nil {
		return []string{err.Error()}
	}
	var probs []string
	for mp, n := range have {
		switch name, ok := expect[mp]; {
		case !ok:
			probs = append(probs, fmt.Sprintf("leaked mount at %s (%d times): no volume with leases owns it", mp, n))
		case n > 1:
			probs = append(probs, fmt.Sprintf("%s is mounted %d times at %s; want once", name, n, mp))
		}
	}
	for mp, name := range expect {
		if have[mp] == 0 {
			probs = append(probs, fmt.Sprintf("%s has %d leases but nothing is mounted at %s", name, want[name].leases, mp))
		}
	}
	return probs
}

// onImage says whether volumes of typ live in an image file attached to a
// loop device while in use, mounted at the staging directory.
func onImage(typ string) bool { return typ == "crypt" || typ == "loop" }

// loopProblems checks that only crypt and loop volumes with leases have a
// loop device, one each.
func (p *plugin) loopProblems(want map[string]volState) []string {
	loops, err := loopsUnder(p.root)
	if err != nil {
		return []string{err.Error()}
	}
	count := map[string][]string{}
	for dev, file := range loops {
		count[file] = append(count[file], dev)
	}
	var probs []string
	for file, devs := range count {
		name := filepath.Base(filepath.Dir(file))
		s, ok := want[name]
		switch {
		case !ok || file != p.backingFile(name) || !onImage(s.typ) || s.leases == 0:
			probs = append(probs, fmt.Sprintf("leaked loop device %v on %s", devs, file))
		case len(devs) > 1:
			probs = append(probs, fmt.Sprintf("%s has %d loop devices %v; want one", name, len(devs), devs))
		}
	}
	for name, s := range want {
		if onImage(s.typ) && s.leases > 0 && len(count[p.backingFile(name)]) == 0 {
			probs = append(probs, fmt.Sprintf("%s is in use but no loop device holds %s", name, p.backingFile(name)))
		}
	}
	return probs
}

// volumeFiles lists what a volume's private directory may hold, and which
// of those must exist.
// Each holds its record file, .holdfast-volume.
var volumeFiles = map[string]struct{ may, must []string }{
	"local": {may: []string{".holdfast-volume", "data"}, must: []string{".holdfast-volume", "data"}},
	"tmpfs": {may: []string{".holdfast-volume"}, must: []string{".holdfast-volume"}},
	"crypt": {may: []string{".holdfast-volume", "backing.img", "fs"}, must: []string{".holdfast-volume", "backing.img"}},
	"loop":  {may: []string{".holdfast-volume", "backing.img", "fs"}, must: []string{".holdfast-volume", "backing.img"}},
}

// rootProblems checks the files under --root and --mount-root: the top of
// --root holds only what the driver makes, every volume directory and
// mountpoint belongs to a volume that exists, and the trash is empty.
func (p *plugin) rootProblems(want map[string]volState) []string {
	var probs []string
	// trash holds removed volumes' directories while they are deleted,
	// in the background after Remove and at start-up: it empties itself.
	top := []string{"holdfast.db", "volumes", "trash", "views"}
	if filepath.Dir(p.mountRoot) == p.root {
		top = append(top, filepath.Base(p.mountRoot))
	}
	probs = append(probs, unexpectedEntries(p.root, func(n string) bool { return slices.Contains(top, n) })...)
	probs = append(probs, unexpectedEntries(filepath.Join(p.root, "volumes"), func(n string) bool { _, ok := want[n]; return ok })...)
	probs = append(probs, unexpectedEntries(p.mountRoot, func(n string) bool { _, ok := want[n]; return ok })...)
	probs = append(probs, unexpectedEntries(filepath.Join(p.root, "trash"), func(string) bool { return false })...)
	probs = append(probs, unexpectedEntries(filepath.Join(p.root, "views"), func(string) bool { return false })...)
	for name, s := range want {
		files := volumeFiles[s.typ]
		dir := p.volDir(name)
		probs = append(probs, unexpectedEntries(dir, func(n string) bool { return slices.Contains(files.may, n) })...)
		for _, f := range files.must {
			if _, err := os.Lstat(filepath.Join(dir, f)); err != nil {
				probs = append(probs, fmt.Sprintf("volume %s exists but %v", name, err))
			}
		}
	}
	return probs
}

// keyProblems checks that every generated key belongs to an existing crypt
// volume and every such volume has its key, 64 bytes, mode 0600.
func (p *plugin) keyProblems(want map[string]volState) []string {
	var probs []string
	probs = append(probs, unexpectedEntries(p.keyDir, func(n string) bool {
		name, generated := strings.CutSuffix(n, ".key")
		s, ok := want[name]
		if !generated {
			return true // a keyfile of the test's own
		}
		return ok && s.typ == "crypt" && !s.userKey
	})...)
	for name, s := range want {
		if s.typ != "crypt" || s.userKey {
			continue
		}
		path := filepath.Join(p.keyDir, name+".key")
		fi, err := os.Lstat(path)
		switch {
		case err != nil:
			probs = append(probs, fmt.Sprintf("crypt volume %s exists but its key is gone: %v", name, err))
		case fi.Size() != 64 || fi.Mode() != 0o600:
			probs = append(probs, fmt.Sprintf("key %s: %d bytes, mode %v; want 64 bytes, 0600", path, fi.Size(), fi.Mode()))
		}
	}
	return probs
}

// unexpectedEntries lists the entries of dir that ok refuses. A missing
// dir has none.
func unexpectedEntries(dir string, ok func(name string) bool) []string {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return []string{err.Error()}
	}
	var probs []string
	for _, e := range entries {
		if !ok(e.Name()) {
			probs = append(probs, fmt.Sprintf("unowned entry %s: no volume accounts for it", filepath.Join(dir, e.Name())))
		}
	}
	return probs
}

// slowMkfs makes the plugin's next starts run a mkfs.ext4 that marks
// p.base/mkfs-started, then waits until p.base/mkfs-release exists to run
// the real one, or until the plugin is gone to fail. It returns the marker
// and release paths.
func slowMkfs(t testing.TB, p *plugin) (started, release string) {
	t.Helper()
	real, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Fatalf("mkfs.ext4: %v", err)
	}
	dir := filepath.Join(p.base, "slowbin")
	started, release = filepath.Join(p.base, "mkfs-started"), filepath.Join(p.base, "mkfs-release")
	script := fmt.Sprintf(`#!/bin/sh
: > %q
while [ ! -e %q ]; do
	kill -0 "$PPID" 2>/dev/null || exit 1
	sleep 0.01
done
exec %q "$@"
`, started, release, real)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("slow mkfs: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mkfs.ext4"), []byte(script), 0o755); err != nil {
		t.Fatalf("slow mkfs: %v", err)
	}
	p.env = []string{"PATH=" + dir + ":" + os.Getenv("PATH")}
	return started, release
}
