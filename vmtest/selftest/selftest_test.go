// Package selftest proves the qemu harness (vmtest/run.sh): that the guest has
// dm-crypt with a working cryptsetup and mkfs, and the kernel NFS client
// talking to internal/nfstest. Run it with vmtest/build.sh.
package selftest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/guest"
	"github.com/holdfast/holdfast/internal/nfstest"
)

// run runs a tool with stdin (the LUKS key travels there, never in argv).
func run(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %v: %s", name, args, out)
	return string(out)
}

func TestLUKS2(t *testing.T) {
	guest.Require(t, "dm-crypt or NFS client")
	dir := t.TempDir()
	img := filepath.Join(dir, "vol.img")
	require.NoError(t, os.WriteFile(img, nil, 0o600))
	require.NoError(t, os.Truncate(img, 64<<20))
	key := make([]byte, 64)
	_, err := rand.Read(key)
	require.NoError(t, err)

	run(t, key, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2",
		"--cipher", "aes-xts-plain64", "--key-size", "512",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img)

	name := fmt.Sprintf("selftest-%d", os.Getpid())
	run(t, key, "cryptsetup", "open", "--type", "luks2", "--key-file", "-", img, name)
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = exec.Command("cryptsetup", "close", name).Run()
		}
	})
	dev := "/dev/mapper/" + name
	run(t, nil, "mkfs.ext4", "-q", dev)

	mnt := filepath.Join(dir, "mnt")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	require.NoError(t, unix.Mount(dev, mnt, "ext4", 0, ""))
	mounted := true
	t.Cleanup(func() {
		if mounted {
			_ = unix.Unmount(mnt, 0)
		}
	})
	want := []byte("sealed in luks2\n")
	require.NoError(t, os.WriteFile(filepath.Join(mnt, "f"), want, 0o644))
	got, err := os.ReadFile(filepath.Join(mnt, "f"))
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.NoError(t, unix.Unmount(mnt, 0))
	mounted = false
	run(t, nil, "cryptsetup", "close", name)
	closed = true

	dump := run(t, nil, "cryptsetup", "luksDump", img)
	require.Contains(t, dump, "aes-xts-plain64")
	require.Contains(t, dump, "512 bits")
	require.Contains(t, dump, "pbkdf2")
}

func TestNFS(t *testing.T) {
	guest.Require(t, "dm-crypt or NFS client")
	export := t.TempDir()
	srv, err := nfstest.Start(export)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, srv.Close()) })

	mnt := t.TempDir()
	require.NoError(t, unix.Mount(srv.MountSource(), mnt, "nfs", 0, srv.MountData()))
	mounted := true
	t.Cleanup(func() {
		if mounted {
			_ = unix.Unmount(mnt, unix.MNT_FORCE)
		}
	})

	want := bytes.Repeat([]byte("through the kernel nfs client\n"), 1000)
	require.NoError(t, os.WriteFile(filepath.Join(mnt, "f"), want, 0o644))
	got, err := os.ReadFile(filepath.Join(export, "f"))
	require.NoError(t, err)
	require.Equal(t, want, got)

	require.NoError(t, unix.Unmount(mnt, 0))
	mounted = false
}

// TestNFSDeadServer proves that nfstest's Close looks like a dead server to the
// kernel client: a soft mount then fails fast instead of hanging.
func TestNFSDeadServer(t *testing.T) {
	guest.Require(t, "dm-crypt or NFS client")
	export := t.TempDir()
	srv, err := nfstest.Start(export)
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })

	mnt := t.TempDir()
	require.NoError(t, unix.Mount(srv.MountSource(), mnt, "nfs", 0, srv.MountData()+",soft,timeo=10,retrans=1,noac"))
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_FORCE|unix.MNT_DETACH) })
	require.NoError(t, os.WriteFile(filepath.Join(mnt, "f"), []byte("x"), 0o644))

	require.NoError(t, srv.Close())
	start := time.Now()
	errc := make(chan error, 1)
	go func() { _, err := os.Stat(filepath.Join(mnt, "f")); errc <- err }()
	select {
	case err := <-errc:
		require.Error(t, err, "stat through a mount of a stopped server")
		t.Logf("stat failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(90 * time.Second):
		t.Fatal("stat on a soft mount of a stopped server hung for 90s")
	}
}
