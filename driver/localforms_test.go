package driver_test

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/bind"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/driver/nfs"
	"github.com/holdfast/holdfast/driver/tmpfs"
	"github.com/holdfast/holdfast/internal/volfs"
)

// localForm is one driver_opts example of Docker's documentation or of the
// guide users read first (testdata/local_forms.json).
type localForm struct {
	From string
	Opts map[string]string
	// HostDir, when set, is a directory the example binds: the test makes
	// it under a temporary directory and rewrites the paths.
	HostDir string `json:"host_dir"`
	// Canonical are the options holdfast stores; Refused a part of the
	// message that refuses the example, naming the alternative.
	Canonical map[string]string
	Refused   string
	// Holdfast is the same volume in holdfast's own spelling: creating it
	// after Opts is the same volume, not a conflict.
	Holdfast map[string]string
}

func loadLocalForms(t *testing.T) []localForm {
	b, err := os.ReadFile("testdata/local_forms.json")
	require.NoError(t, err)
	var forms []localForm
	require.NoError(t, json.Unmarshal(b, &forms))
	return forms
}

// formsDriver is a driver on a fake mount table with the backends that
// take Docker's local driver forms.
func formsDriver(t *testing.T) (*driver.Driver, map[string]driver.Backend) {
	m := volfs.NewFakeMounter()
	dir := t.TempDir()
	backends := map[string]driver.Backend{
		"local":      local.New(m, nil),
		"tmpfs":      tmpfs.New(m, "64m"),
		"bind":       bind.New(m, []string{"/"}, map[string]string{"--root": filepath.Join(dir, "root")}),
		nfs.TypeNFS:  nfs.New(m, 0, nil),
		nfs.TypeNFS4: &nfs.Backend{Mounter: m, Type: nfs.TypeNFS4},
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	d, err := driver.New(driver.Config{Root: filepath.Join(dir, "root"), MountRoot: filepath.Join(dir, "mnt"),
		Scope: "local", BootID: "b", Mounter: m, Backends: backends, Log: log})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d, backends
}

// TestLocalDriverForms: every driver_opts example of Docker's volume
// documentation and of the guide is either accepted, with the canonical
// options holdfast stores, or refused with a message naming the
// alternative; an accepted one created again in holdfast's own spelling is
// the same volume.
func TestLocalDriverForms(t *testing.T) {
	d, backends := formsDriver(t)
	hosts, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	for i, f := range loadLocalForms(t) {
		t.Run(fmt.Sprintf("%02d", i), func(t *testing.T) {
			t.Log(f.From)
			if f.HostDir != "" {
				require.NoError(t, os.MkdirAll(hosts+f.HostDir, 0o755))
				for _, m := range []map[string]string{f.Opts, f.Canonical, f.Holdfast} {
					if m["device"] == f.HostDir {
						m["device"] = hosts + f.HostDir
					}
				}
			}
			name := fmt.Sprintf("form%02d", i)
			err := d.Create(&volume.CreateRequest{Name: name, Options: maps.Clone(f.Opts)})
			if f.Refused != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), f.Refused)
				assert.NotContains(t, err.Error(), "*****", "never echo a password")
				_, gerr := d.Get(&volume.GetRequest{Name: name})
				assert.ErrorIs(t, gerr, driver.ErrNotFound, "nothing created")
				return
			}
			require.NoError(t, err)
			typ := driver.DefaultType
			rest := maps.Clone(f.Opts)
			if v, ok := rest["type"]; ok {
				typ = driver.CanonType(v)
				delete(rest, "type")
			}
			got, err := backends[typ].Parse(rest)
			require.NoError(t, err)
			assert.Equal(t, f.Canonical, got)
			if f.Holdfast != nil {
				assert.NoError(t, d.Create(&volume.CreateRequest{Name: name, Options: maps.Clone(f.Holdfast)}),
					"holdfast's spelling of the same volume is no conflict")
			}
			assert.NoError(t, d.Create(&volume.CreateRequest{Name: name, Options: maps.Clone(f.Opts)}), "created again")
			require.NoError(t, d.Remove(&volume.RemoveRequest{Name: name}))
			if f.HostDir != "" {
				assert.DirExists(t, hosts+f.HostDir, "Remove leaves the host directory")
			}
		})
	}
}

// TestLocalFormsConflicts: a changed option in either spelling is a
// conflict that names it.
func TestLocalFormsConflicts(t *testing.T) {
	d, _ := formsDriver(t)
	create := func(opts map[string]string) error {
		return d.Create(&volume.CreateRequest{Name: "scratch", Options: opts})
	}
	require.NoError(t, create(map[string]string{"type": "tmpfs", "device": "tmpfs", "o": "size=100m,noexec"}))
	require.NoError(t, create(map[string]string{"type": "tmpfs", "size": "100m", "noexec": "true"}))
	err := create(map[string]string{"type": "tmpfs", "size": "100m"})
	require.ErrorIs(t, err, driver.ErrConflict)
	assert.Contains(t, err.Error(), `noexec: existing "true", requested unset`)
	err = create(map[string]string{"type": "tmpfs", "device": "tmpfs", "o": "size=200m,noexec"})
	require.ErrorIs(t, err, driver.ErrConflict)
	assert.Contains(t, err.Error(), `size: existing "104857600", requested "209715200"`)

	for _, tt := range []struct {
		opts map[string]string
		want string
	}{
		{map[string]string{"type": "tmpfs", "o": "size=1m,size=2m"}, "got size twice with different values (o=size=1m, o=size=2m)"},
		{map[string]string{"type": "tmpfs", "noexec": "true", "o": "exec"}, "got noexec twice with different values"},
		{map[string]string{"type": "tmpfs", "o": "size=50%"}, "a percentage of RAM changes with the host"},
		{map[string]string{"type": "tmpfs", "o": "suid"}, "always mounts tmpfs volumes nosuid,nodev"},
		{map[string]string{"type": "tmpfs", "o": "size=1m,password=hunter2"}, "password is not a tmpfs option"},
		{map[string]string{"type": "tmpfs", "device": "/dev/sdb1"}, "a tmpfs has no device"},
		{map[string]string{"type": "smb3", "device": "//srv/share"}, "use --driver local"},
		{map[string]string{"type": "none", "device": "/tmp", "o": "bind,uid=1000"}, "holdfast sets the directory's owner and mode with --opt uid="},
	} {
		err := create(tt.opts)
		require.Error(t, err, "%v", tt.opts)
		assert.Contains(t, err.Error(), tt.want)
		assert.NotContains(t, err.Error(), "hunter2")
	}
}

// TestBindRefusesPrivatePaths: no bind volume reaches holdfast's own
// directories, inside them, above them or through a symlink.
func TestBindRefusesPrivatePaths(t *testing.T) {
	base, err := filepath.EvalSymlinks(t.TempDir())
	require.NoError(t, err)
	root := filepath.Join(base, "state")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "volumes", "x"), 0o700))
	require.NoError(t, os.Symlink(filepath.Join(root, "volumes"), filepath.Join(base, "link")))
	require.NoError(t, os.WriteFile(filepath.Join(base, "file"), nil, 0o600))
	b := bind.New(nil, []string{"/"}, map[string]string{"--root": root})
	for dev, want := range map[string]string{
		root:                             "it is inside --root " + root,
		filepath.Join(root, "volumes"):   "it is inside --root",
		base:                             "it contains --root " + root,
		"/":                              "it contains --root",
		filepath.Join(base, "link", "x"): fmt.Sprintf("(%s resolves to %s through symlinks)", filepath.Join(base, "link", "x"), filepath.Join(root, "volumes", "x")),
		filepath.Join(base, "file"):      "not a directory",
	} {
		_, err := b.Parse(map[string]string{"device": dev})
		require.Error(t, err, dev)
		assert.ErrorIs(t, err, driver.ErrInvalidOption)
		assert.Contains(t, err.Error(), want, dev)
		assert.True(t, strings.Contains(err.Error(), "device="+dev), err.Error())
	}
	ok := filepath.Join(base, "data")
	require.NoError(t, os.Mkdir(ok, 0o755))
	got, err := b.Parse(map[string]string{"device": ok + "/"})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"device": ok}, got)

	// --bind-paths: only below the directories it names; none in the
	// managed plugin.
	other := filepath.Join(base, "other")
	require.NoError(t, os.Mkdir(other, 0o755))
	b.Allowed = []string{ok}
	_, err = b.Parse(map[string]string{"device": other})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is not below a directory of --bind-paths ("+ok+")")
	_, err = b.Parse(map[string]string{"device": ok})
	require.NoError(t, err)
	b.Allowed = nil
	_, err = b.Parse(map[string]string{"device": ok})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "bind volumes are off here (--bind-paths is empty")
}
