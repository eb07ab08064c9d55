package driver_test

import (
	"io"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/driver/bind"
	"github.com/holdfast/holdfast/driver/crypt"
	"github.com/holdfast/holdfast/driver/local"
	"github.com/holdfast/holdfast/driver/nfs"
	"github.com/holdfast/holdfast/driver/tmpfs"
	"github.com/holdfast/holdfast/internal/volfs"
)

// marker stands in for key material: no error may show it.
const marker = "s3cr3t-m4rk3r-5e1f"

// FuzzParseOptions gives every backend's Parse arbitrary options: typ is
// the type option (none when empty) and pairs the others, one key=value a
// line. Parse never panics; an accepted set's canonical form parses to
// itself; a refused one wraps driver.ErrInvalidOption, Create answers it
// with the same message without creating anything, and the values of
// options that look secret never appear in it. An unknown type fails
// Create with driver.ErrUnknownType. Seeds: testdata/fuzz/FuzzParseOptions.
func FuzzParseOptions(f *testing.F) {
	m := volfs.NewFakeMounter()
	backends := map[string]driver.Backend{
		"local":      local.New(m, nil),
		"tmpfs":      tmpfs.New(m, "64m"),
		"bind":       bind.New(m, []string{"/"}, nil),
		"crypt":      &crypt.Backend{Mounter: m, KeyDir: filepath.Join(f.TempDir(), "keys")},
		nfs.TypeNFS:  nfs.New(m, 0, nil),
		nfs.TypeNFS4: &nfs.Backend{Mounter: m, Type: nfs.TypeNFS4},
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	dir := f.TempDir()
	d, err := driver.New(driver.Config{Root: filepath.Join(dir, "root"), MountRoot: filepath.Join(dir, "mnt"),
		Scope: "local", BootID: "b", Mounter: m, Backends: backends, Log: log})
	require.NoError(f, err)
	f.Cleanup(func() { d.Close() })

	f.Fuzz(func(t *testing.T, typ, pairs string) {
		raw := parsePairs(typ, pairs)
		create := func(opts map[string]string) error {
			return d.Create(&volume.CreateRequest{Name: "fuzz", Options: opts})
		}
		name, rest := splitType(raw)
		b, ok := backends[name]
		if !ok {
			require.ErrorIs(t, create(raw), driver.ErrUnknownType)
			return
		}
		got, err := b.Parse(rest)
		if err != nil {
			require.ErrorIs(t, err, driver.ErrInvalidOption)
			require.EqualError(t, create(raw), err.Error(), "Create answers what Parse says")
			checkSecretsHidden(t, b, rest)
			return
		}
		again, err := b.Parse(got)
		require.NoError(t, err, "canonical %v", got)
		require.Equal(t, got, again, "canonical %v", got)
		require.NotContains(t, got, "type")
	})
}

// parsePairs reads key=value lines; typ, when not empty, is the type.
func parsePairs(typ, pairs string) map[string]string {
	raw := map[string]string{}
	for line := range strings.SplitSeq(pairs, "\n") {
		if line == "" {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		raw[k] = v
	}
	if typ != "" {
		raw["type"] = typ
	}
	return raw
}

// splitType returns the volume type, as the driver picks it, and the
// other options.
func splitType(raw map[string]string) (string, map[string]string) {
	rest := maps.Clone(raw)
	name, ok := rest["type"]
	delete(rest, "type")
	if !ok {
		name = driver.DefaultType
	}
	return driver.CanonType(name), rest
}

// checkSecretsHidden parses rest with the values of secret-looking
// options replaced by marker, and checks that the error does not show it.
func checkSecretsHidden(t *testing.T, b driver.Backend, rest map[string]string) {
	marked := maps.Clone(rest)
	found := false
	for k := range marked {
		if driver.Sensitive(k) {
			marked[k] = marker
			found = true
		}
	}
	if !found {
		return
	}
	_, err := b.Parse(marked)
	require.Error(t, err, "no backend has an option that looks secret")
	require.NotContains(t, err.Error(), marker)
}
