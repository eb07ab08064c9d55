package loopdev

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func requireLoop(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches loop devices (make test runs as root)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Fatalf("no /dev/loop-control (%v): crypt and loop volumes need the loop driver; modprobe loop", err)
	}
}

// loopFile makes a file of size bytes to attach and returns its real path,
// as the kernel shows it; whatever stays attached to it is detached at the end.
func loopFile(t *testing.T, size int64) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	file := filepath.Join(dir, "backing.img")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	require.NoError(t, os.Truncate(file, size))
	t.Cleanup(func() { Detach(file) })
	return file
}

// sysLoop reads attribute attr of loop device dev in /sys/block.
func sysLoop(dev, attr string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", attr))
	return strings.TrimSpace(string(b)), err
}

// checkAttached checks that l is attached to file with autoclear, that
// data goes through it into the file, and that it detaches itself once
// the last holder closes it.
func checkAttached(t *testing.T, l *Device, file string) {
	t.Helper()
	backing, err := sysLoop(l.Path, "backing_file")
	require.NoError(t, err)
	assert.Equal(t, file, backing)
	autoclear, err := sysLoop(l.Path, "autoclear")
	require.NoError(t, err)
	assert.Equal(t, "1", autoclear)
	devs, err := Find(file)
	require.NoError(t, err)
	assert.Equal(t, []string{l.Path}, devs)
	info, err := unix.IoctlLoopGetStatus64(int(l.f.Fd()))
	require.NoError(t, err)
	assert.Equal(t, file, unix.ByteSliceToString(info.File_name[:]), "file name, as losetup shows it")

	// Write through the device, read it in the file and back.
	block := bytes.Repeat([]byte("holdfast"), 512)
	dev, err := os.OpenFile(l.Path, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = dev.WriteAt(block, 1<<20)
	require.NoError(t, err)
	require.NoError(t, dev.Sync())
	got := make([]byte, len(block))
	_, err = dev.ReadAt(got, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, block, got, "read back through the device")
	require.NoError(t, dev.Close())
	f, err := os.Open(file)
	require.NoError(t, err)
	_, err = f.ReadAt(got, 1<<20)
	f.Close()
	require.NoError(t, err)
	assert.Equal(t, block, got, "written into the backing file")

	// Autoclear: closing the last holder detaches it.
	require.NoError(t, l.Close())
	deadline := time.Now().Add(5 * time.Second)
	for {
		devs, err = Find(file)
		require.NoError(t, err)
		if len(devs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still attached to %s after its last close", l.Path, file)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAttachLoop attaches with LOOP_CONFIGURE where the kernel has it.
func TestAttachLoop(t *testing.T) {
	requireLoop(t)
	file := loopFile(t, 8<<20)
	l, err := Attach(file)
	require.NoError(t, err)
	checkAttached(t, l, file)
}

// TestAttachLoopLegacy takes the path of kernels before 5.8 (no
// LOOP_CONFIGURE): LOOP_SET_FD, then LOOP_SET_STATUS64 with autoclear.
func TestAttachLoopLegacy(t *testing.T) {
	requireLoop(t)
	file := loopFile(t, 8<<20)
	l, err := attach(file, true)
	require.NoError(t, err)
	checkAttached(t, l, file)
}

func TestLacksLoopConfigure(t *testing.T) {
	for err, want := range map[error]bool{
		unix.EINVAL: true, unix.ENOTTY: true, fmt.Errorf("ioctl: %w", unix.EINVAL): true,
		nil: false, unix.EBUSY: false, unix.EPERM: false, unix.ENXIO: false,
	} {
		assert.Equal(t, want, lacksLoopConfigure(err), "%v", err)
	}
}

// TestAttachLoopConcurrently: attaches racing for the same free device
// (LOOP_CTL_GET_FREE answers them all alike) move on to the next one on
// EBUSY, on both paths.
func TestAttachLoopConcurrently(t *testing.T) {
	requireLoop(t)
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			const n = 4
			files := make([]string, n)
			for i := range files {
				files[i] = loopFile(t, 1<<20)
			}
			devs := make([]*Device, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range files {
				wg.Go(func() { devs[i], errs[i] = attach(files[i], legacy) })
			}
			wg.Wait()
			seen := map[string]bool{}
			for i := range files {
				require.NoError(t, errs[i])
				assert.False(t, seen[devs[i].Path], "%s attached twice", devs[i].Path)
				seen[devs[i].Path] = true
				backing, err := sysLoop(devs[i].Path, "backing_file")
				require.NoError(t, err)
				assert.Equal(t, files[i], backing)
				autoclear, err := sysLoop(devs[i].Path, "autoclear")
				require.NoError(t, err)
				assert.Equal(t, "1", autoclear)
				devs[i].Close()
			}
		})
	}
}

// TestAcquire attaches a device for an image that has none, and hands out
// the attached one, never a second, while it is attached.
func TestAcquire(t *testing.T) {
	requireLoop(t)
	file := loopFile(t, 8<<20)
	first, err := Acquire(file)
	require.NoError(t, err)
	second, err := Acquire(file)
	require.NoError(t, err)
	assert.Equal(t, first.Path, second.Path, "one device per image")
	devs, err := Find(file)
	require.NoError(t, err)
	assert.Equal(t, []string{first.Path}, devs)
	require.NoError(t, first.Close())
	checkAttached(t, second, file) // held by second alone, and autoclears
}

// TestDetach detaches every device of an image, also one attached without
// autoclear (a crash between LOOP_SET_FD and LOOP_SET_STATUS64), and one
// still held open, which goes when its holder closes it; an image with no
// device, or no file at all, is no error.
func TestDetach(t *testing.T) {
	requireLoop(t)
	file := loopFile(t, 8<<20)
	require.NoError(t, Detach(file), "nothing attached")
	require.NoError(t, Detach(file+".gone"), "no such file")

	held, err := Attach(file)
	require.NoError(t, err)
	out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
	require.NoError(t, err, "%s", out)
	bare := strings.TrimSpace(string(out))
	autoclear, err := sysLoop(bare, "autoclear")
	require.NoError(t, err)
	require.Equal(t, "0", autoclear, "losetup attaches without autoclear")
	devs, err := Find(file)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{held.Path, bare}, devs)

	require.NoError(t, Detach(file))
	devs, err = Find(file)
	require.NoError(t, err)
	assert.Equal(t, []string{held.Path}, devs, "the bare device is gone, the held one waits for its holder")
	require.NoError(t, held.Close())
	waitDetached(t, file)
}

// waitDetached waits until no loop device is attached to file: a device
// another process has open for a moment (any Find scan, in another test
// binary too) autoclears when it is closed.
func waitDetached(t *testing.T, file string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		devs, err := Find(file)
		require.NoError(t, err)
		if len(devs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v still attached to %s", devs, file)
		}
	}
}
