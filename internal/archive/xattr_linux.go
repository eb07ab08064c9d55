package archive

import (
	"bytes"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// procPath names the entry base in the directory open as dirfd through
// /proc/self/fd, for the xattr calls that have no *at form; the l* calls
// never follow base itself.
func procPath(dirfd int, base string) string {
	return fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, base)
}

// listXattrs reads every extended attribute of the entry base in dirfd
// (not following a symlink) as SCHILY.xattr records.
func listXattrs(dirfd int, base string, into map[string]string) error {
	p := procPath(dirfd, base)
	names, err := growCall(func(b []byte) (int, error) { return unix.Llistxattr(p, b) })
	if errors.Is(err, unix.ENOTSUP) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list xattrs: %w", err)
	}
	for _, n := range bytes.Split(names, []byte{0}) {
		if len(n) == 0 {
			continue
		}
		name := string(n)
		v, err := growCall(func(b []byte) (int, error) { return unix.Lgetxattr(p, name, b) })
		if errors.Is(err, unix.ENODATA) {
			continue // removed while we read
		}
		if err != nil {
			return fmt.Errorf("read xattr %s: %w", name, err)
		}
		into[recXattr+name] = string(v)
	}
	return nil
}

// growCall calls a size-probing syscall until its buffer is large enough.
func growCall(call func([]byte) (int, error)) ([]byte, error) {
	for {
		n, err := call(nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
		buf := make([]byte, n)
		n, err = call(buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew meanwhile
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// setXattrs sets the SCHILY.xattr records of recs on the entry base in dirfd.
func setXattrs(dirfd int, base string, recs map[string]string) error {
	for k, v := range recs {
		name, ok := cutPrefix(k, recXattr)
		if !ok {
			continue
		}
		if err := unix.Lsetxattr(procPath(dirfd, base), name, []byte(v), 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	return nil
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return "", false
}
