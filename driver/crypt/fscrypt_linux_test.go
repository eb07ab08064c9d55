package crypt

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/loopdev"
)

// TestFscryptVolume runs the crypt suite with fscrypt on the host kernel.
func TestFscryptVolume(t *testing.T) {
	runSuite(t, EngineFscrypt)
}

func TestUserKeyfileIsKeptAtRemove(t *testing.T) {
	r := newRig(t)
	require.NoError(t, os.MkdirAll(r.keyDir, 0o700))
	userKey := filepath.Join(r.keyDir, "shared.keyfile")
	key := make([]byte, KeySize)
	for i := range key {
		key[i] = byte(255 - i)
	}
	require.NoError(t, os.WriteFile(userKey, key, 0o600))
	require.NoError(t, r.api.Create(&volume.CreateRequest{Name: "byo", Options: map[string]string{
		"type": "crypt", "size": "40m", "keyfile": "shared.keyfile", "engine": "fscrypt"}}))
	assert.NoFileExists(t, filepath.Join(r.keyDir, "byo.key"), "no key generated")
	assert.Equal(t, "keyfile shared.keyfile", r.status("byo")["key"])
	mp := r.mount("byo", "a")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o600))
	r.unmount("byo", "a")
	require.NoError(t, r.api.Remove(&volume.RemoveRequest{Name: "byo"}))
	assert.FileExists(t, userKey, "a user's key file is theirs to keep")
	r.requireLocked("byo")
	r.assertNoSecret(key)
}

func TestCreateFailuresLeaveNothing(t *testing.T) {
	r := newRig(t)
	tests := []struct {
		opts    map[string]string
		errPart string
	}{
		{map[string]string{"type": "crypt", "size": "64m", "keyfile": "absent"}, "key file " + filepath.Join(r.keyDir, "absent") + " is missing"},
		{map[string]string{"type": "crypt", "size": "64m", "keyfile": "short"}, "holds 10 bytes; a key is exactly 64 random bytes"},
		{map[string]string{"type": "crypt", "size": "64m", "keyfile": "link"}, "is a symlink"},
	}
	require.NoError(t, os.MkdirAll(r.keyDir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(r.keyDir, "short"), []byte("0123456789"), 0o600))
	require.NoError(t, os.Symlink("/etc/hostname", filepath.Join(r.keyDir, "link")))
	if luksAvailable() != nil {
		tests = append(tests, struct {
			opts    map[string]string
			errPart string
		}{map[string]string{"type": "crypt", "size": "64m", "engine": "luks"}, "device-mapper is not available in this kernel"})
	}
	for _, tt := range tests {
		err := r.api.Create(&volume.CreateRequest{Name: "failed", Options: tt.opts})
		require.Error(t, err, "%v", tt.opts)
		assert.Contains(t, err.Error(), tt.errPart)
		assert.NoDirExists(t, filepath.Join(r.root, "volumes", "failed"))
		assert.NoFileExists(t, filepath.Join(r.keyDir, "failed.key"))
		r.requireLocked("failed")
	}
	// A key file that exists already is never overwritten.
	precious := filepath.Join(r.keyDir, "taken.key")
	require.NoError(t, os.WriteFile(precious, []byte("someone else's"), 0o600))
	err := r.api.Create(&volume.CreateRequest{Name: "taken", Options: map[string]string{"type": "crypt", "size": "64m"}})
	require.ErrorContains(t, err, "holdfast never overwrites a key")
	got, err := os.ReadFile(precious)
	require.NoError(t, err)
	assert.Equal(t, "someone else's", string(got))
	assert.NoDirExists(t, filepath.Join(r.root, "volumes", "taken"))
}

func TestLeftoverLoopIsDetachedAtStart(t *testing.T) {
	r := newRig(t)
	require.NoError(t, r.api.Create(&volume.CreateRequest{Name: "crashy", Options: map[string]string{"type": "crypt", "size": "40m", "engine": "fscrypt"}}))
	// A crash right after a loop device was attached, before any lease:
	// losetup attaches without autoclear, so only holdfast can release it.
	out, err := exec.Command("losetup", "--find", "--show", r.backing("crashy")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Cleanup(func() { exec.Command("losetup", "-d", strings.TrimSpace(string(out))).Run() })
	loops, err := loopdev.Find(r.backing("crashy"))
	require.NoError(t, err)
	require.Len(t, loops, 1)
	r.restart()
	r.requireLocked("crashy")
	mp := r.mount("crashy", "a")
	assert.DirExists(t, mp)
	r.unmount("crashy", "a")
}

// A managed plugin restarts in a new mount namespace: holdfast's mounts are
// gone, a container's mount keeps the filesystem alive. A new Mount must
// share that filesystem, never mount the image a second time.
func TestMountAfterRestartSharesTheLiveFilesystem(t *testing.T) {
	testSharesLiveFilesystem(t, EngineFscrypt)
}

func testSharesLiveFilesystem(t *testing.T, engine string) {
	r := newRig(t)
	require.NoError(t, r.api.Create(&volume.CreateRequest{Name: "shared", Options: map[string]string{"type": "crypt", "size": "40m", "engine": engine}}))
	mp := r.mount("shared", "a")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "from-a"), []byte("a"), 0o600))
	container := filepath.Join(t.TempDir(), "container")
	require.NoError(t, os.Mkdir(container, 0o755))
	require.NoError(t, unix.Mount(mp, container, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(container, unix.MNT_DETACH) })
	// The plugin's namespace goes away: its mounts vanish, the container's stays.
	require.NoError(t, unix.Unmount(mp, unix.MNT_DETACH))
	require.NoError(t, unix.Unmount(stagingDirOf(r, "shared"), unix.MNT_DETACH))
	r.restart()
	assert.Equal(t, 1, r.status("shared")["leases"])

	mp = r.mount("shared", "b")
	got, err := os.ReadFile(filepath.Join(mp, "from-a"))
	require.NoError(t, err)
	assert.Equal(t, "a", string(got))
	require.NoError(t, os.WriteFile(filepath.Join(mp, "from-b"), []byte("b"), 0o600))
	got, err = os.ReadFile(filepath.Join(container, "from-b"))
	require.NoError(t, err, "the earlier container sees the new one's writes: one filesystem")
	assert.Equal(t, "b", string(got))
	loops, err := loopdev.Find(r.backing("shared"))
	require.NoError(t, err)
	assert.Len(t, loops, 1, "the image is attached once")

	r.unmount("shared", "b")
	require.NoError(t, unix.Unmount(container, 0))
	r.unmount("shared", "a")
	r.requireLocked("shared")
	mp = r.mount("shared", "c")
	assert.FileExists(t, filepath.Join(mp, "from-b"), "nothing lost")
	r.unmount("shared", "c")
}

func stagingDirOf(r *rig, name string) string {
	return filepath.Join(r.root, "volumes", name, "fs")
}
