package crypt

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/guest"
	"github.com/holdfast/holdfast/internal/treetest"
)

// TestLUKSBackupRestore backs up a LUKS volume holding every kind of file
// and restores it into a new LUKS volume, with the source in use and not:
// the restored tree is the same, and the two volumes have keys of their
// own; a failed restore leaves no volume, no mapping and no key.
func TestLUKSBackupRestore(t *testing.T) {
	guest.Require(t, "dm-crypt")
	r := newRig(t)
	opts := map[string]string{"type": "crypt", "size": "64m", "engine": EngineLUKS}
	for _, inUse := range []bool{false, true} {
		src, dst := "src-idle", "dst-idle"
		if inUse {
			src, dst = "src-used", "dst-used"
		}
		require.NoError(t, r.api.Create(&volume.CreateRequest{Name: src, Options: opts}))
		mp := r.mount(src, "c1")
		treetest.Build(t, mp)
		want := treetest.Snapshot(t, mp)
		if !inUse {
			r.unmount(src, "c1")
		}
		var stream bytes.Buffer
		note, err := r.d.Backup(context.Background(), src, &stream, false)
		require.NoError(t, err)
		if !inUse {
			assert.Empty(t, note, "an idle volume is copied exactly")
			r.requireLocked(src)
		}
		res, err := r.d.Restore(context.Background(), dst, opts, bytes.NewReader(stream.Bytes()))
		require.NoError(t, err)
		assert.Equal(t, len(want), res.Entries)
		if inUse {
			assert.Equal(t, false, r.status(dst)["mounted"], "the restore unmounted what it filled")
			assert.Empty(t, r.mappings(dst), "and closed its mapping")
		} else {
			r.requireLocked(dst) // nothing of either volume is open
		}
		got := r.mount(dst, "c2")
		treetest.RequireSame(t, want, treetest.Snapshot(t, got))
		treetest.RequireSparse(t, filepath.Join(got, treetest.SparseName))
		assert.Equal(t, EngineLUKS, r.status(dst)["engine"])
		r.unmount(dst, "c2")
		if inUse {
			r.unmount(src, "c1")
		}
		srcKey, err := os.ReadFile(filepath.Join(r.keyDir, generatedName(src)))
		require.NoError(t, err)
		dstKey, err := os.ReadFile(filepath.Join(r.keyDir, generatedName(dst)))
		require.NoError(t, err)
		assert.NotEqual(t, srcKey, dstKey, "the restored volume has a key of its own")
	}

	good := func() []byte {
		var b bytes.Buffer
		_, err := r.d.Backup(context.Background(), "src-idle", &b, false)
		require.NoError(t, err)
		return b.Bytes()
	}()
	_, err := r.d.Restore(context.Background(), "cut", opts, bytes.NewReader(good[:len(good)/2]))
	require.ErrorContains(t, err, "corrupt or truncated")
	require.ErrorContains(t, err, "the volume it created was removed")
	_, err = r.api.Get(&volume.GetRequest{Name: "cut"})
	require.Error(t, err)
	r.requireLocked("cut")
	assert.NoFileExists(t, filepath.Join(r.keyDir, generatedName("cut")), "the failed restore's key is destroyed")
}
