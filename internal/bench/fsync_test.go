package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/plugintest"
)

// syncCalls are the system calls that make data durable.
const syncCalls = "fsync,fdatasync,sync_file_range,syncfs,msync"

// fsyncBudget is every fsync-class call holdfast makes for each request,
// by type, as "call file" ($V the volume's name), in order. README's "How
// it keeps volumes safe" says why each is needed. A bbolt commit is two
// fdatasyncs of holdfast.db (its pages, then its meta page).
var fsyncBudget = map[string]map[string][]string{
	"local": {
		"Create":  slices.Concat([]string{createIntent, "fsync root/volumes/$V/data"}, volumeDir, commit),
		"Mount":   commit,
		"Unmount": commit,
		"Remove":  append(removeIntent, commit...),
	},
	"tmpfs": {
		"Create":  slices.Concat([]string{createIntent}, volumeDir, commit),
		"Mount":   commit,
		"Unmount": commit,
		"Remove":  append(removeIntent, commit...),
	},
	"loop": {
		"Create":  slices.Concat([]string{createIntent, "fsync root/volumes/$V/backing.img"}, volumeDir, commit),
		"Mount":   commit,
		"Unmount": commit,
		"Remove":  append(removeIntent, commit...),
	},
	"crypt": {
		"Create":  slices.Concat([]string{createIntent, "fsync keys/$V.key", "fsync keys", "fsync root/volumes/$V/backing.img"}, volumeDir, commit),
		"Mount":   commit,
		"Unmount": commit,
		"Remove":  append(append(removeIntent, "fsync keys/$V.key", "fsync keys"), commit...),
	},
}

var (
	// The create intent is synced before its rename; what Create made,
	// and the volume's directory entry, before the commit.
	createIntent = "fsync root/volumes/$V/.holdfast-intent.tmp"
	volumeDir    = []string{"fsync root/volumes/$V", "fsync root/volumes"}
	commit       = []string{"fdatasync root/holdfast.db", "fdatasync root/holdfast.db"}
	removeIntent = []string{"fsync root/volumes/$V/.holdfast-removing", "fsync root/volumes/$V"}
)

// TestFsyncBudget counts, with strace on the real binary, the fsync-class
// calls of Create, Mount, Unmount and Remove of each type this host runs
// (crypt with fscrypt), each request on its own connection, and checks
// them against fsyncBudget: one more is a cost nobody stated, one fewer a
// durability step lost. The fsyncs mkfs makes of a crypt or loop volume's
// loop device are its own, logged and not counted. make unit installs strace.
func TestFsyncBudget(t *testing.T) {
	requireRoot(t)
	strace, err := exec.LookPath("strace")
	require.NoError(t, err, "strace is missing: make unit installs it (hack/deps.sh strace)")
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	p := &Plugin{Bin: strace, Dir: dir, Socket: filepath.Join(dir, "holdfast.sock")}
	p.Client = plugintest.NewClient(p.Socket)
	p.args = []string{"-f", "-qq", "-y", "-o", trace, "-e", "trace=" + syncCalls + ",accept4", holdfastBin,
		"--root", filepath.Join(dir, "root"), "--mount-root", filepath.Join(dir, "mounts"),
		"--key-dir", filepath.Join(dir, "keys"), "--socket", p.Socket}
	_, err = p.Start()
	require.NoError(t, err)

	type req struct{ typ, op string }
	var reqs []req
	call := func(typ, op string, body map[string]any) error {
		reqs = append(reqs, req{typ, op})
		// A new connection per request: accept4 in the trace marks where
		// each request begins.
		return plugintest.NewClient(p.Socket).Call("VolumeDriver."+op, body, nil)
	}
	opts := map[string]map[string]string{
		"local": {}, "tmpfs": {"type": "tmpfs"}, "loop": {"type": "loop", "size": "64m"},
		"crypt": {"type": "crypt", "engine": "fscrypt", "size": "64m"},
	}
	skipped := map[string]string{}
	for _, typ := range []string{"local", "tmpfs", "loop", "crypt"} {
		name := "budget-" + typ
		if err := call(typ, "Create", map[string]any{"Name": name, "Opts": opts[typ]}); err != nil {
			require.Equal(t, "crypt", typ, err)
			skipped[typ] = err.Error()
			continue
		}
		require.NoError(t, call(typ, "Mount", map[string]any{"Name": name, "ID": "m1"}))
		require.NoError(t, call(typ, "Unmount", map[string]any{"Name": name, "ID": "m1"}))
		require.NoError(t, call(typ, "Remove", map[string]any{"Name": name}))
	}
	stopTraced(t, p)

	got, mkfs := parseTrace(t, trace, dir)
	require.Len(t, got, len(reqs)+2, "start-up, Plugin.Activate, then one part per request")
	t.Logf("start-up on a new --root (bbolt creates the database): %s", strings.Join(got[0], ", "))
	assert.Empty(t, got[1], "Plugin.Activate")
	got = got[2:]
	for i, r := range reqs {
		if skipped[r.typ] != "" {
			continue
		}
		want := []string{}
		for _, c := range fsyncBudget[r.typ][r.op] {
			want = append(want, strings.ReplaceAll(c, "$V", "budget-"+r.typ))
		}
		assert.Equal(t, want, got[i], "%s %s", r.typ, r.op)
		t.Logf("%s %s: %d: %s", r.typ, r.op, len(got[i]), strings.Join(got[i], ", "))
	}
	t.Logf("mkfs's own fsyncs of the loop device: %d", mkfs)
	for typ, why := range skipped {
		t.Logf("%s not measured on this host: %s", typ, why)
	}
}

// stopTraced stops the holdfast strace runs (SIGTERM, as dockerd stops
// it), then waits for strace to write out the trace.
func stopTraced(t *testing.T, p *Plugin) {
	t.Helper()
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.cmd.Process.Pid, p.cmd.Process.Pid))
	require.NoError(t, err)
	var pid int
	_, err = fmt.Sscan(string(kids), &pid)
	require.NoError(t, err, "holdfast under strace")
	require.NoError(t, syscall.Kill(pid, syscall.SIGTERM))
	p.cmd.Wait()
	p.cmd = nil
	p.log.Close()
}

var traceLine = regexp.MustCompile(`^\d+\s+(?:<\.\.\. )?(\w+)(?: resumed>|\()(.*)$`)
var fdPath = regexp.MustCompile(`^\d+<([^>]*)>`)

// parseTrace splits the trace at each accepted connection and returns
// the sync calls of each part as "call file", file relative to dir, and
// the number of syncs of loop devices (mkfs's).
func parseTrace(t *testing.T, trace, dir string) ([][]string, int) {
	f, err := os.Open(trace)
	require.NoError(t, err)
	defer f.Close()
	segs := [][]string{{}}
	mkfs := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := traceLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		call, rest := m[1], m[2]
		resumed := strings.Contains(sc.Text(), " resumed>")
		if call == "accept4" {
			if !strings.Contains(rest, "<unfinished") && !strings.Contains(rest, "= -1") {
				segs = append(segs, []string{})
			}
			continue
		}
		if resumed {
			continue // counted at its <unfinished ...> line
		}
		path := ""
		if pm := fdPath.FindStringSubmatch(rest); pm != nil {
			path = pm[1]
		}
		if strings.HasPrefix(path, "/dev/loop") {
			mkfs++
			continue
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			rel = path
		}
		segs[len(segs)-1] = append(segs[len(segs)-1], call+" "+rel)
	}
	require.NoError(t, sc.Err())
	return segs, mkfs
}
