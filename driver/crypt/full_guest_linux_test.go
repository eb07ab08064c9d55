package crypt

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/guest"
)

// TestLUKSRemoveOnRootItFilled removes a LUKS volume whose image took the
// last of the room on the filesystem holding --root: the Remove must not
// need a free block (the remove intent is a rename), must succeed, close
// the mapping, destroy the key and give the image's space back.
func TestLUKSRemoveOnRootItFilled(t *testing.T) {
	guest.Require(t, "dm-crypt")
	s := newSmallRoot(t, 64<<20, 1<<20)
	const size = 32 << 20
	// The room for the image and the records, no more: the image fills
	// --root, and the fillers take the crumbs left.
	s.fill(s.fs, size+256<<10)
	opts := map[string]string{"type": "crypt", "size": "32m", "engine": EngineLUKS}
	require.NoError(t, s.api.Create(&volume.CreateRequest{Name: "filler", Options: opts}))
	s.fill(s.fs, 0)
	require.Less(t, s.free(s.fs), int64(64<<10), "--root is full")
	mp := s.mount("filler", "a")
	require.NoError(t, fill(filepath.Join(mp, "data"), 8<<20), "the volume's own space is its own")
	s.unmount("filler", "a")
	require.Less(t, s.free(s.fs), int64(64<<10), "--root is still full")

	require.NoError(t, s.api.Remove(&volume.RemoveRequest{Name: "filler"}), "Remove on the full --root the volume filled")
	assert.Empty(t, s.mappings("filler"), "the mapping is closed")
	assert.NoFileExists(t, filepath.Join(s.keyDir, generatedName("filler")), "the key is destroyed")
	assert.NoDirExists(t, filepath.Join(s.root, "volumes", "filler"))
	s.requireLocked("filler")
	// The image is deleted from the trash in the background.
	assert.Eventually(t, func() bool { return s.free(s.fs) >= size }, 10*time.Second, 20*time.Millisecond,
		"the image's space is free again: %d bytes free", s.free(s.fs))
	list, err := s.api.List()
	require.NoError(t, err)
	assert.Empty(t, list.Volumes)
	s.restart()
	list, err = s.api.List()
	require.NoError(t, err)
	assert.Empty(t, list.Volumes, "the removal is durable")

	// Room again: the name can be used again.
	s.release()
	require.NoError(t, s.api.Create(&volume.CreateRequest{Name: "filler", Options: opts}))
	s.lifecycle("filler")
}

// TestLUKSCreateOnFullKeyDir creates a LUKS volume while the filesystem
// holding --key-dir is full: a clear error naming --key-dir, nothing left
// (no key, directory, image, loop device or mapping); once there is room
// the same Create works.
func TestLUKSCreateOnFullKeyDir(t *testing.T) {
	guest.Require(t, "dm-crypt")
	s := newSmallRoot(t, 96<<20, 1<<20)
	require.NoError(t, os.MkdirAll(s.keyDir, 0o700))
	s.fill(s.keyFS, 0)
	opts := map[string]string{"type": "crypt", "size": "32m", "engine": EngineLUKS}
	err := s.api.Create(&volume.CreateRequest{Name: "vault", Options: opts})
	require.Error(t, err)
	t.Logf("error: %v", err)
	s.requireNoSpaceError(err, []string{"--key-dir"})
	s.requireNoVolume("vault")
	assert.Empty(t, s.mappings("vault"))

	s.release()
	require.NoError(t, s.api.Create(&volume.CreateRequest{Name: "vault", Options: opts}))
	assert.Equal(t, EngineLUKS, s.status("vault")["engine"])
	s.lifecycle("vault")
}
