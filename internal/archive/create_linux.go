package archive

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// create makes the entry name (clean, relative) beneath the staging directory.
func (u *unpacker) create(name string, hdr *tar.Header, tr io.Reader) error {
	dir, base := path.Split(name)
	if dir == "" {
		dir = "."
	}
	pfd, err := openBeneath(u.stage, dir)
	if err != nil {
		return fmt.Errorf("%w: its parent directory is not in the archive before it, or is reached through a symlink: %v", ErrUnsafe, err)
	}
	defer unix.Close(pfd)
	switch hdr.Typeflag {
	case tar.TypeReg:
		return u.regular(pfd, base, hdr, tr)
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return err
		}
		u.dirs = append(u.dirs, dirTimes{name, hdr.AccessTime, hdr.ModTime})
		return setMeta(pfd, base, hdr)
	case tar.TypeSymlink:
		return u.symlink(pfd, name, base, hdr)
	case tar.TypeLink:
		return u.hardlink(pfd, base, hdr)
	case tar.TypeFifo, tar.TypeChar, tar.TypeBlock:
		return u.node(pfd, base, hdr)
	default:
		return fmt.Errorf("%w: entry %q has type %q, which holdfast does not restore", ErrCorrupt, hdr.Name, string(hdr.Typeflag))
	}
}

func (u *unpacker) symlink(pfd int, name, base string, hdr *tar.Header) error {
	t := hdr.Linkname
	if t == "" {
		return fmt.Errorf("%w: symlink %q has no target", ErrCorrupt, hdr.Name)
	}
	if !path.IsAbs(t) {
		if j := path.Join(path.Dir(name), t); j == ".." || len(j) > 2 && j[:3] == "../" {
			return fmt.Errorf("%w: symlink %q -> %q points out of the volume", ErrUnsafe, hdr.Name, t)
		}
	}
	if err := unix.Symlinkat(t, pfd, base); err != nil {
		return err
	}
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := setXattrs(pfd, base, hdr.PAXRecords); err != nil {
		return err
	}
	return setTimes(pfd, base, hdr.AccessTime, hdr.ModTime)
}

func (u *unpacker) hardlink(pfd int, base string, hdr *tar.Header) error {
	old, err := cleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("%w: hard link %q -> %q points out of the volume", ErrUnsafe, hdr.Name, hdr.Linkname)
	}
	typ, ok := u.seen[old]
	if !ok || typ == tar.TypeDir || old == "." {
		return fmt.Errorf("%w: hard link %q -> %q names no file unpacked before it", ErrUnsafe, hdr.Name, hdr.Linkname)
	}
	odir, obase := path.Split(old)
	if odir == "" {
		odir = "."
	}
	ofd, err := openBeneath(u.stage, odir)
	if err != nil {
		return fmt.Errorf("%w: hard link target %q: %v", ErrUnsafe, hdr.Linkname, err)
	}
	defer unix.Close(ofd)
	return unix.Linkat(ofd, obase, pfd, base, 0)
}

func (u *unpacker) node(pfd int, base string, hdr *tar.Header) error {
	mode := uint32(unix.S_IFIFO)
	switch hdr.Typeflag {
	case tar.TypeChar:
		mode = unix.S_IFCHR
	case tar.TypeBlock:
		mode = unix.S_IFBLK
	}
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	if err := unix.Mknodat(pfd, base, mode|0o600, int(dev)); err != nil {
		return err
	}
	if err := setMeta(pfd, base, hdr); err != nil {
		return err
	}
	return setTimes(pfd, base, hdr.AccessTime, hdr.ModTime)
}

// regular writes a file's data (its segments, leaving holes, when the entry
// is sparse), then its owner, xattrs, mode and times, in the order that
// keeps setuid bits and file capabilities that writing and chown clear.
func (u *unpacker) regular(pfd int, base string, hdr *tar.Header, tr io.Reader) error {
	segs, realSize, err := u.layout(hdr)
	if err != nil {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), hdr.Name)
	defer f.Close()
	in := io.TeeReader(tr, u.sum)
	for _, s := range segs {
		n, err := io.CopyN(io.NewOffsetWriter(f, s.off), in, s.len)
		u.stats.Bytes += n
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%w: %q: the stream ends inside its data", ErrCorrupt, hdr.Name)
		}
		if err != nil {
			return fmt.Errorf("write data: %w", err)
		}
	}
	if err := f.Truncate(realSize); err != nil {
		return fmt.Errorf("set size: %w", err)
	}
	if err := setMeta(pfd, base, hdr); err != nil {
		return err
	}
	return setTimes(pfd, base, hdr.AccessTime, hdr.ModTime)
}

// layout returns where a regular entry's data goes and the file's size.
func (u *unpacker) layout(hdr *tar.Header) ([]segment, int64, error) {
	realSize := hdr.Size
	rs, sparse := hdr.PAXRecords[recRealSize]
	if sparse {
		n, err := strconv.ParseInt(rs, 10, 64)
		if err != nil || n < 0 {
			return nil, 0, fmt.Errorf("%w: %q: sparse size %q is not a size", ErrCorrupt, hdr.Name, rs)
		}
		realSize = n
	}
	if realSize > u.opts.MaxFileSize {
		return nil, 0, fmt.Errorf("%w: %q claims %d bytes, more than the %d a file may hold here", ErrCorrupt, hdr.Name, realSize, u.opts.MaxFileSize)
	}
	if !sparse {
		if hdr.Size == 0 {
			return nil, 0, nil
		}
		return []segment{{0, hdr.Size}}, realSize, nil
	}
	segs, err := decodeMap(hdr.PAXRecords[recMap], realSize, hdr.Size)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %q: %v", ErrCorrupt, hdr.Name, err)
	}
	return segs, realSize, nil
}

// setMeta gives the entry base in dirfd (never a symlink) hdr's owner,
// xattrs and mode, in that order: chown clears setuid and capabilities.
func setMeta(dirfd int, base string, hdr *tar.Header) error {
	if err := unix.Fchownat(dirfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %d:%d: %w", hdr.Uid, hdr.Gid, err)
	}
	if err := setXattrs(dirfd, base, hdr.PAXRecords); err != nil {
		return err
	}
	if err := unix.Fchmodat(dirfd, base, uint32(hdr.Mode&0o7777), 0); err != nil {
		return fmt.Errorf("chmod %o: %w", hdr.Mode&0o7777, err)
	}
	return nil
}

// setTimes sets atime and mtime of base in dirfd, not following a symlink;
// a zero atime (the stream had none) leaves the atime alone.
func setTimes(dirfd int, base string, atime, mtime time.Time) error {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, timespec(mtime)}
	if !atime.IsZero() {
		ts[0] = timespec(atime)
	}
	return unix.UtimesNanoAt(dirfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// timespec converts t without UnixNano's overflow for times before 1678.
func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}
