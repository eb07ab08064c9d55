package driver

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/quota"
	"github.com/holdfast/holdfast/internal/volfs"
)

// rig is a driver over temporary directories and a fake mount table.
type rig struct {
	t       *testing.T
	root    string
	mounter *countingMounter
	boot    string
	extra   map[string]Backend
	d       *Driver
}

// countingMounter counts Mount calls on top of the fake table.
type countingMounter struct {
	*volfs.FakeMounter
	mu     sync.Mutex
	mounts int
}

func (c *countingMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	c.mu.Lock()
	c.mounts++
	c.mu.Unlock()
	return c.FakeMounter.Mount(source, target, fstype, flags, data)
}

func newRig(t *testing.T) *rig {
	r := &rig{t: t, root: t.TempDir(), mounter: &countingMounter{FakeMounter: volfs.NewFakeMounter()}, boot: "boot-1"}
	r.start()
	t.Cleanup(func() { r.d.Close() })
	return r
}

// start opens (or reopens, as after a crash) the driver on r's root.
func (r *rig) start() {
	r.t.Helper()
	log, _ := test.NewNullLogger()
	backends := RealBackends(r.mounter)
	for k, b := range r.extra {
		backends[k] = b
	}
	d, err := New(Config{
		Root: r.root, MountRoot: filepath.Join(r.root, "mounts"), Scope: "local",
		BootID: r.boot, Mounter: r.mounter, Backends: backends, Log: log,
	})
	require.NoError(r.t, err)
	r.d = d
}

// restart simulates a crash and a new start, optionally after a reboot.
func (r *rig) restart(reboot bool) {
	r.t.Helper()
	require.NoError(r.t, r.d.Close())
	if reboot {
		r.boot += "+"
		r.mounter = &countingMounter{FakeMounter: volfs.NewFakeMounter()}
	}
	r.start()
}

func (r *rig) create(name string, opts map[string]string) {
	r.t.Helper()
	require.NoError(r.t, r.d.Create(&volume.CreateRequest{Name: name, Options: opts}))
}

func (r *rig) mount(name, id string) string {
	r.t.Helper()
	res, err := r.d.Mount(&volume.MountRequest{Name: name, ID: id})
	require.NoError(r.t, err)
	return res.Mountpoint
}

func (r *rig) unmount(name, id string) {
	r.t.Helper()
	require.NoError(r.t, r.d.Unmount(&volume.UnmountRequest{Name: name, ID: id}))
}

func (r *rig) status(name string) map[string]any {
	r.t.Helper()
	res, err := r.d.Get(&volume.GetRequest{Name: name})
	require.NoError(r.t, err)
	return res.Volume.Status
}

func (r *rig) mounted() map[string]string {
	m, err := r.mounter.Mountpoints(r.root)
	require.NoError(r.t, err)
	return m
}

func TestCreateIsIdempotent(t *testing.T) {
	r := newRig(t)
	r.create("db", map[string]string{"type": "tmpfs", "size": "8m", "mode": "750"})
	// Same settings written differently, as Swarm repeats Create.
	r.create("db", map[string]string{"type": "tmpfs", "size": "8388608", "mode": "0750"})
	r.create("plain", nil)
	r.create("plain", map[string]string{"type": "local"})
	// A default written out is the same setting.
	r.create("scratch", map[string]string{"type": "tmpfs"})
	r.create("scratch", map[string]string{"type": "tmpfs", "size": "64m"})
}

func TestCreateWithOtherOptionsChangesNothing(t *testing.T) {
	r := newRig(t)
	r.create("db", map[string]string{"type": "tmpfs", "size": "8m", "uid": "5"})
	err := r.d.Create(&volume.CreateRequest{Name: "db", Options: map[string]string{"type": "tmpfs", "size": "16m"}})
	require.ErrorIs(t, err, ErrConflict)
	assert.Contains(t, err.Error(), `size: existing "8388608", requested "16777216"`)
	assert.Contains(t, err.Error(), `uid: existing "5", requested unset`)
	assert.Contains(t, err.Error(), "nothing was changed")
	assert.EqualValues(t, 8<<20, r.status("db")["size"])

	err = r.d.Create(&volume.CreateRequest{Name: "db", Options: map[string]string{"type": "local"}})
	require.ErrorIs(t, err, ErrConflict)
	assert.Contains(t, err.Error(), "exists with type=tmpfs, not type=local")
	assert.Equal(t, "tmpfs", r.status("db")["type"])
}

func TestCreateBadInputLeavesNothing(t *testing.T) {
	r := newRig(t)
	tests := []struct {
		name    string
		opts    map[string]string
		errPart string
		is      error
	}{
		{"../escape", nil, "names must be", ErrInvalidName},
		{"x", nil, "names must be", ErrInvalidName},
		{"vol", map[string]string{"type": "qux"}, `unknown volume type "qux": known types are local, tmpfs`, ErrUnknownType},
		{"vol", map[string]string{"type": "zfs"}, `type=zfs: holdfast does not mount block devices or arbitrary filesystems`, ErrUnknownType},
		{"vol", map[string]string{"type": "ext4"}, `or type=loop (fs=ext4 or fs=xfs, with a size) for a filesystem of its own that holdfast makes and manages`, ErrUnknownType},
		{"vol", map[string]string{"type": ""}, `unknown volume type ""`, ErrUnknownType},
		// This host's kernel has no disk quotas (the rig's --root has none
		// on any kernel): Create says what is missing and what else to use.
		{"vol", map[string]string{"size": "1g"}, `size= (1.0 GiB) for type=local is a project quota on the volume's directory: no project quotas: --root `, quota.ErrUnsupported},
		{"vol", map[string]string{"size": "1g"}, `or use type=loop size=… for a size-limited volume`, quota.ErrUnsupported},
		{"vol", map[string]string{"size": "0"}, `size="0": want a size of at least 1m such as 100m or 1g: must be greater than zero`, ErrInvalidOption},
		{"vol", map[string]string{"size": "512k"}, `size="512k": want a size of at least 1m such as 100m or 1g: smaller than 1m`, ErrInvalidOption},
		{"vol", map[string]string{"size": "10%"}, `size="10%"`, ErrInvalidOption},
		{"vol", map[string]string{"size": "lots"}, `size="lots"`, ErrInvalidOption},
		{"vol", map[string]string{"uidd": "1"}, `invalid option "uidd" for type=local: valid options are gid, mode, size, type, uid`, ErrInvalidOption},
		{"vol", map[string]string{"type": "tmpfs", "size": "0"}, `size="0"`, ErrInvalidOption},
		{"vol", map[string]string{"type": "tmpfs", "size": "big"}, `want a size such as 512k, 100m or 1g`, ErrInvalidOption},
		{"vol", map[string]string{"type": "tmpfs", "o": "size=1m,huge=always"}, `invalid option o for type=tmpfs: holdfast does not take huge here`, ErrInvalidOption},
		{"vol", map[string]string{"type": "tmpfs", "sise": "1m"}, `invalid option "sise" for type=tmpfs: valid options are device, gid, mode, noexec, nr_inodes, o, ro, size, type, uid`, ErrInvalidOption},
		{"vol", map[string]string{"uid": "root"}, `uid="root": want a numeric user id`, ErrInvalidOption},
	}
	for _, tt := range tests {
		err := r.d.Create(&volume.CreateRequest{Name: tt.name, Options: tt.opts})
		require.Error(t, err, "%s %v", tt.name, tt.opts)
		assert.ErrorIs(t, err, tt.is)
		assert.Contains(t, err.Error(), tt.errPart)
	}
	list, err := r.d.List()
	require.NoError(t, err)
	assert.Empty(t, list.Volumes)
	entries, err := os.ReadDir(filepath.Join(r.root, "volumes"))
	require.NoError(t, err)
	assert.Empty(t, entries)
	all, err := r.d.store.All()
	require.NoError(t, err)
	assert.Empty(t, all)
}

func TestLeases(t *testing.T) {
	r := newRig(t)
	r.create("shared", map[string]string{"type": "tmpfs", "size": "1m"})
	mp := r.mount("shared", "a")
	assert.Equal(t, filepath.Join(r.root, "mounts", "shared"), mp)
	assert.Equal(t, mp, r.mount("shared", "b"))
	assert.Equal(t, mp, r.mount("shared", "a"), "a repeated Mount with the same ID is harmless")
	assert.Equal(t, 1, r.mounter.mounts, "one backend mount for all leases")
	assert.Equal(t, 2, r.status("shared")["leases"])

	r.unmount("shared", "unknown")
	r.unmount("shared", "")
	r.unmount("shared", "a")
	assert.Equal(t, map[string]string{mp: "tmpfs"}, r.mounted(), "still mounted for b")
	path, err := r.d.Path(&volume.PathRequest{Name: "shared"})
	require.NoError(t, err)
	assert.Equal(t, mp, path.Mountpoint)

	r.unmount("shared", "b")
	r.unmount("shared", "b")
	assert.Empty(t, r.mounted())
	assert.NoDirExists(t, mp, "mountpoint removed after the last unmount")
	path, err = r.d.Path(&volume.PathRequest{Name: "shared"})
	require.NoError(t, err)
	assert.Empty(t, path.Mountpoint, "Path is empty while unmounted")
	st := r.status("shared")
	assert.Equal(t, false, st["mounted"])
	assert.Equal(t, 0, st["leases"])

	r.mount("shared", "c")
	assert.Equal(t, 2, r.mounter.mounts, "mounted again for a new lease")
}

func TestMountRequiresID(t *testing.T) {
	r := newRig(t)
	r.create("vol", nil)
	_, err := r.d.Mount(&volume.MountRequest{Name: "vol"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "mount ID is required")
	assert.Empty(t, r.mounted())
}

func TestMountFailureLeavesNoLease(t *testing.T) {
	r := newRig(t)
	r.create("vol", map[string]string{"type": "tmpfs"})
	r.mounter.Fail = errors.New("mount tmpfs: no memory")
	_, err := r.d.Mount(&volume.MountRequest{Name: "vol", ID: "a"})
	require.ErrorContains(t, err, "mount vol: mount tmpfs: no memory")
	st := r.status("vol")
	assert.Equal(t, 0, st["leases"])
	assert.Equal(t, false, st["mounted"])
	assert.NoDirExists(t, filepath.Join(r.root, "mounts", "vol"))
	require.NoError(t, r.d.Remove(&volume.RemoveRequest{Name: "vol"}), "no lease leaked")
}

func TestRemove(t *testing.T) {
	r := newRig(t)
	r.create("data", nil)
	mp := r.mount("data", "a")
	r.mount("data", "b")
	err := r.d.Remove(&volume.RemoveRequest{Name: "data"})
	require.ErrorIs(t, err, ErrInUse)
	assert.Contains(t, err.Error(), "volume data is in use by 2 mounts")
	r.unmount("data", "a")
	r.unmount("data", "b")
	assert.NoDirExists(t, mp)
	require.NoError(t, r.d.Remove(&volume.RemoveRequest{Name: "data"}))
	assert.NoDirExists(t, filepath.Join(r.root, "volumes", "data"))
	_, err = r.d.Get(&volume.GetRequest{Name: "data"})
	assert.ErrorIs(t, err, ErrNotFound)
	err = r.d.Remove(&volume.RemoveRequest{Name: "data"})
	assert.ErrorIs(t, err, ErrNotFound)
	// The name can be used again.
	r.create("data", map[string]string{"type": "tmpfs"})
}

func TestRemoveNeverLeavesRoot(t *testing.T) {
	r := newRig(t)
	r.create("data", nil)
	outside := t.TempDir()
	precious := filepath.Join(outside, "precious")
	require.NoError(t, os.WriteFile(precious, []byte("keep"), 0o600))
	dir := filepath.Join(r.root, "volumes", "data")
	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, os.Symlink(outside, dir))

	err := r.d.Remove(&volume.RemoveRequest{Name: "data"})
	require.ErrorContains(t, err, "not a directory (a symlink?)")
	assert.FileExists(t, precious)
	assert.Equal(t, "local", r.status("data")["type"], "the volume is still there")
}

func TestRemoveNeverDeletesThroughAMount(t *testing.T) {
	r := newRig(t)
	r.create("data", nil)
	inner := filepath.Join(r.root, "volumes", "data", "data")
	require.NoError(t, r.mounter.Mount("/elsewhere", inner, "", 0, ""))
	err := r.d.Remove(&volume.RemoveRequest{Name: "data"})
	require.ErrorContains(t, err, "refusing to remove")
	assert.DirExists(t, inner)
	assert.Equal(t, "local", r.status("data")["type"], "a failed Remove leaves the volume usable")
}

func TestUnknownNames(t *testing.T) {
	r := newRig(t)
	for _, name := range []string{"missing", "../x"} {
		_, err := r.d.Get(&volume.GetRequest{Name: name})
		assert.Error(t, err)
		_, err = r.d.Path(&volume.PathRequest{Name: name})
		assert.Error(t, err)
		_, err = r.d.Mount(&volume.MountRequest{Name: name, ID: "a"})
		assert.Error(t, err)
		assert.Error(t, r.d.Unmount(&volume.UnmountRequest{Name: name, ID: "a"}))
		assert.Error(t, r.d.Remove(&volume.RemoveRequest{Name: name}))
	}
	_, err := r.d.Get(&volume.GetRequest{Name: "missing"})
	assert.ErrorIs(t, err, ErrNotFound)
	assert.ErrorContains(t, err, "no such volume: missing")
}

func TestGetAndList(t *testing.T) {
	r := newRig(t)
	r.create("b-tmp", map[string]string{"type": "tmpfs", "size": "2m"})
	r.create("a-dir", nil)
	mp := r.mount("b-tmp", "x")
	res, err := r.d.Get(&volume.GetRequest{Name: "b-tmp"})
	require.NoError(t, err)
	v := res.Volume
	assert.Equal(t, "b-tmp", v.Name)
	assert.Equal(t, mp, v.Mountpoint)
	_, err = time.Parse(time.RFC3339, v.CreatedAt)
	assert.NoError(t, err, "CreatedAt is RFC 3339: %q", v.CreatedAt)
	assert.Equal(t, "tmpfs", v.Status["type"])
	assert.EqualValues(t, 2<<20, v.Status["size"])
	assert.Equal(t, true, v.Status["mounted"])
	assert.Equal(t, 1, v.Status["leases"])

	list, err := r.d.List()
	require.NoError(t, err)
	require.Len(t, list.Volumes, 2)
	assert.Equal(t, "a-dir", list.Volumes[0].Name)
	assert.Empty(t, list.Volumes[0].Mountpoint)
	assert.Equal(t, mp, list.Volumes[1].Mountpoint)

	// The kept answer follows every change.
	names := func() (out []string) {
		list, err := r.d.List()
		require.NoError(t, err)
		for _, v := range list.Volumes {
			out = append(out, v.Name+"@"+v.Mountpoint)
		}
		return out
	}
	r.unmount("b-tmp", "x")
	assert.Equal(t, []string{"a-dir@", "b-tmp@"}, names())
	r.create("c-dir", nil)
	require.NoError(t, r.d.Remove(&volume.RemoveRequest{Name: "a-dir"}))
	assert.Equal(t, []string{"b-tmp@", "c-dir@"}, names())

	assert.Equal(t, "local", r.d.Capabilities().Capabilities.Scope)
}

// blocker is a backend whose Mount waits until released.
type blocker struct {
	Backend
	entered, release chan struct{}
}

func (b *blocker) Parse(raw map[string]string) (map[string]string, error) { return raw, nil }
func (b *blocker) Mount(ctx context.Context, v *Volume) error {
	close(b.entered)
	<-b.release
	return b.Backend.Mount(ctx, v)
}

func TestGetAndListNeverWaitForABackend(t *testing.T) {
	r := newRig(t)
	b := &blocker{Backend: RealBackends(r.mounter)["local"], entered: make(chan struct{}), release: make(chan struct{})}
	r.extra = map[string]Backend{"slow": b}
	r.restart(false)
	r.create("slow-vol", map[string]string{"type": "slow"})
	r.create("other", nil)
	done := make(chan error)
	go func() {
		_, err := r.d.Mount(&volume.MountRequest{Name: "slow-vol", ID: "a"})
		done <- err
	}()
	<-b.entered
	// The slow volume's Mount is stuck in its backend: everything else answers.
	list, err := r.d.List()
	require.NoError(t, err)
	assert.Len(t, list.Volumes, 2)
	assert.Equal(t, false, r.status("slow-vol")["mounted"])
	r.mount("other", "b")
	close(b.release)
	require.NoError(t, <-done)
	assert.Equal(t, true, r.status("slow-vol")["mounted"])
}

func TestRestartAfterCrashKeepsLeasesAndAdoptsMounts(t *testing.T) {
	r := newRig(t)
	r.create("tmp", map[string]string{"type": "tmpfs"})
	r.create("dir", nil)
	mp := r.mount("tmp", "a")
	r.mount("tmp", "b")
	r.mount("dir", "c")
	assert.Equal(t, 2, r.mounter.mounts)

	r.restart(false)
	assert.Equal(t, 2, r.mounter.mounts, "adopted, not mounted over")
	st := r.status("tmp")
	assert.Equal(t, true, st["mounted"])
	assert.Equal(t, 2, st["leases"])
	err := r.d.Remove(&volume.RemoveRequest{Name: "tmp"})
	assert.ErrorIs(t, err, ErrInUse, "leases still count after a restart")
	assert.Equal(t, mp, r.mount("tmp", "d"))
	assert.Equal(t, 2, r.mounter.mounts)
	for _, id := range []string{"a", "b", "d"} {
		r.unmount("tmp", id)
	}
	assert.NotContains(t, r.mounted(), mp)
}

func TestRestartAfterRebootDropsLeases(t *testing.T) {
	r := newRig(t)
	r.create("tmp", map[string]string{"type": "tmpfs"})
	r.create("dir", nil)
	r.mount("tmp", "a")
	r.mount("dir", "b")
	require.NoError(t, os.WriteFile(filepath.Join(r.root, "volumes", "dir", "data", "f"), []byte("kept"), 0o600))

	r.restart(true)
	for _, name := range []string{"tmp", "dir"} {
		st := r.status(name)
		assert.Equal(t, false, st["mounted"], name)
		assert.Equal(t, 0, st["leases"], name)
	}
	assert.Empty(t, r.mounted())
	mp := r.mount("dir", "c")
	assert.Equal(t, 1, r.mounter.mounts, "mounted anew")
	assert.Equal(t, map[string]string{mp: "bind"}, r.mounted())
	got, err := os.ReadFile(filepath.Join(r.root, "volumes", "dir", "data", "f"))
	require.NoError(t, err)
	assert.Equal(t, "kept", string(got))
	require.NoError(t, r.d.Remove(&volume.RemoveRequest{Name: "tmp"}))
}

func TestRestartUnmountsMountsWithoutLeases(t *testing.T) {
	r := newRig(t)
	r.create("tmp", map[string]string{"type": "tmpfs"})
	// A crash between mount(2) and the commit of the lease.
	mp := filepath.Join(r.root, "mounts", "tmp")
	require.NoError(t, os.MkdirAll(mp, 0o755))
	require.NoError(t, r.mounter.Mount("tmpfs", mp, "tmpfs", 0, ""))
	r.restart(false)
	assert.Empty(t, r.mounted())
	assert.Equal(t, false, r.status("tmp")["mounted"])
}

// A managed plugin restarts in a new mount namespace: its mounts are gone,
// the containers keep theirs, and the leases stay.
func TestRestartWithLeasesButMountGone(t *testing.T) {
	r := newRig(t)
	r.create("tmp", map[string]string{"type": "tmpfs"})
	r.create("dir", nil)
	tmp := r.mount("tmp", "a")
	dir := r.mount("dir", "a")
	require.NoError(t, r.mounter.Unmount(tmp, 0))
	require.NoError(t, r.mounter.Unmount(dir, 0))
	r.restart(false)
	st := r.status("tmp")
	assert.Equal(t, false, st["mounted"])
	assert.Equal(t, 1, st["leases"])

	// A directory is shared again by a new bind mount.
	r.mount("dir", "b")
	assert.Contains(t, r.mounted(), dir)

	// A new tmpfs would be empty and diverge from the one container a uses.
	_, err := r.d.Mount(&volume.MountRequest{Name: "tmp", ID: "b"})
	require.ErrorContains(t, err, "still used by 1 containers started before holdfast restarted")
	assert.Equal(t, 1, r.status("tmp")["leases"], "the refused Mount took no lease")
	r.unmount("tmp", "a")
	r.mount("tmp", "b")
	assert.Equal(t, "tmpfs", r.mounted()[tmp])
}

func TestRestartCompletesInterruptedRequests(t *testing.T) {
	r := newRig(t)
	r.create("half-removed", nil)
	r.create("committed", nil)
	r.create("fine", nil)
	r.create("old-creating", nil)
	r.create("old-removing", nil)
	vol := func(name string) *Volume {
		v, err := r.d.get(name)
		require.NoError(t, err)
		return v
	}
	// Crashes between the intent and the commit, or just after the commit.
	require.NoError(t, writeIntent(r.d, vol("half-removed"), intentRemove))
	require.NoError(t, writeIntent(r.d, vol("committed"), intentCreate))
	// A Create that crashed before its commit: a directory and an intent.
	half := r.d.newVolume("half-created", "local", map[string]string{})
	require.NoError(t, os.MkdirAll(filepath.Join(half.Dir, "data"), 0o700))
	require.NoError(t, writeIntent(r.d, half, intentCreate))
	// A Remove that crashed after its commit, before deleting the directory.
	gone := r.d.newVolume("removed", "local", map[string]string{})
	require.NoError(t, os.MkdirAll(filepath.Join(gone.Dir, "data"), 0o700))
	require.NoError(t, writeIntent(r.d, gone, intentRemove))
	// Records of holdfast before intents, caught mid-request.
	for name, phase := range map[string]Phase{"old-creating": PhaseCreating, "old-removing": PhaseRemoving} {
		v := vol(name)
		v.Phase = phase
		require.NoError(t, r.d.store.Put(v))
	}
	r.restart(false)
	list, err := r.d.List()
	require.NoError(t, err)
	var names []string
	for _, v := range list.Volumes {
		names = append(names, v.Name)
	}
	assert.Equal(t, []string{"committed", "fine"}, names)
	for _, name := range []string{"half-created", "half-removed", "removed", "old-creating", "old-removing"} {
		assert.NoDirExists(t, filepath.Join(r.root, "volumes", name))
	}
	assert.NoFileExists(t, filepath.Join(r.root, "volumes", "committed", creatingFile))
	assert.FileExists(t, filepath.Join(r.root, "volumes", "committed", recordFile))
	all, err := r.d.store.All()
	require.NoError(t, err)
	assert.Len(t, all, 2)
}

func TestRemovedDirectoriesGoThroughTheTrash(t *testing.T) {
	r := newRig(t)
	r.create("big", nil)
	v, err := r.d.get("big")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(v.Dir, "data", "file"), []byte("x"), 0o600))
	require.NoError(t, r.d.Remove(&volume.RemoveRequest{Name: "big"}))
	assert.NoDirExists(t, v.Dir, "moved away before Remove answers")
	r.d.purging.Wait()
	trash := filepath.Join(r.root, "trash")
	assert.Empty(t, entries(t, trash), "deleted in the background")

	// A crash during a deletion: the next start finishes it, but never
	// deletes through a mount.
	require.NoError(t, os.MkdirAll(filepath.Join(trash, "cut-short.1", "data"), 0o700))
	require.NoError(t, os.MkdirAll(filepath.Join(trash, "mounted.2", "fs"), 0o700))
	require.NoError(t, r.mounter.Mount("/dev/loop9", filepath.Join(trash, "mounted.2", "fs"), "ext4", 0, ""))
	r.restart(false)
	r.d.purging.Wait()
	assert.Equal(t, []string{"mounted.2"}, entries(t, trash))
}

func entries(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestUnownedDirectories(t *testing.T) {
	r := newRig(t)
	vols := filepath.Join(r.root, "volumes")
	// A Create that crashed before its intent leaves an empty directory.
	require.NoError(t, os.Mkdir(filepath.Join(vols, "empty"), 0o700))
	// Data holdfast cannot account for is never deleted.
	require.NoError(t, os.MkdirAll(filepath.Join(vols, "foreign", "data"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(vols, "foreign", "data", "precious"), []byte("x"), 0o600))
	r.restart(false)
	assert.NoDirExists(t, filepath.Join(vols, "empty"))
	assert.FileExists(t, filepath.Join(vols, "foreign", "data", "precious"))
	err := r.d.Create(&volume.CreateRequest{Name: "foreign"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "belongs to no volume holdfast knows")
	assert.Contains(t, err.Error(), "move it away")
	assert.FileExists(t, filepath.Join(vols, "foreign", "data", "precious"))
	// An empty one, or one an interrupted request left, is cleared.
	require.NoError(t, os.Mkdir(filepath.Join(vols, "empty"), 0o700))
	r.create("empty", nil)
	left := r.d.newVolume("left", "local", map[string]string{})
	require.NoError(t, os.MkdirAll(filepath.Join(left.Dir, "data", "old"), 0o700))
	require.NoError(t, writeIntent(r.d, left, intentRemove))
	r.create("left", nil)
	assert.NoDirExists(t, filepath.Join(left.Dir, "data", "old"))
	assert.NoFileExists(t, filepath.Join(left.Dir, removingFile))
}

func TestDamagedIntentIsLeftAlone(t *testing.T) {
	r := newRig(t)
	r.create("vol", nil)
	v, err := r.d.get("vol")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(v.Dir, removingFile), []byte(`{"Volume":{"Na`), 0o600))
	r.restart(false)
	_, err = r.d.get("vol")
	require.NoError(t, err, "a damaged intent must not remove a volume")
	assert.DirExists(t, filepath.Join(v.Dir, "data"))
}

func TestIntentsAreReplacedWhole(t *testing.T) {
	r := newRig(t)
	r.create("vol", nil)
	v, err := r.d.get("vol")
	require.NoError(t, err)
	// A kill before the rename leaves only the temporary file: that
	// request had not begun, and the volume stays.
	require.NoError(t, os.WriteFile(filepath.Join(v.Dir, intentTemp), []byte(`{"Op":"remove","Volume":{"Na`), 0o600))
	r.restart(false)
	_, err = r.d.get("vol")
	require.NoError(t, err)
	assert.NoFileExists(t, filepath.Join(v.Dir, intentTemp))
	// A remove intent being rewritten (start-up finishing a Remove) is
	// never emptied on the way: the removal is completed.
	require.NoError(t, writeIntent(r.d, v, intentRemove))
	require.NoError(t, writeIntent(r.d, v, intentRemove))
	in, err := readIntent(v.Dir)
	require.NoError(t, err)
	assert.Equal(t, intentRemove, in.Op)
	r.restart(false)
	_, err = r.d.get("vol")
	assert.ErrorIs(t, err, ErrNotFound)
}

func TestUnsupportedTypeInStateIsKept(t *testing.T) {
	r := newRig(t)
	r.create("future", nil)
	v, err := r.d.get("future")
	require.NoError(t, err)
	v.Type = "quantum"
	require.NoError(t, r.d.store.Put(v))
	r.restart(false)
	// Still answered, so dockerd does not purge it.
	st := r.status("future")
	assert.Equal(t, "quantum", st["type"])
	assert.Contains(t, st["error"], "not supported")
	err = r.d.Remove(&volume.RemoveRequest{Name: "future"})
	assert.ErrorIs(t, err, ErrUnknownType)
	assert.DirExists(t, filepath.Join(r.root, "volumes", "future"))
}

func TestConcurrentLeases(t *testing.T) {
	r := newRig(t)
	r.create("busy", map[string]string{"type": "tmpfs"})
	parallel := func(fn func(i int, id string)) {
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fn(i, string(rune('a'+i)))
			}()
		}
		wg.Wait()
	}
	parallel(func(_ int, id string) {
		_, err := r.d.Mount(&volume.MountRequest{Name: "busy", ID: id})
		assert.NoError(t, err)
		_, err = r.d.Get(&volume.GetRequest{Name: "busy"})
		assert.NoError(t, err)
	})
	assert.Equal(t, 20, r.status("busy")["leases"])
	assert.Equal(t, 1, r.mounter.mounts)
	parallel(func(i int, id string) {
		if i%2 == 0 {
			assert.NoError(t, r.d.Unmount(&volume.UnmountRequest{Name: "busy", ID: id}))
		}
		_, err := r.d.List()
		assert.NoError(t, err)
	})
	assert.Equal(t, 10, r.status("busy")["leases"])
	r.restart(false)
	assert.Equal(t, 10, r.status("busy")["leases"], "every committed lease survives a restart")
	assert.Equal(t, true, r.status("busy")["mounted"])
}

// writeIntent leaves the intent of op in v's directory, as a request cut
// short there would.
func writeIntent(d *Driver, v *Volume, op string) error {
	file := map[string]string{intentCreate: creatingFile, intentRemove: removingFile}[op]
	return d.writeRecord(v, file)
}

func TestLegacyIntentsAreCompleted(t *testing.T) {
	r := newRig(t)
	r.create("old-remove", nil)
	r.create("old-create", nil)
	for name, op := range map[string]string{"old-remove": intentRemove, "old-create": intentCreate} {
		v, err := r.d.get(name)
		require.NoError(t, err)
		require.NoError(t, os.Remove(filepath.Join(v.Dir, recordFile)), "an older holdfast wrote no record file")
		b, err := json.Marshal(intent{Op: op, Volume: v})
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(v.Dir, legacyIntent), b, 0o600))
	}
	r.restart(false)
	_, err := r.d.get("old-remove")
	assert.ErrorIs(t, err, ErrNotFound)
	v, err := r.d.get("old-create")
	require.NoError(t, err, "a committed Create stays")
	assert.NoFileExists(t, filepath.Join(v.Dir, legacyIntent))
	// A volume of an older holdfast, without a record file, still removes.
	require.NoError(t, r.d.Remove(&volume.RemoveRequest{Name: "old-create"}))
	assert.NoDirExists(t, v.Dir)
}
