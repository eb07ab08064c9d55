package quota

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestCheckRefusesTmpfs: tmpfs has no project quotas on any kernel, and the
// error says so, names the flag and points to type=loop.
func TestCheckRefusesTmpfs(t *testing.T) {
	dir := mountFS(t, "tmpfs", "")
	err := Check(dir, "--root")
	require.ErrorIs(t, err, ErrUnsupported)
	assert.Contains(t, err.Error(), "--root "+dir+" is on tmpfs, which has no project quotas")
	assert.Contains(t, err.Error(), "type=loop")
}

// TestCheckQuotaMissing: xfs and ext4 without project quotas are refused
// with the fix for that filesystem; on a kernel without quotas (this
// project's host) with the kernel named as what is missing. The guest run
// (Debian's kernel has quotas) takes the other branch.
func TestCheckQuotaMissing(t *testing.T) {
	tests := []struct {
		typ, opts string
		mkfs      []string
		fix       string
		// needsQuota: the kernel mounts it only when it has quotas.
		needsQuota bool
	}{
		{"ext4", "", nil, "mkfs.ext4 -O quota,project", false},
		{"ext4", "", []string{"-O", "quota,project"}, "mount it with -o prjquota", true},
		{"xfs", "", nil, "mount the xfs filesystem with -o prjquota", false},
		{"xfs", "uquota", nil, "mount the xfs filesystem with -o prjquota", true},
	}
	kernelQuotas := KernelHasQuotas(mountFS(t, "ext4", ""))
	for _, tt := range tests {
		t.Run(tt.typ+" "+strings.Join(tt.mkfs, " ")+" -o "+tt.opts, func(t *testing.T) {
			if tt.needsQuota && !kernelQuotas {
				t.Skip("wrong machine: this kernel has no disk quotas, so it cannot mount this; the guest run (make vmtest) takes it")
			}
			dir := mountFS(t, tt.typ, tt.opts, tt.mkfs...)
			err := Check(dir, "--root")
			require.ErrorIs(t, err, ErrUnsupported)
			assert.Contains(t, err.Error(), "--root "+dir+" is on "+tt.typ)
			if kernelQuotas {
				assert.Contains(t, err.Error(), tt.fix)
			} else {
				assert.Contains(t, err.Error(), "this kernel has no disk quotas")
			}
			assert.Contains(t, err.Error(), "type=loop")
		})
	}
}

// mountFS mounts a new filesystem of typ (tmpfs, or an image file made
// with mkfs.typ and mkfsArgs) at a temporary directory, unmounted at the
// end of the test.
func mountFS(t *testing.T, typ string, opts string, mkfsArgs ...string) string {
	t.Helper()
	require.Zero(t, os.Geteuid(), "mounts a filesystem: run as root")
	dir := filepath.Join(t.TempDir(), "mnt")
	require.NoError(t, os.Mkdir(dir, 0o755))
	src := typ
	if typ != "tmpfs" {
		img := filepath.Join(t.TempDir(), typ+".img")
		size := "64M"
		if typ == "xfs" {
			size = "320M"
		}
		require.NoError(t, exec.Command("truncate", "-s", size, img).Run())
		args := append(append([]string{"-q"}, mkfsArgs...), img)
		if typ == "xfs" {
			args = append([]string{"-f"}, args...)
		}
		out, err := exec.Command("mkfs."+typ, args...).CombinedOutput()
		require.NoError(t, err, "mkfs.%s: %s", typ, out)
		dev, err := exec.Command("losetup", "--find", "--show", img).Output()
		require.NoError(t, err, "losetup (the loop driver is needed)")
		src = string(dev[:len(dev)-1])
		t.Cleanup(func() { _ = exec.Command("losetup", "-d", src).Run() })
	}
	require.NoError(t, unix.Mount(src, dir, typ, 0, opts), "mount %s -o %s", typ, opts)
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
