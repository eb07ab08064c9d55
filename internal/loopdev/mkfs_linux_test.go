package loopdev

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestMkfs makes each filesystem on an allocated image attached to a loop
// device: it mounts, it has no reserved blocks, and the image is still
// allocated in full afterwards (no discard punched holes in it).
func TestMkfs(t *testing.T) {
	requireLoop(t)
	for _, tt := range []struct {
		fs   string
		size int64
	}{{FSExt4, 64 << 20}, {FSXFS, 320 << 20}} {
		t.Run(tt.fs, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "img")
			require.NoError(t, AllocateImage(file, tt.size))
			t.Cleanup(func() { Detach(file) })
			dev, err := Attach(file)
			require.NoError(t, err)
			defer dev.Close()
			require.NoError(t, Mkfs(t.Context(), dev.Path, tt.fs))
			// The image's own blocks, plus at most an extent block of the
			// filesystem holding it.
			assert.GreaterOrEqual(t, allocated(t, file), tt.size, "mkfs discarded nothing")
			if tt.fs == FSExt4 {
				sb := superblock(t, file)
				assert.Zero(t, binary.LittleEndian.Uint32(sb[0x08:]), "s_r_blocks_count: no blocks reserved for root")
			}

			mnt := filepath.Join(dir, "mnt")
			require.NoError(t, os.Mkdir(mnt, 0o755))
			require.NoError(t, unix.Mount(dev.Path, mnt, tt.fs, 0, ""))
			defer unix.Unmount(mnt, 0)
			var st unix.Statfs_t
			require.NoError(t, unix.Statfs(mnt, &st))
			// xfs keeps 64 MiB of 320 for its log.
			assert.Greater(t, int64(st.Bavail)*st.Bsize, tt.size*7/10, "most of the image is usable")
		})
	}
}

// TestMkfsFeatures: ext4Features are added (crypt's fscrypt needs
// "encrypt"), and only when asked.
func TestMkfsFeatures(t *testing.T) {
	for _, features := range [][]string{nil, {"encrypt"}} {
		file := filepath.Join(t.TempDir(), "img")
		require.NoError(t, AllocateImage(file, 32<<20))
		require.NoError(t, Mkfs(t.Context(), file, FSExt4, features...))
		sb := superblock(t, file)
		// s_feature_incompat; EXT4_FEATURE_INCOMPAT_ENCRYPT is 0x10000.
		incompat := binary.LittleEndian.Uint32(sb[0x60:])
		assert.Equal(t, features != nil, incompat&0x10000 != 0, "encrypt feature with %v", features)
	}
}

func TestMkfsErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "img")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	err := Mkfs(t.Context(), file, "btrfs")
	assert.ErrorContains(t, err, `unknown filesystem "btrfs" (want ext4 or xfs)`)
	err = Mkfs(t.Context(), file, FSXFS) // an empty file: far too small
	require.Error(t, err)
	assert.Contains(t, err.Error(), "mkfs.xfs: exit status")
	t.Setenv("PATH", t.TempDir())
	err = Mkfs(t.Context(), file, FSXFS)
	assert.ErrorContains(t, err, "mkfs.xfs is not installed (Debian: apt-get install xfsprogs)")
}

// superblock reads the ext4 superblock of image file: 1 KiB at 1024.
func superblock(t *testing.T, file string) []byte {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	sb := make([]byte, 1024)
	_, err = f.ReadAt(sb, 1024)
	require.NoError(t, err)
	return sb
}
