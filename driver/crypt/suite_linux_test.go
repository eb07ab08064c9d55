package crypt

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
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

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/loopdev"
	"github.com/holdfast/holdfast/internal/volfs"
	"github.com/holdfast/holdfast/internal/volfs/volfstest"
	"github.com/holdfast/holdfast/server"
)

// rig is a driver with the crypt backend on the real kernel, behind the
// request logger, whose log lines are kept for the secrets check.
type rig struct {
	t            testing.TB
	root, keyDir string
	logs         *bytes.Buffer
	d            *driver.Driver
	api          volume.Driver
	statuses     []string
}

func newRig(t testing.TB) *rig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches loop devices and mounts filesystems (make test runs as root)")
	}
	r := &rig{t: t, root: t.TempDir(), keyDir: filepath.Join(t.TempDir(), "keys"), logs: &bytes.Buffer{}}
	r.start()
	t.Cleanup(func() {
		r.d.Close()
		volfstest.DetachBelow(r.root)
	})
	return r
}

func (r *rig) start() {
	r.t.Helper()
	log := logrus.New()
	log.SetOutput(r.logs)
	log.SetLevel(logrus.DebugLevel)
	m := volfs.KernelMounter{}
	d, err := driver.New(driver.Config{
		Root: r.root, MountRoot: filepath.Join(r.root, "mounts"), Scope: "local", BootID: "test",
		Mounter: m, Log: log,
		Backends: map[string]driver.Backend{"crypt": &Backend{Mounter: m, KeyDir: r.keyDir}},
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

func (r *rig) status(name string) map[string]any {
	r.t.Helper()
	res, err := r.api.Get(&volume.GetRequest{Name: name})
	require.NoError(r.t, err)
	js, err := json.Marshal(res)
	require.NoError(r.t, err)
	r.statuses = append(r.statuses, string(js))
	return res.Volume.Status
}

func (r *rig) backing(name string) string {
	return filepath.Join(r.root, "volumes", name, "backing.img")
}

// requireLocked checks that nothing of the volume is attached: no mount,
// no loop device, no mapping.
func (r *rig) requireLocked(name string) {
	r.t.Helper()
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(r.root))
	require.NoError(r.t, err)
	assert.Empty(r.t, mounts, "nothing mounted")
	// A loop device another process has open for a moment (any loopdev.Find
	// scan, in another test binary too) autoclears when it is closed.
	var loops []string
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		loops, err = loopdev.Find(r.backing(name))
		require.NoError(r.t, err)
		if len(loops) == 0 || time.Now().After(end) {
			break
		}
	}
	assert.Empty(r.t, loops, "no loop device left")
	out, _ := exec.Command("losetup", "-a").CombinedOutput()
	assert.NotContains(r.t, string(out), r.backing(name), "losetup -a")
	assert.Empty(r.t, r.mappings(name), "no device-mapper mapping left")
}

// mappings lists the device-mapper mappings of volume name: their
// /dev/mapper nodes and, since a deferred close without udev deletes the
// node while the kernel keeps the mapping, the kernel's names.
func (r *rig) mappings(name string) []string {
	var m []string
	for _, dev := range Mappings("holdfast-" + name + "-") {
		m = append(m, dev.Name)
	}
	return m
}

// pattern is 1 MiB of reproducible pseudo-random bytes.
func pattern() []byte {
	src := rand.NewChaCha8([32]byte{'h', 'o', 'l', 'd', 'f', 'a', 's', 't'})
	buf := make([]byte, 1<<20)
	src.Read(buf)
	return buf
}

const knownName = "holdfast-known-file-name-7d3c"

// runSuite is the whole crypt volume suite for one engine.
func runSuite(t *testing.T, engine string) {
	r := newRig(t)
	name := "vault-" + engine
	require.NoError(t, r.api.Create(&volume.CreateRequest{Name: name, Options: map[string]string{
		"type": "crypt", "size": "64m", "engine": engine, "uid": "1000", "mode": "0750",
	}}))
	st := r.status(name)
	assert.Equal(t, engine, st["engine"])
	assert.Equal(t, map[string]string{EngineLUKS: luksCipher, EngineFscrypt: fscryptCipher}[engine], st["cipher"])
	keyPath := filepath.Join(r.keyDir, name+".key")
	key, err := os.ReadFile(keyPath)
	require.NoError(t, err)
	require.Len(t, key, KeySize)
	assertMode(t, r.keyDir, 0o700)
	assertMode(t, keyPath, 0o600)
	r.requireLocked(name)

	// Write a known pattern and a known name, then lock the volume.
	mp := r.mount(name, "a")
	fi, err := os.Stat(mp)
	require.NoError(t, err)
	assert.EqualValues(t, 1000, fi.Sys().(*syscall.Stat_t).Uid)
	assert.Equal(t, os.ModeDir|0o750, fi.Mode())
	entries, err := os.ReadDir(mp)
	require.NoError(t, err)
	assert.Empty(t, entries, "a new volume is empty (no lost+found)")
	data := pattern()
	require.NoError(t, os.WriteFile(filepath.Join(mp, "pattern.bin"), data, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(mp, knownName), []byte("x"), 0o600))
	assert.Equal(t, true, r.status(name)["mounted"])
	r.unmount(name, "a")
	r.requireLocked(name)

	// The backing file holds neither the plaintext nor the name.
	img, err := os.ReadFile(r.backing(name))
	require.NoError(t, err)
	for off := 0; off < len(data); off += 64 << 10 {
		assert.False(t, bytes.Contains(img, data[off:off+256]), "plaintext at offset %d found in the backing file", off)
	}
	assert.False(t, bytes.Contains(img, []byte(knownName)), "file name found in the backing file")

	// Mount again: the data is intact.
	mp = r.mount(name, "b")
	got, err := os.ReadFile(filepath.Join(mp, "pattern.bin"))
	require.NoError(t, err)
	assert.Equal(t, sha256.Sum256(data), sha256.Sum256(got))
	assert.FileExists(t, filepath.Join(mp, knownName))

	// Writing past the size fails with ENOSPC.
	werr := fill(filepath.Join(mp, "fill"), 80<<20)
	assert.True(t, errors.Is(werr, syscall.ENOSPC), "want ENOSPC writing 80 MiB into 64m, got %v", werr)
	require.NoError(t, os.Remove(filepath.Join(mp, "fill")))
	r.unmount(name, "b")

	// Key file moved away: a clear error, and nothing half set up.
	require.NoError(t, os.Rename(keyPath, keyPath+".away"))
	_, err = r.api.Mount(&volume.MountRequest{Name: name, ID: "c"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "key file "+keyPath+" is missing")
	st = r.status(name)
	assert.Equal(t, false, st["mounted"])
	assert.Equal(t, 0, st["leases"])
	r.requireLocked(name)

	// A wrong key: refused, volume untouched.
	wrong := make([]byte, KeySize)
	for i := range wrong {
		wrong[i] = byte(i)
	}
	require.NoError(t, os.WriteFile(keyPath, wrong, 0o600))
	_, err = r.api.Mount(&volume.MountRequest{Name: name, ID: "c"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "wrong key")
	r.requireLocked(name)

	// Key restored: the data is intact.
	require.NoError(t, os.Rename(keyPath+".away", keyPath))
	mp = r.mount(name, "c")
	got, err = os.ReadFile(filepath.Join(mp, "pattern.bin"))
	require.NoError(t, err)
	assert.Equal(t, sha256.Sum256(data), sha256.Sum256(got))

	// A restart while mounted adopts the volume; the lease still counts.
	r.restart()
	st = r.status(name)
	assert.Equal(t, true, st["mounted"])
	assert.Equal(t, 1, st["leases"])
	r.unmount(name, "c")
	r.requireLocked(name)

	// Remove: backing file and generated key gone, nothing attached.
	require.NoError(t, r.api.Remove(&volume.RemoveRequest{Name: name}))
	assert.NoFileExists(t, r.backing(name))
	assert.NoFileExists(t, keyPath)
	r.requireLocked(name)

	r.assertNoSecret(key)
}

// assertNoSecret checks that key, raw or in hex, appears in no log line,
// no Status and no file under --root.
func (r *rig) assertNoSecret(key []byte) {
	r.t.Helper()
	forms := [][]byte{key, []byte(hex.EncodeToString(key)), []byte(strings.ToUpper(hex.EncodeToString(key)))}
	for _, f := range forms {
		assert.False(r.t, bytes.Contains(r.logs.Bytes(), f), "key in the log")
		for _, st := range r.statuses {
			assert.NotContains(r.t, st, string(f), "key in a Status")
		}
	}
	err := filepath.Walk(r.root, func(path string, info os.FileInfo, err error) error {
		if os.IsNotExist(err) {
			return nil // a removed volume's trash, deleted meanwhile
		}
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, f := range forms {
			assert.False(r.t, bytes.Contains(b, f), "key found in %s", path)
		}
		return nil
	})
	require.NoError(r.t, err)
	require.NotEmpty(r.t, r.logs.String(), "the requests were logged")
}

func assertMode(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, mode, fi.Mode().Perm(), path)
}

// fill writes up to n bytes to a new file and returns the first error.
func fill(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{0x5a}, 1<<20)
	for written := 0; written < n; written += len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			return err
		}
	}
	return f.Sync()
}
