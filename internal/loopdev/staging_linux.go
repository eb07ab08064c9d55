package loopdev

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/volfs"
)

// An image-backed volume's directory holds its image and the staging
// directory where holdfast mounts the image's filesystem. The volume's
// root is a directory inside that filesystem, so that the volume holds
// neither lost+found nor anything else mkfs makes, and has the owner and
// mode asked for.

// ImageFile is the image of the volume whose directory is volumeDir.
func ImageFile(volumeDir string) string { return filepath.Join(volumeDir, "backing.img") }

// StagingDir is where the image's filesystem is mounted.
func StagingDir(volumeDir string) string { return filepath.Join(volumeDir, "fs") }

// RootDir is the volume's root inside the image's filesystem: what is
// bind-mounted at the mountpoint.
func RootDir(volumeDir string) string { return filepath.Join(StagingDir(volumeDir), "data") }

// MountStaging mounts the filesystem of type fstype on dev at the staging
// directory of volumeDir, made if missing, nosuid and nodev: no container
// leaves a setuid program or a device node there for another. faults fail
// the step "mkdir staging directory" on purpose, for tests.
func MountStaging(m volfs.Mounter, faults *failpoint.Set, dev, fstype, volumeDir string) error {
	dir := StagingDir(volumeDir)
	err := faults.Check("mkdir staging directory")
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return volfs.RootFull(fmt.Errorf("create staging directory: %w", err), volumeDir)
	}
	return m.Mount(dev, dir, fstype, unix.MS_NODEV|unix.MS_NOSUID, "")
}

// StagingMounted reports whether a filesystem is mounted at the staging
// directory of volumeDir.
func StagingMounted(m volfs.Mounter, volumeDir string) (bool, error) {
	dir := StagingDir(volumeDir)
	mounts, err := m.Mountpoints(dir)
	if err != nil {
		return false, err
	}
	_, ok := mounts[dir]
	return ok, nil
}

// DetachImage detaches the loop devices of volumeDir's image, as Detach
// does. faults fail the step "detach loop device" on purpose, for tests.
func DetachImage(faults *failpoint.Set, volumeDir string) error {
	if err := faults.Check("detach loop device"); err != nil {
		return err
	}
	return Detach(ImageFile(volumeDir))
}
