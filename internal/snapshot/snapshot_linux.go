// Package snapshot holds the ioctls behind holdfast's point-in-time views:
// freezing a filesystem (FIFREEZE, FITHAW), cloning a file by reflink
// (FICLONE) and probing whether a directory's filesystem can.
package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// FIFREEZE and FITHAW from linux/fs.h: _IOWR('X', 119, int) and
// _IOWR('X', 120, int). x/sys/unix does not define them.
const (
	fiFreeze = 0xc0045877
	fiThaw   = 0xc0045878
)

// ErrNoReflink says a filesystem cannot clone files (ext4, tmpfs), or the
// two files are on different filesystems.
var ErrNoReflink = errors.New("no reflink (FICLONE) support")

// Freeze freezes the filesystem mounted at or holding dir: writes to it
// block until Thaw. A frozen filesystem stays frozen when the process
// dies; callers must thaw it, and record that they froze it.
func Freeze(dir string) error {
	err := fsIoctl(dir, fiFreeze, "freeze")
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("%w (it is frozen already: by another copy held frozen, or fsfreeze; try again once that ends)", err)
	}
	return err
}

// Thaw thaws the filesystem at dir. A filesystem that is not frozen is
// fine (EINVAL).
func Thaw(dir string) error {
	err := fsIoctl(dir, fiThaw, "thaw")
	if errors.Is(err, unix.EINVAL) {
		return nil
	}
	return err
}

func fsIoctl(dir string, req uint, what string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, dir, err)
	}
	defer unix.Close(fd)
	if _, err := unix.IoctlRetInt(fd, req); err != nil {
		return fmt.Errorf("%s the filesystem at %s: %w", what, dir, err)
	}
	return nil
}

// Hold freezes the filesystem at dir and returns the func that thaws it,
// which is safe to call more than once. The freeze lasts at most limit:
// a timer thaws it then, and the returned func reports that the limit
// was reached (errThawedEarly), so that a copy taken meanwhile is known
// not to be point-in-time.
func Hold(dir string, limit time.Duration) (thaw func() error, err error) {
	if err := Freeze(dir); err != nil {
		return nil, err
	}
	var once sync.Once
	var thawErr error
	var early atomic.Bool
	do := func() { once.Do(func() { thawErr = Thaw(dir) }) }
	timer := time.AfterFunc(limit, func() {
		early.Store(true)
		do()
	})
	return func() error {
		if timer.Stop() {
			do()
			return thawErr
		}
		do()
		if thawErr == nil && early.Load() {
			return fmt.Errorf("%w (%s)", ErrThawedEarly, limit)
		}
		return thawErr
	}, nil
}

// ErrThawedEarly says Hold's limit thawed the filesystem before its
// holder did.
var ErrThawedEarly = errors.New("the freeze was lifted by its time limit before the copy ended")

// Clone makes dst, a new file, a reflink copy of src: it shares src's
// blocks until either is written. ErrNoReflink when the filesystem
// cannot.
func Clone(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	err = unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		if noReflink(err) {
			return fmt.Errorf("clone %s: %w: %v", src, ErrNoReflink, err)
		}
		return fmt.Errorf("clone %s: %w", src, err)
	}
	return nil
}

// noReflink tells the errors FICLONE gives where it is not supported.
func noReflink(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) ||
		errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)
}

// Reflinks says whether files in dir can be cloned: it clones a small
// file there and deletes both.
func Reflinks(dir string) bool {
	f, err := os.CreateTemp(dir, ".holdfast-probe-")
	if err != nil {
		return false
	}
	src := f.Name()
	defer os.Remove(src)
	_, err = f.Write(make([]byte, 4096))
	f.Close()
	if err != nil {
		return false
	}
	dst := filepath.Join(dir, filepath.Base(src)+".clone")
	defer os.Remove(dst)
	return Clone(src, dst) == nil
}

// CloneFrozen clones image to clone by reflink with the filesystem at
// fsDir frozen, so that the clone holds that filesystem as of one moment
// (image is the file the filesystem lives in, through a loop device).
// The filesystem is thawed before it returns, whatever happens, and is
// never frozen longer than limit. step is called while it is frozen (a
// test's failpoint). Where image's filesystem has no reflinks it wraps
// ErrNoReflink, without freezing anything.
func CloneFrozen(fsDir, image, clone string, limit time.Duration, step func() error) (err error) {
	if !Reflinks(filepath.Dir(clone)) {
		return fmt.Errorf("%w in %s (xfs and btrfs have them)", ErrNoReflink, filepath.Dir(clone))
	}
	thaw, err := Hold(fsDir, limit)
	if err != nil {
		return err
	}
	defer func() {
		if terr := thaw(); terr != nil {
			os.Remove(clone)
			err = errors.Join(err, terr)
		}
	}()
	if err := step(); err != nil {
		return err
	}
	return Clone(image, clone)
}
