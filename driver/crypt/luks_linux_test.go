package crypt

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/guest"
	"github.com/holdfast/holdfast/internal/loopdev"
)

// TestLUKSVolume runs the crypt suite with LUKS2 in the guest.
func TestLUKSVolume(t *testing.T) {
	guest.Require(t, "dm-crypt")
	runSuite(t, EngineLUKS)
}

func TestLUKSHeader(t *testing.T) {
	guest.Require(t, "dm-crypt")
	r := newRig(t)
	require.NoError(t, r.api.Create(&volume.CreateRequest{Name: "hdr", Options: map[string]string{"type": "crypt", "size": "64m"}}))
	assert.Equal(t, EngineLUKS, r.status("hdr")["engine"], "auto picks LUKS where dm-crypt works")
	out, err := exec.Command("cryptsetup", "luksDump", r.backing("hdr")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	dump := string(out)
	assert.Contains(t, dump, "Version:       \t2")
	assert.Contains(t, dump, "aes-xts-plain64")
	assert.Regexp(t, `Key:\s+512 bits`, dump)
	assert.Regexp(t, `PBKDF:\s+pbkdf2`, dump)
	r.requireLocked("hdr")

	mp := r.mount("hdr", "a")
	assert.Len(t, r.mappings("hdr"), 1, "one mapping while mounted")
	r.mount("hdr", "b")
	loops, err := loopdev.Find(r.backing("hdr"))
	require.NoError(t, err)
	assert.Len(t, loops, 1, "all leases share one loop device")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o600))
	r.unmount("hdr", "a")
	assert.Len(t, r.mappings("hdr"), 1, "still open for the second lease")
	r.unmount("hdr", "b")
	r.requireLocked("hdr")
}

func TestLUKSWithXFS(t *testing.T) {
	guest.Require(t, "dm-crypt")
	r := newRig(t)
	require.NoError(t, r.api.Create(&volume.CreateRequest{Name: "xfsvol", Options: map[string]string{"type": "crypt", "size": "320m", "fs": "xfs"}}))
	mp := r.mount("xfsvol", "a")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), pattern(), 0o600))
	r.unmount("xfsvol", "a")
	r.requireLocked("xfsvol")
	mp = r.mount("xfsvol", "b")
	got, err := os.ReadFile(filepath.Join(mp, "f"))
	require.NoError(t, err)
	assert.Equal(t, pattern(), got)
	r.unmount("xfsvol", "b")
	require.NoError(t, r.api.Remove(&volume.RemoveRequest{Name: "xfsvol"}))
	r.requireLocked("xfsvol")
}

func TestLUKSLeftoverMappingIsClosedAtStart(t *testing.T) {
	guest.Require(t, "dm-crypt")
	r := newRig(t)
	require.NoError(t, r.api.Create(&volume.CreateRequest{Name: "crashy", Options: map[string]string{"type": "crypt", "size": "64m", "engine": "luks"}}))
	// A crash after the mapping was opened, before the filesystem was mounted.
	key, err := os.ReadFile(filepath.Join(r.keyDir, "crashy.key"))
	require.NoError(t, err)
	loop, err := loopdev.Attach(r.backing("crashy"))
	require.NoError(t, err)
	name, err := mappingName("crashy", r.backing("crashy"))
	require.NoError(t, err)
	_, err = (&Backend{}).luksOpen(t.Context(), name, loop.Path, key)
	require.NoError(t, err)
	loop.Close()
	require.Len(t, r.mappings("crashy"), 1)
	r.restart()
	r.requireLocked("crashy")
	r.mount("crashy", "a")
	r.unmount("crashy", "a")
	r.requireLocked("crashy")
}

func TestLUKSMountAfterRestartSharesTheLiveFilesystem(t *testing.T) {
	guest.Require(t, "dm-crypt")
	testSharesLiveFilesystem(t, EngineLUKS)
}

// Two holdfast instances on one host (their own --root and --key-dir) may
// both have a volume "db": each keeps its own mapping and data.
func TestLUKSSameNameInTwoInstances(t *testing.T) {
	guest.Require(t, "dm-crypt")
	one, two := newRig(t), newRig(t)
	for i, r := range []*rig{one, two} {
		require.NoError(t, r.api.Create(&volume.CreateRequest{Name: "db", Options: map[string]string{"type": "crypt", "size": "40m"}}))
		mp := r.mount("db", "a")
		require.NoError(t, os.WriteFile(filepath.Join(mp, "who"), []byte{byte('1' + i)}, 0o600))
	}
	assert.Len(t, one.mappings("db"), 2, "two mappings, one per instance")
	for i, r := range []*rig{one, two} {
		got, err := os.ReadFile(filepath.Join(r.root, "mounts", "db", "who"))
		require.NoError(t, err)
		assert.Equal(t, []byte{byte('1' + i)}, got)
	}
	one.unmount("db", "a")
	assert.Len(t, two.mappings("db"), 1, "the other instance's mapping stays open")
	two.unmount("db", "a")
	assert.Empty(t, one.mappings("db"))
}
