package archive

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// openBeneath opens the directory rel beneath the directory dirfd as an
// O_PATH descriptor, refusing any symlink on the way and any step out of
// dirfd (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV).
func openBeneath(dirfd int, rel string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	fd, err := unix.Openat2(dirfd, rel, &how)
	if err != nil {
		return -1, fmt.Errorf("open directory %q beneath the target (openat2, no symlinks): %w", rel, err)
	}
	return fd, nil
}
