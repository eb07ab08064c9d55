// Package quota tests size= of type=local volumes, project quotas, for
// real on xfs and ext4 in the qemu guest (Debian's kernel has quotas; the
// host's has none): make vmtest runs it.
package quota

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/guest"
	"github.com/holdfast/holdfast/internal/quota"
	"github.com/holdfast/holdfast/internal/quota/quotatest"
	"github.com/holdfast/holdfast/internal/volfs"
)

// filesystems are the two with project quotas, made and mounted so.
var filesystems = []struct {
	typ  string
	mkfs []string
}{
	{"xfs", nil},
	{"ext4", []string{"-O", "quota,project"}},
}

// rig is a driver whose --root is on a filesystem of its own.
type rig struct {
	t      *testing.T
	fs     string // the filesystem's mountpoint
	root   string
	mounts string
	faults *failpoint.Set
	d      *driver.Driver
}

func newRig(t *testing.T, typ, opts string, mkfs ...string) *rig {
	guest.Require(t, "disk quotas")
	fs := quotatest.Mount(t, typ, opts, mkfs...)
	r := &rig{t: t, fs: fs, root: filepath.Join(fs, "root"), mounts: filepath.Join(t.TempDir(), "mounts"), faults: &failpoint.Set{}}
	r.start()
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *rig) start() {
	r.t.Helper()
	log, _ := test.NewNullLogger()
	m := volfs.KernelMounter{}
	d, err := driver.New(driver.Config{
		Root: r.root, MountRoot: r.mounts, Scope: "local", BootID: "test", Mounter: m, Log: log,
		Backends: map[string]driver.Backend{"local": &local.Backend{Mounter: m, Faults: r.faults}},
	})
	require.NoError(r.t, err)
	r.d = d
}

// stop closes the driver and detaches what it left mounted.
func (r *rig) stop() {
	if r.d == nil {
		return
	}
	r.d.Close()
	r.d = nil
	entries, _ := os.ReadDir(r.mounts)
	for _, e := range entries {
		unix.Unmount(filepath.Join(r.mounts, e.Name()), unix.MNT_DETACH)
	}
}

func (r *rig) create(name, size string) error {
	opts := map[string]string{}
	if size != "" {
		opts["size"] = size
	}
	return r.d.Create(&volume.CreateRequest{Name: name, Options: opts})
}

func (r *rig) mount(name string) string {
	r.t.Helper()
	res, err := r.d.Mount(&volume.MountRequest{Name: name, ID: "c-" + name})
	require.NoError(r.t, err)
	return res.Mountpoint
}

func (r *rig) unmount(name string) {
	r.t.Helper()
	require.NoError(r.t, r.d.Unmount(&volume.UnmountRequest{Name: name, ID: "c-" + name}))
}

func (r *rig) status(name string) map[string]any {
	r.t.Helper()
	res, err := r.d.Get(&volume.GetRequest{Name: name})
	require.NoError(r.t, err)
	return res.Volume.Status
}

func (r *rig) projectID(name string) uint32 {
	r.t.Helper()
	id, ok := r.status(name)["projectID"].(uint32)
	require.True(r.t, ok, "Status of %s has its projectID: %v", name, r.status(name))
	return id
}

func (r *rig) used(name string) uint64 {
	r.t.Helper()
	st := r.status(name)
	require.NotContains(r.t, st, "usageError")
	return st["used"].(uint64)
}

// write writes n bytes to path and syncs them, returning how many made it.
// It writes as a container does, without CAP_SYS_RESOURCE: ext4 lets a
// process with it exceed any quota (xfs does not), and Docker gives
// containers none unless --cap-add SYS_RESOURCE or --privileged.
func write(path string, n int) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	restore, err := dropSysResource()
	if err != nil {
		return 0, err
	}
	defer restore()
	return writeFile(path, n)
}

// dropSysResource clears CAP_SYS_RESOURCE from the effective set of this
// thread (capabilities are per thread) and returns what puts it back.
func dropSysResource() (func(), error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("capget: %w", err)
	}
	saved := data
	data[0].Effective &^= 1 << unix.CAP_SYS_RESOURCE
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("capset: %w", err)
	}
	return func() { unix.Capset(&hdr, &saved[0]) }, nil
}

func writeFile(path string, n int) (int, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	done := 0
	for done < n {
		k, err := f.Write(buf[:min(len(buf), n-done)])
		done += k
		if err != nil {
			return done, err
		}
	}
	return done, f.Sync()
}

func full(err error) bool { return errors.Is(err, unix.EDQUOT) || errors.Is(err, unix.ENOSPC) }

// TestQuotaLocalVolume: on xfs and on ext4 with project quotas, a local
// volume with size= is full at its size, and only it: other volumes, with
// or without a size, and --root itself go on. Status reports the volume's
// own usage; it survives a restart; ids are distinct; Remove clears the
// limit, and a volume given the id again starts from nothing.
func TestQuotaLocalVolume(t *testing.T) {
	for _, fs := range filesystems {
		t.Run(fs.typ, func(t *testing.T) {
			r := newRig(t, fs.typ, "prjquota", fs.mkfs...)
			require.NoError(t, r.create("small", "4m"))
			require.NoError(t, r.create("other", "16m"))
			require.NoError(t, r.create("plain", ""))
			idSmall, idOther := r.projectID("small"), r.projectID("other")
			assert.NotEqual(t, idSmall, idOther, "each volume has its own project id")
			assert.True(t, quota.Owned(idSmall) && quota.Owned(idOther), "ids %d, %d in holdfast's range", idSmall, idOther)
			assert.NotContains(t, r.status("plain"), "projectID", "no size, no quota")
			assert.Equal(t, int64(4<<20), r.status("small")["size"])
			assert.Less(t, r.used("small"), uint64(64<<10), "a new volume uses next to nothing")

			mp := r.mount("small")
			sub := filepath.Join(mp, "sub", "deeper")
			require.NoError(t, os.MkdirAll(sub, 0o755))
			n, err := write(filepath.Join(mp, "big"), 8<<20)
			require.Error(t, err, "a write past size fails")
			assert.True(t, full(err), "EDQUOT or ENOSPC, not %v", err)
			assert.LessOrEqual(t, n, 4<<20, "no more than size was written")
			assert.Greater(t, r.used("small"), uint64(3<<20), "Status reports what the volume holds")
			_, err = write(filepath.Join(sub, "more"), 1<<20)
			assert.True(t, full(err), "subdirectories share the limit: %v", err)

			for _, name := range []string{"other", "plain"} {
				_, err := write(filepath.Join(r.mount(name), "data"), 6<<20)
				require.NoError(t, err, "volume %s is not limited by small's quota", name)
				r.unmount(name)
			}
			_, err = write(filepath.Join(r.fs, "beside-root"), 6<<20)
			require.NoError(t, err, "the filesystem holding --root is not limited")
			assert.Greater(t, r.used("other"), uint64(5<<20))
			r.unmount("small")

			usedBefore := r.used("small")
			r.stop()
			r.start()
			assert.Equal(t, idSmall, r.projectID("small"), "the id survives a restart")
			assert.Equal(t, usedBefore, r.used("small"), "and so does the usage")
			_, err = write(filepath.Join(r.mount("small"), "after-restart"), 1<<20)
			assert.True(t, full(err), "still full after a restart: %v", err)
			r.unmount("small")

			require.NoError(t, r.d.Remove(&volume.RemoveRequest{Name: "small"}))
			q, err := quota.Get(r.fs, idSmall)
			require.NoError(t, err)
			assert.Zero(t, q.Limit, "Remove clears the limit")
			r.d.WaitPurged()
			require.Eventually(t, func() bool {
				unix.Sync()
				q, err := quota.Get(r.fs, idSmall)
				return err == nil && q.Free()
			}, 30*time.Second, 100*time.Millisecond, "the id is free once the files are deleted")

			// The same name starts at the same id: it is given again, empty.
			require.NoError(t, r.create("small", "4m"))
			assert.Equal(t, idSmall, r.projectID("small"), "the freed id is used again")
			assert.Less(t, r.used("small"), uint64(64<<10), "with no usage left from the removed volume")
			_, err = write(filepath.Join(r.mount("small"), "fresh"), 3<<20)
			require.NoError(t, err, "the whole size is there again")
			r.unmount("small")
		})
	}
}

// TestQuotaIDsNotReused: an id a directory holds, an id with a limit and an
// id /etc/projid names are never handed out.
func TestQuotaIDsNotReused(t *testing.T) {
	for _, fs := range filesystems {
		t.Run(fs.typ, func(t *testing.T) {
			guest.Require(t, "disk quotas")
			mnt := quotatest.Mount(t, fs.typ, "prjquota", fs.mkfs...)
			projid := filepath.Join(t.TempDir(), "projid")
			a := &quota.Allocator{Projid: projid}
			dirs := make([]string, 4)
			for i := range dirs {
				dirs[i] = filepath.Join(mnt, "d"+strconv.Itoa(i))
				require.NoError(t, os.Mkdir(dirs[i], 0o755))
			}
			first, err := a.Assign(dirs[0], "same")
			require.NoError(t, err)
			got, err := quota.DirID(dirs[0])
			require.NoError(t, err)
			assert.Equal(t, first, got)

			second, err := a.Assign(dirs[1], "same")
			require.NoError(t, err)
			assert.NotEqual(t, first, second, "held by d0's directory")

			// A limit alone (no file) holds an id too.
			require.NoError(t, os.Remove(dirs[1]))
			require.NoError(t, quota.SetLimit(mnt, second, 1<<20))
			third, err := a.Assign(dirs[2], "same")
			require.NoError(t, err)
			assert.NotContains(t, []uint32{first, second}, third)

			require.NoError(t, os.WriteFile(projid, []byte("admin:"+strconv.FormatUint(uint64(third)+1, 10)+"\n"), 0o644))
			fourth, err := a.Assign(dirs[3], "same")
			require.NoError(t, err)
			assert.NotContains(t, []uint32{first, second, third, third + 1}, fourth, "ids in /etc/projid are skipped")
		})
	}
}

// TestQuotaCreateFailureLeavesNothing fails each step of a size-limited
// Create in turn: no volume, no directory, no limit is left.
func TestQuotaCreateFailureLeavesNothing(t *testing.T) {
	for _, fs := range filesystems {
		t.Run(fs.typ, func(t *testing.T) {
			r := newRig(t, fs.typ, "prjquota", fs.mkfs...)
			r.faults.Arm("", 1, nil)
			require.NoError(t, r.create("probe", "4m"))
			steps := r.faults.Steps()
			require.Contains(t, steps, "set project quota")
			id := r.projectID("probe")
			require.NoError(t, r.d.Remove(&volume.RemoveRequest{Name: "probe"}))
			r.d.WaitPurged()
			for _, step := range []string{"assign project id", "set project quota", "sync data directory"} {
				r.faults.Arm(step, 1, nil)
				require.Error(t, r.create("probe", "4m"), step)
				require.True(t, r.faults.Fired(), step)
				_, err := r.d.Get(&volume.GetRequest{Name: "probe"})
				assert.ErrorIs(t, err, driver.ErrNotFound, "%s: no volume", step)
				assert.NoDirExists(t, filepath.Join(r.root, "volumes", "probe"), step)
				r.d.WaitPurged()
				require.Eventually(t, func() bool {
					unix.Sync()
					q, err := quota.Get(r.fs, id)
					return err == nil && q.Free()
				}, 30*time.Second, 100*time.Millisecond, "%s: the id holds no limit and no file", step)
			}
			r.faults.Disarm()
			require.NoError(t, r.create("probe", "4m"), "a Create after the failures works")
			assert.Equal(t, id, r.projectID("probe"))
		})
	}
}

// TestQuotaMissingOnRoot: on xfs without prjquota and on ext4 without the
// project feature, Create with size fails naming the fix and leaves nothing.
func TestQuotaMissingOnRoot(t *testing.T) {
	tests := []struct {
		typ, opts string
		mkfs      []string
		want      string
	}{
		{"xfs", "", nil, "is on xfs without project quotas: mount the xfs filesystem with -o prjquota"},
		{"ext4", "", nil, "is on ext4 without project quotas: make the ext4 filesystem with mkfs.ext4 -O quota,project"},
		{"ext4", "", []string{"-O", "quota,project"}, "is on ext4 with project quotas accounted but not enforced: mount it with -o prjquota;"},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			r := newRig(t, tt.typ, tt.opts, tt.mkfs...)
			err := r.create("vol", "4m")
			require.ErrorIs(t, err, quota.ErrUnsupported)
			assert.Contains(t, err.Error(), "--root "+r.root+" "+tt.want)
			assert.Contains(t, err.Error(), "type=loop")
			list, err := r.d.List()
			require.NoError(t, err)
			assert.Empty(t, list.Volumes)
			assert.NoDirExists(t, filepath.Join(r.root, "volumes", "vol"))
			require.NoError(t, r.create("vol", ""), "without size it is a plain local volume")
		})
	}
}

// TestQuotaBadSize: sizes a quota cannot be are refused before anything
// is made.
func TestQuotaBadSize(t *testing.T) {
	r := newRig(t, "xfs", "prjquota")
	for _, size := range []string{"0", "-1", "100k", "50%", "lots", "9000p"} {
		err := r.create("vol", size)
		require.ErrorIs(t, err, driver.ErrInvalidOption, size)
		assert.Contains(t, err.Error(), `size="`+size+`"`)
	}
	list, err := r.d.List()
	require.NoError(t, err)
	assert.Empty(t, list.Volumes)
}
