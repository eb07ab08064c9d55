package driver

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/treetest"
	"github.com/holdfast/holdfast/internal/volfs/volfstest"
)

// mountAs takes lease id on name and returns the mountpoint.
func mountAs(t *testing.T, d *Driver, name, id string) string {
	t.Helper()
	res, err := d.Mount(&volume.MountRequest{Name: name, ID: id})
	require.NoError(t, err)
	return res.Mountpoint
}

func unmountAs(t *testing.T, d *Driver, name, id string) {
	t.Helper()
	require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: name, ID: id}))
}

func backup(t *testing.T, d *Driver, name string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	note, err := d.Backup(context.Background(), name, &buf, false)
	require.NoError(t, err)
	return buf.Bytes(), note
}

// requireNoVolume checks that nothing of name is left: no record in memory
// or in the state, no directory, no mount.
func requireNoVolume(t *testing.T, d *Driver, name string) {
	t.Helper()
	_, err := d.Get(&volume.GetRequest{Name: name})
	require.ErrorIs(t, err, ErrNotFound, "a failed restore left volume %s", name)
	d.WaitPurged()
	assert.NoDirExists(t, filepath.Join(d.cfg.Root, "volumes", name))
	vols, err := d.store.All()
	require.NoError(t, err)
	for _, v := range vols {
		assert.NotEqual(t, name, v.Name, "the state keeps a record of %s", name)
	}
	mounts, err := d.cfg.Mounter.Mountpoints(filepath.Join(d.cfg.MountRoot, name))
	require.NoError(t, err)
	assert.Empty(t, mounts)
}

// TestBackupRestoreRoundTrip backs up a tree of every kind of file and
// restores it into a new volume, with the source in use (a container's
// lease on it: a live copy) and not (exact).
func TestBackupRestoreRoundTrip(t *testing.T) {
	volfstest.RequireRoot(t, "mounts volumes and restores owners for real")
	for _, tc := range []struct {
		name  string
		opts  map[string]string
		inUse bool
	}{
		{"local idle", map[string]string{"type": "local"}, false},
		{"local in use", map[string]string{"type": "local"}, true},
		// A tmpfs keeps nothing unmounted: only in use, into a tmpfs a
		// container uses.
		{"tmpfs in use", map[string]string{"type": "tmpfs", "size": "64m"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := kernelDriver(t, t.TempDir())
			require.NoError(t, d.Create(&volume.CreateRequest{Name: "src", Options: tc.opts}))
			mp := mountAs(t, d, "src", "c1")
			treetest.Build(t, mp)
			want := treetest.Snapshot(t, mp)
			if !tc.inUse {
				unmountAs(t, d, "src", "c1")
			}
			stream, note := backup(t, d, "src")
			if tc.inUse {
				assert.Contains(t, note, "live copy")
				want2 := treetest.Snapshot(t, mp)
				treetest.RequireSame(t, want, want2) // the backup changed nothing, not even an atime
			} else {
				assert.Empty(t, note, "a volume no container uses is copied exactly")
				v, err := d.get("src")
				require.NoError(t, err)
				assert.False(t, v.Mounted, "the view's mount ended with the backup")
				assert.Empty(t, v.Leases)
			}

			dstOpts := tc.opts
			var dstMP string
			if tc.opts["type"] == "tmpfs" {
				require.NoError(t, d.Create(&volume.CreateRequest{Name: "dst", Options: tc.opts}))
				dstMP = mountAs(t, d, "dst", "c2")
			}
			res, err := d.Restore(context.Background(), "dst", dstOpts, bytes.NewReader(stream))
			require.NoError(t, err)
			assert.Equal(t, len(want), res.Entries)
			if dstMP == "" {
				dstMP = mountAs(t, d, "dst", "c2")
			}
			treetest.RequireSame(t, want, treetest.Snapshot(t, dstMP))
			treetest.RequireSparse(t, filepath.Join(dstMP, treetest.SparseName))
		})
	}
}

// TestRestoreIntoExistingVolume: an empty volume with the options given is
// filled; one holding data, or with other options, is refused unchanged.
func TestRestoreIntoExistingVolume(t *testing.T) {
	volfstest.RequireRoot(t, "mounts volumes and restores owners for real")
	d := kernelDriver(t, t.TempDir())
	local := map[string]string{"type": "local"}
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "src", Options: local}))
	mp := mountAs(t, d, "src", "c1")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "f"), []byte("data"), 0o644))
	unmountAs(t, d, "src", "c1")
	stream, _ := backup(t, d, "src")

	require.NoError(t, d.Create(&volume.CreateRequest{Name: "empty", Options: local}))
	_, err := d.Restore(context.Background(), "empty", local, bytes.NewReader(stream))
	require.NoError(t, err, "an empty volume with the same options is filled")
	got, err := os.ReadFile(filepath.Join(mountAs(t, d, "empty", "c"), "f"))
	require.NoError(t, err)
	assert.Equal(t, "data", string(got))
	unmountAs(t, d, "empty", "c")

	_, err = d.Restore(context.Background(), "src", local, bytes.NewReader(stream))
	require.ErrorContains(t, err, "volume src exists and holds data; restore into a new name or remove it first")
	_, err = d.Get(&volume.GetRequest{Name: "src"})
	require.NoError(t, err, "a refused restore leaves the existing volume")
	got, err = os.ReadFile(filepath.Join(mountAs(t, d, "src", "c"), "f"))
	require.NoError(t, err)
	assert.Equal(t, "data", string(got))
	unmountAs(t, d, "src", "c")

	require.NoError(t, d.Create(&volume.CreateRequest{Name: "tmp", Options: map[string]string{"type": "tmpfs"}}))
	_, err = d.Restore(context.Background(), "tmp", local, bytes.NewReader(stream))
	require.ErrorContains(t, err, "volume tmp exists with type=tmpfs, not type=local")
	_, err = d.Restore(context.Background(), "tmp", map[string]string{"type": "tmpfs"}, bytes.NewReader(stream))
	require.ErrorContains(t, err, "the tmpfs volume tmp keeps nothing once the restore unmounts it: restore into it while a container uses it")

	_, err = d.Restore(context.Background(), "clone", map[string]string{"from": "src"}, bytes.NewReader(stream))
	require.ErrorContains(t, err, "a restore takes the files from its stream; drop --opt from=")
	requireNoVolume(t, d, "clone")

	_, err = d.Restore(context.Background(), "newtmp", map[string]string{"type": "tmpfs"}, bytes.NewReader(stream))
	require.ErrorContains(t, err, "a new type=tmpfs volume keeps nothing")
	requireNoVolume(t, d, "newtmp")
}

// rawStream is a tar stream of hdrs, each regular file holding "abc".
func rawStream(t *testing.T, hdrs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if h.Typeflag == tar.TypeReg {
			h.Size = 3
		}
		require.NoError(t, tw.WriteHeader(h))
		if h.Typeflag == tar.TypeReg {
			_, err := tw.Write([]byte("abc"))
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

// TestRestoreRefusesBadStreams: every bad stream is refused with a clear
// error and leaves no volume behind; the host outside it is untouched.
func TestRestoreRefusesBadStreams(t *testing.T) {
	volfstest.RequireRoot(t, "mounts volumes and restores owners for real")
	d := kernelDriver(t, t.TempDir())
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "src", Options: map[string]string{"type": "local"}}))
	mp := mountAs(t, d, "src", "c1")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "file"), bytes.Repeat([]byte("0123456789"), 1000), 0o644))
	unmountAs(t, d, "src", "c1")
	good, _ := backup(t, d, "src")
	flipped := bytes.Clone(good)
	i := bytes.Index(flipped, []byte("0123456789"))
	require.Positive(t, i)
	flipped[i+5] ^= 0x01
	outside := filepath.Join(t.TempDir(), "outside")
	root := &tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755}
	for _, tc := range []struct {
		name, want string
		stream     []byte
	}{
		{"truncated", "corrupt or truncated", good[:len(good)/2]},
		{"cut before its end marker", "corrupt or truncated", good[:1536]},
		{"empty", "corrupt or truncated", nil},
		{"corrupt", "does not match the stream's SHA-256", flipped},
		{"dot-dot", "climbs out of the volume", rawStream(t, root, &tar.Header{Typeflag: tar.TypeReg, Name: "../escape", Mode: 0o644})},
		{"absolute", "absolute name", rawStream(t, root, &tar.Header{Typeflag: tar.TypeReg, Name: outside, Mode: 0o644})},
		{"symlink out then through it", "unsafe", rawStream(t, root,
			&tar.Header{Typeflag: tar.TypeSymlink, Name: "out", Linkname: "../../../../../../" + filepath.Dir(outside)},
		)},
		{"through an absolute symlink", "unsafe", rawStream(t, root,
			&tar.Header{Typeflag: tar.TypeSymlink, Name: "abs", Linkname: filepath.Dir(outside)},
			&tar.Header{Typeflag: tar.TypeReg, Name: "abs/outside", Mode: 0o644},
		)},
		{"hardlink out", "unsafe", rawStream(t, root,
			&tar.Header{Typeflag: tar.TypeLink, Name: "passwd", Linkname: "../../../../../../etc/passwd"},
		)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := d.Restore(context.Background(), "dst", map[string]string{"type": "local"}, bytes.NewReader(tc.stream))
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, "the volume it created was removed")
			requireNoVolume(t, d, "dst")
			assert.NoFileExists(t, outside)
		})
	}
	_, err := d.Backup(context.Background(), "nope", &bytes.Buffer{}, false)
	require.ErrorIs(t, err, ErrNotFound)
	require.ErrorContains(t, err, "no such volume: nope")
}

// TestReleaseLeases: release drops a lease as dockerd's Unmount would, and
// refuses what is not a lease and holdfast's own.
func TestReleaseLeases(t *testing.T) {
	volfstest.RequireRoot(t, "mounts volumes and restores owners for real")
	d := kernelDriver(t, t.TempDir())
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "vol", Options: map[string]string{"type": "local"}}))
	mp := mountAs(t, d, "vol", "aaa")
	mountAs(t, d, "vol", "bbb")
	leases, err := d.Leases("vol")
	require.NoError(t, err)
	require.Len(t, leases, 2)
	assert.Equal(t, "aaa", leases[0].ID)

	_, err = d.Release("vol", "zzz")
	require.ErrorContains(t, err, `"zzz" is not a lease on vol; holdfast leases vol lists them`)
	_, err = d.Release("nope", "aaa")
	require.ErrorIs(t, err, ErrNotFound)

	view, err := d.OpenView(context.Background(), "vol", false)
	require.NoError(t, err)
	var viewID string
	leases, _ = d.Leases("vol")
	for _, l := range leases {
		if strings.HasPrefix(l.ID, ViewLeasePrefix) {
			viewID = l.ID
		}
	}
	require.NotEmpty(t, viewID, "the view holds a lease")
	_, err = d.Release("vol", viewID)
	require.ErrorContains(t, err, "is holdfast's own view; it ends with the backup")

	did, err := d.Release("vol", "aaa")
	require.NoError(t, err)
	assert.Contains(t, did, "stays mounted for its 2 other lease(s)")
	did, err = d.Release("vol", "bbb")
	require.NoError(t, err)
	assert.Contains(t, did, "stays mounted for its 1 other lease(s)", "the view's lease keeps it mounted")
	require.NoError(t, view.Close())
	v, err := d.get("vol")
	require.NoError(t, err)
	assert.False(t, v.Mounted, "the view was the last lease")
	assert.NoDirExists(t, mp)

	mountAs(t, d, "vol", "ccc")
	did, err = d.Release("vol", "ccc")
	require.NoError(t, err)
	assert.Equal(t, "released ccc, the last lease: vol is unmounted", did)
	v, _ = d.get("vol")
	assert.False(t, v.Mounted)

	vols, err := d.Volumes()
	require.NoError(t, err)
	require.Len(t, vols, 1)
	assert.Equal(t, "vol", vols[0].Name)
	assert.Equal(t, "local", vols[0].Type)
	assert.Zero(t, vols[0].Leases)
}

// TestViewKeepsTheVolume: a backup in progress (an open view) keeps the
// volume from being removed, and is no mount dockerd owns: dockerd's
// Unmount of its own last lease leaves the view's mount in place.
func TestViewKeepsTheVolume(t *testing.T) {
	volfstest.RequireRoot(t, "mounts volumes and restores owners for real")
	d := kernelDriver(t, t.TempDir())
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "vol", Options: map[string]string{"type": "local"}}))
	mountAs(t, d, "vol", "c1")
	view, err := d.OpenView(context.Background(), "vol", false)
	require.NoError(t, err)
	unmountAs(t, d, "vol", "c1")
	require.NoError(t, d.Unmount(&volume.UnmountRequest{Name: "vol", ID: "unknown"}))
	require.NoError(t, d.checkLive(&Volume{Mountpoint: view.Dir}), "the view's mount outlives dockerd's last lease")
	err = d.Remove(&volume.RemoveRequest{Name: "vol"})
	require.ErrorIs(t, err, ErrInUse)
	require.NoError(t, view.Close())
	require.NoError(t, d.Remove(&volume.RemoveRequest{Name: "vol"}))
}

// TestStartupEndsOwnLeases: a view's lease left by a stopped holdfast is
// dropped at the next start; a volume a restore was filling is removed.
func TestStartupEndsOwnLeases(t *testing.T) {
	volfstest.RequireRoot(t, "mounts volumes and restores owners for real")
	root := t.TempDir()
	d := kernelDriver(t, root)
	for _, n := range []string{"viewed", "filling", "used"} {
		require.NoError(t, d.Create(&volume.CreateRequest{Name: n, Options: map[string]string{"type": "local"}}))
	}
	mountAs(t, d, "viewed", ViewLeasePrefix+"crashed")
	mp := mountAs(t, d, "filling", FillLeasePrefix+"crashed")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "half"), []byte("half"), 0o644))
	mountAs(t, d, "used", "c1")
	mountAs(t, d, "used", ViewLeasePrefix+"crashed")
	require.NoError(t, d.Close()) // mounts stay, as after a crash

	d2 := kernelDriver(t, root)
	v, err := d2.get("viewed")
	require.NoError(t, err)
	assert.Empty(t, v.Leases)
	assert.False(t, v.Mounted, "a mount left with only a view's lease is unmounted")
	v, err = d2.get("used")
	require.NoError(t, err)
	assert.Equal(t, []string{"c1"}, keys(v.Leases), "dockerd's lease is kept, the view's dropped")
	assert.True(t, v.Mounted)
	requireNoVolume(t, d2, "filling")
}

func keys(m map[string]time.Time) []string {
	out := []string{}
	for k := range m {
		out = append(out, k)
	}
	return out
}

// failingWriter fails every write after the first n bytes, as a client
// that went away.
type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n <= 0 {
		return 0, errors.New("client went away")
	}
	w.n -= len(p)
	return len(p), nil
}

// TestAbandonedBackupAndRestore: a backup whose reader goes away ends its
// view (no lease, no mount left); a restore in progress holds its volume
// (Remove and Release refuse), and one whose stream fails removes it.
func TestAbandonedBackupAndRestore(t *testing.T) {
	volfstest.RequireRoot(t, "mounts volumes and restores owners for real")
	d := kernelDriver(t, t.TempDir())
	require.NoError(t, d.Create(&volume.CreateRequest{Name: "src", Options: map[string]string{"type": "local"}}))
	mp := mountAs(t, d, "src", "c1")
	require.NoError(t, os.WriteFile(filepath.Join(mp, "big"), bytes.Repeat([]byte("x"), 4<<20), 0o644))
	unmountAs(t, d, "src", "c1")
	_, err := d.Backup(context.Background(), "src", &failingWriter{n: 64 << 10}, false)
	require.ErrorContains(t, err, "client went away")
	v, err := d.get("src")
	require.NoError(t, err)
	assert.Empty(t, v.Leases, "the view's lease ended with the failed backup")
	assert.False(t, v.Mounted)
	stream, _ := backup(t, d, "src")

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := d.Restore(context.Background(), "dst", map[string]string{"type": "local"}, pr)
		done <- err
	}()
	// Once the restore has read a first piece, it holds its fill lease.
	_, err = pw.Write(stream[:4096])
	require.NoError(t, err)
	leases, err := d.Leases("dst")
	require.NoError(t, err)
	require.Len(t, leases, 1)
	assert.True(t, strings.HasPrefix(leases[0].ID, FillLeasePrefix), leases[0].ID)
	require.ErrorIs(t, d.Remove(&volume.RemoveRequest{Name: "dst"}), ErrInUse, "a restore in progress keeps its volume")
	_, err = d.Release("dst", leases[0].ID)
	require.ErrorContains(t, err, "is holdfast's own; it ends with the restore")
	pw.CloseWithError(errors.New("the network went down"))
	err = <-done
	require.ErrorContains(t, err, "the network went down")
	requireNoVolume(t, d, "dst")
}
