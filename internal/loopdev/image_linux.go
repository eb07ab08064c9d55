package loopdev

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// AllocateImage creates file (mode 0600, which must not exist) with the
// given size and all its blocks allocated, so that the volume can never
// need room the filesystem holding it no longer has: a sparse image that
// outgrows it loses writes the volume's filesystem has already accepted.
// Where that filesystem cannot allocate ahead (EOPNOTSUPP), the file stays
// sparse. On error the file may be left for the caller to remove.
func AllocateImage(file string, size int64) error {
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create backing file: %w", err)
	}
	err = fallocate(f, size)
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = f.Truncate(size)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("allocate the %d MiB backing file: %w", size>>20, err)
	}
	return nil
}

// fallocate allocates size bytes of f. A long allocation (tmpfs zeroes
// every page) gives up with EINTR when a signal arrives, such as the Go
// runtime's: it is retried, a bounded number of times.
func fallocate(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	for try := 0; errors.Is(err, unix.EINTR) && try < 100; try++ {
		err = unix.Fallocate(int(f.Fd()), 0, 0, size)
	}
	return err
}
