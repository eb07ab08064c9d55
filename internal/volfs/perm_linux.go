package volfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/sirupsen/logrus"
)

// privateMode is the mode of every directory holdfast keeps data, mounts or
// keys in: root only. dockerd runs as root, and containers see their bind
// mounts whatever the modes of the host directories above them.
const privateMode os.FileMode = 0o700

// PrivateDir creates dir (and missing parents) with mode 0700 and checks
// it as CheckPrivateDir does. It returns dir with symlinks resolved, so it
// compares equal to paths in /proc/self/mountinfo. flag names the setting
// in errors, e.g. "--root".
func PrivateDir(dir, flag string, log logrus.FieldLogger) (string, error) {
	if err := os.MkdirAll(dir, privateMode); err != nil {
		return "", fmt.Errorf("%s: create %s: %w", flag, dir, err)
	}
	if _, err := CheckPrivateDir(dir, flag, log); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%s: resolve %s: %w", flag, dir, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("%s: resolve %s: %w", flag, dir, err)
	}
	return real, nil
}

// CheckPrivateDir makes an existing dir reachable by root only. It refuses
// a dir that is not a directory, that is owned by another user (who could
// open it to everyone again), or that is a symlink owned by another user
// or pointing at a directory another user owns. A dir open to its group or
// to others is set to 0700, with a warning naming the path and both modes
// (log may be nil). A missing dir is no error: exists is false.
func CheckPrivateDir(dir, flag string, log logrus.FieldLogger) (exists bool, err error) {
	lfi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: check %s: %w", flag, dir, err)
	}
	fi := lfi
	if lfi.Mode()&os.ModeSymlink != 0 {
		if uid := ownerOf(lfi); !trustedOwner(uid) {
			return true, fmt.Errorf("%s %s is a symlink owned by uid %d, who can point it elsewhere: replace it with a directory owned by root, or set %s to a path root owns", flag, dir, uid, flag)
		}
		if fi, err = os.Stat(dir); err != nil {
			return true, fmt.Errorf("%s: check %s: %w", flag, dir, err)
		}
	}
	target := dir
	if fi != lfi {
		if target, err = filepath.EvalSymlinks(dir); err != nil {
			return true, fmt.Errorf("%s: resolve %s: %w", flag, dir, err)
		}
	}
	if !fi.IsDir() {
		return true, fmt.Errorf("%s %s is not a directory: remove it, or set %s to a directory", flag, target, flag)
	}
	if uid := ownerOf(fi); !trustedOwner(uid) {
		via := ""
		if target != dir {
			via = " (the target of the symlink " + dir + ")"
		}
		return true, fmt.Errorf("%s %s%s is owned by uid %d, who could open it to every user again: chown root:root %s, or set %s to a directory root owns", flag, target, via, uid, target, flag)
	}
	if old := fi.Mode(); old.Perm()&0o077 != 0 {
		if err := os.Chmod(target, privateMode); err != nil {
			return true, fmt.Errorf("%s: chmod %s to 0700: %w", flag, target, err)
		}
		if log != nil {
			log.WithFields(logrus.Fields{"flag": flag, "path": target, "mode": fmt.Sprintf("%04o", old.Perm()), "new_mode": fmt.Sprintf("%04o", privateMode)}).
				Warn("directory was open to other users; mode corrected")
		}
	}
	return true, nil
}

// PrivateFile sets an existing file open to its group or to others to
// 0600, with a warning; a missing file is no error.
func PrivateFile(path string, log logrus.FieldLogger) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 == 0 {
		return nil
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("chmod %s to 0600: %w", path, err)
	}
	if log != nil {
		log.WithFields(logrus.Fields{"path": path, "mode": fmt.Sprintf("%04o", fi.Mode().Perm()), "new_mode": "0600"}).
			Warn("file was open to other users; mode corrected")
	}
	return nil
}

func ownerOf(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// trustedOwner accepts root and the user holdfast runs as (root in
// production; the tests that run unprivileged own their directories).
func trustedOwner(uid int) bool { return uid == 0 || uid == os.Geteuid() }
