package driver

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/volfs"
	"github.com/holdfast/holdfast/internal/volfs/volfstest"
)

// otherUID owns the directories a test hands to another user.
const otherUID = 65534

func requireRootForChown(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: gives directories to another user with chown (make unit runs as root)")
	}
}

// TestNewCreatesPrivateDirs: a fresh --root, --mount-root and everything
// New makes under --root are 0700, and no warning is logged.
func TestNewCreatesPrivateDirs(t *testing.T) {
	base := t.TempDir()
	root, mountRoot := filepath.Join(base, "root"), filepath.Join(base, "mnt")
	log, hook := test.NewNullLogger()
	d, err := New(Config{Root: root, MountRoot: mountRoot, Scope: "local", BootID: "b", Mounter: volfs.NewFakeMounter(),
		Backends: map[string]Backend{}, Log: log})
	require.NoError(t, err)
	defer d.Close()
	for _, dir := range []string{root, mountRoot, filepath.Join(root, "volumes"), filepath.Join(root, "trash"), filepath.Join(root, "views")} {
		assert.Equal(t, os.FileMode(0o700), volfstest.Mode(t, dir), dir)
	}
	assert.Equal(t, os.FileMode(0o600), volfstest.Mode(t, filepath.Join(root, "holdfast.db")))
	assert.Empty(t, volfstest.ModeCorrections(hook))
}

// TestNewCorrectsLooseDirs: an existing --root, --mount-root, volumes,
// trash at 0755 (and holdfast.db at 0644) are set to 0700 (0600) at start,
// each with a warning naming the path, the old and the new mode.
func TestNewCorrectsLooseDirs(t *testing.T) {
	base := t.TempDir()
	root, mountRoot := filepath.Join(base, "root"), filepath.Join(base, "mnt")
	dirs := []string{root, mountRoot, filepath.Join(root, "volumes"), filepath.Join(root, "trash"), filepath.Join(root, "views")}
	for _, dir := range dirs {
		require.NoError(t, os.MkdirAll(dir, 0o755))
		require.NoError(t, os.Chmod(dir, 0o755))
	}
	db := filepath.Join(root, "holdfast.db")
	start := func(log logrus.FieldLogger) {
		d, err := New(Config{Root: root, MountRoot: mountRoot, Scope: "local", BootID: "b", Mounter: volfs.NewFakeMounter(),
			Backends: map[string]Backend{}, Log: log})
		require.NoError(t, err)
		require.NoError(t, d.Close())
	}
	quiet, _ := test.NewNullLogger()
	start(quiet) // creates holdfast.db
	require.NoError(t, os.Chmod(db, 0o644))
	for _, dir := range dirs {
		require.NoError(t, os.Chmod(dir, 0o755))
	}
	log, hook := test.NewNullLogger()
	start(log)
	warned := volfstest.ModeCorrections(hook)
	for _, dir := range dirs {
		assert.Equal(t, os.FileMode(0o700), volfstest.Mode(t, dir), dir)
		if e := warned[dir]; assert.NotNil(t, e, "warning for %s", dir) {
			assert.Equal(t, "0755", e.Data["mode"], dir)
			assert.Equal(t, "0700", e.Data["new_mode"], dir)
		}
	}
	assert.Equal(t, os.FileMode(0o600), volfstest.Mode(t, db))
	if e := warned[db]; assert.NotNil(t, e, "warning for %s", db) {
		assert.Equal(t, "0644", e.Data["mode"])
		assert.Equal(t, "0600", e.Data["new_mode"])
	}
	assert.Len(t, warned, len(dirs)+1)

	// Started again: nothing left to correct, nothing logged.
	hook.Reset()
	start(log)
	assert.Empty(t, volfstest.ModeCorrections(hook))
}

// TestPrivateDirRefusesOtherOwners: a directory owned by another user, a
// symlink to one, and a symlink that user owns are refused, with the flag
// and the fix in the error, and left unchanged; New refuses to start on
// such a --root or --mount-root.
func TestPrivateDirRefusesOtherOwners(t *testing.T) {
	requireRootForChown(t)
	base := t.TempDir()
	theirs := filepath.Join(base, "theirs")
	require.NoError(t, os.Mkdir(theirs, 0o755))
	require.NoError(t, os.Chown(theirs, otherUID, otherUID))
	require.NoError(t, os.Chmod(theirs, 0o755))
	ours := filepath.Join(base, "ours")
	require.NoError(t, os.Mkdir(ours, 0o700))
	linkToTheirs := filepath.Join(base, "link-to-theirs")
	require.NoError(t, os.Symlink(theirs, linkToTheirs))
	theirLink := filepath.Join(base, "their-link")
	require.NoError(t, os.Symlink(ours, theirLink))
	require.NoError(t, os.Lchown(theirLink, otherUID, otherUID))

	for _, tc := range []struct{ path, want string }{
		{theirs, fmt.Sprintf("--root %s is owned by uid %d, who could open it to every user again: chown root:root %s, or set --root to a directory root owns", theirs, otherUID, theirs)},
		{linkToTheirs, fmt.Sprintf("--root %s (the target of the symlink %s) is owned by uid %d", theirs, linkToTheirs, otherUID)},
		{theirLink, fmt.Sprintf("--root %s is a symlink owned by uid %d, who can point it elsewhere", theirLink, otherUID)},
	} {
		_, err := volfs.PrivateDir(tc.path, "--root", nil)
		require.Error(t, err, tc.path)
		assert.Contains(t, err.Error(), tc.want)
	}
	assert.Equal(t, os.FileMode(0o755), volfstest.Mode(t, theirs), "a refused directory is left alone")

	for _, flag := range []string{"--root", "--mount-root"} {
		cfg := Config{Root: filepath.Join(base, "r"), MountRoot: filepath.Join(base, "m"), Scope: "local", BootID: "b",
			Mounter: volfs.NewFakeMounter(), Backends: map[string]Backend{}}
		if flag == "--root" {
			cfg.Root = theirs
		} else {
			cfg.MountRoot = linkToTheirs
		}
		_, err := New(cfg)
		require.Error(t, err, flag)
		assert.Contains(t, err.Error(), flag+" "+theirs)
		assert.Contains(t, err.Error(), "chown root:root")
	}

	// A symlink root owns, to a directory root owns, is fine.
	linkToOurs := filepath.Join(base, "link-to-ours")
	require.NoError(t, os.Symlink(ours, linkToOurs))
	real, err := volfs.PrivateDir(linkToOurs, "--root", nil)
	require.NoError(t, err)
	assert.Equal(t, ours, real)
}
