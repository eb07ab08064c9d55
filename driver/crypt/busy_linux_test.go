package crypt

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/guest"
	"github.com/holdfast/holdfast/internal/loopdev"
	"github.com/holdfast/holdfast/internal/volfs/volfstest"
)

// A last Unmount while a process still holds the volume (its working
// directory, or a file open there) once answered an error after the bind
// mount was gone, and the next Mount answered the bare mountpoint: the next
// container wrote plaintext to the host's disk. Now the busy volume is
// detached lazily, the answer is success, and the next Mount is the
// volume's own live filesystem, shared with the holder until it lets go.
func TestBusyLastUnmount(t *testing.T) {
	for _, hold := range []string{"cwd", "open file"} {
		t.Run(hold, func(t *testing.T) { testBusyLastUnmount(t, EngineFscrypt, hold) })
	}
}

func TestLUKSBusyLastUnmount(t *testing.T) {
	guest.Require(t, "dm-crypt")
	for _, hold := range []string{"cwd", "open file"} {
		t.Run(hold, func(t *testing.T) { testBusyLastUnmount(t, EngineLUKS, hold) })
	}
}

func testBusyLastUnmount(t *testing.T, engine, hold string) {
	r := newRig(t)
	name := "busy-" + engine
	require.NoError(t, r.api.Create(&volume.CreateRequest{Name: name, Options: map[string]string{"type": "crypt", "size": "64m", "engine": engine}}))
	mp := r.mount(name, "a")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "before"), []byte("written through mount a"), 0o600))

	// The holder: a shell in the volume, or one holding a file open there.
	sh := exec.Command("sh", "-c", "exec 3>>held; echo ready; exec sleep 600")
	if hold == "cwd" {
		sh = exec.Command("sh", "-c", "echo ready; exec sleep 600")
	}
	sh.Dir = mp
	out, err := sh.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, sh.Start())
	holder := sh.Process
	t.Cleanup(func() { holder.Kill(); sh.Wait() })
	ready := make([]byte, 6)
	_, err = out.Read(ready)
	require.NoError(t, err)

	require.NoError(t, r.api.Unmount(&volume.UnmountRequest{Name: name, ID: "a"}), "a busy last Unmount detaches lazily")
	assert.Nil(t, volfstest.MountOf(t, mp), "the mountpoint is no longer a mount")
	assert.Equal(t, false, r.status(name)["mounted"], "Get tells the truth")

	// The next container gets the volume's own filesystem, never the bare
	// directory on the host's disk.
	mp = r.mount(name, "b")
	m := volfstest.MountOf(t, mp)
	require.NotNil(t, m, "Mount answers a live mount")
	assert.Equal(t, "ext4", m.FSType)
	assert.Contains(t, strings.Split(m.Options, ","), "nosuid", "no setuid programs from a volume")
	assert.Contains(t, strings.Split(m.Options, ","), "nodev", "no device nodes from a volume")
	assert.Equal(t, true, r.status(name)["mounted"])
	got, err := os.ReadFile(filepath.Join(mp, "before"))
	require.NoError(t, err, "the same data as before")
	assert.Equal(t, "written through mount a", string(got))
	require.NoError(t, os.WriteFile(filepath.Join(mp, "after"), []byte("written through mount b"), 0o600))

	// The holder lets go; the last Unmount locks the volume, and the data
	// written through b is in the encrypted filesystem.
	holder.Kill()
	sh.Wait()
	r.unmount(name, "b")
	require.Eventually(t, func() bool {
		loops, err := loopdev.Find(r.backing(name))
		return err == nil && len(loops) == 0 && len(r.mappings(name)) == 0
	}, 10*time.Second, 20*time.Millisecond, "the kernel releases the devices once the holder is gone")
	r.requireLocked(name)
	mp = r.mount(name, "c")
	got, err = os.ReadFile(filepath.Join(mp, "after"))
	require.NoError(t, err)
	assert.Equal(t, "written through mount b", string(got))
	r.unmount(name, "c")
	r.requireLocked(name)
	require.NoError(t, r.api.Remove(&volume.RemoveRequest{Name: name}))
}

// TestBusyRemove removes a volume whose filesystem a process still holds
// after its last Unmount: the removal completes, the key is destroyed, and
// the holder's files are gone with the volume once it lets go.
func TestBusyRemove(t *testing.T) {
	r := newRig(t)
	require.NoError(t, r.api.Create(&volume.CreateRequest{Name: "held", Options: map[string]string{"type": "crypt", "size": "64m"}}))
	mp := r.mount("held", "a")
	sh := exec.Command("sleep", "600")
	sh.Dir = mp
	require.NoError(t, sh.Start())
	t.Cleanup(func() { sh.Process.Kill(); sh.Wait() })
	r.unmount("held", "a")
	require.NoError(t, r.api.Remove(&volume.RemoveRequest{Name: "held"}))
	assert.NoFileExists(t, filepath.Join(r.keyDir, "held.key"))
	assert.NoDirExists(t, filepath.Join(r.root, "volumes", "held"))
	sh.Process.Signal(syscall.SIGKILL)
	sh.Wait()
	require.Eventually(t, func() bool {
		return len(Mappings("holdfast-held-")) == 0
	}, 10*time.Second, 20*time.Millisecond)
}

// TestKeyThatCannotBeDestroyed removes a crypt volume whose generated key
// can be overwritten but not deleted (an append-only --key-dir). The
// volume once stayed, served with a key overwritten with junk; now its
// removal has begun and is never undone: it is out of service, and a
// repeated Remove completes it once the cause is gone.
func TestKeyThatCannotBeDestroyed(t *testing.T) {
	r := newRig(t)
	require.NoError(t, r.api.Create(&volume.CreateRequest{Name: "stuck", Options: map[string]string{"type": "crypt", "size": "32m"}}))
	setAppendOnly(t, r.keyDir, true)
	t.Cleanup(func() { setAppendOnly(t, r.keyDir, false) })

	err := r.api.Remove(&volume.RemoveRequest{Name: "stuck"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "docker volume rm stuck again")
	_, err = r.api.Get(&volume.GetRequest{Name: "stuck"})
	assert.ErrorIs(t, err, driver.ErrNotFound, "a volume whose key is overwritten is never served")
	_, err = r.api.Mount(&volume.MountRequest{Name: "stuck", ID: "a"})
	require.Error(t, err)

	setAppendOnly(t, r.keyDir, false)
	require.NoError(t, r.api.Remove(&volume.RemoveRequest{Name: "stuck"}))
	assert.NoFileExists(t, filepath.Join(r.keyDir, "stuck.key"))
	assert.NoDirExists(t, filepath.Join(r.root, "volumes", "stuck"))
}

// TestLongestName uses a 255-byte name: NAME.key does not fit in a file
// name, so the generated key has a shortened, hashed name.
func TestLongestName(t *testing.T) {
	r := newRig(t)
	name := "c" + strings.Repeat("y", 254)
	for range 2 {
		require.NoError(t, r.api.Create(&volume.CreateRequest{Name: name, Options: map[string]string{"type": "crypt", "size": "32m"}}))
		mp := r.mount(name, "a")
		require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o600))
		r.unmount(name, "a")
		keys, err := os.ReadDir(r.keyDir)
		require.NoError(t, err)
		require.Len(t, keys, 1)
		assert.LessOrEqual(t, len(keys[0].Name()), 255)
		require.NoError(t, r.api.Remove(&volume.RemoveRequest{Name: name}))
		keys, err = os.ReadDir(r.keyDir)
		require.NoError(t, err)
		assert.Empty(t, keys, "the key is destroyed")
		r.requireLocked(name)
	}
}

// fsAppendFL is FS_APPEND_FL of linux/fs.h.
const fsAppendFL = 0x20

// setAppendOnly sets or clears the append-only attribute of dir (chattr
// +a): its entries can be written but not deleted, even by root.
func setAppendOnly(t *testing.T, dir string, on bool) {
	t.Helper()
	f, err := os.Open(dir)
	require.NoError(t, err)
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	require.NoError(t, err, "FS_IOC_GETFLAGS on %s", dir)
	if on {
		flags |= fsAppendFL
	} else {
		flags &^= fsAppendFL
	}
	require.NoError(t, unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags)), "FS_IOC_SETFLAGS on %s", dir)
}
