package fault

import (
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// nobody is the unprivileged user the probes run as: uid and gid 65534,
// no supplementary groups, no capabilities.
const nobody = 65534

// probeEnv is the whole environment of a probe; C messages, so a refusal
// reads "Permission denied".
var probeEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}

// result is what one probe got.
type result int

const (
	allowed result = iota // the command succeeded
	denied                // it failed with EACCES ("Permission denied")
	failed                // it failed some other way (e.g. ENOENT)
)

func (r result) String() string {
	return [...]string{"allowed", "permission denied", "failed otherwise"}[r]
}

// kind is what a probed path is, which decides the probes run on it.
type kind int

const (
	dirPath kind = iota
	filePath
	socketPath
)

// probe is one attempt on a path, as a command line.
type probe struct {
	name string
	argv func(path string) []string
}

var (
	probeLs       = probe{"ls", func(p string) []string { return []string{"ls", "-a", p} }}
	probeCd       = probe{"cd", func(p string) []string { return []string{"bash", "-c", `cd "$1"`, "cd", p} }}
	probeTraverse = probe{"stat below", func(p string) []string { return []string{"stat", p + "/."} }}
	probeStat     = probe{"stat", func(p string) []string { return []string{"stat", p} }}
	probeCat      = probe{"read", func(p string) []string { return []string{"cat", p} }}
	// probeConnect connects to a Unix socket; perl prints errno's text.
	probeConnect = probe{"connect", func(p string) []string {
		return []string{"perl", "-MSocket", "-e",
			`socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!\n"; connect($s, pack_sockaddr_un($ARGV[0])) or die "connect: $!\n"`, p}
	}}
)

// probesFor lists the probes of a kind of path; stat of the path itself
// only when its parent is protected too (stat needs only search permission
// on the parent, which the test leaves open on purpose).
func probesFor(k kind, statToo bool) []probe {
	var ps []probe
	switch k {
	case dirPath:
		ps = []probe{probeLs, probeCd, probeTraverse}
	case filePath:
		ps = []probe{probeCat}
	case socketPath:
		return []probe{probeConnect}
	}
	if statToo {
		ps = append(ps, probeStat)
	}
	return ps
}

// run runs the probe on path as root or as nobody, through setpriv, and
// returns the result and the command's output.
func (pr probe) run(t *testing.T, asNobody bool, path string) (result, string) {
	t.Helper()
	argv := pr.argv(path)
	if asNobody {
		argv = append([]string{"setpriv", fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody),
			"--clear-groups", "--inh-caps=-all", "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Dir = probeEnv, "/"
	out, err := cmd.CombinedOutput()
	switch {
	case err == nil:
		return allowed, string(out)
	case strings.Contains(string(out), "Permission denied"):
		return denied, string(out)
	default:
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("probe %s %s: %v", pr.name, path, err)
		}
		return failed, string(out)
	}
}

// requireSetpriv checks that setpriv really drops to nobody: uid, gid,
// no groups and no capabilities.
func requireSetpriv(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv is not installed (Debian: util-linux); the probes run as nobody through it")
	}
	cmd := exec.Command("setpriv", fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody),
		"--clear-groups", "--inh-caps=-all", "--", "cat", "/proc/self/status")
	cmd.Env, cmd.Dir = probeEnv, "/"
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "setpriv: %s", out)
	want := map[string]string{
		"Uid":    fmt.Sprintf("%d\t%d\t%d\t%d", nobody, nobody, nobody, nobody),
		"Gid":    fmt.Sprintf("%d\t%d\t%d\t%d", nobody, nobody, nobody, nobody),
		"Groups": "",
		"CapEff": "0000000000000000",
		"CapPrm": "0000000000000000",
	}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if w, ok := want[k]; ok {
			require.Equal(t, w, strings.TrimSpace(v), "%s of the probe process", k)
			delete(want, k)
		}
	}
	require.Empty(t, want, "lines missing from the probe's /proc/self/status")
}

// target is a path the unprivileged user must not reach.
type target struct {
	path string
	kind kind
	// content is the known file's content, checked when root reads it.
	content string
}

// TestUnprivilegedUserLockedOut (security boundary, item 2): nothing under
// --root, --mount-root or --key-dir, and not the socket, is reachable by an
// unprivileged local user, for every volume type this host runs, with the
// volume mounted (a lease taken through the plugin) and unmounted. The
// plugin's parent directory is opened to everyone (0755, as /var/lib is),
// so only the modes holdfast sets protect. Each probe also runs as root on
// the same path, where it must succeed whenever the path exists, and as
// nobody on a world-readable tree and socket beside it, where it must
// succeed too: a refusal means the modes refused, not a broken probe.
//
// Two layouts: the default one (--mount-root is <root>/mounts) and a
// --mount-root outside --root.
func TestUnprivilegedUserLockedOut(t *testing.T) {
	requireRoot(t)
	requireSetpriv(t)
	for _, layout := range []struct {
		name   string
		legacy bool
	}{{"default-layout", true}, {"separate-mount-root", false}} {
		t.Run(layout.name, func(t *testing.T) {
			p := newPlugin(t)
			if layout.legacy {
				// What validate() makes of an unset --mount-root.
				p.mountRoot = filepath.Join(p.root, "mounts")
			}
			require.NoError(t, os.Chmod(p.base, 0o755))
			p.start()
			probeControl(t, p.base)
			for _, tc := range typeCases() {
				t.Run(tc.typ, func(t *testing.T) { lockedOut(t, p, tc) })
			}
		})
	}
}

// probeControl proves the probes work: as nobody, every probe succeeds on
// a world-readable directory, file and socket in dir.
func probeControl(t *testing.T, dir string) {
	t.Helper()
	pub := filepath.Join(dir, "public")
	require.NoError(t, os.Mkdir(pub, 0o755))
	require.NoError(t, os.Chmod(pub, 0o755))
	content := randomText(t)
	require.NoError(t, os.WriteFile(filepath.Join(pub, "known.txt"), []byte(content), 0o644))
	sock := filepath.Join(pub, "public.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	require.NoError(t, os.Chmod(sock, 0o666))
	for _, tg := range []target{{pub, dirPath, ""}, {filepath.Join(pub, "known.txt"), filePath, content}, {sock, socketPath, ""}} {
		for _, pr := range probesFor(tg.kind, true) {
			res, out := pr.run(t, true, tg.path)
			require.Equal(t, allowed, res, "control: %s %s as nobody must succeed, or the probe proves nothing: %s", pr.name, tg.path, out)
			if pr.name == probeCat.name {
				require.Equal(t, content, out, "control: read %s as nobody", tg.path)
			}
		}
	}
}

// lockedOut creates a volume of tc with a known, world-readable file in it
// and probes every path of it, mounted and unmounted.
func lockedOut(t *testing.T, p *plugin, tc typeCase) {
	name := volPrefix + "perm-" + tc.typ
	id := strings.Repeat("7", 64)
	p.mustCreate(name, tc.opts)
	mp := p.mustMount(name, id)
	require.Equal(t, p.mountpoint(name), mp)
	content := randomText(t)
	known := filepath.Join(mp, "known.txt")
	require.NoError(t, os.WriteFile(known, []byte(content), 0o644))
	require.NoError(t, os.Chmod(known, 0o644))
	if v, err := p.get(name); err == nil && tc.typ == "crypt" {
		t.Logf("crypt engine: %v", v.Status["engine"])
	}

	volDir := p.volDir(name)
	targets := []target{
		{p.root, dirPath, ""},
		{filepath.Join(p.root, "volumes"), dirPath, ""},
		{filepath.Join(p.root, "trash"), dirPath, ""},
		{filepath.Join(p.root, "views"), dirPath, ""},
		{filepath.Join(p.root, "holdfast.db"), filePath, ""},
		{volDir, dirPath, ""},
		{p.mountRoot, dirPath, ""},
		{mp, dirPath, ""},
		{known, filePath, content},
		{p.socket, socketPath, ""},
	}
	switch tc.typ {
	case "local":
		targets = append(targets,
			target{filepath.Join(volDir, "data"), dirPath, ""},
			target{filepath.Join(volDir, "data", "known.txt"), filePath, content})
	case "loop":
		targets = append(targets,
			target{p.backingFile(name), filePath, ""},
			target{p.stagingDir(name), dirPath, ""},
			target{filepath.Join(p.stagingDir(name), "data", "known.txt"), filePath, content})
	case "crypt":
		targets = append(targets,
			target{p.backingFile(name), filePath, ""},
			target{p.stagingDir(name), dirPath, ""},
			target{filepath.Join(p.stagingDir(name), "data", "known.txt"), filePath, content},
			target{p.keyDir, dirPath, ""},
			target{filepath.Join(p.keyDir, name+".key"), filePath, ""})
	}
	probeTargets(t, p, "mounted", targets)
	p.mustUnmount(name, id)
	probeTargets(t, p, "unmounted", targets)
	p.mustRemove(name)
}

// probeTargets runs every probe on every target as root, where it must
// succeed if the path exists, and as nobody, where it must be refused
// with EACCES.
func probeTargets(t *testing.T, p *plugin, state string, targets []target) {
	t.Helper()
	for _, tg := range targets {
		_, lerr := os.Lstat(tg.path)
		exists := lerr == nil
		// stat of a path needs search permission only on its parent: it
		// is refused unless the parent is one of the protected directories.
		statToo := filepath.Dir(tg.path) != p.base
		for _, pr := range probesFor(tg.kind, statToo) {
			if exists {
				res, out := pr.run(t, false, tg.path)
				if res != allowed {
					t.Errorf("%s: %s %s as root: %v (%s); the probe itself is broken", state, pr.name, tg.path, res, strings.TrimSpace(out))
				} else if pr.name == probeCat.name && tg.content != "" && out != tg.content {
					t.Errorf("%s: read %s as root: got %q, want the known content", state, tg.path, out)
				}
			}
			res, out := pr.run(t, true, tg.path)
			t.Logf("%s: %s %s as nobody: %v", state, pr.name, rel(p.base, tg.path), res)
			if res != denied {
				t.Errorf("%s: %s %s as uid %d: %v, want permission denied: %s", state, pr.name, tg.path, nobody, res, strings.TrimSpace(out))
			}
		}
	}
}

func rel(base, path string) string {
	if r, err := filepath.Rel(base, path); err == nil {
		return "<base>/" + r
	}
	return path
}

func randomText(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	_, err := crand.Read(b)
	require.NoError(t, err)
	return "holdfast-known-" + hex.EncodeToString(b) + "\n"
}

// TestStartCorrectsLooseDirs: the real binary, started on an existing
// --root, --mount-root and --key-dir at 0755, sets each to 0700 and logs a
// warning naming the path and both modes.
func TestStartCorrectsLooseDirs(t *testing.T) {
	requireRoot(t)
	p := newPlugin(t)
	for _, dir := range []string{p.root, p.mountRoot, p.keyDir} {
		require.NoError(t, os.Mkdir(dir, 0o755))
		require.NoError(t, os.Chmod(dir, 0o755))
	}
	p.start()
	b, err := os.ReadFile(p.logs[len(p.logs)-1])
	require.NoError(t, err)
	warned := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil || e["level"] != "warning" {
			continue
		}
		if e["mode"] == "0755" && e["new_mode"] == "0700" {
			warned[e["path"].(string)] = true
		}
	}
	for _, dir := range []string{p.root, p.mountRoot, p.keyDir} {
		fi, err := os.Stat(dir)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), dir)
		require.True(t, warned[dir], "no warning for %s in:\n%s", dir, b)
	}
}

// TestStartRefusesDirsOfOtherUsers: the real binary refuses to start when
// --root, --mount-root or --key-dir is owned by another user, naming the
// flag and the fix, and changes nothing.
func TestStartRefusesDirsOfOtherUsers(t *testing.T) {
	requireRoot(t)
	for _, flag := range []string{"--root", "--mount-root", "--key-dir"} {
		t.Run(flag, func(t *testing.T) {
			p := newPlugin(t)
			dir := map[string]string{"--root": p.root, "--mount-root": p.mountRoot, "--key-dir": p.keyDir}[flag]
			require.NoError(t, os.Mkdir(dir, 0o755))
			require.NoError(t, os.Chown(dir, nobody, nobody))
			require.NoError(t, os.Chmod(dir, 0o755))
			require.NoError(t, p.launch())
			select {
			case <-p.exited:
			case <-time.After(20 * time.Second):
				t.Fatalf("holdfast did not refuse to start:\n%s", p.logTail(20))
			}
			require.Equal(t, 1, p.cmd.ProcessState.ExitCode(), p.logTail(20))
			b, err := os.ReadFile(p.logs[0])
			require.NoError(t, err)
			want := fmt.Sprintf("%s %s is owned by uid %d, who could open it to every user again: chown root:root %s", flag, dir, nobody, dir)
			require.Contains(t, string(b), want)
			fi, err := os.Stat(dir)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o755), fi.Mode().Perm(), "a refused directory is left alone")
			_, err = os.Stat(p.socket)
			require.ErrorIs(t, err, os.ErrNotExist, "no socket from a refused start")
		})
	}
}
