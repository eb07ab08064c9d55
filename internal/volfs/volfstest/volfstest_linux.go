// Package volfstest is the scaffolding that the tests of holdfast's volume
// types share on the real kernel: a skip when not root, the mount of one
// path, and the cleanup of every mount a test left below a directory.
package volfstest

import (
	"os"
	"testing"

	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// RequireRoot skips t unless it runs as root; needs says what for, e.g.
// "mounts tmpfs for real".
func RequireRoot(t testing.TB, needs string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: " + needs + " (make test runs as root)")
	}
}

// MountOf returns the mount at path, the topmost where several are
// stacked, or nil when nothing is mounted there.
func MountOf(t testing.TB, path string) *mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	require.NoError(t, err)
	if len(infos) == 0 {
		return nil
	}
	return infos[len(infos)-1]
}

// DetachBelow lazily unmounts every mount at or below dir, the last
// mounted first, so that a failed test leaves nothing mounted.
func DetachBelow(dir string) {
	mounts, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	for i := len(mounts) - 1; i >= 0; i-- {
		unix.Unmount(mounts[i].Mountpoint, unix.MNT_DETACH)
	}
}

// Mode returns the permission bits of path.
func Mode(t testing.TB, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Mode().Perm()
}

// ModeCorrections returns the warnings in hook that corrected a mode
// (volfs.CheckPrivateDir, volfs.PrivateFile), by path.
func ModeCorrections(hook *test.Hook) map[string]*logrus.Entry {
	out := map[string]*logrus.Entry{}
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel {
			if p, ok := e.Data["path"].(string); ok {
				out[p] = e
			}
		}
	}
	return out
}
