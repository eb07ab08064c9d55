package loop

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/loopdev"
	"github.com/holdfast/holdfast/internal/volfs"
	"github.com/holdfast/holdfast/internal/volfs/volfstest"
	"github.com/holdfast/holdfast/server"
)

// rig is a driver with the loop backend on the real kernel, behind the
// request logger. Its --root is on a tmpfs of its own, so a test sees
// exactly what the volumes take from it.
type rig struct {
	t       *testing.T
	fs      string // the tmpfs holding --root
	root    string
	d       *driver.Driver
	api     volume.Driver
	fillers []string
}

func newRig(t *testing.T, rootSize int64) *rig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a tmpfs as --root, attaches loop devices and mounts filesystems (make test runs as root)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Fatalf("no /dev/loop-control (%v): loop volumes need the loop driver; modprobe loop", err)
	}
	dir := t.TempDir()
	require.NoError(t, unix.Mount("holdfast-test", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", rootSize)))
	r := &rig{t: t, fs: dir, root: filepath.Join(dir, "root")}
	t.Cleanup(func() {
		if r.d != nil {
			r.d.Close()
		}
		volfstest.DetachBelow(r.root)
		imgs, _ := filepath.Glob(filepath.Join(r.root, "volumes", "*", "backing.img"))
		for _, img := range imgs {
			loopdev.Detach(img)
		}
		if err := unix.Unmount(dir, 0); err != nil {
			t.Logf("unmount %s: %v; detaching", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	r.start()
	return r
}

func (r *rig) start() {
	r.t.Helper()
	log := logrus.New()
	log.SetOutput(&bytes.Buffer{})
	m := volfs.KernelMounter{}
	d, err := driver.New(driver.Config{
		Root: r.root, MountRoot: filepath.Join(r.root, "mounts"), Scope: "local", BootID: "test",
		Mounter: m, Log: log,
		Backends: map[string]driver.Backend{"loop": &Backend{Mounter: m}},
	})
	require.NoError(r.t, err)
	r.d = d
	r.api = server.Instrument(d, log)
}

func (r *rig) restart() {
	r.t.Helper()
	require.NoError(r.t, r.d.Close())
	r.start()
}

func (r *rig) create(name string, opts map[string]string) error {
	all := map[string]string{"type": "loop"}
	for k, v := range opts {
		all[k] = v
	}
	return r.api.Create(&volume.CreateRequest{Name: name, Options: all})
}

func (r *rig) mount(name, id string) string {
	r.t.Helper()
	res, err := r.api.Mount(&volume.MountRequest{Name: name, ID: id})
	require.NoError(r.t, err)
	return res.Mountpoint
}

func (r *rig) unmount(name, id string) {
	r.t.Helper()
	require.NoError(r.t, r.api.Unmount(&volume.UnmountRequest{Name: name, ID: id}))
}

func (r *rig) remove(name string) {
	r.t.Helper()
	require.NoError(r.t, r.api.Remove(&volume.RemoveRequest{Name: name}))
	r.d.WaitPurged()
	assert.NoDirExists(r.t, filepath.Join(r.root, "volumes", name))
	r.requireReleased(name)
}

func (r *rig) status(name string) map[string]any {
	r.t.Helper()
	res, err := r.api.Get(&volume.GetRequest{Name: name})
	require.NoError(r.t, err)
	return res.Volume.Status
}

func (r *rig) backing(name string) string {
	return filepath.Join(r.root, "volumes", name, "backing.img")
}

// loops lists the loop devices attached to name's image.
func (r *rig) loops(name string) []string {
	r.t.Helper()
	devs, err := loopdev.Find(r.backing(name))
	require.NoError(r.t, err)
	return devs
}

// releasedLoops is loops once it is empty, or after 5 s: a device another
// process holds open for a moment (any scan of loop devices, in another
// test binary too) autoclears when it is closed.
func (r *rig) releasedLoops(name string) []string {
	r.t.Helper()
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if devs := r.loops(name); len(devs) == 0 || time.Now().After(end) {
			return devs
		}
	}
}

// requireReleased checks that nothing of the volume is attached: no mount
// under --root, no loop device.
func (r *rig) requireReleased(name string) {
	r.t.Helper()
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(r.root))
	require.NoError(r.t, err)
	assert.Empty(r.t, mounts, "nothing mounted under --root")
	assert.Empty(r.t, r.releasedLoops(name), "no loop device left")
	out, _ := exec.Command("losetup", "-a").CombinedOutput()
	assert.NotContains(r.t, string(out), r.backing(name), "losetup -a")
}

// free returns the bytes available on the filesystem at dir.
func free(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	require.NoError(t, unix.Statfs(dir, &st))
	return int64(st.Bavail) * st.Bsize
}

// allocated returns the bytes the filesystem holds for file.
func allocated(t *testing.T, file string) int64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(file, &st))
	return st.Blocks * 512
}

// fill writes up to n bytes to a new file and returns the first error.
func fill(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{0x5a}, 1<<20)
	for written := int64(0); written < n; written += int64(len(chunk)) {
		if _, err := f.Write(chunk); err != nil {
			return err
		}
	}
	return f.Sync()
}

// mountOf returns the mount table's entry for mountpoint.
func mountOf(t *testing.T, mountpoint string) *mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mountpoint))
	require.NoError(t, err)
	require.Len(t, infos, 1, "one mount at %s", mountpoint)
	return infos[0]
}

// TestLoopVolume is a loop volume's life for each filesystem: the image
// allocated in full at Create, the owner and mode asked for, an empty
// root, nosuid and nodev, Status from the volume's own filesystem, data
// kept across unmounts and plugin restarts, nothing attached while
// unused, nothing left after Remove.
func TestLoopVolume(t *testing.T) {
	for _, tt := range []struct{ fs, size string }{{"ext4", "64m"}, {"xfs", "300m"}} {
		t.Run(tt.fs, func(t *testing.T) {
			r := newRig(t, 400<<20)
			rootFree := free(t, r.fs)
			require.NoError(t, r.create("data", map[string]string{"size": tt.size, "fs": tt.fs, "uid": "1000", "gid": "1001", "mode": "0750"}))
			size, err := driver.CanonSize(tt.size)
			require.NoError(t, err)
			want := volfs.Size(map[string]string{"size": size})
			assert.EqualValues(t, want, allocated(t, r.backing("data")), "the image is allocated in full at Create")
			assert.GreaterOrEqual(t, rootFree-free(t, r.fs), want, "and takes its size from --root")
			st := r.status("data")
			assert.Equal(t, tt.fs, st["fs"])
			assert.Equal(t, want, st["size"])
			assert.NotContains(t, st, "used", "no usage while unmounted")
			r.requireReleased("data")

			mp := r.mount("data", "a")
			fi, err := os.Stat(mp)
			require.NoError(t, err)
			assert.EqualValues(t, 1000, fi.Sys().(*syscall.Stat_t).Uid)
			assert.EqualValues(t, 1001, fi.Sys().(*syscall.Stat_t).Gid)
			assert.Equal(t, os.ModeDir|0o750, fi.Mode())
			entries, err := os.ReadDir(mp)
			require.NoError(t, err)
			assert.Empty(t, entries, "a new volume is empty (no lost+found)")
			info := mountOf(t, mp)
			assert.Equal(t, tt.fs, info.FSType)
			assert.Contains(t, strings.Split(info.Options, ","), "nosuid")
			assert.Contains(t, strings.Split(info.Options, ","), "nodev")
			assert.Len(t, r.loops("data"), 1, "one loop device while mounted")

			// Status: the volume's own filesystem, not --root's.
			before := r.status("data")
			require.NoError(t, fill(filepath.Join(mp, "ten"), 10<<20))
			after := r.status("data")
			assert.Equal(t, true, after["mounted"])
			used := after["used"].(uint64) - before["used"].(uint64)
			assert.InDelta(t, 10<<20, float64(used), 1<<20, "used grows by what was written")
			avail := after["available"].(uint64)
			assert.Less(t, avail, uint64(want), "available is within the volume")
			assert.Greater(t, avail+after["used"].(uint64), uint64(want)*7/10, "used and available add up to most of the size")
			m := (&Backend{}).Meter(&driver.Volume{Options: map[string]string{"size": size}, Mounted: true, Mountpoint: mp})
			assert.Equal(t, driver.Measure{Size: want, Used: int64(after["used"].(uint64)), UsedKnown: true}, m, "metrics see what Status shows")
			assert.Equal(t, driver.Measure{Size: want}, (&Backend{}).Meter(&driver.Volume{Options: map[string]string{"size": size}}), "unmounted: size only")
			r.unmount("data", "a")
			r.requireReleased("data")

			// Kept across an unmount, a restart of the plugin while
			// mounted (adopted, the lease kept), and a restart while not.
			mp = r.mount("data", "b")
			got, err := os.ReadFile(filepath.Join(mp, "ten"))
			require.NoError(t, err)
			assert.Equal(t, bytes.Repeat([]byte{0x5a}, 10<<20), got)
			require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("kept"), 0o600))
			r.restart()
			st = r.status("data")
			assert.Equal(t, true, st["mounted"])
			assert.Equal(t, 1, st["leases"])
			r.unmount("data", "b")
			r.requireReleased("data")
			r.restart()
			mp = r.mount("data", "c")
			got, err = os.ReadFile(filepath.Join(mp, "f"))
			require.NoError(t, err)
			assert.Equal(t, "kept", string(got))
			r.unmount("data", "c")

			r.remove("data")
			assert.GreaterOrEqual(t, free(t, r.fs), rootFree, "Remove gives --root its space back")
		})
	}
}

// TestFullLoopVolume fills a loop volume: ENOSPC inside it, --root keeps
// its free space, the other volume and the plugin keep working, and
// deleting makes room again.
func TestFullLoopVolume(t *testing.T) {
	r := newRig(t, 128<<20)
	for _, name := range []string{"full", "other"} {
		require.NoError(t, r.create(name, map[string]string{"size": "40m"}))
	}
	full, other := r.mount("full", "a"), r.mount("other", "a")
	rootFree := free(t, r.fs)

	err := fill(filepath.Join(full, "big"), 48<<20)
	assert.True(t, errors.Is(err, syscall.ENOSPC), "want ENOSPC writing 48 MiB into 40m, got %v", err)
	assert.GreaterOrEqual(t, free(t, r.fs), rootFree, "a full volume takes no room from --root")
	assert.LessOrEqual(t, allocated(t, r.backing("full")), int64(40<<20), "the image stays within its size")
	require.NoError(t, fill(filepath.Join(other, "f"), 8<<20), "the other volume still takes writes")
	assert.Less(t, r.status("full")["available"], uint64(1<<20), "Status shows the volume full (ext4 keeps some blocks for delayed allocation)")
	list, err := r.api.List()
	require.NoError(t, err)
	assert.Len(t, list.Volumes, 2)

	require.NoError(t, os.Remove(filepath.Join(full, "big")))
	require.NoError(t, fill(filepath.Join(full, "small"), 1<<20), "room again after deleting")
	r.unmount("full", "a")
	r.unmount("other", "a")
	r.remove("full")
	r.remove("other")
}

// TestLoopCreateOnFullRoot: a Create that does not fit on --root fails
// with an error naming --root and the fix, and leaves nothing; once there
// is room, the same Create works.
func TestLoopCreateOnFullRoot(t *testing.T) {
	r := newRig(t, 96<<20)
	filler := filepath.Join(r.fs, "filler")
	require.NoError(t, fill(filler, free(t, r.fs)-48<<20))
	err := r.create("big", map[string]string{"size": "64m"})
	require.Error(t, err)
	t.Logf("error: %v", err)
	assert.ErrorIs(t, err, syscall.ENOSPC)
	assert.Contains(t, err.Error(), "not enough space on the filesystem holding --root ("+r.root+")")
	assert.Contains(t, err.Error(), "free space there or move --root to a larger filesystem")
	assert.NoDirExists(t, filepath.Join(r.root, "volumes", "big"))
	r.requireReleased("big")
	_, err = r.api.Get(&volume.GetRequest{Name: "big"})
	assert.ErrorIs(t, err, driver.ErrNotFound)
	r.restart()
	_, err = r.api.Get(&volume.GetRequest{Name: "big"})
	assert.ErrorIs(t, err, driver.ErrNotFound, "no record in the state database")
	assert.Greater(t, free(t, r.fs), int64(40<<20), "the partial image is gone")

	require.NoError(t, os.Remove(filler))
	require.NoError(t, r.create("big", map[string]string{"size": "64m"}))
	mp := r.mount("big", "a")
	require.NoError(t, fill(filepath.Join(mp, "f"), 1<<20))
	r.unmount("big", "a")
	r.remove("big")
}

// TestLoopBadOptions: each bad option fails Create through the driver
// with a message naming it and the fix, and makes nothing.
func TestLoopBadOptions(t *testing.T) {
	r := newRig(t, 64<<20)
	for _, tt := range []struct {
		opts map[string]string
		msg  string
	}{
		{map[string]string{}, `type=loop requires option "size"`},
		{map[string]string{"size": "8m"}, `invalid option size="8m": a loop volume needs at least 16m`},
		{map[string]string{"size": "100m", "fs": "xfs"}, `invalid option size="100m": an xfs filesystem needs at least 300m (mkfs.xfs refuses smaller ones); give size=300m or more, or use fs=ext4`},
		{map[string]string{"size": "1g", "fs": "zfs"}, `invalid option fs="zfs": want ext4 or xfs`},
		{map[string]string{"size": "16m", "uid": "root"}, `invalid option uid="root": want a numeric user id such as 1000`},
		{map[string]string{"size": "16m", "gid": "4294967296"}, `invalid option gid="4294967296"`},
		{map[string]string{"size": "16m", "mode": "rwx"}, `invalid option mode="rwx": want an octal mode such as 0750 or 1770`},
		{map[string]string{"size": "16m", "nr_inodes": "10"}, `invalid option "nr_inodes" for type=loop: valid options are fs, gid, mode, size, type, uid`},
	} {
		err := r.create("bad", tt.opts)
		require.Error(t, err, "%v", tt.opts)
		assert.Contains(t, err.Error(), tt.msg, "%v", tt.opts)
		assert.NoDirExists(t, filepath.Join(r.root, "volumes", "bad"))
	}
	list, err := r.api.List()
	require.NoError(t, err)
	assert.Empty(t, list.Volumes)
}

// TestLoopBusyAtLastUnmount: a process outside Docker holds the volume
// (its working directory is in it) at the last Unmount. The Unmount
// succeeds, nothing can reach the volume through its mountpoint; the next
// Mount shares the same filesystem on the same loop device (never a second
// copy of the image), and once the holder is gone the device detaches.
func TestLoopBusyAtLastUnmount(t *testing.T) {
	r := newRig(t, 128<<20)
	require.NoError(t, r.create("busy", map[string]string{"size": "32m"}))
	mp := r.mount("busy", "a")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("one"), 0o600))
	devs := r.loops("busy")
	require.Len(t, devs, 1)
	holder := exec.Command("sleep", "600")
	holder.Dir = mp
	require.NoError(t, holder.Start())
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })

	r.unmount("busy", "a")
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(r.root))
	require.NoError(t, err)
	assert.Empty(t, mounts, "detached from every mountpoint")
	assert.Equal(t, devs, r.loops("busy"), "the device lives on while its holder does")
	autoclear, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(devs[0]), "loop", "autoclear"))
	require.NoError(t, err)
	assert.Equal(t, "1", strings.TrimSpace(string(autoclear)))

	mp = r.mount("busy", "b")
	assert.Equal(t, devs, r.loops("busy"), "the next Mount uses the same device")
	got, err := os.ReadFile(filepath.Join(mp, "f"))
	require.NoError(t, err)
	assert.Equal(t, "one", string(got))
	require.NoError(t, os.WriteFile(filepath.Join(mp, "g"), []byte("two"), 0o600))
	held, err := os.ReadFile(filepath.Join("/proc", fmt.Sprint(holder.Process.Pid), "cwd", "g"))
	require.NoError(t, err, "the holder sees the same filesystem")
	assert.Equal(t, "two", string(held))
	r.unmount("busy", "b")

	require.NoError(t, holder.Process.Kill())
	holder.Wait()
	r.requireReleased("busy")
	mp = r.mount("busy", "c")
	got, err = os.ReadFile(filepath.Join(mp, "g"))
	require.NoError(t, err)
	assert.Equal(t, "two", string(got))
	r.unmount("busy", "c")
	r.remove("busy")
}

// TestLoopLeftoversAreReleasedAtStart: a crash left an unmounted volume's
// image attached and its filesystem mounted (a Mount cut short before the
// bind mount, or an Unmount before the detach): the next start releases
// both, and the volume mounts as usual.
func TestLoopLeftoversAreReleasedAtStart(t *testing.T) {
	r := newRig(t, 128<<20)
	require.NoError(t, r.create("crashy", map[string]string{"size": "32m"}))
	dev, err := loopdev.Attach(r.backing("crashy"))
	require.NoError(t, err)
	staging := filepath.Join(r.root, "volumes", "crashy", "fs")
	require.NoError(t, os.MkdirAll(staging, 0o700))
	require.NoError(t, unix.Mount(dev.Path, staging, "ext4", 0, ""))
	dev.Close()
	require.Len(t, r.loops("crashy"), 1)
	r.restart()
	r.requireReleased("crashy")
	mp := r.mount("crashy", "a")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o600))
	r.unmount("crashy", "a")
	r.remove("crashy")
}
