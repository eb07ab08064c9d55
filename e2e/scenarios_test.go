package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scenarios run in this order against each fixture; the ones that restart
// dockerd or turn on swarm mode come last.
var scenarios = []scenario{
	{"named", testNamed},
	{"readers", testReaders},
	{"anonymous", testAnonymous},
	{"labels", testLabels},
	{"inspect", testInspect},
	{"backup", testBackup},
	{"move", testMove},
	{"from", testFrom},
	{"in-use-rm", testInUseRemove},
	{"prune", testPrune},
	{"tmpfs", testTmpfs},
	{"crypt", testCrypt},
	{"nfs", testNFS},
	{"dropin", testDropin},
	{"plugin-restart", testPluginRestart},
	{"plugin-restart-shared", testPluginRestartShared},
	{"dockerd-restart", testDockerdRestart},
	{"compose", testCompose},
	{"compose-crypt", testComposeCrypt},
	{"swarm", testSwarm},
	{"unprivileged", testUnprivileged},
}

// sleeper keeps a container alive; exec makes sleep PID 1 so that `docker rm
// -f` and stop are immediate.
var sleeper = []string{"sh", "-c", "exec sleep 3600"}

// A named volume keeps its data after the container that wrote it is removed.
func testNamed(t *testing.T, f *fixture) {
	vol := f.volume(t, "named", "--opt", "type=local")
	runC(t, []string{"-v", vol + ":/data"}, "sh", "-c", "echo kept > /data/file && mkdir -p /data/dir && echo deep > /data/dir/f")
	if got := runC(t, []string{"-v", vol + ":/data"}, "cat", "/data/file", "/data/dir/f"); got != "kept\ndeep" {
		t.Fatalf("second container read %q, want %q", got, "kept\ndeep")
	}
	if got := docker(t, "volume", "inspect", "--format", "{{.Driver}}", vol); got != f.driver {
		t.Errorf("Driver = %q, want %q", got, f.driver)
	}
	wantStatus(t, vol, "mounted", "false", "leases", "0")
}

// One writer and two read-only readers share a volume; readers see the
// writer's updates and cannot write.
func testReaders(t *testing.T, f *fixture) {
	vol := f.volume(t, "shared")
	w := startC(t, f.name("writer"), []string{"-v", vol + ":/data"}, "sh", "-c",
		`i=0; while :; do i=$((i+1)); echo $i > /data/n.tmp && mv /data/n.tmp /data/n; sleep 0.1; done`)
	r1 := startC(t, f.name("reader1"), []string{"-v", vol + ":/data:ro"}, sleeper...)
	r2 := startC(t, f.name("reader2"), []string{"-v", vol + ":/data:ro"}, sleeper...)
	wantStatus(t, vol, "mounted", "true", "leases", "3")
	for _, r := range []string{r1, r2} {
		var first int
		eventually(t, 10*time.Second, r+" reads the writer's counter", func() error {
			n, err := strconv.Atoi(execC(t, r, "cat", "/data/n"))
			first = n
			return err
		})
		eventually(t, 10*time.Second, r+" sees the counter grow", func() error {
			n, _ := strconv.Atoi(execC(t, r, "cat", "/data/n"))
			if n <= first {
				return fmt.Errorf("counter %d, was %d", n, first)
			}
			return nil
		})
		out, err := dockerE(t, "exec", r, "sh", "-c", "echo x > /data/reader-wrote")
		if err == nil {
			t.Fatalf("%s wrote to a :ro volume (%q)", r, out)
		}
		if !strings.Contains(err.Error(), "Read-only file system") {
			t.Errorf("%s write failed, but not as read-only: %v", r, err)
		}
	}
	if out := execC(t, w, "ls", "/data"); strings.Contains(out, "reader-wrote") {
		t.Errorf("writer sees a reader's file: %q", out)
	}
	for _, c := range []string{w, r1, r2} {
		removeContainer(t, c)
	}
	wantStatus(t, vol, "mounted", "false", "leases", "0")
}

// --volume-driver makes an anonymous volume on holdfast; rm -v removes it.
func testAnonymous(t *testing.T, f *fixture) {
	c := f.name("anon")
	docker(t, runArgs(true, c, []string{"--volume-driver", f.driver, "-v", "/data"},
		[]string{"sh", "-c", "echo anon > /data/f && exec sleep 3600"})...)
	t.Cleanup(func() { removeContainer(t, c) })
	out := docker(t, "inspect", "--format", `{{range .Mounts}}{{.Name}} {{.Driver}} {{.Destination}}{{"\n"}}{{end}}`, c)
	fields := strings.Fields(out)
	if len(fields) != 3 || fields[2] != "/data" {
		t.Fatalf("container mounts = %q, want one volume at /data", out)
	}
	vol, drv := fields[0], fields[1]
	t.Cleanup(func() { removeVolume(t, vol) })
	if drv != f.driver {
		t.Errorf("anonymous volume %s has driver %q, want %q", vol, drv, f.driver)
	}
	if len(vol) != 64 {
		t.Errorf("anonymous volume name %q is not a 64-hex id", vol)
	}
	eventually(t, 10*time.Second, "the anonymous volume holds the file", func() error {
		if got, err := dockerE(t, "exec", c, "cat", "/data/f"); err != nil || got != "anon" {
			return fmt.Errorf("read %q, %v", got, err)
		}
		return nil
	})
	wantStatus(t, vol, "mounted", "true", "leases", "1")
	docker(t, "rm", "-f", "-v", c)
	if volumeExists(t, vol) {
		t.Errorf("docker rm -v left the anonymous volume %s", vol)
	}
	if slices.Contains(volumeNames(t, "driver="+f.driver), vol) {
		t.Errorf("driver still lists %s after docker rm -v", vol)
	}
}

// Labels are stored by dockerd and filter `docker volume ls`.
func testLabels(t *testing.T, f *fixture) {
	color := "hfe2e-color-" + runID
	blue1 := f.volume(t, "blue1", "--label", color+"=blue", "--label", "tier=db")
	blue2 := f.volume(t, "blue2", "--label", color+"=blue")
	red := f.volume(t, "red", "--label", color+"=red")
	check := func(want []string, filters ...string) {
		t.Helper()
		got := volumeNames(t, filters...)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("volume ls %v = %v, want %v", filters, got, want)
		}
	}
	check([]string{blue1, blue2}, "label="+color+"=blue")
	check([]string{red}, "label="+color+"=red")
	check([]string{blue1, blue2, red}, "label="+color)
	check([]string{blue1}, "label="+color, "label=tier=db")
	check([]string{blue1, blue2, red}, "label="+color, "driver="+f.driver)
	if got := docker(t, "volume", "inspect", "--format", `{{index .Labels "tier"}}`, blue1); got != "db" {
		t.Errorf("label tier = %q, want db", got)
	}
}

// docker volume inspect shows the driver's Status, which follows the
// volume's use; uid/gid/mode shape the volume root.
func testInspect(t *testing.T, f *fixture) {
	vol := f.volume(t, "inspect", "--opt", "type=local", "--opt", "uid=1000", "--opt", "gid=1001", "--opt", "mode=0750")
	st := volumeStatus(t, vol)
	t.Logf("Status of an unused volume: %v", st)
	for k, want := range map[string]string{"type": "local", "mounted": "false", "leases": "0"} {
		if got := statusValue(st, k); got != want {
			t.Errorf("Status %s = %q, want %q", k, got, want)
		}
	}
	// dockerd decodes the driver's CreatedAt into a time (RFC 3339), and
	// shows nothing, or fails, on anything else.
	created := docker(t, "volume", "inspect", "--format", "{{.CreatedAt}}", vol)
	if at, err := time.Parse(time.RFC3339, created); err != nil {
		t.Errorf("CreatedAt %q is not RFC 3339: %v", created, err)
	} else if d := time.Since(at); d < -time.Minute || d > 10*time.Minute {
		t.Errorf("CreatedAt %s is %s from now", created, d.Round(time.Second))
	}
	opts := docker(t, "volume", "inspect", "--format", "{{json .Options}}", vol)
	for _, kv := range []string{`"type":"local"`, `"uid":"1000"`, `"gid":"1001"`, `"mode":"0750"`} {
		if !strings.Contains(opts, kv) {
			t.Errorf("Options %s lack %s", opts, kv)
		}
	}
	c1 := startC(t, f.name("inspect1"), []string{"-v", vol + ":/data"}, sleeper...)
	wantStatus(t, vol, "type", "local", "mounted", "true", "leases", "1")
	st = volumeStatus(t, vol)
	t.Logf("Status of a mounted volume: %v", st)
	// A local volume's own usage (or, before its first background walk,
	// that it is pending) and the free space of the filesystem holding --root.
	if statusValue(st, "filesystemAvailable") == "" || statusValue(st, "used") == "" && statusValue(st, "usedPending") == "" {
		t.Errorf("Status of a mounted volume lacks filesystemAvailable, or both used and usedPending: %v", st)
	}
	if mp := docker(t, "volume", "inspect", "--format", "{{.Mountpoint}}", vol); mp == "" {
		t.Errorf("Mountpoint of a mounted volume is empty")
	}
	if got := execC(t, c1, "stat", "-c", "%u:%g %a", "/data"); got != "1000:1001 750" {
		t.Errorf("volume root is %q, want 1000:1001 750", got)
	}
	// The owner can write as a non-root user; others cannot even look.
	runC(t, []string{"--user", "1000:1001", "-v", vol + ":/data"}, "sh", "-c", "echo mine > /data/own")
	if out := runCFails(t, []string{"--user", "2000:2000", "-v", vol + ":/data"}, "ls", "/data"); !strings.Contains(out, "Permission denied") {
		t.Errorf("user 2000 listing a 0750 volume: %s", out)
	}
	c2 := startC(t, f.name("inspect2"), []string{"-v", vol + ":/data"}, sleeper...)
	wantStatus(t, vol, "mounted", "true", "leases", "2")
	removeContainer(t, c1)
	wantStatus(t, vol, "mounted", "true", "leases", "1")
	removeContainer(t, c2)
	wantStatus(t, vol, "mounted", "false", "leases", "0")
}

// manifest lists a tree's names, kinds, modes, owners, sizes, mtimes and
// content hashes, one entry a line, sorted.
const manifest = `cd /data && find . ! -name . | sort | while read -r p; do
	if [ -L "$p" ]; then echo "$p L $(readlink "$p") $(stat -c %u:%g "$p")"
	elif [ -d "$p" ]; then echo "$p D $(stat -c %a:%u:%g "$p")"
	else echo "$p F $(stat -c %a:%u:%g:%s:%Y "$p") $(md5sum < "$p" | cut -d' ' -f1)"; fi
done`

// A volume backed up to a tar archive from a container restores into a new
// volume with identical contents.
func testBackup(t *testing.T, f *fixture) {
	src := f.volume(t, "backup-src")
	dst := f.volume(t, "backup-dst")
	runC(t, []string{"-v", src + ":/data"}, "sh", "-c", `set -e
		mkdir -p /data/dir/sub /data/empty
		echo hello > /data/dir/a
		printf 'no newline' > /data/dir/sub/b
		dd if=/dev/urandom of=/data/dir/random bs=64k count=16 2>/dev/null
		chmod 0640 /data/dir/a; chmod 0700 /data/dir/sub
		touch /data/owned; chown 1000:1000 /data/owned
		ln -s dir/random /data/link
		touch -d '2020-01-02 03:04:05' /data/dir/a`)
	backup := filepath.Join(t.TempDir(), "backup")
	mkdirs(t, backup)
	runC(t, []string{"-v", src + ":/data:ro", "-v", backup + ":/backup"}, "tar", "-C", "/data", "-cf", "/backup/vol.tar", ".")
	if st, err := os.Stat(filepath.Join(backup, "vol.tar")); err != nil || st.Size() < 1<<20 {
		t.Fatalf("backup archive: %v (size %v)", err, st)
	}
	runC(t, []string{"-v", dst + ":/data", "-v", backup + ":/backup:ro"}, "tar", "-C", "/data", "-xpf", "/backup/vol.tar")
	want := runC(t, []string{"-v", src + ":/data:ro"}, "sh", "-c", manifest)
	got := runC(t, []string{"-v", dst + ":/data:ro"}, "sh", "-c", manifest)
	if got != want {
		t.Errorf("restored volume differs.\nsource:\n%s\nrestored:\n%s", want, got)
	}
	if !strings.Contains(want, "./dir/random F") || !strings.Contains(want, "./link L dir/random") {
		t.Errorf("source manifest lacks expected entries:\n%s", want)
	}
}

// Removing a volume a container uses fails; after the container goes, it works.
func testInUseRemove(t *testing.T, f *fixture) {
	vol := f.volume(t, "inuse")
	c := startC(t, f.name("inuse"), []string{"-v", vol + ":/data"}, "sh", "-c", "echo busy > /data/f && exec sleep 3600")
	out := dockerFails(t, "volume", "rm", vol)
	if !strings.Contains(out, "in use") {
		t.Errorf("docker volume rm of an in-use volume: %s; want 'volume is in use'", out)
	}
	if got := execC(t, c, "cat", "/data/f"); got != "busy" {
		t.Errorf("after the refused rm the container reads %q", got)
	}
	wantStatus(t, vol, "mounted", "true", "leases", "1")
	removeContainer(t, c)
	docker(t, "volume", "rm", vol)
	if slices.Contains(volumeNames(t, "driver="+f.driver), vol) {
		t.Errorf("driver still lists %s after docker volume rm", vol)
	}
}

// docker volume prune never removes a volume in use. dockerd (20.10 to 28 at
// least) prunes only volumes of its built-in local driver (moby
// volume/service.Prune filters ByDriver("local")), so it leaves plugin volumes
// alone; unused holdfast volumes are found with --filter dangling=true and
// removed by name, which must take exactly the unused ones.
func testPrune(t *testing.T, f *fixture) {
	label := "hfe2e-prune=" + runID
	unused1 := f.volume(t, "prune-unused1", "--label", label)
	unused2 := f.volume(t, "prune-unused2", "--label", label, "--opt", "type=tmpfs", "--opt", "size=4m")
	used := f.volume(t, "prune-used", "--label", label)
	runC(t, []string{"-v", unused1 + ":/data"}, "sh", "-c", "echo unused > /data/f")
	c := startC(t, f.name("prune"), []string{"-v", used + ":/data"}, "sh", "-c", "echo stays > /data/f && exec sleep 3600")
	args := []string{"volume", "prune", "--force", "--filter", "label=" + label}
	if apiAtLeast(42) {
		args = append(args, "--all") // since API 1.42 prune takes only anonymous volumes by default
	}
	t.Logf("prune said: %s", docker(t, args...))
	if !volumeExists(t, used) {
		t.Fatalf("prune removed %s, which a container uses", used)
	}
	var left []string
	for _, v := range []string{unused1, unused2} {
		if volumeExists(t, v) {
			left = append(left, v)
		}
	}
	t.Logf("docker volume prune left %d of 2 unused %s volumes (dockerd prunes only its local driver's)", len(left), f.driver)
	if slices.Contains(left, unused1) {
		if got := runC(t, []string{"-v", unused1 + ":/data"}, "cat", "/data/f"); got != "unused" {
			t.Errorf("after prune %s reads %q", unused1, got)
		}
	}
	dangling := volumeNames(t, "dangling=true", "driver="+f.driver, "label="+label)
	slices.Sort(dangling)
	if !slices.Equal(dangling, left) {
		t.Errorf("dangling %s volumes %v, want %v", f.driver, dangling, left)
	}
	if len(dangling) > 0 {
		docker(t, append([]string{"volume", "rm"}, dangling...)...)
	}
	listed := volumeNames(t, "driver="+f.driver)
	for _, v := range []string{unused1, unused2} {
		if slices.Contains(listed, v) {
			t.Errorf("%s still listed after removing the unused volumes", v)
		}
	}
	if !slices.Contains(listed, used) {
		t.Errorf("%s no longer listed", used)
	}
	if got := execC(t, c, "cat", "/data/f"); got != "stays" {
		t.Errorf("used volume reads %q", got)
	}
	wantStatus(t, used, "mounted", "true", "leases", "1")
}

// A tmpfs volume holds its size limit and loses its data when the last
// container using it stops.
func testTmpfs(t *testing.T, f *fixture) {
	vol := f.volume(t, "tmpfs", "--opt", "type=tmpfs", "--opt", "size=8m")
	wantStatus(t, vol, "type", "tmpfs", "size", strconv.Itoa(8<<20))
	df := runC(t, []string{"-v", vol + ":/data"}, "sh", "-c", "df -kP /data | tail -n 1")
	if fields := strings.Fields(df); len(fields) < 2 || fields[1] != "8192" {
		t.Errorf("df inside the container: %q, want 8192 1K-blocks", df)
	}
	out := runCFails(t, []string{"-v", vol + ":/data"}, "dd", "if=/dev/zero", "of=/data/fill", "bs=1M", "count=16")
	if !strings.Contains(out, "No space left") {
		t.Errorf("dd past the size: %s; want 'No space left on device'", out)
	}
	keeper := startC(t, f.name("tmpfs-keeper"), []string{"-v", vol + ":/data"}, "sh", "-c", "echo alive > /data/f && exec sleep 3600")
	eventually(t, 10*time.Second, "second container sees the first one's file", func() error {
		got, err := dockerE(t, "run", "--rm", "--network", "none", "-v", vol+":/data", testImage, "cat", "/data/f")
		if err != nil || got != "alive" {
			return fmt.Errorf("read %q, %v", got, err)
		}
		return nil
	})
	wantStatus(t, vol, "mounted", "true", "leases", "1")
	removeContainer(t, keeper)
	wantStatus(t, vol, "mounted", "false", "leases", "0")
	if got := runC(t, []string{"-v", vol + ":/data"}, "ls", "-A", "/data"); got != "" {
		t.Errorf("tmpfs still holds %q after its last container exited", got)
	}
}

// An NFS volume on a host without an NFS client (this machine's kind):
// create succeeds, a container start fails with the plugin's "no NFS
// client" error, and nothing is left: no lease, no mount. Real NFS mounts
// are tested in the guest (make vmtest), where the kernel has a client.
func testNFS(t *testing.T, f *fixture) {
	if hasNFSClient() {
		t.Skip("the host kernel has an NFS client; this scenario checks the error on hosts without one, and make vmtest tests real NFS mounts")
	}
	vol := f.volume(t, "nfs", "--opt", "type=nfs", "--opt", "o=addr=127.0.0.1,vers=3", "--opt", "device=:/export")
	wantStatus(t, vol, "type", "nfs", "mounted", "false", "leases", "0")
	out := runCFails(t, []string{"-v", vol + ":/data"}, "true")
	if !strings.Contains(out, "this kernel has no NFS client") {
		t.Errorf("docker run on an NFS volume without a kernel client: %s; want the plugin's \"no NFS client\" error", out)
	}
	wantStatus(t, vol, "mounted", "false", "leases", "0")
}

// hasNFSClient reports whether the host kernel can mount NFS.
func hasNFSClient() bool {
	b, err := os.ReadFile("/proc/filesystems")
	return err == nil && slices.ContainsFunc(strings.Split(string(b), "\n"), func(l string) bool {
		return strings.TrimSpace(strings.TrimPrefix(l, "nodev")) == "nfs"
	})
}

// cryptOpts are the options of the crypt scenario's volume: "type=crypt
// size=64m" and whatever HOLDFAST_E2E_CRYPT_OPTS adds (comma separated,
// e.g. engine=fscrypt,keyfile=e2e.key).
func cryptOpts() []string {
	opts := []string{"--opt", "type=crypt", "--opt", "size=64m"}
	for _, kv := range strings.Split(os.Getenv("HOLDFAST_E2E_CRYPT_OPTS"), ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			opts = append(opts, "--opt", kv)
		}
	}
	return opts
}

// writeKey puts a random key file named e2e.key into the fixture's key
// folder, for crypt options that name one.
func writeKey(t *testing.T, f *fixture) {
	key := make([]byte, 64)
	_, _ = rand.Read(key)
	if err := os.WriteFile(filepath.Join(f.keyDir, "e2e.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
}

// An encrypted volume keeps its data across containers and a plugin restart,
// and its plaintext appears nowhere in the driver's state folder.
func testCrypt(t *testing.T, f *fixture) {
	writeKey(t, f)
	name := f.name("crypt")
	args := append([]string{"volume", "create", "--driver", f.driver, "--label", labelKey + "=" + runID}, cryptOpts()...)
	if _, err := dockerE(t, append(args, name)...); err != nil {
		t.Fatalf("creating a crypt volume: %v", err)
	}
	t.Cleanup(func() { removeVolume(t, name) })
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	marker := "holdfast-plaintext-" + hex.EncodeToString(b)
	runC(t, []string{"-v", name + ":/data"}, "sh", "-c",
		fmt.Sprintf("for i in $(seq 200); do echo %s; done > /data/secret && sync", marker))
	read := func(when string) {
		t.Helper()
		got := runC(t, []string{"-v", name + ":/data"}, "sh", "-c", "head -n 1 /data/secret; wc -l < /data/secret")
		if got != marker+"\n200" {
			t.Fatalf("%s: crypt volume reads %q, want the marker and 200 lines", when, got)
		}
	}
	read("second container")
	f.restart(t)
	read("after a plugin restart")
	wantStatus(t, name, "type", "crypt", "mounted", "false")
	if hits := findBytes(t, f.stateRoot, []byte(marker)); len(hits) > 0 {
		t.Errorf("plaintext found in the driver's state: %v", hits)
	}
	// The scan itself works: the same marker in a local volume is found.
	plain := f.volume(t, "crypt-control", "--opt", "type=local")
	runC(t, []string{"-v", plain + ":/data"}, "sh", "-c", fmt.Sprintf("echo %s > /data/plain", marker))
	if hits := findBytes(t, f.stateRoot, []byte(marker)); len(hits) != 1 {
		t.Errorf("control: marker written to a local volume found in %v, want exactly one file", hits)
	}
}

// findBytes lists the regular files under dir, not descending into other
// file systems (the mounted, decrypted view), that contain needle.
func findBytes(t *testing.T, dir string, needle []byte) []string {
	var rootDev uint64
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatalf("stat %s: %v", dir, err)
	}
	rootDev = st.Dev
	var hits []string
	scanned := 0
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		if s, ok := info.Sys().(*syscall.Stat_t); ok && s.Dev != rootDev {
			if info.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		scanned++
		if info.Size() > 1<<20 {
			t.Logf("scanning %s (%d MiB)", p, info.Size()>>20)
		}
		if fileContains(p, needle) {
			hits = append(hits, p)
		}
		return nil
	})
	t.Logf("scanned %d files under %s for the plaintext", scanned, dir)
	return hits
}

func fileContains(path string, needle []byte) bool {
	fh, err := os.Open(path)
	if err != nil {
		return false
	}
	defer fh.Close()
	buf := make([]byte, 1<<20+len(needle))
	keep := 0
	for {
		n, err := fh.Read(buf[keep:])
		if bytes.Contains(buf[:keep+n], needle) {
			return true
		}
		if err == io.EOF || err != nil {
			return false
		}
		if keep+n >= len(needle) {
			copy(buf, buf[keep+n-len(needle)+1:keep+n])
			keep = len(needle) - 1
		} else {
			keep += n
		}
	}
}

// A container keeps reading and writing a volume while the plugin restarts;
// the volume keeps its data and its lease, and a later rm -f releases it.
func testPluginRestart(t *testing.T, f *fixture) {
	vol := f.volume(t, "restart", "--opt", "type=local")
	w := startC(t, f.name("restart-writer"), []string{"-v", vol + ":/data"}, "sh", "-c",
		`i=0; while :; do i=$((i+1)); echo $i >> /data/log; sleep 0.1; done`)
	lines := func() int {
		t.Helper()
		n, err := strconv.Atoi(execC(t, w, "sh", "-c", "wc -l < /data/log"))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	eventually(t, 10*time.Second, "writer writes", func() error {
		if lines() < 3 {
			return fmt.Errorf("fewer than 3 lines")
		}
		return nil
	})
	wantStatus(t, vol, "mounted", "true", "leases", "1")
	f.restart(t)
	before := lines()
	eventually(t, 10*time.Second, "writer keeps writing after the plugin restart", func() error {
		if n := lines(); n <= before+5 {
			return fmt.Errorf("%d lines, %d at restart", n, before)
		}
		return nil
	})
	// The lease survives. Whether the volume is mounted again right away
	// is the driver's choice: a managed plugin's mounts vanish when it
	// stops (dockerd unmounts its propagated mount), and holdfast mounts
	// such a volume again at its next Mount.
	wantStatus(t, vol, "leases", "1")
	t.Logf("Status after the restart: %v", volumeStatus(t, vol))
	// A new container sees what the writer wrote after the restart: the
	// same data, not a fresh mount of something else.
	after := lines()
	last, err := strconv.Atoi(runC(t, []string{"-v", vol + ":/data:ro"}, "tail", "-n", "1", "/data/log"))
	if err != nil || last < after {
		t.Errorf("a new container reads line %d (%v); the writer had written %d", last, err, after)
	}
	wantStatus(t, vol, "leases", "1")
	removeContainer(t, w)
	wantStatus(t, vol, "mounted", "false", "leases", "0")
	docker(t, "volume", "rm", vol)
}

// For volume types whose data lives in a mounted file system (tmpfs, crypt),
// a plugin restart while a container holds the volume must not split it in
// two: a container started after the restart sees the old container's data
// and the old container sees its writes, or its Mount is refused with a
// clear error. Mounting a second instance (an empty tmpfs, the same ext4
// image twice) loses data.
func testPluginRestartShared(t *testing.T, f *fixture) {
	for _, tc := range []struct {
		typ  string
		opts []string
	}{
		{"tmpfs", []string{"--opt", "type=tmpfs", "--opt", "size=4m"}},
		{"crypt", cryptOpts()},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			vol := f.volume(t, "rs-"+tc.typ, tc.opts...)
			a := startC(t, f.name("rs-"+tc.typ+"-a"), []string{"-v", vol + ":/data"}, "sh", "-c", "echo from-a > /data/a && sync && exec sleep 3600")
			eventually(t, 10*time.Second, "first container wrote", func() error {
				_, err := dockerE(t, "exec", a, "cat", "/data/a")
				return err
			})
			f.restart(t)
			wantStatus(t, vol, "leases", "1")
			out, err := dockerE(t, runArgs(false, "", []string{"-v", vol + ":/data"},
				[]string{"sh", "-c", "cat /data/a; echo from-b > /data/b && sync"})...)
			if err != nil {
				// Refusing is acceptable; say so in the log.
				t.Logf("after the restart a second container was refused: %v", err)
				removeContainer(t, a)
				wantStatus(t, vol, "leases", "0")
				return
			}
			if out != "from-a" {
				t.Errorf("after a plugin restart a new container mounted another instance of %s volume: it read %q, want from-a (the running container's data)", tc.typ, out)
			}
			if got, _ := dockerE(t, "exec", a, "sh", "-c", "cat /data/b 2>&1"); got != "from-b" {
				t.Errorf("the container started before the restart does not see the new container's write: %q", got)
			}
			removeContainer(t, a)
			wantStatus(t, vol, "leases", "0")
			if tc.typ == "crypt" {
				if got := runC(t, []string{"-v", vol + ":/data"}, "sh", "-c", "cat /data/a /data/b 2>&1"); got != "from-a\nfrom-b" {
					t.Errorf("after both containers left the crypt volume holds %q, want from-a and from-b", got)
				}
			}
		})
	}
}

// After dockerd restarts, every volume is still listed and mountable, and
// persistent data is still there.
func testDockerdRestart(t *testing.T, f *fixture) {
	local := f.volume(t, "dr-local", "--opt", "type=local", "--label", "hfe2e=dr")
	tmp := f.volume(t, "dr-tmpfs", "--opt", "type=tmpfs", "--opt", "size=4m")
	runC(t, []string{"-v", local + ":/data"}, "sh", "-c", "echo survived > /data/f")
	restartDockerd(t)
	eventually(t, 60*time.Second, "volumes listed after the dockerd restart", func() error {
		got := volumeNames(t, "driver="+f.driver)
		for _, v := range []string{local, tmp} {
			if !slices.Contains(got, v) {
				return fmt.Errorf("%s missing from %v", v, got)
			}
		}
		return nil
	})
	if got := docker(t, "volume", "inspect", "--format", `{{index .Labels "hfe2e"}} {{index .Options "type"}}`, local); got != "dr local" {
		t.Errorf("labels/options after the restart: %q", got)
	}
	got := runC(t, []string{"-v", local + ":/data", "-v", tmp + ":/scratch"}, "sh", "-c", "cat /data/f && echo ok > /scratch/f && cat /scratch/f")
	if got != "survived\nok" {
		t.Errorf("after the dockerd restart the volumes read %q", got)
	}
	wantStatus(t, local, "mounted", "false", "leases", "0")
}

func restartDockerd(t *testing.T) {
	t.Helper()
	start := time.Now()
	out, err := run(context.Background(), nil, filepath.Join(repoRoot, "hack", "docker.sh"), "restart")
	if err != nil {
		t.Fatalf("restarting dockerd: %v\n%s", err, out)
	}
	t.Logf("dockerd restarted in %s", time.Since(start).Round(100*time.Millisecond))
}

// ---- compose -------------------------------------------------------------------

func composeFile() string { return filepath.Join(repoRoot, "e2e", "testdata", "compose.yaml") }

// compose runs the compose tool on testdata/compose.yaml as project p.
func compose(t *testing.T, f *fixture, p string, args ...string) (string, error) {
	t.Helper()
	full := append(append([]string{}, composeCmd[1:]...), append([]string{"-f", composeFile(), "-p", p}, args...)...)
	env := []string{"HOLDFAST_DRIVER=" + f.driver, "HOLDFAST_IMAGE=" + testImage}
	t.Logf("$ HOLDFAST_DRIVER=%s %s %s", f.driver, composeCmd[0], strings.Join(full, " "))
	return run(context.Background(), env, composeCmd[0], full...)
}

func mustCompose(t *testing.T, f *fixture, p string, args ...string) string {
	t.Helper()
	out, err := compose(t, f, p, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func composeCleanup(t *testing.T, f *fixture, p string, profiles ...string) {
	t.Cleanup(func() {
		args := append(profiles, "down", "-v", "--remove-orphans", "-t", "1")
		if _, err := compose(t, f, p, args...); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, v := range volumeNames(t, "label=com.docker.compose.project="+p) {
			removeVolume(t, v)
		}
	})
}

// A compose project with local and tmpfs volumes: data of the local one
// survives down and up, the tmpfs one starts empty, and down -v removes both.
func testCompose(t *testing.T, f *fixture) {
	p := "hfe2e-" + f.kind
	composeCleanup(t, f, p)
	mustCompose(t, f, p, "up", "-d")
	mustCompose(t, f, p, "exec", "-T", "app", "sh", "-c", "echo persisted > /data/f && echo scratch > /scratch/f")
	vols := volumeNames(t, "label=com.docker.compose.project="+p)
	slices.Sort(vols)
	// Compose v1 also creates volumes of services its profiles leave out.
	if want := []string{p + "_data", p + "_scratch"}; !slices.Equal(slices.DeleteFunc(slices.Clone(vols), func(v string) bool {
		return v == p+"_secrets" && composeCmd[0] == "docker-compose"
	}), want) {
		t.Errorf("compose volumes %v, want %v", vols, want)
	}
	for _, v := range vols {
		if got := docker(t, "volume", "inspect", "--format", "{{.Driver}}", v); got != f.driver {
			t.Errorf("%s has driver %q, want %q", v, got, f.driver)
		}
	}
	if got := docker(t, "volume", "inspect", "--format", `{{index .Options "type"}} {{index .Options "size"}}`, p+"_scratch"); got != "tmpfs 16m" {
		t.Errorf("scratch volume options: %q, want type tmpfs, size 16m", got)
	}
	if got := mustCompose(t, f, p, "exec", "-T", "app", "stat", "-c", "%u:%g %a", "/data"); got != "1000:1000 750" {
		t.Errorf("data volume root %q, want 1000:1000 750 from driver_opts", got)
	}
	mustCompose(t, f, p, "down", "-t", "1")
	mustCompose(t, f, p, "up", "-d")
	if got := mustCompose(t, f, p, "exec", "-T", "app", "cat", "/data/f"); got != "persisted" {
		t.Errorf("after down and up the local volume reads %q", got)
	}
	if got := mustCompose(t, f, p, "exec", "-T", "app", "ls", "-A", "/scratch"); got != "" {
		t.Errorf("after down and up the tmpfs volume holds %q", got)
	}
	mustCompose(t, f, p, "down", "-v", "-t", "1")
	if vols := volumeNames(t, "label=com.docker.compose.project="+p); len(vols) > 0 {
		t.Errorf("down -v left volumes %v", vols)
	}
	if listed := volumeNames(t, "driver="+f.driver); len(listed) > 0 {
		t.Errorf("after down -v the driver still lists %v", listed)
	}
}

// The compose file's crypt volume (profile "crypt") keeps its data across
// down and up.
func testComposeCrypt(t *testing.T, f *fixture) {
	p := "hfe2e-" + f.kind + "-crypt"
	writeKey(t, f)
	composeCleanup(t, f, p, "--profile", "crypt")
	mustCompose(t, f, p, "--profile", "crypt", "up", "-d", "vault")
	mustCompose(t, f, p, "--profile", "crypt", "exec", "-T", "vault", "sh", "-c", "echo sealed > /secrets/f")
	mustCompose(t, f, p, "--profile", "crypt", "down", "-t", "1")
	mustCompose(t, f, p, "--profile", "crypt", "up", "-d", "vault")
	if got := mustCompose(t, f, p, "--profile", "crypt", "exec", "-T", "vault", "cat", "/secrets/f"); got != "sealed" {
		t.Errorf("after down and up the crypt volume reads %q", got)
	}
	mustCompose(t, f, p, "--profile", "crypt", "down", "-v", "-t", "1")
}

// ---- swarm ---------------------------------------------------------------------

// A single-node swarm stack uses a holdfast volume with the stack's options.
func testSwarm(t *testing.T, f *fixture) {
	if state := docker(t, "info", "--format", "{{.Swarm.LocalNodeState}}"); state != "inactive" {
		t.Skipf("this dockerd is already in swarm mode (%s): not touching it", state)
	}
	hadGwbridge := func() bool { _, err := dockerE(t, "network", "inspect", "docker_gwbridge"); return err == nil }()
	docker(t, "swarm", "init", "--advertise-addr", "127.0.0.1")
	t.Cleanup(func() {
		if _, err := dockerE(t, "swarm", "leave", "--force"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if !hadGwbridge {
			_, _ = dockerE(t, "network", "rm", "docker_gwbridge")
		}
	})
	stack := "hfe2e" + f.kind
	vol := stack + "_data"
	env := []string{"HOLDFAST_DRIVER=" + f.driver, "HOLDFAST_IMAGE=" + testImage}
	stackFile := filepath.Join(repoRoot, "e2e", "testdata", "stack.yaml")
	t.Logf("$ HOLDFAST_DRIVER=%s docker stack deploy -c %s %s", f.driver, stackFile, stack)
	if out, err := run(context.Background(), env, "docker", "stack", "deploy", "-c", stackFile, stack); err != nil {
		t.Fatal(err)
	} else {
		t.Log(out)
	}
	t.Cleanup(func() {
		_, _ = dockerE(t, "stack", "rm", stack)
		eventually(t, 30*time.Second, "stack containers gone", func() error {
			if ids := mustOut(dockerE(t, "ps", "-aq", "--filter", "label=com.docker.stack.namespace="+stack)); ids != "" {
				return fmt.Errorf("containers %s", ids)
			}
			return nil
		})
		// dockerd releases a task's volume reference a moment after the
		// container is gone.
		eventually(t, 20*time.Second, "stack volume removed", func() error {
			_, err := dockerE(t, "volume", "rm", vol)
			if err != nil && !strings.Contains(err.Error(), "no such volume") {
				return err
			}
			return nil
		})
	})
	var c string
	eventually(t, 60*time.Second, "the stack's task runs", func() error {
		c = mustOut(dockerE(t, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+stack+"_writer"))
		if c == "" {
			ps, _ := dockerE(t, "service", "ps", "--no-trunc", stack+"_writer")
			return fmt.Errorf("no running task; service ps:\n%s", ps)
		}
		return nil
	})
	eventually(t, 10*time.Second, "the task wrote to its volume", func() error {
		if got, err := dockerE(t, "exec", c, "cat", "/data/hello"); err != nil || got != "swarm-ok" {
			return fmt.Errorf("read %q, %v", got, err)
		}
		return nil
	})
	got := docker(t, "volume", "inspect", "--format",
		`{{.Driver}} {{index .Options "type"}} {{index .Options "mode"}} {{index .Options "gid"}} {{index .Labels "com.docker.stack.namespace"}}`, vol)
	if want := f.driver + " local 0770 1000 " + stack; got != want {
		t.Errorf("stack volume: %q, want %q (driver, options type mode gid, stack label)", got, want)
	}
	wantStatus(t, vol, "type", "local", "mounted", "true", "leases", "1")
	if got := docker(t, "exec", c, "stat", "-c", "%g %a", "/data"); got != "1000 770" {
		t.Errorf("stack volume root %q, want gid 1000 mode 770", got)
	}
}

// A volume created with --opt from= holds a copy of another volume's
// files (owners, modes, a sparse file) as they were at the create, the
// source in use or not; the same create again copies nothing, and a
// source being copied from cannot be removed while a container uses it.
func testFrom(t *testing.T, f *fixture) {
	src := f.volume(t, "from-src")
	runC(t, []string{"-v", src + ":/data"}, "sh", "-c",
		"echo one > /data/f && mkdir /data/d && echo two > /data/d/g && chown -R 1234:5678 /data/d && chmod 0710 /data/d && "+
			"dd if=/dev/zero of=/data/sparse bs=1 count=1 seek=104857599 2>/dev/null")
	cp := f.volume(t, "from-copy", "--opt", "from="+src)
	wantStatus(t, cp, "from", src, "fromCopy", "exact", "mounted", "false", "leases", "0")
	wantStatus(t, src, "mounted", "false", "leases", "0")
	check := "cat /data/f /data/d/g && stat -c '%u:%g %a' /data/d && stat -c '%s' /data/sparse && du -k /data/sparse | cut -f1"
	got := runC(t, []string{"-v", cp + ":/data"}, "sh", "-c", check)
	if want := "one\ntwo\n1234:5678 710\n104857600"; !strings.HasPrefix(got, want) {
		t.Errorf("the copy holds %q, want it to start with %q", got, want)
	}
	if lines := strings.Split(got, "\n"); len(lines) != 5 || len(lines[4]) > 3 {
		t.Errorf("the 100 MiB sparse file is not sparse in the copy: du -k says %q", got)
	}

	// The source in use: a copy of what it held at the create.
	keeper := startC(t, f.name("from-keeper"), []string{"-v", src + ":/data"}, "sh", "-c", "echo three > /data/h && exec sleep 3600")
	eventually(t, 10*time.Second, "the keeper wrote its file", func() error {
		if got := execC(t, keeper, "cat", "/data/h"); got != "three" {
			return fmt.Errorf("read %q", got)
		}
		return nil
	})
	live := f.volume(t, "from-live", "--opt", "type=loop", "--opt", "size=32m", "--opt", "from="+src)
	if got := runC(t, []string{"-v", live + ":/data"}, "cat", "/data/h", "/data/f"); got != "three\none" {
		t.Errorf("a copy of a volume in use holds %q, want its files", got)
	}
	wantStatus(t, src, "mounted", "true", "leases", "1")
	execC(t, keeper, "sh", "-c", "echo later > /data/later")
	docker(t, "volume", "create", "--driver", f.driver, "--opt", "type=loop", "--opt", "size=32m", "--opt", "from="+src, live)
	if got := runC(t, []string{"-v", live + ":/data"}, "ls", "/data"); strings.Contains(got, "later") {
		t.Errorf("the same create again copied the source again: %q", got)
	}
	out := dockerFails(t, "volume", "create", "--driver", f.driver, "--opt", "from="+f.name("nope"), f.name("from-bad"))
	if !strings.Contains(out, "no such volume") {
		t.Errorf("from= of a missing volume: %s", out)
	}

	// compose driver_opts, the source in use.
	p := f.name("from-compose")
	env := []string{"FROM_SOURCE=" + src}
	dropinDown(t, "from.yaml", p, f.driver, env)
	dropinCompose(t, "from.yaml", p, f.driver, env, "up", "-d")
	copied := p + "_copy"
	wantStatus(t, copied, "from", src, "type", "loop")
	if got := runC(t, []string{"-v", copied + ":/data"}, "cat", "/data/f", "/data/later"); got != "one\nlater" {
		t.Errorf("the compose volume made from %s holds %q", src, got)
	}
}
