package nfs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/driver"
	"github.com/holdfast/holdfast/internal/volfs"
)

// kernelHasNFS reports whether this kernel knows the nfs filesystem type.
func kernelHasNFS(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/filesystems")
	require.NoError(t, err)
	for _, line := range bytes.Split(b, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) > 0 && string(f[len(f)-1]) == "nfs" {
			return true
		}
	}
	return false
}

// TestHostWithoutNFSClient runs on a kernel without an NFS client, as
// root: Create succeeds, Mount fails saying so, and nothing is left
// behind.
func TestHostWithoutNFSClient(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: calls mount(2) for real (make test runs as root)")
	}
	if kernelHasNFS(t) {
		t.Skip("this kernel has an NFS client; the guest tests cover it")
	}
	root := t.TempDir()
	log, _ := test.NewNullLogger()
	m := volfs.KernelMounter{}
	d, err := driver.New(driver.Config{
		Root: root, MountRoot: filepath.Join(root, "mounts"), Scope: "local", BootID: "host",
		Mounter: m, Log: log, Backends: map[string]driver.Backend{TypeNFS: New(m, 0, log)},
	})
	require.NoError(t, err)
	defer d.Close()

	tests := []struct {
		name   string
		opts   map[string]string
		source string
	}{
		{"pinned", map[string]string{"type": "nfs", "o": "addr=127.0.0.1,vers=3,nolock", "device": ":/export"}, "127.0.0.1:/export"},
		{"negotiated", map[string]string{"type": "nfs", "share": "localhost:/export"}, "localhost:/export"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, d.Create(&volume.CreateRequest{Name: tt.name, Options: tt.opts}))
			_, err := d.Mount(&volume.MountRequest{Name: tt.name, ID: "a"})
			require.Error(t, err)
			assert.Equal(t, "mount "+tt.name+": mount nfs "+tt.source+" for volume "+tt.name+
				`: this kernel has no NFS client (mount(2) knows no filesystem type "nfs": load the client on the host with "modprobe nfs", or install the kernel's NFS modules)`,
				err.Error())

			get, err := d.Get(&volume.GetRequest{Name: tt.name})
			require.NoError(t, err)
			assert.Equal(t, false, get.Volume.Status["mounted"])
			assert.Equal(t, 0, get.Volume.Status["leases"])
			assert.Empty(t, get.Volume.Mountpoint)
			infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
			require.NoError(t, err)
			assert.Empty(t, infos, "no mount left")
			assert.NoDirExists(t, filepath.Join(root, "mounts", tt.name), "mountpoint removed")

			require.NoError(t, d.Remove(&volume.RemoveRequest{Name: tt.name}))
			assert.NoDirExists(t, filepath.Join(root, "volumes", tt.name))
		})
	}
}
