package archive

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/treetest"
)

// writeStream writes a holdfast stream of src into a file and returns it.
func writeStream(t *testing.T, src string) string {
	t.Helper()
	var buf bytes.Buffer
	_, err := Write(&buf, src, WriteOptions{})
	require.NoError(t, err)
	f := filepath.Join(t.TempDir(), "backup.tar")
	require.NoError(t, os.WriteFile(f, buf.Bytes(), 0o600))
	return f
}

// requireSparseCopy checks that got holds want's bytes and that its holes
// stayed holes.
func requireSparseCopy(t *testing.T, want, got string) {
	t.Helper()
	wb, err := os.ReadFile(want)
	require.NoError(t, err)
	gb, err := os.ReadFile(got)
	require.NoError(t, err, "the sparse file is unpacked under its own name")
	require.Equal(t, len(wb), len(gb))
	require.Equal(t, sha256.Sum256(wb), sha256.Sum256(gb), "%s has the bytes of %s", got, want)
	var st unix.Stat_t
	require.NoError(t, unix.Stat(got, &st))
	require.Less(t, st.Blocks*512, int64(1<<20), "%s came back with %d KiB allocated: its holes were filled", got, st.Blocks/2)
}

// noPlaceholders fails if a GNUSparseFile.0 directory was unpacked: the
// tar did not understand the sparse records.
func noPlaceholders(t *testing.T, root string) {
	t.Helper()
	require.NoError(t, filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		require.NoError(t, err)
		require.NotContains(t, p, "GNUSparseFile", "a tar unpacked the placeholder name, not the file")
		return nil
	}))
}

// Another tar unpacks a holdfast backup exactly as holdfast's own restore
// does where it matters most: a sparse file comes back with its bytes, under
// its name, with its holes.
func TestOtherTarsUnpackHoldfastSparseFiles(t *testing.T) {
	requireRoot(t)
	src := t.TempDir()
	sparse := treetest.Build(t, src)
	stream := writeStream(t, src)
	for _, tt := range []struct {
		tool string
		args []string
	}{
		{"tar", []string{"--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"}},
		{"bsdtar", []string{"--numeric-owner", "-xpf"}},
	} {
		t.Run(tt.tool, func(t *testing.T) {
			bin, err := exec.LookPath(tt.tool)
			require.NoError(t, err, "%s is not installed: make unit installs it (GNU tar, libarchive-tools)", tt.tool)
			dst := t.TempDir()
			cmd := exec.Command(bin, append(tt.args, stream, "-C", dst)...)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s: %s", tt.tool, out)
			noPlaceholders(t, dst)
			requireSparseCopy(t, sparse, filepath.Join(dst, filepath.Base(sparse)))
			requireSparseCopy(t, filepath.Join(src, "all-holes"), filepath.Join(dst, "all-holes"))

			var want, got unix.Stat_t
			require.NoError(t, unix.Stat(sparse, &want))
			require.NoError(t, unix.Stat(filepath.Join(dst, filepath.Base(sparse)), &got))
			if tt.tool == "bsdtar" {
				// libarchive reads a negative PAX time's fraction as
				// positive (-625776832.876543211 as -625776832 + 0.876...):
				// the second is right, the fraction is not.
				assert.InDelta(t, want.Mtim.Sec, got.Mtim.Sec, 1, "mtime")
			} else {
				assert.Equal(t, want.Mtim, got.Mtim, "mtime")
			}
			assert.Equal(t, want.Mode, got.Mode, "mode")
			assert.Equal(t, [2]uint32{want.Uid, want.Gid}, [2]uint32{got.Uid, got.Gid}, "owner")
			b, err := os.ReadFile(filepath.Join(dst, "naïve-日本語 ü", "ñ\tfile"))
			require.NoError(t, err)
			assert.Equal(t, "unicode", string(b))
		})
	}

	// GNU tar lists the real names, not the placeholders.
	out, err := exec.Command("tar", "-tf", stream).CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "\n"+filepath.Base(sparse)+"\n")
	assert.NotContains(t, string(out), "GNUSparseFile")
}

// holdfast restores sparse files from GNU tar's archives, in each of the
// formats GNU tar writes them, with their bytes and their holes.
func TestReadGNUTarSparseArchives(t *testing.T) {
	requireRoot(t)
	src := t.TempDir()
	f, err := os.Create(filepath.Join(src, "db.img"))
	require.NoError(t, err)
	for _, off := range []int64{0, 50 << 20, 150<<20 + 12345} {
		_, err = f.WriteAt(bytes.Repeat([]byte("data"), 2048), off)
		require.NoError(t, err)
	}
	require.NoError(t, f.Truncate(200<<20))
	require.NoError(t, f.Close())
	require.NoError(t, os.WriteFile(filepath.Join(src, "plain"), []byte("plain"), 0o644))
	for _, args := range [][]string{
		{"--format=posix", "--sparse", "--sparse-version=1.0"},
		{"--format=posix", "--sparse", "--sparse-version=0.1"},
		{"--format=posix", "--sparse", "--sparse-version=0.0"},
		{"--format=gnu", "--sparse"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			archive := filepath.Join(t.TempDir(), "a.tar")
			out, err := exec.Command("tar", append(args, "-cf", archive, "-C", src, ".")...).CombinedOutput()
			require.NoError(t, err, "%s", out)
			a, err := os.Open(archive)
			require.NoError(t, err)
			defer a.Close()
			dst := t.TempDir()
			_, err = Read(a, dst, ReadOptions{})
			require.NoError(t, err)
			noPlaceholders(t, dst)
			requireSparseCopy(t, filepath.Join(src, "db.img"), filepath.Join(dst, "db.img"))
			b, err := os.ReadFile(filepath.Join(dst, "plain"))
			require.NoError(t, err)
			assert.Equal(t, "plain", string(b))
		})
	}
}
