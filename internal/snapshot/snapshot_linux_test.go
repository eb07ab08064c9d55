package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/loopdev"
)

// mountFS makes a loop-backed filesystem of type fs and mounts it for the
// test, or skips where the host cannot.
func mountFS(t *testing.T, fs string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts loop devices (make test runs as root)")
	}
	mkfs := map[string][]string{
		"ext4":  {"mkfs.ext4", "-q", "-F"},
		"xfs":   {"mkfs.xfs", "-q", "-f"},
		"btrfs": {"mkfs.btrfs", "-q", "-f"},
	}[fs]
	_, err := exec.LookPath(mkfs[0])
	require.NoError(t, err, "%s is not installed: make unit installs it (Debian: xfsprogs, btrfs-progs)", mkfs[0])
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	require.NoError(t, loopdev.AllocateImage(img, 320<<20))
	out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	dev, err := loopdev.Attach(img)
	require.NoError(t, err)
	defer dev.Close()
	mnt := filepath.Join(dir, "mnt")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	require.NoError(t, unix.Mount(dev.Path, mnt, fs, 0, ""))
	t.Cleanup(func() {
		Thaw(mnt)
		unix.Unmount(mnt, unix.MNT_DETACH)
	})
	return mnt
}

// TestReflinks probes each filesystem, and a clone shares nothing with
// its source once either is written.
func TestReflinks(t *testing.T) {
	for _, tt := range []struct {
		fs   string
		want bool
	}{{"xfs", true}, {"btrfs", true}, {"ext4", false}} {
		t.Run(tt.fs, func(t *testing.T) {
			mnt := mountFS(t, tt.fs)
			assert.Equal(t, tt.want, Reflinks(mnt))
			ents, _ := os.ReadDir(mnt)
			for _, e := range ents {
				assert.NotContains(t, e.Name(), "holdfast-probe", "the probe cleans up")
			}
			src, dst := filepath.Join(mnt, "src"), filepath.Join(mnt, "dst")
			require.NoError(t, os.WriteFile(src, bytes.Repeat([]byte("a"), 1<<20), 0o600))
			err := Clone(src, dst)
			if !tt.want {
				assert.ErrorIs(t, err, ErrNoReflink)
				assert.NoFileExists(t, dst, "a failed clone leaves no file")
				return
			}
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(src, []byte("b"), 0o600))
			got, err := os.ReadFile(dst)
			require.NoError(t, err)
			assert.Equal(t, bytes.Repeat([]byte("a"), 1<<20), got, "the clone keeps the data of the moment")
			assert.Error(t, Clone(src, dst), "never replaces a file")
		})
	}
}

// TestCloneAcrossFilesystems: two filesystems never share blocks.
func TestCloneAcrossFilesystems(t *testing.T) {
	a, b := mountFS(t, "xfs"), mountFS(t, "xfs")
	require.NoError(t, os.WriteFile(filepath.Join(a, "f"), []byte("x"), 0o600))
	assert.ErrorIs(t, Clone(filepath.Join(a, "f"), filepath.Join(b, "f")), ErrNoReflink)
}

// TestFreezeBlocksWriters: a write to a frozen filesystem completes only
// after Thaw. No timing is asserted: the write must not have completed
// after a generous wait, and must complete once thawed.
func TestFreezeBlocksWriters(t *testing.T) {
	for _, fs := range []string{"ext4", "xfs"} {
		t.Run(fs, func(t *testing.T) {
			mnt := mountFS(t, fs)
			thaw, err := Hold(mnt, time.Hour)
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() { done <- writeSync(filepath.Join(mnt, "w")) }()
			select {
			case err := <-done:
				t.Fatalf("a write to a frozen filesystem completed (%v)", err)
			case <-time.After(time.Second):
			}
			require.NoError(t, thaw())
			require.NoError(t, <-done)
			require.NoError(t, thaw(), "thaw twice is harmless")
			require.NoError(t, Thaw(mnt), "thawing a filesystem that is not frozen is fine")
		})
	}
}

// TestHoldLimit: the time limit thaws the filesystem, and the holder is
// told.
func TestHoldLimit(t *testing.T) {
	mnt := mountFS(t, "ext4")
	thaw, err := Hold(mnt, time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, writeSync(filepath.Join(mnt, "w")), "the limit thawed it")
	assert.ErrorIs(t, thaw(), ErrThawedEarly)
}

// TestFreezeErrors: what cannot be frozen says so.
func TestFreezeErrors(t *testing.T) {
	assert.Error(t, Freeze(filepath.Join(t.TempDir(), "missing")))
	mnt := mountFS(t, "ext4")
	require.NoError(t, Freeze(mnt))
	err := Freeze(mnt)
	assert.True(t, errors.Is(err, unix.EBUSY), "a second freeze is EBUSY: %v", err)
	assert.Contains(t, err.Error(), "frozen already")
	require.NoError(t, Thaw(mnt))
}

func writeSync(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = fmt.Fprint(f, "x")
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	return err
}
