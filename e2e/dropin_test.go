package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// probe prints, from inside a container, what a volume at path looks like:
// filesystem type, size in 1K blocks, owner and mode, then the mount's
// per-mount flags, type and superblock options from mountinfo.
func probe(path string) []string {
	return []string{"sh", "-c", `p=` + path + `; stat -f -c %T $p; df -kP $p | tail -n 1 | awk '{print $2}'; stat -c '%u:%g %a' $p; ` +
		`awk -v p=$p '$5 == p { for (i = 7; $i != "-"; i++); print $6, $(i+1), $(i+3) }' /proc/self/mountinfo`}
}

// dropinCompose runs the compose tool on testdata/file as project p with
// driver (local or holdfast's) and the extra environment.
func dropinCompose(t *testing.T, file, p, driver string, env []string, args ...string) string {
	t.Helper()
	full := append(append([]string{}, composeCmd[1:]...), append([]string{"-f", filepath.Join(repoRoot, "e2e", "testdata", file), "-p", p}, args...)...)
	env = append([]string{"DROPIN_DRIVER=" + driver, "HOLDFAST_IMAGE=" + testImage}, env...)
	t.Logf("$ %s %s %s", strings.Join(env, " "), composeCmd[0], strings.Join(full, " "))
	out, err := run(context.Background(), env, composeCmd[0], full...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func dropinDown(t *testing.T, file, p, driver string, env []string) {
	t.Cleanup(func() {
		dropinCompose(t, file, p, driver, env, "down", "-v", "--remove-orphans", "-t", "1")
	})
}

// testDropin: the same docker volume create lines and the same compose
// files with driver: local and with holdfast give volumes that look the
// same from inside the containers (filesystem type, size, owner, mode,
// mount flags): tmpfs in Docker's local driver form and, with the legacy
// daemon, bind volumes of host directories, whose data is on the host path
// and stays there after docker volume rm. The managed plugin reaches no
// host directory beyond its mounts and says so.
func testDropin(t *testing.T, f *fixture) {
	tmpfsOpts := []string{"--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt", "o=size=8m,uid=1000,gid=1000,mode=0750,nosuid,nodev,noexec"}
	local := f.name("dropin-local")
	docker(t, append(append([]string{"volume", "create", "--driver", "local", "--label", labelKey + "=" + runID}, tmpfsOpts...), local)...)
	t.Cleanup(func() { removeVolume(t, local) })
	ours := f.volume(t, "dropin-tmpfs", tmpfsOpts...)
	want := runC(t, []string{"-v", local + ":/v"}, probe("/v")...)
	got := runC(t, []string{"-v", ours + ":/v"}, probe("/v")...)
	t.Logf("driver local:\n%s\nholdfast:\n%s", want, got)
	if got != want || !strings.Contains(want, "tmpfs\n8192\n1000:1000 750\n") {
		t.Errorf("docker volume create tmpfs: holdfast's volume looks like\n%s\nwant, as driver local's,\n%s", got, want)
	}

	// The same compose file.
	results := map[string]string{}
	for _, drv := range []string{"local", f.driver} {
		p := "hfdropin-" + f.kind + "-" + map[bool]string{true: "local", false: "holdfast"}[drv == "local"]
		dropinDown(t, "dropin-tmpfs.yaml", p, drv, nil)
		dropinCompose(t, "dropin-tmpfs.yaml", p, drv, nil, "up", "-d")
		results[drv] = dropinCompose(t, "dropin-tmpfs.yaml", p, drv, nil, append([]string{"exec", "-T", "app"}, probe("/scratch")...)...)
		dropinCompose(t, "dropin-tmpfs.yaml", p, drv, nil, "down", "-v", "-t", "1")
	}
	if results["local"] != results[f.driver] || !strings.Contains(results["local"], "tmpfs\n8192\n1000:1000 750\n") {
		t.Errorf("compose tmpfs: holdfast\n%s\nwant, as driver local,\n%s", results[f.driver], results["local"])
	}

	if f.kind == "managed" {
		dir := t.TempDir()
		out := dockerFails(t, "volume", "create", "--driver", f.driver, "--opt", "type=none", "--opt", "o=bind", "--opt", "device="+dir, f.name("dropin-bind"))
		if !strings.Contains(out, "bind volumes are off here (--bind-paths is empty") {
			t.Errorf("managed plugin, bind of a host path: %s; want 'bind volumes are off here'", out)
		}
		return
	}

	// Bind volumes: docker volume create, then the compose file.
	bindResults := map[string]string{}
	for _, drv := range []string{"local", f.driver} {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "from-host"), []byte("host"), 0o644); err != nil {
			t.Fatal(err)
		}
		vol := f.name("dropin-bind-" + map[bool]string{true: "l", false: "h"}[drv == "local"])
		docker(t, "volume", "create", "--driver", drv, "--label", labelKey+"="+runID, "--opt", "type=none", "--opt", "o=bind", "--opt", "device="+dir, vol)
		t.Cleanup(func() { removeVolume(t, vol) })
		bindResults[drv] = runC(t, []string{"-v", vol + ":/v"}, append(probe("/v")[:2:2], probe("/v")[2]+"; cat /v/from-host; echo c > /v/from-container")...)
		docker(t, "volume", "rm", vol)
		for file, want := range map[string]string{"from-host": "host", "from-container": "c\n"} {
			if b, err := os.ReadFile(filepath.Join(dir, file)); err != nil || string(b) != want {
				t.Errorf("driver %s: after docker volume rm, %s on the host: %q, %v; want %q", drv, file, b, err, want)
			}
		}

		p := "hfdropin-bind-" + f.kind + "-" + map[bool]string{true: "local", false: "holdfast"}[drv == "local"]
		env := []string{"DROPIN_HOST_DIR=" + dir}
		dropinDown(t, "dropin-bind.yaml", p, drv, env)
		dropinCompose(t, "dropin-bind.yaml", p, drv, env, "up", "-d")
		dropinCompose(t, "dropin-bind.yaml", p, drv, env, "exec", "-T", "app", "sh", "-c", "echo compose > /site/from-compose")
		dropinCompose(t, "dropin-bind.yaml", p, drv, env, "down", "-v", "-t", "1")
		if b, err := os.ReadFile(filepath.Join(dir, "from-compose")); err != nil || string(b) != "compose\n" {
			t.Errorf("driver %s: after compose down -v, from-compose on the host: %q, %v", drv, b, err)
		}
	}
	t.Logf("bind, driver local:\n%s\nholdfast:\n%s", bindResults["local"], bindResults[f.driver])
	if bindResults["local"] != bindResults[f.driver] || !strings.Contains(bindResults["local"], "0:0 755\n") {
		t.Errorf("bind: holdfast's volume looks like\n%s\nwant, as driver local's,\n%s", bindResults[f.driver], bindResults["local"])
	}
}
