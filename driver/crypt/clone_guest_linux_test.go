package crypt

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/guest"
	"github.com/holdfast/holdfast/internal/loopdev"
	"github.com/holdfast/holdfast/internal/treetest"
	"github.com/holdfast/holdfast/internal/volfs"
)

// cloneRig is a driver with the crypt and local backends whose --root is
// on a loop-backed filesystem of the test's choice (xfs has reflinks).
type cloneRig struct {
	t            *testing.T
	root, keyDir string
	faults       *failpoint.Set
	d            *driver.Driver
}

func newCloneRig(t *testing.T, rootFS string) *cloneRig {
	t.Helper()
	guest.Require(t, "dm-crypt")
	dir := t.TempDir()
	img := filepath.Join(dir, "root.img")
	// Sparse: the guest's /tmp is memory.
	require.NoError(t, os.WriteFile(img, nil, 0o600))
	require.NoError(t, os.Truncate(img, 1<<30))
	mkfs := map[string][]string{"xfs": {"mkfs.xfs", "-q", "-f"}, "ext4": {"mkfs.ext4", "-q", "-F"}}[rootFS]
	out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	dev, err := loopdev.Attach(img)
	require.NoError(t, err)
	defer dev.Close()
	mnt := filepath.Join(dir, "mnt")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	require.NoError(t, unix.Mount(dev.Path, mnt, rootFS, 0, ""))
	r := &cloneRig{t: t, root: filepath.Join(mnt, "root"), keyDir: filepath.Join(dir, "keys"), faults: &failpoint.Set{}}
	t.Cleanup(func() {
		if r.d != nil {
			r.d.Close()
		}
		mounts, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(r.root))
		for i := len(mounts) - 1; i >= 0; i-- {
			unix.Unmount(mounts[i].Mountpoint, unix.MNT_DETACH)
		}
		unix.Unmount(mnt, unix.MNT_DETACH)
	})
	m := volfs.KernelMounter{}
	log := logrus.New()
	log.SetOutput(&bytes.Buffer{})
	r.d, err = driver.New(driver.Config{
		Root: r.root, MountRoot: filepath.Join(r.root, "mounts"), Scope: "local", BootID: "test",
		Mounter: m, Log: log, Faults: r.faults,
		Backends: map[string]driver.Backend{
			"crypt": &Backend{Mounter: m, KeyDir: r.keyDir, Faults: r.faults},
			"local": &local.Backend{Mounter: m},
		},
	})
	require.NoError(t, err)
	return r
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

// requireNoViews: no view directory, mount or mapping is left.
func (r *cloneRig) requireNoViews() {
	r.t.Helper()
	ents, err := os.ReadDir(filepath.Join(r.root, "views"))
	require.NoError(r.t, err)
	assert.Empty(r.t, ents, "nothing left in --root/views")
	assert.Empty(r.t, Mappings("holdfast-view-"), "no snapshot mapping left")
}

var luksOpts = map[string]string{"type": "crypt", "size": "48m", "engine": "luks"}

// TestLUKSFrom copies a tree of every kind of file out of a LUKS volume,
// unused into a LUKS volume with a key of its own, then in use (a
// point-in-time snapshot on the xfs --root) into a local one. (One rig
// for both: under TCG each LUKS volume and the xfs --root take seconds.)
func TestLUKSFrom(t *testing.T) {
	r := newCloneRig(t, "xfs")
	r.create("src", luksOpts)
	mp := r.mount("src", "c")
	treetest.Build(t, mp)
	want := treetest.Snapshot(t, mp)
	r.unmount("src", "c")
	r.create("luks-copy", map[string]string{"type": "crypt", "size": "48m", "engine": "luks", "from": "src"})
	mp = r.mount("src", "c")
	r.create("local-copy", map[string]string{"from": "src"})
	for _, name := range []string{"luks-copy", "local-copy"} {
		got := r.mount(name, "d")
		treetest.RequireSame(t, want, treetest.Snapshot(t, got))
		assert.Less(t, treetest.Allocated(t, filepath.Join(got, treetest.SparseName)), int64(1<<20), "stays sparse")
		r.unmount(name, "d")
	}
	treetest.RequireSame(t, want, treetest.Snapshot(t, mp))
	r.requireNoViews()
	k1, err := os.ReadFile(filepath.Join(r.keyDir, "src.key"))
	require.NoError(t, err)
	k2, err := os.ReadFile(filepath.Join(r.keyDir, "luks-copy.key"))
	require.NoError(t, err)
	assert.NotEqual(t, k1, k2, "the clone has a key of its own")
	uuid := func(name string) string {
		out, err := exec.Command("cryptsetup", "luksUUID", filepath.Join(r.root, "volumes", name, "backing.img")).CombinedOutput()
		require.NoError(t, err, "%s", out)
		return string(out)
	}
	assert.NotEqual(t, uuid("src"), uuid("luks-copy"), "files are copied, never the image and its header")

	r.unmount("src", "c")
	require.NoError(t, r.d.Remove(&volume.RemoveRequest{Name: "src"}))
	got := r.mount("luks-copy", "e")
	treetest.RequireSame(t, want, treetest.Snapshot(t, got))
	r.unmount("luks-copy", "e")
}

// TestLUKSPointInTimeView: a LUKS volume in use on an xfs --root is
// cloned at one moment; what is written later is not in the view. On an
// ext4 --root the view is live, or frozen when asked.
func TestLUKSPointInTimeView(t *testing.T) {
	r := newCloneRig(t, "xfs")
	r.create("pit", luksOpts)
	mp := r.mount("pit", "c")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "before"), []byte("1"), 0o644))
	v, err := r.d.OpenView(context.Background(), "pit", false)
	require.NoError(t, err)
	assert.Empty(t, v.Note, "point-in-time")
	assert.Len(t, Mappings("holdfast-view-"), 1, "the snapshot has a mapping of its own")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "before"), []byte("changed"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(mp, "after"), nil, 0o644))
	b, err := os.ReadFile(filepath.Join(v.Dir, "before"))
	require.NoError(t, err)
	assert.Equal(t, "1", string(b))
	assert.NoFileExists(t, filepath.Join(v.Dir, "after"))
	require.NoError(t, v.Close())
	r.requireNoViews()

	// A failure while frozen thaws.
	r.faults.Arm("clone image", 1, syscall.EIO)
	_, err = r.d.OpenView(context.Background(), "pit", false)
	require.Error(t, err)
	r.faults.Disarm()
	f, err := os.Create(filepath.Join(mp, "thawed"))
	require.NoError(t, err)
	require.NoError(t, f.Sync(), "the filesystem is not frozen")
	f.Close()
	r.requireNoViews()
	r.unmount("pit", "c")
}

// TestLUKSViewOnExt4Root: no reflinks, so a view of a LUKS volume in use
// is live, or frozen for its whole life when asked.
func TestLUKSViewOnExt4Root(t *testing.T) {
	r := newCloneRig(t, "ext4")
	r.create("live", luksOpts)
	r.mount("live", "c")
	v, err := r.d.OpenView(context.Background(), "live", false)
	require.NoError(t, err)
	assert.Equal(t, driver.NoteLive, v.Note)
	require.NoError(t, v.Close())
	v, err = r.d.OpenView(context.Background(), "live", true)
	require.NoError(t, err)
	assert.Equal(t, driver.NoteFrozen, v.Note)
	require.NoError(t, v.Close())
	r.requireNoViews()
	r.unmount("live", "c")
}
