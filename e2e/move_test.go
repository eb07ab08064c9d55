package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// moverName is the driver name of the second holdfast the move scenario
// restores into: a legacy daemon of its own, as on another host.
const moverName = "holdfast-move"

// testMove moves a volume between two holdfast instances as the README's
// recipe does between hosts: files written by a container into a volume
// of the fixture's holdfast, `holdfast backup` through its socket piped
// into `holdfast restore` through the second's, read back by a container
// from the second: names, kinds, modes, owners, sizes, mtimes and contents
// are the same.
func testMove(t *testing.T, f *fixture) {
	src := f.volume(t, "move-src")
	runC(t, []string{"-v", src + ":/data"}, "sh", "-c", `set -e
		mkdir -p /data/dir/sub /data/empty
		echo hello > /data/dir/a
		printf 'no newline' > /data/dir/sub/b
		dd if=/dev/urandom of=/data/dir/random bs=64k count=16 2>/dev/null
		chmod 0640 /data/dir/a; chmod 0700 /data/dir/sub; chmod 4755 /data/dir/sub/b
		touch /data/owned; chown 4242:4343 /data/owned
		ln -s dir/random /data/link
		ln /data/dir/a /data/hardlink
		touch -d '1990-01-02 03:04:05' /data/dir/a`)
	want := runC(t, []string{"-v", src + ":/data:ro"}, "sh", "-c", manifest)

	dir := fixtureDir(t, "move-"+f.kind)
	keys := filepath.Join(dir, "keys")
	mkdirs(t, keys)
	mover := &legacy{
		socket:  "/run/docker/plugins/" + moverName + ".sock",
		logPath: filepath.Join(workDir, "move-"+f.kind+".log"),
		env:     []string{"HOLDFAST_KEY_DIR=" + keys},
	}
	mover.args = []string{"--socket", mover.socket, "--root", filepath.Join(dir, "root"), "--mount-root", filepath.Join(dir, "mounts")}
	if answers(mover.socket) {
		t.Fatalf("something already serves %s: stop it first", mover.socket)
	}
	mover.start(t)
	t.Cleanup(func() {
		mover.stop(t)
		// dockerd caches a legacy driver by name until it restarts.
		restartDockerd(t)
	})

	dst := f.name("move-dst")
	out, err := run(context.Background(), nil, "bash", "-c",
		`set -o pipefail; "$0" backup "$1" --socket "$2" | "$0" restore "$3" --socket "$4" --opt type=local`,
		holdfastBin, src, f.socket, dst, mover.socket)
	t.Logf("$ holdfast backup %s --socket %s | holdfast restore %s --socket %s: %s", src, f.socket, dst, mover.socket, out)
	if err != nil {
		t.Fatalf("backup | restore: %v", err)
	}
	if !strings.Contains(out, "restored "+dst+": ") {
		t.Errorf("restore printed %q, want its summary", out)
	}
	mountDst := []string{"--mount", "type=volume,src=" + dst + ",dst=/data,volume-driver=" + moverName}
	t.Cleanup(func() { removeVolume(t, dst) })
	got := runC(t, mountDst, "sh", "-c", manifest)
	if got != want {
		t.Errorf("the moved volume differs.\nsource:\n%s\nmoved:\n%s", want, got)
	}
	for _, line := range []string{"./dir/random F", "./link L dir/random", "./owned F 644:4242:4343", "./dir/sub/b F 4755:0:0"} {
		if !strings.Contains(want, line) {
			t.Errorf("source manifest lacks %q:\n%s", line, want)
		}
	}
	if d := docker(t, "volume", "inspect", "-f", "{{.Driver}}", dst); d != moverName {
		t.Errorf("moved volume's driver is %q, want %s", d, moverName)
	}
}
