package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// asNobody runs argv as uid and gid 65534 with no groups and no
// capabilities, and returns its output and whether it succeeded.
func asNobody(argv ...string) (string, bool) {
	cmd := exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"}, argv...)...)
	cmd.Env, cmd.Dir = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}, "/"
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err == nil
}

// While a container uses a volume of each type, an unprivileged host user
// can neither list nor read it through the host path where the driver
// mounted it (for the managed plugin: under dockerd's propagated mount),
// and the driver's mount root, state and key folders are root's alone,
// 0700, whatever protects their parents. The probe is shown to work on a
// world-readable file and, as root, on the same path.
func testUnprivileged(t *testing.T, f *fixture) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv is not installed (Debian: util-linux)")
	}
	if out, ok := asNobody("cat", "/etc/passwd"); !ok {
		t.Fatalf("the probe cannot read a world-readable file as nobody, so it proves nothing: %s", out)
	}
	for dir := f.mountRoot; dir != "/"; dir = filepath.Dir(dir) {
		if fi, err := os.Stat(dir); err == nil {
			t.Logf("%s: %v uid %d gid %d", dir, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid, fi.Sys().(*syscall.Stat_t).Gid)
		}
	}
	for _, dir := range []string{f.mountRoot, f.stateRoot, f.keyDir} {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s is %v owned by uid %d; want 0700, root", dir, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid)
		}
	}
	for _, tc := range []struct {
		typ  string
		opts []string
	}{
		{"local", []string{"--opt", "type=local"}},
		{"tmpfs", []string{"--opt", "type=tmpfs", "--opt", "size=4m"}},
		{"crypt", cryptOpts()},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			vol := f.volume(t, "np-"+tc.typ, tc.opts...)
			known := fmt.Sprintf("known-%s-%d", tc.typ, time.Now().UnixNano())
			c := startC(t, f.name("np-"+tc.typ), []string{"-v", vol + ":/data"},
				"sh", "-c", "echo "+known+" > /data/known.txt && chmod 0644 /data/known.txt && sync && exec sleep 3600")
			eventually(t, 10*time.Second, "container wrote the known file", func() error {
				_, err := dockerE(t, "exec", c, "cat", "/data/known.txt")
				return err
			})
			mp := filepath.Join(f.mountRoot, vol)
			file := filepath.Join(mp, "known.txt")
			if b, err := os.ReadFile(file); err != nil || strings.TrimSpace(string(b)) != known {
				t.Fatalf("as root, %s holds %q (%v), want %q: the host path probed is not the volume's", file, b, err, known)
			}
			for _, argv := range [][]string{
				{"ls", "-a", f.mountRoot}, {"ls", "-a", mp}, {"stat", mp}, {"cat", file},
				{"ls", "-a", f.stateRoot}, {"ls", "-a", f.keyDir},
			} {
				out, ok := asNobody(argv...)
				t.Logf("as nobody: %s: ok=%v %s", strings.Join(argv, " "), ok, out)
				if ok || !strings.Contains(out, "Permission denied") {
					t.Errorf("as uid 65534, %s: %s; want permission denied", strings.Join(argv, " "), out)
				}
			}
			removeContainer(t, c)
		})
	}
}
