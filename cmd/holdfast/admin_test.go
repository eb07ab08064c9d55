package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/treetest"
)

// startAdminProc starts a holdfast with a key directory of its own.
func startAdminProc(t *testing.T) *proc {
	t.Helper()
	return startProc(t, rootDir(t), "--key-dir", filepath.Join(t.TempDir(), "keys"))
}

// holdfast runs an admin command against p and returns its stdout, its
// stderr and its exit status.
func (p *proc) holdfast(stdin []byte, args ...string) (string, string, int) {
	p.t.Helper()
	cmd := exec.Command(binary, append(args, "--socket", p.sock)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		p.t.Fatalf("run holdfast %v: %v", args, err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

func (p *proc) create(name string, opts map[string]string) {
	p.t.Helper()
	p.call("VolumeDriver.Create", volume.CreateRequest{Name: name, Options: opts}, nil)
}

func (p *proc) unmount(name, id string) {
	p.t.Helper()
	p.call("VolumeDriver.Unmount", volume.UnmountRequest{Name: name, ID: id}, nil)
}

func optArgs(opts map[string]string) []string {
	var args []string
	for k, v := range opts {
		args = append(args, "--opt", k+"="+v)
	}
	return args
}

// TestBackupRestoreBetweenInstances moves a tree of every kind of file
// from one holdfast to another with holdfast backup and holdfast restore,
// for every type that keeps data on the host, with the source in use and
// not.
func TestBackupRestoreBetweenInstances(t *testing.T) {
	requireRoot(t)
	from, to := startAdminProc(t), startAdminProc(t)
	for _, tc := range []struct {
		name string
		opts map[string]string
	}{
		{"local", map[string]string{"type": "local"}},
		{"loop", map[string]string{"type": "loop", "size": "64m"}},
		{"crypt-fscrypt", map[string]string{"type": "crypt", "size": "64m", "engine": "fscrypt"}},
		{"tmpfs", map[string]string{"type": "tmpfs", "size": "64m"}},
	} {
		for _, inUse := range []bool{false, true} {
			if tc.opts["type"] == "tmpfs" && !inUse {
				continue // a tmpfs holds nothing while unmounted
			}
			state := map[bool]string{false: "idle", true: "in-use"}[inUse]
			t.Run(tc.name+"-"+state, func(t *testing.T) {
				name := tc.name + "-" + state
				from.create(name, tc.opts)
				mp := from.mount(name, "c1")
				treetest.Build(t, mp)
				want := treetest.Snapshot(t, mp)
				if !inUse {
					from.unmount(name, "c1")
				}
				file := filepath.Join(t.TempDir(), "backup.tar")
				_, stderr, code := from.holdfast(nil, "backup", name, "-o", file)
				require.Zero(t, code, "backup: %s", stderr)
				if inUse {
					assert.Contains(t, stderr, "live copy")
				} else {
					assert.Empty(t, stderr, "an idle volume's backup is exact: no note")
				}
				var dst string
				if tc.opts["type"] == "tmpfs" {
					to.create(name, tc.opts)
					dst = to.mount(name, "c2")
				}
				stdout, stderr, code := to.holdfast(nil, append([]string{"restore", name, "-i", file}, optArgs(tc.opts)...)...)
				require.Zero(t, code, "restore: %s", stderr)
				assert.Contains(t, stdout, "restored "+name+": ")
				if dst == "" {
					dst = to.mount(name, "c2")
				}
				treetest.RequireSame(t, want, treetest.Snapshot(t, dst))
				treetest.RequireSparse(t, filepath.Join(dst, treetest.SparseName))
			})
		}
	}
}

// TestBackupPipedIntoRestore is the move-between-hosts recipe on one host:
// holdfast backup v | holdfast restore v.
func TestBackupPipedIntoRestore(t *testing.T) {
	requireRoot(t)
	from, to := startAdminProc(t), startAdminProc(t)
	from.create("moved", nil)
	mp := from.mount("moved", "c1")
	treetest.Build(t, mp)
	want := treetest.Snapshot(t, mp)
	from.unmount("moved", "c1")
	sh := exec.Command("sh", "-c", `"$0" backup moved --socket "$1" | "$0" restore moved --socket "$2"`, binary, from.sock, to.sock)
	out, err := sh.CombinedOutput()
	require.NoError(t, err, "%s", out)
	treetest.RequireSame(t, want, treetest.Snapshot(t, to.mount("moved", "c2")))

	stdout, stderr, code := to.holdfast(nil, "ls")
	require.Zero(t, code, stderr)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.Len(t, lines, 2, stdout)
	assert.Regexp(t, `^NAME\s+TYPE\s+SIZE\s+USED\s+MOUNTED\s+LEASES\s+CREATED$`, lines[0])
	assert.Regexp(t, `^moved\s+local\s+-\s+\S+\s+true\s+1\s+\d{4}-`, lines[1])
	stdout, _, code = to.holdfast(nil, "ls", "--format", "json")
	require.Zero(t, code)
	assert.Contains(t, stdout, `"name": "moved"`)

	stdout, stderr, code = to.holdfast(nil, "leases", "moved")
	require.Zero(t, code, stderr)
	assert.Regexp(t, `(?m)^c2\s+\d{4}-\S+\s+dockerd`, stdout)
	stdout, stderr, code = to.holdfast(nil, "release", "moved", "c2")
	require.Zero(t, code, stderr)
	assert.Equal(t, "released c2, the last lease: moved is unmounted\n", stdout)
	assert.Empty(t, to.get("moved").Mountpoint, "unmounted, as dockerd's Unmount would")
}

// TestAdminCommandErrors: every bad argument gets a clear error naming the
// fix, exit status 2 for a bad command line and 1 for a refused request,
// and changes nothing.
func TestAdminCommandErrors(t *testing.T) {
	requireRoot(t)
	p := startAdminProc(t)
	p.create("full", nil)
	mp := p.mount("full", "c1")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("data"), 0o644))
	p.unmount("full", "c1")
	backup := filepath.Join(t.TempDir(), "full.tar")
	_, stderr, code := p.holdfast(nil, "backup", "full", "-o", backup)
	require.Zero(t, code, stderr)
	stream, err := os.ReadFile(backup)
	require.NoError(t, err)
	unreadable := filepath.Join(t.TempDir(), "dir")
	require.NoError(t, os.Mkdir(unreadable, 0o700))
	failedOut := filepath.Join(t.TempDir(), "failed.tar")

	for _, tc := range []struct {
		name  string
		args  []string
		stdin []byte
		code  int
		want  string
	}{
		{"unknown command", []string{"bakup", "full"}, nil, 2, `unknown command "bakup": the commands are backup, leases, ls, release, restore`},
		{"backup without NAME", []string{"backup"}, nil, 2, "missing the volume NAME: usage: holdfast backup NAME"},
		{"restore without NAME", []string{"restore"}, nil, 2, "missing the volume NAME: usage: holdfast restore NAME"},
		{"release without ID", []string{"release", "full"}, nil, 2, "missing the lease ID: usage: holdfast release NAME ID (holdfast leases full lists them)"},
		{"extra argument", []string{"leases", "full", "more"}, nil, 2, `unexpected argument "more": usage: holdfast leases NAME`},
		{"bad --opt", []string{"restore", "new", "--opt", "size"}, stream, 2, `"size" is not key=value: give --opt type=local`},
		{"--opt twice", []string{"restore", "new", "--opt", "type=local", "--opt", "type=tmpfs"}, stream, 2, `"type" is given twice`},
		{"bad --format", []string{"ls", "--format", "yaml"}, nil, 2, `--format "yaml": want table or json`},
		{"unknown volume", []string{"backup", "nope", "-o", failedOut}, nil, 1, "no such volume: nope"},
		{"leases of unknown volume", []string{"leases", "nope"}, nil, 1, "no such volume: nope"},
		{"release of what is not a lease", []string{"release", "full", "abc"}, nil, 1, `"abc" is not a lease on full; holdfast leases full lists them`},
		{"existing target", []string{"restore", "full"}, stream, 1, "volume full exists and holds data; restore into a new name or remove it first"},
		{"unreadable -i", []string{"restore", "new", "-i", filepath.Join(unreadable, "missing.tar")}, nil, 1, "-i: open " + filepath.Join(unreadable, "missing.tar") + ": no such file or directory: give a file holdfast backup wrote"},
		{"-i a directory", []string{"restore", "new", "-i", unreadable}, nil, 1, "is a directory: give a file holdfast backup wrote"},
		{"bad option for the type", []string{"restore", "new", "--opt", "type=loop"}, stream, 1, "size"},
		{"unknown type", []string{"restore", "new", "--opt", "type=zfs"}, stream, 1, "zfs"},
		{"truncated stream", []string{"restore", "new"}, stream[:len(stream)/2], 1, "corrupt or truncated"},
		{"not a tar", []string{"restore", "new"}, []byte("hello, not a tar stream\n"), 1, "corrupt or truncated"},
		{"relative socket", []string{"ls", "--socket", "holdfast.sock"}, nil, 2, `--socket "holdfast.sock": want an absolute path`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			cmd := exec.Command(binary, append(args, "--socket", p.sock)...)
			if tc.name == "relative socket" {
				cmd = exec.Command(binary, args...)
			}
			if tc.stdin != nil {
				cmd.Stdin = bytes.NewReader(tc.stdin)
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.Run()
			t.Logf("exit %d: %s", cmd.ProcessState.ExitCode(), stderr.String())
			assert.Equal(t, tc.code, cmd.ProcessState.ExitCode(), "stderr: %s", stderr.String())
			assert.Contains(t, stderr.String(), tc.want)
			assert.Empty(t, stdout.String())
			assert.NoFileExists(t, failedOut, "a failed backup's -o file is removed")
			var res volume.GetResponse
			assert.Error(t, p.client.Call("VolumeDriver.Get", volume.GetRequest{Name: "new"}, &res), "no volume is left by a failed restore")
		})
	}
	got, err := os.ReadFile(filepath.Join(p.mount("full", "c9"), "f"))
	require.NoError(t, err)
	assert.Equal(t, "data", string(got), "the refused restore left the volume as it was")
}

// openPTY opens a pseudo-terminal and returns its master and slave.
func openPTY(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { master.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetUint32(int(master.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// TestBackupAndTerminals: a tar stream is never written to a terminal, and
// progress goes to stderr only when it is one.
func TestBackupAndTerminals(t *testing.T) {
	requireRoot(t)
	p := startAdminProc(t)
	p.create("vol", nil)
	mp := p.mount("vol", "c1")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), bytes.Repeat([]byte("x"), 1<<20), 0o644))
	p.unmount("vol", "c1")

	master, slave := openPTY(t)
	cmd := exec.Command(binary, "backup", "vol", "--socket", p.sock)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = slave, &stderr
	require.Error(t, cmd.Run())
	assert.Equal(t, 1, cmd.ProcessState.ExitCode())
	assert.Contains(t, stderr.String(), "refusing to write a tar stream to a terminal: give -o FILE, or redirect stdout (holdfast backup vol > vol.tar)")

	file := filepath.Join(t.TempDir(), "vol.tar")
	cmd = exec.Command(binary, "backup", "vol", "-o", file, "--socket", p.sock)
	cmd.Stderr = slave
	require.NoError(t, cmd.Run())
	slave.Close()
	shown, _ := io.ReadAll(master) // EIO once the slave is closed
	assert.Regexp(t, `\rbackup vol: 1\.\d+MiB, [0-9.]+[KMG]?i?B/s +done\r?\n`, string(shown), "progress on a terminal")

	_, quiet, code := p.holdfast(nil, "backup", "vol", "-o", file)
	require.Zero(t, code)
	assert.Empty(t, quiet, "no progress when stderr is not a terminal")
}
