package main

import (
	"bytes"
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
		{[]string{"extra"}, "", `unexpected argument "extra"`},
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

func TestEnvironmentConfiguresTheDaemon(t *testing.T) {
	requireRoot(t)
	root := rootDir(t)
	mroot := filepath.Join(root, "elsewhere")
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
