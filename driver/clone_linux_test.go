package driver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
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
	"github.com/holdfast/holdfast/driver/bind"
	"github.com/holdfast/holdfast/driver/crypt"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/driver/loop"
	"github.com/holdfast/holdfast/driver/tmpfs"
	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/loopdev"
	"github.com/holdfast/holdfast/internal/treetest"
	"github.com/holdfast/holdfast/internal/volfs"
)

// cloneRig is a driver with every backend of this host on the real
// kernel, its --root on a filesystem of the test's choice.
type cloneRig struct {
	t      *testing.T
	root   string
	keyDir string
	faults *failpoint.Set
	logs   *bytes.Buffer
	d      *driver.Driver
}

// newCloneRig starts a driver whose --root is on a fresh loop-backed
// filesystem rootFS ("ext4", "xfs" or "" for the test's temp dir).
func newCloneRig(t *testing.T, rootFS string) *cloneRig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts filesystems and attaches loop devices (make test runs as root)")
	}
	base := t.TempDir()
	if rootFS != "" {
		base = mountFS(t, rootFS)
	}
	r := &cloneRig{t: t, root: filepath.Join(base, "root"), keyDir: filepath.Join(base, "keys"), faults: &failpoint.Set{}, logs: &bytes.Buffer{}}
	t.Cleanup(func() {
		if r.d != nil {
			r.d.Close()
		}
		mounts, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(r.root))
		for i := len(mounts) - 1; i >= 0; i-- {
			unix.Unmount(mounts[i].Mountpoint, unix.MNT_DETACH)
		}
		imgs, _ := filepath.Glob(filepath.Join(r.root, "*", "*", "*.img"))
		more, _ := filepath.Glob(filepath.Join(r.root, "views", "*", "image"))
		for _, img := range append(imgs, more...) {
			loopdev.Detach(img)
		}
	})
	r.start()
	return r
}

func (r *cloneRig) start() {
	r.t.Helper()
	log := logrus.New()
	log.SetOutput(r.logs)
	m := volfs.KernelMounter{}
	d, err := driver.New(driver.Config{
		Root: r.root, MountRoot: filepath.Join(r.root, "mounts"), Scope: "local", BootID: "test",
		Mounter: m, Log: log, Faults: r.faults,
		Backends: map[string]driver.Backend{
			"local": &local.Backend{Mounter: m, Faults: r.faults},
			"tmpfs": &tmpfs.Backend{Mounter: m, DefaultSize: "64m"},
			"loop":  &loop.Backend{Mounter: m, Faults: r.faults},
			"crypt": &crypt.Backend{Mounter: m, KeyDir: r.keyDir, Faults: r.faults},
			"bind":  &bind.Backend{Mounter: m, Allowed: []string{"/"}},
		},
	})
	require.NoError(r.t, err)
	r.d = d
}

func (r *cloneRig) restart() {
	r.t.Helper()
	require.NoError(r.t, r.d.Close())
	r.start()
}

func (r *cloneRig) create(name string, opts map[string]string) {
	r.t.Helper()
	require.NoError(r.t, r.d.Create(&volume.CreateRequest{Name: name, Options: opts}))
}

func (r *cloneRig) mount(name, id string) string {
	r.t.Helper()
	res, err := r.d.Mount(&volume.MountRequest{Name: name, ID: id})
	require.NoError(r.t, err)
	return res.Mountpoint
}

func (r *cloneRig) unmount(name, id string) {
	r.t.Helper()
	require.NoError(r.t, r.d.Unmount(&volume.UnmountRequest{Name: name, ID: id}))
}

func (r *cloneRig) status(name string) map[string]any {
	r.t.Helper()
	res, err := r.d.Get(&volume.GetRequest{Name: name})
	require.NoError(r.t, err)
	return res.Volume.Status
}

// requireNoViews checks that nothing of a view is left: no directory
// under --root/views, no mount there, no view lease.
func (r *cloneRig) requireNoViews(names ...string) {
	r.t.Helper()
	ents, err := os.ReadDir(filepath.Join(r.root, "views"))
	require.NoError(r.t, err)
	assert.Empty(r.t, ents, "nothing left in --root/views")
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(filepath.Join(r.root, "views")))
	require.NoError(r.t, err)
	assert.Empty(r.t, mounts)
	for _, n := range names {
		st := r.status(n)
		_, err := r.d.Path(&volume.PathRequest{Name: n})
		require.NoError(r.t, err)
		assert.NotContains(r.t, fmt.Sprint(st), driver.ViewLeasePrefix)
	}
}

// mountFS mounts a fresh loop-backed filesystem for the test.
func mountFS(t *testing.T, fs string) string {
	t.Helper()
	mkfs := map[string][]string{"ext4": {"mkfs.ext4", "-q", "-F"}, "xfs": {"mkfs.xfs", "-q", "-f"}, "btrfs": {"mkfs.btrfs", "-q", "-f"}}[fs]
	if _, err := exec.LookPath(mkfs[0]); err != nil {
		t.Fatalf("%s is not installed (Debian: apt-get install xfsprogs btrfs-progs): the point-in-time tests need an xfs and a btrfs --root", mkfs[0])
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	require.NoError(t, loopdev.AllocateImage(img, 1<<30))
	out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	dev, err := loopdev.Attach(img)
	require.NoError(t, err)
	defer dev.Close()
	mnt := filepath.Join(dir, "mnt")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	require.NoError(t, unix.Mount(dev.Path, mnt, fs, 0, ""))
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	return mnt
}

// TestFromEveryType copies a tree of every kind of file from= between
// the types of this host, the source in use and not: the copy is exact,
// the sparse file stays sparse, and the source is left as it was.
func TestFromEveryType(t *testing.T) {
	for _, tt := range []struct {
		name      string
		src, dst  map[string]string
		srcInUse  bool
		wantLive  bool
		notUnused bool // a tmpfs's files exist only while it is mounted
	}{
		{name: "local to local", src: map[string]string{}, dst: map[string]string{}},
		{name: "tmpfs to loop", src: map[string]string{"type": "tmpfs", "size": "32m"}, dst: map[string]string{"type": "loop", "size": "64m"}, notUnused: true},
		{name: "loop to crypt", src: map[string]string{"type": "loop", "size": "64m"}, dst: map[string]string{"type": "crypt", "size": "64m", "engine": "fscrypt"}},
		{name: "crypt to local", src: map[string]string{"type": "crypt", "size": "64m", "engine": "fscrypt"}, dst: map[string]string{"type": "local", "uid": "4321", "mode": "0700"}},
		{name: "local to loop", src: map[string]string{}, dst: map[string]string{"type": "loop", "size": "64m"}},
		{name: "bind to local", src: map[string]string{"type": "bind"}, dst: map[string]string{}},
	} {
		for _, inUse := range []bool{false, true} {
			if !inUse && tt.notUnused {
				continue
			}
			t.Run(fmt.Sprintf("%s/in use %v", tt.name, inUse), func(t *testing.T) {
				r := newCloneRig(t, "")
				if tt.src["type"] == "bind" {
					tt.src = map[string]string{"type": "bind", "device": t.TempDir()}
				}
				r.create("src", tt.src)
				mp := r.mount("src", "vc")
				treetest.Build(t, mp)
				want := treetest.Snapshot(t, mp)
				if !inUse {
					r.unmount("src", "vc")
				}
				opts := map[string]string{"from": "src"}
				for k, v := range tt.dst {
					opts[k] = v
				}
				r.create("dst", opts)
				assert.Equal(t, "src", r.status("dst")["from"], "Status says where the files came from")
				wantCopy := "exact"
				if inUse {
					wantCopy = driver.NoteLive
				}
				assert.Equal(t, wantCopy, r.status("dst")["fromCopy"], "and how consistent the copy is")
				assert.Equal(t, false, r.status("dst")["mounted"], "the copy is unmounted before Create answers")
				got := r.mount("dst", "d")
				wantDst := maps.Clone(want)
				if tt.dst["uid"] != "" {
					root := wantDst["."]
					root.UID, root.Mode = 4321, root.Mode&^0o7777|0o700
					wantDst["."] = root
				}
				treetest.RequireSame(t, wantDst, treetest.Snapshot(t, got))
				assert.Less(t, treetest.Allocated(t, filepath.Join(got, treetest.SparseName)), int64(1<<20), "the 200 MiB sparse file stays sparse")
				var st unix.Stat_t
				require.NoError(t, unix.Stat(got, &st))
				if tt.dst["uid"] != "" {
					assert.EqualValues(t, 4321, st.Uid, "uid= of the new volume wins over the source root's")
					assert.EqualValues(t, 0o700, st.Mode&0o7777)
				}
				if inUse {
					assert.Equal(t, 1, r.status("src")["leases"], "the copy's lease is gone, the container's stays")
					treetest.RequireSame(t, want, treetest.Snapshot(t, mp))
				} else {
					assert.Equal(t, false, r.status("src")["mounted"], "the source is unmounted again")
				}
				r.requireNoViews("src")
			})
		}
	}
}

// TestFromBadInput: every bad from= is refused with what to do, and
// changes nothing.
func TestFromBadInput(t *testing.T) {
	r := newCloneRig(t, "")
	r.create("va", nil)
	r.create("vb", nil)
	for _, tt := range []struct {
		name string
		opts map[string]string
		want string
	}{
		{"vc", map[string]string{"from": "nope"}, "from=nope: no such volume"},
		{"vc", map[string]string{"from": "vc"}, "cannot be made from itself"},
		{"vc", map[string]string{"from": "../x"}, `invalid option from="../x": invalid volume name`},
		{"vc", map[string]string{"from": "va", "type": "tmpfs"}, "a tmpfs volume starts empty"},
		{"vc", map[string]string{"from": "va", "type": "none", "o": "bind", "device": t.TempDir()}, "a bind volume shows a host directory that already holds its files, and holdfast never writes into it"},
		{"vb", map[string]string{"from": "va"}, "exists with other options (from: existing unset, requested \"va\")"},
	} {
		err := r.d.Create(&volume.CreateRequest{Name: tt.name, Options: tt.opts})
		require.Error(t, err, "%v", tt.opts)
		assert.Contains(t, err.Error(), tt.want)
	}
	_, err := r.d.Get(&volume.GetRequest{Name: "vc"})
	assert.ErrorIs(t, err, driver.ErrNotFound, "no volume was made")
	ents, _ := os.ReadDir(filepath.Join(r.root, "volumes"))
	assert.Len(t, ents, 2)

	// A volume whose removal began cannot be copied.
	r.faults.Arm("commit", 1, syscall.EIO)
	require.Error(t, r.d.Remove(&volume.RemoveRequest{Name: "va"}))
	r.faults.Disarm()
	err = r.d.Create(&volume.CreateRequest{Name: "vc", Options: map[string]string{"from": "va"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "a volume being removed cannot be copied")
}

// TestFromIsCopiedOnce: the same Create again is "same options" and
// copies nothing; one without from= is accepted too; another source is
// a conflict.
func TestFromIsCopiedOnce(t *testing.T) {
	r := newCloneRig(t, "")
	r.create("va", nil)
	mp := r.mount("va", "x")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "first"), nil, 0o644))
	r.unmount("va", "x")
	r.create("vb", map[string]string{"from": "va"})
	mp = r.mount("va", "x")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "later"), nil, 0o644))
	r.unmount("va", "x")
	r.create("vb", map[string]string{"from": "va"})
	r.create("vb", nil)
	r.create("other", nil)
	err := r.d.Create(&volume.CreateRequest{Name: "vb", Options: map[string]string{"from": "other"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `from: existing "va", requested "other"`)
	got := r.mount("vb", "y")
	assert.FileExists(t, filepath.Join(got, "first"))
	assert.NoFileExists(t, filepath.Join(got, "later"), "the second Create copied nothing")
	r.unmount("vb", "y")
	r.restart()
	assert.Equal(t, "va", r.status("vb")["from"], "from= is kept across restarts")
	r.create("vb", map[string]string{"from": "va"})
}

// TestCryptCloneHasItsOwnKey: a crypt volume made from another gets a
// key of its own; removing either leaves the other readable.
func TestCryptCloneHasItsOwnKey(t *testing.T) {
	for _, removed := range []string{"src", "dst"} {
		t.Run("remove "+removed, func(t *testing.T) {
			r := newCloneRig(t, "")
			opts := map[string]string{"type": "crypt", "size": "40m", "engine": "fscrypt"}
			r.create("src", opts)
			mp := r.mount("src", "va")
			require.NoError(t, os.WriteFile(filepath.Join(mp, "secret"), []byte("s3cret"), 0o600))
			r.unmount("src", "va")
			r.create("dst", map[string]string{"type": "crypt", "size": "40m", "engine": "fscrypt", "from": "src"})
			k1, err := os.ReadFile(filepath.Join(r.keyDir, "src.key"))
			require.NoError(t, err)
			k2, err := os.ReadFile(filepath.Join(r.keyDir, "dst.key"))
			require.NoError(t, err)
			assert.NotEqual(t, k1, k2, "the clone has a key of its own")
			i1, err := os.ReadFile(filepath.Join(r.root, "volumes", "src", "backing.img"))
			require.NoError(t, err)
			i2, err := os.ReadFile(filepath.Join(r.root, "volumes", "dst", "backing.img"))
			require.NoError(t, err)
			assert.False(t, bytes.Equal(i1, i2), "files are copied, never the image")
			assert.False(t, bytes.Contains(i2, []byte("s3cret")), "the clone's data is encrypted too")

			require.NoError(t, r.d.Remove(&volume.RemoveRequest{Name: removed}))
			kept := map[string]string{"src": "dst", "dst": "src"}[removed]
			got := r.mount(kept, "vb")
			b, err := os.ReadFile(filepath.Join(got, "secret"))
			require.NoError(t, err)
			assert.Equal(t, "s3cret", string(b))
			r.unmount(kept, "vb")
		})
	}
}

// TestViewLeaseRefusesRemove: a view in progress keeps its volume from
// being removed, and says why; Close lets it go.
func TestViewLeaseRefusesRemove(t *testing.T) {
	r := newCloneRig(t, "")
	r.create("va", nil)
	v, err := r.d.OpenView(context.Background(), "va", false)
	require.NoError(t, err)
	assert.Empty(t, v.Note, "a volume no container uses is exact")
	assert.Equal(t, true, r.status("va")["mounted"], "mounted for the view")
	err = r.d.Remove(&volume.RemoveRequest{Name: "va"})
	require.ErrorIs(t, err, driver.ErrInUse)
	assert.Contains(t, err.Error(), "being read by holdfast")
	require.NoError(t, v.Close())
	require.NoError(t, v.Close(), "Close twice is harmless")
	assert.Equal(t, false, r.status("va")["mounted"], "unmounted again")
	require.NoError(t, r.d.Remove(&volume.RemoveRequest{Name: "va"}))
}

// TestViewInUseIsLive: a local volume in use is copied live, and cannot
// be frozen.
func TestViewInUseIsLive(t *testing.T) {
	r := newCloneRig(t, "")
	r.create("va", nil)
	mp := r.mount("va", "vc")
	v, err := r.d.OpenView(context.Background(), "va", false)
	require.NoError(t, err)
	assert.Equal(t, driver.NoteLive, v.Note)
	assert.Equal(t, mp, v.Dir)
	require.NoError(t, v.Close())
	_, err = r.d.OpenView(context.Background(), "va", true)
	require.ErrorIs(t, err, driver.ErrInvalidOption)
	assert.Contains(t, err.Error(), "cannot be frozen")
	assert.Equal(t, 1, r.status("va")["leases"], "the failed view took no lease")
	r.requireNoViews("va")
}

// TestViewStartupDropsLeftovers: a crash with a view open (its lease
// committed, its filesystem frozen, or its snapshot mounted) is cleaned
// up at the next start.
func TestViewStartupDropsLeftovers(t *testing.T) {
	for _, tt := range []struct {
		rootFS, note string
		freeze       bool
	}{{"ext4", driver.NoteFrozen, true}, {"xfs", "", false}} {
		t.Run(tt.rootFS, func(t *testing.T) {
			r := newCloneRig(t, tt.rootFS)
			r.create("va", map[string]string{"type": "loop", "size": "32m"})
			mp := r.mount("va", "vc")
			v, err := r.d.OpenView(context.Background(), "va", tt.freeze)
			require.NoError(t, err)
			assert.Equal(t, tt.note, v.Note)
			// The crash: the process goes, nothing is closed.
			r.restart()
			require.NoError(t, writeSync(filepath.Join(mp, "after")), "thawed by the start")
			assert.Equal(t, 1, r.status("va")["leases"], "the view's lease is dropped, the container's kept")
			r.requireNoViews("va")
			r.unmount("va", "vc")
			require.NoError(t, r.d.Remove(&volume.RemoveRequest{Name: "va"}))
			loops, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
			require.NoError(t, err)
			for _, l := range loops {
				b, _ := os.ReadFile(l)
				assert.NotContains(t, string(b), r.root, "no loop device left of the snapshot")
			}
		})
	}
}

// TestPointInTimeView: a loop volume in use on an xfs or btrfs --root is
// cloned by reflink while frozen: what is written after the view opened is not
// in it, and nothing is left after Close.
func TestPointInTimeView(t *testing.T) {
	for _, tt := range []struct{ rootFS, fs string }{{"xfs", "ext4"}, {"xfs", "xfs"}, {"btrfs", "ext4"}} {
		fs := tt.fs
		t.Run("root "+tt.rootFS+"/volume "+fs, func(t *testing.T) {
			r := newCloneRig(t, tt.rootFS)
			size := "64m"
			if fs == "xfs" {
				size = "300m"
			}
			r.create("va", map[string]string{"type": "loop", "size": size, "fs": fs})
			mp := r.mount("va", "vc")
			require.NoError(t, os.WriteFile(filepath.Join(mp, "before"), []byte("1"), 0o644))
			v, err := r.d.OpenView(context.Background(), "va", false)
			require.NoError(t, err)
			assert.Empty(t, v.Note, "point-in-time")
			require.NoError(t, os.WriteFile(filepath.Join(mp, "before"), []byte("changed"), 0o644))
			require.NoError(t, writeSync(filepath.Join(mp, "after")))
			b, err := os.ReadFile(filepath.Join(v.Dir, "before"))
			require.NoError(t, err)
			assert.Equal(t, "1", string(b), "the view holds the moment it opened")
			assert.NoFileExists(t, filepath.Join(v.Dir, "after"))
			assert.Error(t, os.WriteFile(filepath.Join(v.Dir, "x"), nil, 0o644), "the view is read-only")
			require.NoError(t, v.Close())
			r.requireNoViews("va")

			// from= of a volume in use is point-in-time too.
			r.create("vb", map[string]string{"from": "va"})
			assert.Equal(t, "exact", r.status("vb")["fromCopy"])
			got := r.mount("vb", "d")
			b, err = os.ReadFile(filepath.Join(got, "before"))
			require.NoError(t, err)
			assert.Equal(t, "changed", string(b))
			r.requireNoViews("va")
		})
	}
}

// TestFreezeFailureThaws fails each step between freeze and thaw: the
// view fails, the filesystem is thawed, nothing is left.
func TestFreezeFailureThaws(t *testing.T) {
	for _, tt := range []struct {
		rootFS, step string
		freeze       bool
	}{
		{"xfs", "clone image", false},
		{"xfs", "record freeze", false},
		{"xfs", "attach snapshot", false},
		{"xfs", "mount snapshot", false},
		{"ext4", "frozen", true},
		{"ext4", "record freeze", true},
	} {
		t.Run(tt.rootFS+"/"+tt.step, func(t *testing.T) {
			r := newCloneRig(t, tt.rootFS)
			r.create("va", map[string]string{"type": "loop", "size": "32m"})
			mp := r.mount("va", "vc")
			r.faults.Arm(tt.step, 1, syscall.EIO)
			_, err := r.d.OpenView(context.Background(), "va", tt.freeze)
			require.True(t, r.faults.Fired(), "%s reached", tt.step)
			r.faults.Disarm()
			require.Error(t, err)
			require.NoError(t, writeSync(filepath.Join(mp, "w")), "the filesystem is not frozen")
			assert.Equal(t, 1, r.status("va")["leases"])
			r.requireNoViews("va")
		})
	}
}

// TestFreezeHoldsWriters: without reflinks (ext4 --root) a view of a
// loop volume in use is live, or with freeze holds the freeze until
// Close: a writer blocks until then. No timing is asserted: the write
// must not have completed after a generous wait, and completes after.
func TestFreezeHoldsWriters(t *testing.T) {
	r := newCloneRig(t, "ext4")
	r.create("va", map[string]string{"type": "loop", "size": "32m"})
	mp := r.mount("va", "vc")
	v, err := r.d.OpenView(context.Background(), "va", false)
	require.NoError(t, err)
	assert.Equal(t, driver.NoteLive, v.Note)
	require.NoError(t, v.Close())

	v, err = r.d.OpenView(context.Background(), "va", true)
	require.NoError(t, err)
	assert.Equal(t, driver.NoteFrozen, v.Note)
	done := make(chan error, 1)
	go func() { done <- writeSync(filepath.Join(mp, "w")) }()
	select {
	case err := <-done:
		t.Fatalf("a write completed while the view held the freeze (%v)", err)
	case <-time.After(2 * time.Second):
	}
	require.NoError(t, v.Close())
	require.NoError(t, <-done, "the writer completes once the view is closed")
	r.requireNoViews("va")
}

// TestTwoFreezes: a second view held frozen while one is fails with
// what to do, and leaves the first one's freeze alone.
func TestTwoFreezes(t *testing.T) {
	r := newCloneRig(t, "ext4")
	r.create("va", map[string]string{"type": "loop", "size": "32m"})
	mp := r.mount("va", "vc")
	v1, err := r.d.OpenView(context.Background(), "va", true)
	require.NoError(t, err)
	_, err = r.d.OpenView(context.Background(), "va", true)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "frozen already")
	done := make(chan error, 1)
	go func() { done <- writeSync(filepath.Join(mp, "w")) }()
	select {
	case err := <-done:
		t.Fatalf("the failed second view thawed the first one's freeze (write: %v)", err)
	case <-time.After(2 * time.Second):
	}
	require.NoError(t, v1.Close())
	require.NoError(t, <-done)
	r.requireNoViews("va")
}

// TestFromInterruptedIsUndone: a crash while a Create with from= copies
// (its create intent written, the new volume mounted and half filled)
// leaves no volume after the next start.
func TestFromInterruptedIsUndone(t *testing.T) {
	r := newCloneRig(t, "")
	r.create("va", nil)
	mp := r.mount("va", "vc")
	treetest.Build(t, mp)
	// The copy fails at its last step: everything before it happened.
	r.faults.Arm("sync copy", 1, syscall.EIO)
	err := r.d.Create(&volume.CreateRequest{Name: "vb", Options: map[string]string{"type": "loop", "size": "64m", "from": "va"}})
	require.Error(t, err)
	assert.True(t, errors.Is(err, syscall.EIO))
	_, err = r.d.Get(&volume.GetRequest{Name: "vb"})
	assert.ErrorIs(t, err, driver.ErrNotFound)
	assert.NoDirExists(t, filepath.Join(r.root, "volumes", "vb"))
	assert.Equal(t, 1, r.status("va")["leases"])
	r.requireNoViews("va")
}

func writeSync(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = f.WriteString("x")
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	return err
}

var _ = strings.Contains
