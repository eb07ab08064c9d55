// Package quotatest makes filesystems for the tests of project quotas.
package quotatest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Mount mounts a new filesystem of typ with the mount options opts at a
// temporary directory and returns it: tmpfs, or xfs or ext4 made with
// mkfsArgs on an image file through a loop device. It is unmounted and its
// loop device detached when the test ends. It needs root.
func Mount(t *testing.T, typ, opts string, mkfsArgs ...string) string {
	t.Helper()
	require.Zero(t, os.Geteuid(), "mounts a filesystem: run as root")
	dir := filepath.Join(t.TempDir(), "mnt")
	require.NoError(t, os.Mkdir(dir, 0o755))
	src := typ
	if typ != "tmpfs" {
		src = loopImage(t, typ, mkfsArgs)
	}
	require.NoError(t, unix.Mount(src, dir, typ, 0, opts), "mount %s -o %s", typ, opts)
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// loopImage makes a filesystem of typ in an image file (xfs's smallest
// is 300 MiB; the file is sparse) and attaches it to a loop device.
func loopImage(t *testing.T, typ string, mkfsArgs []string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), typ+".img")
	size := int64(64 << 20)
	args := append([]string{"-q"}, mkfsArgs...)
	if typ == "xfs" {
		size = 320 << 20
		args = append([]string{"-f"}, args...)
	}
	f, err := os.Create(img)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
	out, err := exec.Command("mkfs."+typ, append(args, img)...).CombinedOutput()
	require.NoError(t, err, "mkfs.%s: %s", typ, out)
	dev, err := exec.Command("losetup", "--find", "--show", img).Output()
	require.NoError(t, err, "losetup (needs the loop driver)")
	loop := strings.TrimSpace(string(dev))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	return loop
}
