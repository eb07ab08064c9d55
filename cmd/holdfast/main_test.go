package main

import (
	"bytes"
	"io"
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

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/plugintest"
)

// binary is the holdfast built once for the process tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "holdfast-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "holdfast")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is one running holdfast process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	root   string
	sock   string
	out    *syncBuffer
	client *plugintest.Client
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the plugin mounts volumes (make test runs as root)")
	}
}

// startProc starts holdfast on root and waits until it answers.
func startProc(t *testing.T, root string, args ...string) *proc {
	t.Helper()
	p := launch(t, root, args...)
	if err := p.client.WaitReady(10 * time.Second); err != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		t.Fatalf("holdfast did not come up: %v\n%s", err, p.out)
	}
	return p
}

func launch(t *testing.T, root string, args ...string) *proc {
	t.Helper()
	sock := filepath.Join(root, "holdfast.sock")
	p := &proc{t: t, root: root, sock: sock, out: &syncBuffer{}, client: plugintest.NewClient(sock)}
	p.cmd = exec.Command(binary, append([]string{"--root", root, "--socket", sock}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	return p
}

func (p *proc) kill9() {
	p.t.Helper()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGKILL))
	p.cmd.Wait()
}

func (p *proc) call(endpoint string, req, resp any) {
	p.t.Helper()
	require.NoError(p.t, p.client.Call(endpoint, req, resp), "%s %+v", endpoint, req)
}

func (p *proc) get(name string) *volume.Volume {
	p.t.Helper()
	var res volume.GetResponse
	p.call("VolumeDriver.Get", volume.GetRequest{Name: name}, &res)
	return res.Volume
}

func (p *proc) mount(name, id string) string {
	p.t.Helper()
	var res volume.MountResponse
	p.call("VolumeDriver.Mount", volume.MountRequest{Name: name, ID: id}, &res)
	return res.Mountpoint
}

// rootDir is a temporary --root whose mounts are detached at the end.
func rootDir(t *testing.T) string {
	root := t.TempDir()
	t.Cleanup(func() {
		mounts, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
		for i := len(mounts) - 1; i >= 0; i-- {
			unix.Unmount(mounts[i].Mountpoint, unix.MNT_DETACH)
		}
	})
	return root
}

func TestLocalDataSurvivesKill9(t *testing.T) {
	requireRoot(t)
	root := rootDir(t)
	p := startProc(t, root)
	p.call("VolumeDriver.Create", volume.CreateRequest{Name: "db"}, nil)
	mp := p.mount("db", "c1")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "table"), []byte("rows"), 0o600))
	p.kill9()

	p = startProc(t, root)
	v := p.get("db")
	assert.Equal(t, true, v.Status["mounted"])
	assert.EqualValues(t, 1, v.Status["leases"])
	got, err := os.ReadFile(filepath.Join(mp, "table"))
	require.NoError(t, err)
	assert.Equal(t, "rows", string(got))
	p.call("VolumeDriver.Unmount", volume.UnmountRequest{Name: "db", ID: "c1"}, nil)
	p.kill9()

	p = startProc(t, root)
	mp = p.mount("db", "c2")
	got, err = os.ReadFile(filepath.Join(mp, "table"))
	require.NoError(t, err)
	assert.Equal(t, "rows", string(got), "data kept across unmount, kill -9 and restart")
}

func TestMountedTmpfsIsAdoptedAfterKill9(t *testing.T) {
	requireRoot(t)
	root := rootDir(t)
	p := startProc(t, root)
	p.call("VolumeDriver.Create", volume.CreateRequest{Name: "scratch", Options: map[string]string{"type": "tmpfs", "size": "4m"}}, nil)
	mp := p.mount("scratch", "c1")
	p.mount("scratch", "c2")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "live"), []byte("in ram"), 0o600))
	p.kill9()

	p = startProc(t, root)
	v := p.get("scratch")
	assert.Equal(t, true, v.Status["mounted"])
	assert.EqualValues(t, 2, v.Status["leases"])
	mounts, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	require.NoError(t, err)
	assert.Len(t, mounts, 1, "adopted, not mounted over")
	got, err := os.ReadFile(filepath.Join(mp, "live"))
	require.NoError(t, err)
	assert.Equal(t, "in ram", string(got))

	err = p.client.Call("VolumeDriver.Remove", volume.RemoveRequest{Name: "scratch"}, nil)
	require.ErrorContains(t, err, "volume scratch is in use by 2 mounts")

	p.call("VolumeDriver.Unmount", volume.UnmountRequest{Name: "scratch", ID: "c1"}, nil)
	p.call("VolumeDriver.Unmount", volume.UnmountRequest{Name: "scratch", ID: "c2"}, nil)
	mounts, err = mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	require.NoError(t, err)
	assert.Empty(t, mounts, "unmounted at the last release")
	p.call("VolumeDriver.Remove", volume.RemoveRequest{Name: "scratch"}, nil)
}

func TestSecondInstanceIsRefused(t *testing.T) {
	requireRoot(t)
	root := rootDir(t)
	startProc(t, root)
	second := exec.Command(binary, "--root", root, "--socket", filepath.Join(root, "other.sock"))
	out, err := second.CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "another holdfast is already running with --root "+root)
}

func TestSIGTERMLeavesVolumesMounted(t *testing.T) {
	requireRoot(t)
	root := rootDir(t)
	p := startProc(t, root)
	p.call("VolumeDriver.Create", volume.CreateRequest{Name: "busy", Options: map[string]string{"type": "tmpfs"}}, nil)
	mp := p.mount("busy", "c1")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, p.cmd.Wait(), "clean exit:\n%s", p.out)
	assert.NoFileExists(t, p.sock, "socket removed on shutdown")
	mounted, err := mountinfo.Mounted(mp)
	require.NoError(t, err)
	assert.True(t, mounted, "volumes in use stay mounted")
	assert.Contains(t, p.out.String(), "shutting down")

	p = startProc(t, root)
	assert.EqualValues(t, 1, p.get("busy").Status["leases"])
}

func TestStaleSocketFromACrashIsReplaced(t *testing.T) {
	requireRoot(t)
	root := rootDir(t)
	p := startProc(t, root)
	p.kill9()
	require.FileExists(t, p.sock, "kill -9 leaves the socket file")
	startProc(t, root)
}

func TestFlags(t *testing.T) {
	out, err := exec.Command(binary, "--version").CombinedOutput()
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(out), "holdfast "))

	out, err = exec.Command(binary, "--help").CombinedOutput()
	require.NoError(t, err)
	for _, flag := range []string{"-socket", "-socket-group", "-root", "-mount-root", "-scope", "-log-level", "-log-format", "-tmpfs-size", "-key-dir", "-nfs-timeout", "-version", "HOLDFAST_"} {
		assert.Contains(t, string(out), flag)
	}

	tests := []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--scope", "cluster"}, "", `--scope (HOLDFAST_SCOPE) "cluster": want local or global`},
		{nil, "HOLDFAST_SCOPE=cluster", `--scope (HOLDFAST_SCOPE) "cluster": want local or global`},
		{[]string{"--log-format", "xml"}, "", "want text or json"},
		{[]string{"--log-level", "loud"}, "", "want debug, info, warn or error"},
		{[]string{"--tmpfs-size", "0"}, "", "--tmpfs-size (HOLDFAST_TMPFS_SIZE) \"0\""},
		{nil, "HOLDFAST_TMPFS_SIZE=huge", "--tmpfs-size (HOLDFAST_TMPFS_SIZE) \"huge\""},
		{[]string{"--root", "relative"}, "", "want an absolute path"},
		{[]string{"--bogus"}, "", "flag provided but not defined: -bogus"},
		{[]string{"--nfs-timeout", "5m"}, "", "--nfs-timeout (HOLDFAST_NFS_TIMEOUT) 5m0s: want 1s to 100s"},
		{nil, "HOLDFAST_NFS_TIMEOUT=soon", `HOLDFAST_NFS_TIMEOUT="soon"`},
		{[]string{"--root", "/srv/hf", "--key-dir", "/srv/hf/keys"}, "", "is inside --root"},
		{[]string{"extra"}, "", `unknown command "extra": the commands are backup, leases, ls, release, restore`},
		{[]string{"--metrics-addr", "9273"}, "", `--metrics-addr (HOLDFAST_METRICS_ADDR) "9273": want host:port such as 127.0.0.1:9273`},
		{nil, "HOLDFAST_METRICS_ADDR=localhost", `--metrics-addr (HOLDFAST_METRICS_ADDR) "localhost": want host:port`},
		{[]string{"--metrics-addr", "127.0.0.1:http"}, "", "want a port from 1 to 65535"},
		{[]string{"--metrics-addr", "127.0.0.1:0"}, "", "want a port from 1 to 65535"},
		{[]string{"--metrics-addr", "127.0.0.1:70000"}, "", "want a port from 1 to 65535"},
		{[]string{"--metrics-addr", "::1:9273"}, "", "want host:port"},
		{[]string{"--metrics-addr", "/run/metrics.sock:1"}, "", "want a host name or IP address"},
	}
	for _, tt := range tests {
		cmd := exec.Command(binary, tt.args...)
		if tt.env != "" {
			cmd.Env = append(os.Environ(), tt.env)
		}
		out, err := cmd.CombinedOutput()
		assert.Error(t, err, "%v %s", tt.args, tt.env)
		assert.Contains(t, string(out), tt.want, "%v %s", tt.args, tt.env)
	}
}

// TestMetricsAddrInUseFailsStart: a port already taken fails the start,
// naming the flag; a free one serves /metrics.
func TestMetricsAddrInUseFailsStart(t *testing.T) {
	requireRoot(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	p := launch(t, rootDir(t), "--metrics-addr", taken.Addr().String())
	err = p.cmd.Wait()
	require.Error(t, err)
	assert.Contains(t, p.out.String(), "--metrics-addr (HOLDFAST_METRICS_ADDR)")
	assert.Contains(t, p.out.String(), "listen tcp "+taken.Addr().String())
	assert.Contains(t, p.out.String(), "address already in use")

	addr := taken.Addr().String()
	taken.Close()
	p = startProc(t, rootDir(t), "--metrics-addr", addr)
	var list volume.ListResponse
	p.call("VolumeDriver.List", struct{}{}, &list)
	res, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	assert.Contains(t, string(body), `holdfast_requests_total{op="List",result="ok"} 1`)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, p.cmd.Wait())
}

func TestEnvironmentConfiguresTheDaemon(t *testing.T) {
	requireRoot(t)
	// --mount-root outside --root: only <root>/mounts may be inside it.
	base := rootDir(t)
	root, mroot := filepath.Join(base, "root"), filepath.Join(base, "elsewhere")
	sock := filepath.Join(root, "env.sock")
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), "HOLDFAST_ROOT="+root, "HOLDFAST_SOCKET="+sock,
		"HOLDFAST_MOUNT_ROOT="+mroot, "HOLDFAST_SCOPE=global", "HOLDFAST_TMPFS_SIZE=2m", "HOLDFAST_LOG_FORMAT=json")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	c := plugintest.NewClient(sock)
	require.NoError(t, c.WaitReady(10*time.Second), "%s", out)
	var caps volume.CapabilitiesResponse
	require.NoError(t, c.Call("VolumeDriver.Capabilities", struct{}{}, &caps))
	assert.Equal(t, "global", caps.Capabilities.Scope)
	require.NoError(t, c.Call("VolumeDriver.Create", volume.CreateRequest{Name: "tv", Options: map[string]string{"type": "tmpfs"}}, nil))
	var mres volume.MountResponse
	require.NoError(t, c.Call("VolumeDriver.Mount", volume.MountRequest{Name: "tv", ID: "x"}, &mres))
	assert.Equal(t, filepath.Join(mroot, "tv"), mres.Mountpoint)
	var gres volume.GetResponse
	require.NoError(t, c.Call("VolumeDriver.Get", volume.GetRequest{Name: "tv"}, &gres))
	assert.EqualValues(t, 2<<20, gres.Volume.Status["size"])
	assert.Contains(t, out.String(), `"op":"Mount"`, "json logs")
}

// TestOverlappingPathsAreRefused: --root, --mount-root and --key-dir must
// not overlap however they are spelled (symlinks, "..", trailing slashes),
// except for the default --mount-root <root>/mounts; the error names both
// flags with their variables.
func TestOverlappingPathsAreRefused(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "volumes"), 0o700))
	elsewhere := filepath.Join(base, "elsewhere")
	require.NoError(t, os.Mkdir(elsewhere, 0o700))
	link := func(name, target string) string {
		p := filepath.Join(base, name)
		require.NoError(t, os.Symlink(target, p))
		return p
	}
	rootAlias := link("root-alias", root)                           // another name for --root
	relAlias := link("rel-alias", "root")                           // the same, as a relative link
	keysInRoot := link("keys-in-root", filepath.Join(root, "keys")) // dangling: root/keys is not made yet
	volumesLink := link("volumes-link", filepath.Join(root, "volumes"))
	outside := link("outside", elsewhere)

	const (
		rootFlag  = "--root (HOLDFAST_ROOT)"
		mountFlag = "--mount-root (HOLDFAST_MOUNT_ROOT)"
		keyFlag   = "--key-dir (HOLDFAST_KEY_DIR)"
	)
	tests := []struct {
		name                  string
		root, mountRoot, keys string
		want                  []string // error parts; none: accepted
	}{
		{"defaults apart", root, "", filepath.Join(base, "keys"), nil},
		{"default mount root spelled out", root, filepath.Join(root, "mounts"), filepath.Join(base, "keys"), nil},
		{"default mount root through a symlink", root, filepath.Join(rootAlias, "mounts"), filepath.Join(base, "keys"), nil},
		{"all apart", root, filepath.Join(elsewhere, "mnt"), filepath.Join(base, "keys"), nil},
		{"a name starting with .. beside root", root, "", filepath.Join(base, "..keys"), nil},
		{"a sibling sharing a prefix", root, root + "-mnt", root + "keys", nil},
		{"symlink to a directory outside", root, filepath.Join(outside, "mnt"), filepath.Join(base, "keys"), nil},

		{"mount root is root", root, root, filepath.Join(base, "keys"), []string{mountFlag, rootFlag, "same directory"}},
		{"mount root is root with a trailing slash", root, root + "/", filepath.Join(base, "keys"), []string{mountFlag, rootFlag, "same directory"}},
		{"mount root is root through a symlink", root, rootAlias, filepath.Join(base, "keys"), []string{mountFlag, rootFlag, "through symlinks"}},
		{"mount root inside root", root, filepath.Join(root, "elsewhere"), filepath.Join(base, "keys"), []string{mountFlag, "is inside " + rootFlag, "leave --mount-root unset"}},
		{"mount root is root's volumes", root, filepath.Join(root, "volumes"), filepath.Join(base, "keys"), []string{mountFlag, rootFlag}},
		{"mount root is root's volumes through a symlink", root, volumesLink, filepath.Join(base, "keys"), []string{mountFlag, rootFlag}},
		{"mount root below the default one", root, filepath.Join(root, "mounts", "x"), filepath.Join(base, "keys"), []string{mountFlag, rootFlag}},
		{"root inside mount root", root, base, filepath.Join(elsewhere, "keys"), []string{rootFlag, "is inside " + mountFlag}},
		{"root inside mount root through a symlink", filepath.Join(rootAlias, "sub"), root, filepath.Join(elsewhere, "keys"), []string{rootFlag, "is inside " + mountFlag}},

		{"key dir is root", root, "", root, []string{keyFlag, "is inside " + rootFlag, "keep keys apart"}},
		{"key dir inside root", root, "", filepath.Join(root, "keys"), []string{keyFlag, "is inside " + rootFlag, "outside --root"}},
		{"key dir inside root named ..keys", root, "", root + "/..keys", []string{keyFlag, "is inside " + rootFlag}},
		{"key dir inside root through ..", root, "", filepath.Join(elsewhere, "..", "root", "keys"), []string{keyFlag, rootFlag}},
		{"key dir inside root through a symlink", root, "", filepath.Join(rootAlias, "keys"), []string{keyFlag, rootFlag, "through symlinks"}},
		{"key dir inside root through a relative symlink", root, "", filepath.Join(relAlias, "keys"), []string{keyFlag, rootFlag}},
		{"key dir is a dangling symlink into root", root, "", keysInRoot, []string{keyFlag, rootFlag}},
		{"key dir inside root through a symlinked root", rootAlias, "", filepath.Join(root, "keys"), []string{keyFlag, rootFlag}},
		{"root inside key dir", root, filepath.Join(elsewhere, "mnt"), base, []string{rootFlag, "is inside " + keyFlag}},
		{"key dir inside mount root", root, filepath.Join(elsewhere, "mnt"), filepath.Join(elsewhere, "mnt", "keys"), []string{keyFlag, "is inside " + mountFlag}},
		{"key dir inside mount root through a symlink", root, filepath.Join(elsewhere, "mnt"), filepath.Join(outside, "mnt", "keys"), []string{keyFlag, mountFlag}},
		{"key dir is mount root", root, filepath.Join(elsewhere, "mnt"), filepath.Join(elsewhere, "mnt"), []string{keyFlag, mountFlag}},
		{"mount root inside key dir", root, filepath.Join(elsewhere, "keys", "mnt"), filepath.Join(elsewhere, "keys"), []string{mountFlag, "is inside " + keyFlag}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"--root", tt.root, "--key-dir", tt.keys}
			if tt.mountRoot != "" {
				args = append(args, "--mount-root", tt.mountRoot)
			}
			_, err := parseFlags(args)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			for _, part := range tt.want {
				assert.Contains(t, err.Error(), part)
			}
		})
	}
}
