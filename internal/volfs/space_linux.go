package volfs

import (
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// NoSpace explains err when a full filesystem (ENOSPC) or an exhausted
// disk quota (EDQUOT) caused it: it names the flag whose directory dir is
// on that filesystem, what is left there and the fix. Any other error,
// nil, and an error NoSpace already explained are returned unchanged.
// errors.Is still matches the errno.
func NoSpace(err error, flag, dir string) error {
	var done *spaceError
	if err == nil || errors.As(err, &done) {
		return err
	}
	switch {
	case errors.Is(err, unix.EDQUOT):
		return &spaceError{err: err, msg: fmt.Sprintf("%v: the disk quota on the filesystem holding %s (%s) is used up: raise the quota, free space there or move %s to a larger filesystem, then try again",
			err, flag, dir, flag)}
	case errors.Is(err, unix.ENOSPC):
		return &spaceError{err: err, msg: fmt.Sprintf("%v: not enough space on the filesystem holding %s (%s): %s; free space there or move %s to a larger filesystem, then try again",
			err, flag, dir, spaceLeft(dir), flag)}
	}
	return err
}

// spaceError is an error NoSpace explained.
type spaceError struct {
	err error
	msg string
}

func (e *spaceError) Error() string { return e.msg }
func (e *spaceError) Unwrap() error { return e.err }

// RootFull is NoSpace for the filesystem holding --root, given the
// directory of one volume, --root/volumes/NAME.
func RootFull(err error, volumeDir string) error {
	return NoSpace(err, "--root", filepath.Dir(filepath.Dir(volumeDir)))
}

// spaceLeft describes the free space and inodes of the filesystem at dir.
func spaceLeft(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "free space unknown: " + err.Error()
	}
	free := fmt.Sprintf("%s free", HumanBytes(st.Bavail*uint64(st.Bsize)))
	if st.Files > 0 && st.Ffree == 0 {
		free += ", no inodes left"
	}
	return free
}

// HumanBytes formats n in binary units, e.g. 12.5 MiB.
func HumanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
