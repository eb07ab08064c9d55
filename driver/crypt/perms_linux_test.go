package crypt

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/require"
)

// probeEnv makes this test binary a probe: "OP PATH", run by
// TestUnprivilegedProbeHelper in a child that runs as another user.
const probeEnv = "HOLDFAST_PERM_PROBE"

// probeOps are what the probe tries on a path.
var probeOps = map[string]func(path string) error{
	"list": func(p string) error { _, err := os.ReadDir(p); return err },
	"enter": func(p string) error {
		_, err := os.Stat(p + "/.")
		return err
	},
	"stat": func(p string) error { _, err := os.Stat(p); return err },
	"read": func(p string) error {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.ReadAll(f)
		return err
	},
}

// TestUnprivilegedProbeHelper is the probe's body in the child; without
// probeEnv it does nothing.
func TestUnprivilegedProbeHelper(t *testing.T) {
	spec := os.Getenv(probeEnv)
	if spec == "" {
		t.Skip("a helper: runs only as the probe child of TestCryptLockedToOtherUsers")
	}
	for _, line := range strings.Split(spec, "\n") {
		op, path, _ := strings.Cut(line, " ")
		err := probeOps[op](path)
		switch {
		case err == nil:
			os.Stdout.WriteString("PROBE ok\n")
		case errors.Is(err, syscall.EACCES):
			os.Stdout.WriteString("PROBE EACCES\n")
		default:
			os.Stdout.WriteString("PROBE other " + strings.ReplaceAll(err.Error(), "\n", " ") + "\n")
		}
	}
}

// prober runs probeOps as uid and gid 65534 with no groups, from a copy of
// this test binary the user can execute.
type prober struct{ bin string }

func newProber(t *testing.T) *prober {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o755))
	require.NoError(t, os.Chmod(dir, 0o755))
	b, err := os.ReadFile(self)
	require.NoError(t, err)
	bin := filepath.Join(dir, "probe")
	require.NoError(t, os.WriteFile(bin, b, 0o755))
	return &prober{bin: bin}
}

// run runs every "OP PATH" of probes in one child and returns, for each,
// "ok", "EACCES" or "other ...".
func (p *prober) run(t *testing.T, probes []string) []string {
	t.Helper()
	cmd := exec.Command(p.bin, "-test.run=^TestUnprivilegedProbeHelper$", "-test.count=1")
	cmd.Env = []string{probeEnv + "=" + strings.Join(probes, "\n")}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	out, _ := cmd.CombinedOutput()
	var res []string
	for _, line := range strings.Split(string(out), "\n") {
		if r, ok := strings.CutPrefix(line, "PROBE "); ok {
			res = append(res, r)
		}
	}
	if len(res) != len(probes) {
		t.Fatalf("the probe child answered %d of %d probes: %s", len(res), len(probes), out)
	}
	return res
}

// TestCryptLockedToOtherUsers: as uid 65534 with no groups, nothing of a
// crypt volume (its engine as auto picks: fscrypt on the host, LUKS in the
// vmtest guest) can be listed, entered, stat'ed or read under --root, the
// mount root or --key-dir, mounted or not. The directories above them are
// opened to everyone, so only the driver's modes protect; each probe works
// as root on the same path and as nobody on a world-readable file.
func TestCryptLockedToOtherUsers(t *testing.T) {
	r := newRig(t)
	for _, dir := range []string{r.root, r.keyDir} {
		for d := filepath.Dir(dir); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			require.NoError(t, os.Chmod(d, 0o755))
		}
	}
	p := newProber(t)
	pub := filepath.Join(filepath.Dir(p.bin), "public.txt")
	require.NoError(t, os.WriteFile(pub, []byte("x"), 0o644))
	require.Equal(t, []string{"ok", "ok"}, p.run(t, []string{"read " + pub, "list " + filepath.Dir(pub)}),
		"the probe cannot read a world-readable file and folder as nobody: it proves nothing")

	require.NoError(t, r.api.Create(&volume.CreateRequest{Name: "np", Options: map[string]string{"type": "crypt", "size": "32m"}}))
	t.Logf("engine %v", r.status("np")["engine"])
	mp := r.mount("np", "a")
	known := filepath.Join(mp, "known.txt")
	require.NoError(t, os.WriteFile(known, []byte("known"), 0o644))
	require.NoError(t, os.Chmod(known, 0o644))
	vol := filepath.Join(r.root, "volumes", "np")
	type target struct {
		path string
		ops  []string
	}
	dir := []string{"list", "enter"}
	targets := []target{
		{r.root, dir},
		{filepath.Join(r.root, "volumes"), append(dir, "stat")},
		{vol, append(dir, "stat")},
		{filepath.Join(vol, "backing.img"), []string{"read", "stat"}},
		{filepath.Join(vol, "fs"), append(dir, "stat")},
		{filepath.Join(vol, "fs", "data", "known.txt"), []string{"read", "stat"}},
		{filepath.Join(r.root, "mounts"), append(dir, "stat")},
		{mp, append(dir, "stat")},
		{known, []string{"read", "stat"}},
		{r.keyDir, dir},
		{filepath.Join(r.keyDir, "np.key"), []string{"read", "stat"}},
	}
	for _, state := range []string{"mounted", "unmounted"} {
		if state == "unmounted" {
			r.unmount("np", "a")
		}
		var probes []string
		for _, tg := range targets {
			_, lerr := os.Lstat(tg.path)
			for _, op := range tg.ops {
				if lerr == nil {
					require.NoError(t, probeOps[op](tg.path), "%s: %s %s as root: the probe itself fails", state, op, tg.path)
				}
				probes = append(probes, op+" "+tg.path)
			}
		}
		for i, got := range p.run(t, probes) {
			t.Logf("%s: %s as nobody: %s", state, probes[i], got)
			if got != "EACCES" {
				t.Errorf("%s: %s as uid 65534: %s, want EACCES", state, probes[i], got)
			}
		}
	}
	require.NoError(t, r.api.Remove(&volume.RemoveRequest{Name: "np"}))
}
