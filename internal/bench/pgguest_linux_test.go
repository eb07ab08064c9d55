package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/crypt"
	"github.com/holdfast/holdfast/internal/guest"
	"github.com/holdfast/holdfast/internal/loopdev"
	"github.com/holdfast/holdfast/internal/volfs"
)

// GuestBenchEnv is set to 1 by make bench's guest part (through
// VMTEST_GUEST_ENV); TestGuestPGBench is a benchmark, not a test, and
// runs only then.
const GuestBenchEnv = "HOLDFAST_BENCH_GUEST"

// guestPG is the database benchmark's size in the guest: TCG runs a
// guest's CPU some ten times slower than the host, so scale 1, two
// clients and 6 s per run (10 to 15 s with the connections); twelve runs
// per side (six ABBA rounds, the fewest whose interval reaches 95%).
var guestPG = PGSizes{Scale: 1, Clients: 2, Runtime: 6 * time.Second, Pairs: 12}

// guestVolumeSize is the LUKS volume's and the raw mapping's size (they
// live on the guest's tmpfs, in its RAM).
const guestVolumeSize = 192 << 20

// TestGuestPGBench is the database benchmark where dm-crypt runs: Debian's
// PostgreSQL (vmtest/pg.sh) on a holdfast LUKS volume, on a plain ext4
// loop image of the same size beside the volume's image (the same loop
// device and ext4 without encryption: what the cipher costs), and on a
// raw dm-crypt mapping made by hand as holdfast makes its own (the kernel
// cipher's ceiling: the same LUKS2 parameters, loop device and ext4,
// without holdfast: what holdfast costs). A plain directory of the
// guest's tmpfs is no baseline: it never writes through a block device,
// and its figures follow the emulated CPU's share of the host. It prints its rows on a RowsPrefix line, which make
// bench merges into bin/bench.json.
func TestGuestPGBench(t *testing.T) {
	if os.Getenv(GuestBenchEnv) != "1" {
		t.Skip("a benchmark: make bench runs it in the qemu guest (" + GuestBenchEnv + "=1)")
	}
	guest.Require(t, "device-mapper")
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	require.NotEmpty(t, bins, "no PostgreSQL in the guest: vmtest/run.sh adds it with VMTEST_PG=1")
	addPGUser(t)
	root := t.TempDir()
	for _, d := range []string{filepath.Dir(root), root} { // testing makes them 0700; the server is not root
		require.NoError(t, os.Chmod(d, 0o755))
	}

	vol := luksVolume(t, root)
	plain := plainLoop(t, root)
	raw := rawDMCrypt(t, root)
	dirs := []PGDir{{"holdfast LUKS volume", vol}, {"plain ext4 loop image", plain}, {"raw dm-crypt mapping", raw}}
	tps, err := PGServers(filepath.Dir(bins[0]), dirs, guestPG, func(s string) { t.Log(s) })
	require.NoError(t, err)

	what := fmt.Sprintf("pgbench TPS in the qemu guest (scale %d, %d clients, %s)", guestPG.Scale, guestPG.Clients, guestPG.Runtime)
	rows := []Row{
		PairedAtLeast("DB-guest", what+": holdfast LUKS vs raw dm-crypt mapping", tps[0], tps[2], "TPS", 0.97),
		PairedAtLeast("DB-guest", what+": holdfast LUKS vs plain ext4 loop image", tps[0], tps[1], "TPS", 0.8),
	}
	r := &Report{Rows: rows}
	require.NoError(t, r.WriteTable(os.Stdout))
	require.NoError(t, WriteRowsLine(os.Stdout, rows))
}

// addPGUser gives PGServerUID a name: initdb looks its user up.
func addPGUser(t *testing.T) {
	b, err := os.ReadFile("/etc/passwd")
	require.NoError(t, err)
	if bytes.Contains(b, []byte(fmt.Sprintf(":x:%d:", PGServerUID))) {
		return
	}
	f, err := os.OpenFile("/etc/passwd", os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = fmt.Fprintf(f, "postgres:x:%d:%d:PostgreSQL:/tmp:/bin/sh\n", PGServerUID, PGServerUID)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// luksVolume creates and mounts a holdfast crypt volume (engine=luks) of
// a driver on root, and returns where it is bound for the server.
func luksVolume(t *testing.T, root string) string {
	log := logrus.New()
	log.SetOutput(os.Stderr)
	log.SetLevel(logrus.WarnLevel)
	m := volfs.KernelMounter{}
	d, err := driver.New(driver.Config{
		Root: filepath.Join(root, "holdfast"), MountRoot: filepath.Join(root, "holdfast", "mounts"), Scope: "local", BootID: "bench",
		Mounter: m, Log: log,
		Backends: map[string]driver.Backend{"crypt": &crypt.Backend{Mounter: m, KeyDir: filepath.Join(root, "keys")}},
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		d.Close()
		unmountBelow(root)
	})
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "pg", Options: map[string]string{
		"type": "crypt", "engine": crypt.EngineLUKS, "size": fmt.Sprint(guestVolumeSize), "uid": "999", "gid": "999", "mode": "0755"}}))
	res, err := d.Mount(&volume.MountRequest{Name: "pg", ID: "bench"})
	require.NoError(t, err)
	t.Cleanup(func() { d.Unmount(&volume.UnmountRequest{Name: "pg", ID: "bench"}) })
	// holdfast's mount root is root's alone (0700); the server runs as
	// PGServerUID and gets the volume where it can reach it, bound, as a
	// container gets it from dockerd.
	bind := filepath.Join(root, "luks")
	require.NoError(t, os.Mkdir(bind, 0o755))
	require.NoError(t, unix.Mount(res.Mountpoint, bind, "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(bind, 0) })
	return bind
}

// plainLoop makes an ext4 filesystem in an image of the volume's size
// beside root's other files and mounts it through a loop device, as
// holdfast does for its volumes (B4's baseline, ext4Loop).
func plainLoop(t *testing.T, root string) string {
	mnt, unmount, err := ext4Loop(root, "pg", fmt.Sprint(guestVolumeSize))
	require.NoError(t, err)
	t.Cleanup(func() { unmount() })
	return mnt
}

// rawDMCrypt makes a LUKS2 mapping by hand, with holdfast's parameters
// (aes-xts-plain64, 512-bit key, pbkdf2), on an image beside root's
// other files, makes ext4 on it as holdfast does and mounts it.
func rawDMCrypt(t *testing.T, root string) string {
	img, key, mnt := filepath.Join(root, "raw.img"), filepath.Join(root, "raw.key"), filepath.Join(root, "raw")
	require.NoError(t, loopdev.AllocateImage(img, guestVolumeSize))
	k := make([]byte, 64)
	f, err := os.Open("/dev/urandom")
	require.NoError(t, err)
	_, err = f.Read(k)
	f.Close()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(key, k, 0o600))
	cryptsetup(t, "luksFormat", "--batch-mode", "--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "512",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", key, img)
	cryptsetup(t, "open", "--type", "luks2", "--key-file", key, img, "holdfast-bench-raw")
	t.Cleanup(func() { exec.Command("cryptsetup", "close", "holdfast-bench-raw").Run() })
	dev := "/dev/mapper/holdfast-bench-raw"
	require.NoError(t, loopdev.Mkfs(t.Context(), dev, loopdev.FSExt4))
	require.NoError(t, os.Mkdir(mnt, 0o755))
	require.NoError(t, unix.Mount(dev, mnt, "ext4", unix.MS_NODEV|unix.MS_NOSUID, ""))
	t.Cleanup(func() { unix.Unmount(mnt, 0) })
	return mnt
}

func cryptsetup(t *testing.T, args ...string) {
	out, err := exec.Command("cryptsetup", args...).CombinedOutput()
	require.NoError(t, err, "cryptsetup %s: %s", args[0], strings.TrimSpace(string(out)))
}

// unmountBelow unmounts whatever a failed run left mounted under dir.
func unmountBelow(dir string) {
	mounts, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	for i := len(mounts) - 1; i >= 0; i-- {
		unix.Unmount(mounts[i].Mountpoint, unix.MNT_DETACH)
	}
}
