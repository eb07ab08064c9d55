package nfs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
)

// helperEnv names, in the environment of a child process the guest tests
// start from this test binary, the helper it runs instead of the tests;
// helperDirEnv the directory it works in.
const (
	helperEnv    = "HOLDFAST_NFS_HELPER"
	helperDirEnv = "HOLDFAST_NFS_HELPER_DIR"
)

func TestMain(m *testing.M) {
	if d := os.Getenv(helperDirEnv); d != "" {
		if err := os.Chdir(d); err != nil {
			fmt.Println("error: chdir:", err)
			os.Exit(1)
		}
	}
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "holder":
		os.Exit(holder())
	case "writer":
		os.Exit(writer())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// holder runs in its working directory on an NFS mount and keeps the file
// "held" open there: it writes "before", says "ready", waits for a line
// on stdin, then writes "after", fsyncs, and reports what the file holds,
// read through the open descriptor and by name through the working
// directory.
func holder() int {
	f, err := os.OpenFile("held", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	if _, err := f.WriteString("before\n"); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	if err := f.Sync(); err != nil {
		fmt.Println("error: fsync:", err)
		return 1
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Println("error: stdin:", err)
		return 1
	}
	if _, err := f.WriteString("after\n"); err != nil {
		fmt.Println("error: write after the unmount:", err)
		return 1
	}
	if err := f.Sync(); err != nil {
		fmt.Println("error: fsync after the unmount:", err)
		return 1
	}
	byFD := make([]byte, 64)
	n, err := f.ReadAt(byFD, 0)
	if err != nil && err != io.EOF {
		fmt.Println("error: read:", err)
		return 1
	}
	byName, err := os.ReadFile("held")
	if err != nil {
		fmt.Println("error: read by name:", err)
		return 1
	}
	fmt.Printf("ok %q %q\n", byFD[:n], byName)
	return 0
}

// writerChunk is what the writer writes between two fsyncs, writerChunks
// how many chunks its file holds: it rewrites them in turn, so that a
// slow test never fills the guest's memory (client and server share it;
// an NFS client writing back to a server on its own machine under memory
// pressure can wait for it forever).
const (
	writerChunk  = 1 << 20
	writerChunks = 16
)

// writer runs in a mount namespace of its own, so that its mount is not in
// the mount table of the process that unmounts: like a mount of the export
// on the host, seen from the plugin's namespace. It mounts the export
// (HOLDFAST_NFS_SOURCE, HOLDFAST_NFS_DATA) at HOLDFAST_NFS_TARGET, says
// "dev MAJOR:MINOR" of that mount, then writes and fsyncs chunks to the
// file "stream" there without pause (the writerChunks chunks in turn), so
// that requests are in flight at any time, saying "streaming" after the
// first. When stdin is closed it
// finishes its chunk and reports "ok CHUNKS", or "error: ..." at the first
// failure.
func writer() int {
	target := os.Getenv("HOLDFAST_NFS_TARGET")
	if err := unix.Mount(os.Getenv("HOLDFAST_NFS_SOURCE"), target, "nfs", unix.MS_NOSUID|unix.MS_NODEV, os.Getenv("HOLDFAST_NFS_DATA")); err != nil {
		fmt.Println("error: mount:", err)
		return 1
	}
	defer unix.Unmount(target, 0)
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		fmt.Println("error: stat:", err)
		return 1
	}
	fmt.Printf("dev %d:%d\n", unix.Major(st.Dev), unix.Minor(st.Dev))
	var stop atomic.Bool
	go func() { io.Copy(io.Discard, os.Stdin); stop.Store(true) }()
	f, err := os.Create(filepath.Join(target, "stream"))
	if err != nil {
		fmt.Println("error: create:", err)
		return 1
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte("0123456789abcdef"), writerChunk/16)
	for n := 1; ; n++ {
		if _, err := f.WriteAt(chunk, int64((n-1)%writerChunks)*writerChunk); err != nil {
			fmt.Printf("error: write of chunk %d: %v\n", n, err)
			return 1
		}
		if err := f.Sync(); err != nil {
			fmt.Printf("error: fsync of chunk %d: %v\n", n, err)
			return 1
		}
		if n == 1 {
			fmt.Println("streaming")
		}
		if stop.Load() {
			fmt.Println("ok", n)
			return 0
		}
	}
}

// child is a helper process started from this test binary.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // its stdout, line by line; closed at EOF
}

// startChild starts helper in dir. The child changes to dir itself, once
// it runs this binary: Go's fork keeps the thread that forks, with its
// share of the runtime, until the child has called exec, so a child
// blocked before exec in a chdir onto an NFS mount that this process
// serves (nfstest) can stop the world for good, a garbage collection
// waiting for that thread and the server waiting for the collection
// (golang/go#11155, the same with FUSE servers).
func startChild(t *testing.T, helper, dir string, env []string, attr *syscall.SysProcAttr) *child {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe)
	cmd.Dir = "/"
	cmd.Env = append(append(os.Environ(), helperEnv+"="+helper, helperDirEnv+"="+dir), env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = attr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	c := &child{name: helper, cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		defer close(c.lines)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			c.lines <- s.Text()
		}
	}()
	t.Cleanup(func() {
		c.stdin.Close()
		if c.cmd.ProcessState == nil {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
	})
	return c
}

// line returns the child's next line of output, failing t after wait.
func (c *child) line(t *testing.T, wait time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		require.True(t, ok, "the %s helper exited without a word", c.name)
		return l
	case <-time.After(wait):
		require.FailNow(t, "no word from the "+c.name+" helper", "after %v", wait)
		return ""
	}
}

// nfsVolumes returns the devices of the kernel's NFS superblocks, from
// /proc/fs/nfsfs/volumes ("NV SERVER PORT DEV FSID FSC" lines).
func nfsVolumes(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/fs/nfsfs/volumes")
	require.NoError(t, err)
	var devs []string
	for _, l := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(l); len(f) >= 4 {
			devs = append(devs, f[3])
		}
	}
	return devs
}

func devOf(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st))
	return strconv.Itoa(int(unix.Major(st.Dev))) + ":" + strconv.Itoa(int(unix.Minor(st.Dev)))
}

// TestGuestBusyUnmountDetachesWithoutForce unmounts a volume that a
// process still uses while the server answers, with another process
// writing through a mount of the same export that shares the superblock
// and that the unmounting process cannot see (another mount namespace, as
// a host mount is to the plugin). The unmount must succeed by a lazy
// detach alone: MNT_FORCE would abort the writer's requests in flight and
// its fsync would fail. The user of the detached mount keeps working, and
// once it and the writer are gone, nothing is left.
func TestGuestBusyUnmountDetachesWithoutForce(t *testing.T) {
	g := newGuest(t, 10*time.Second)
	o := fmt.Sprintf("vers=3,port=%d,mountport=%d,nolock,proto=tcp,mountproto=tcp", g.port, g.port)
	opts, err := g.b.Parse(map[string]string{"share": "127.0.0.1:/", "o": o})
	require.NoError(t, err)
	mp := filepath.Join(t.TempDir(), "busy")
	require.NoError(t, os.Mkdir(mp, 0o755))
	v := &driver.Volume{Name: "busy", Type: TypeNFS, Options: opts, Mountpoint: mp}
	require.NoError(t, g.b.Mount(context.Background(), v))
	dev := devOf(t, mp)
	data := o + ",addr=127.0.0.1" // what the backend gave mount(2), in the order parsed

	// The writer, in its own mount namespace, on the same superblock.
	wdir := filepath.Join(t.TempDir(), "writer")
	require.NoError(t, os.Mkdir(wdir, 0o755))
	w := startChild(t, "writer", "/", []string{"HOLDFAST_NFS_SOURCE=127.0.0.1:/", "HOLDFAST_NFS_DATA=" + data, "HOLDFAST_NFS_TARGET=" + wdir},
		&syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS})
	require.Equal(t, "dev "+dev, w.line(t, 10*time.Second), "the writer's mount shares the volume's superblock")
	require.Equal(t, "streaming", w.line(t, 30*time.Second))
	require.False(t, g.b.sharesSuperblock(mp), "the writer's mount is not in this process's mount table")

	// The holder keeps its working directory and an open file in the volume.
	h := startChild(t, "holder", mp, nil, nil)
	require.Equal(t, "ready", h.line(t, 10*time.Second))

	start := time.Now()
	require.NoError(t, g.b.Unmount(context.Background(), v))
	took := time.Since(start)
	t.Logf("Unmount of the busy volume took %v", took.Round(time.Millisecond))
	assert.Less(t, took, 5*time.Second, "a busy mount is detached at once, not after half the deadline")
	assert.Empty(t, nfsMounts(t, mp), "gone from the mount table")
	assert.True(t, logged(g.hook, "NFS mount busy: detaching it lazily; the kernel frees it when its last user is gone"))
	for _, e := range g.hook.AllEntries() {
		assert.NotContains(t, e.Message, "forcing", "never forced")
	}
	assert.Contains(t, nfsVolumes(t), dev, "the superblock lives on for its users")

	// A second mount of the export with the same options, in this
	// namespace, shares the superblock: its writes and fsync work.
	other := filepath.Join(t.TempDir(), "other")
	require.NoError(t, os.Mkdir(other, 0o755))
	require.NoError(t, unix.Mount("127.0.0.1:/", other, "nfs", unix.MS_NOSUID|unix.MS_NODEV, data))
	assert.Equal(t, dev, devOf(t, other), "same superblock")
	f, err := os.Create(filepath.Join(other, "after-unmount"))
	require.NoError(t, err)
	_, err = f.WriteString("written after the busy unmount\n")
	require.NoError(t, err)
	require.NoError(t, f.Sync(), "fsync on the shared superblock after the busy unmount")
	require.NoError(t, f.Close())
	require.NoError(t, unix.Unmount(other, 0))

	// The holder still reads and writes its file, by descriptor and by name.
	_, err = io.WriteString(h.stdin, "go\n")
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprintf("ok %q %q", "before\nafter\n", "before\nafter\n"), h.line(t, 10*time.Second))
	require.NoError(t, h.cmd.Wait())

	// The writer kept going through the unmount without an error.
	time.Sleep(500 * time.Millisecond)
	require.NoError(t, w.stdin.Close())
	res := w.line(t, 30*time.Second)
	require.True(t, strings.HasPrefix(res, "ok "), "writer: %s", res)
	chunks, err := strconv.Atoi(strings.TrimPrefix(res, "ok "))
	require.NoError(t, err)
	t.Logf("the writer wrote and fsynced %d MiB without an error", chunks)
	require.NoError(t, w.cmd.Wait())

	// All on the server.
	got, err := os.ReadFile(filepath.Join(g.srv.Dir, "held"))
	require.NoError(t, err)
	assert.Equal(t, "before\nafter\n", string(got))
	fi, err := os.Stat(filepath.Join(g.srv.Dir, "stream"))
	require.NoError(t, err)
	assert.Equal(t, int64(min(chunks, writerChunks))*writerChunk, fi.Size())
	assert.FileExists(t, filepath.Join(g.srv.Dir, "after-unmount"))

	// With its last user gone, the kernel frees the detached mount.
	assert.Eventually(t, func() bool {
		for _, d := range nfsVolumes(t) {
			if d == dev {
				return false
			}
		}
		return true
	}, 10*time.Second, 50*time.Millisecond, "superblock %s still in /proc/fs/nfsfs/volumes", dev)
}
