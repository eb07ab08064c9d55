package archive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
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
	case tar.TypeReg, tar.TypeGNUSparse:
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
	l, err := u.layout(hdr)
	if err != nil {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), hdr.Name)
	defer f.Close()
	if err := u.data(f, hdr.Name, tr, l); err != nil {
		return err
	}
	if err := f.Truncate(l.realSize); err != nil {
		return fmt.Errorf("set size: %w", err)
	}
	if err := setMeta(pfd, base, hdr); err != nil {
		return err
	}
	return setTimes(pfd, base, hdr.AccessTime, hdr.ModTime)
}

// data writes the entry's segments into f. From a logical stream (a GNU
// sparse entry, which archive/tar hands over with its holes as zeros) it
// reads past the holes; only segment data counts in the stream's checksum.
func (u *unpacker) data(f *os.File, name string, tr io.Reader, l fileLayout) error {
	in := io.TeeReader(tr, u.sum)
	var pos int64
	for _, s := range l.segs {
		if l.logical && s.off > pos {
			if _, err := io.CopyN(io.Discard, tr, s.off-pos); err != nil {
				return dataError(name, err)
			}
		}
		n, err := copyAt(f, s.off, in, s.len, l.skipZeros)
		u.stats.Bytes += n
		if err != nil {
			return dataError(name, err)
		}
		pos = s.off + s.len
	}
	return nil
}

// dataError says what failed while a file's data was read from the stream.
func dataError(name string, err error) error {
	var pe *os.PathError
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return fmt.Errorf("%w: %q: the stream ends inside its data", ErrCorrupt, name)
	case errors.As(err, &pe):
		return fmt.Errorf("write data: %w", err)
	default:
		return fmt.Errorf("%w: %q: %v", ErrCorrupt, name, err)
	}
}

// copyAt copies n bytes from r to f at off. With skipZeros, blocks of
// zeros are left as holes.
func copyAt(f *os.File, off int64, r io.Reader, n int64, skipZeros bool) (int64, error) {
	if !skipZeros {
		return io.CopyN(io.NewOffsetWriter(f, off), r, n)
	}
	buf := make([]byte, 64<<10)
	var done int64
	for done < n {
		m, err := io.ReadFull(r, buf[:min(int64(len(buf)), n-done)])
		if m > 0 && !allZero(buf[:m]) {
			if _, werr := f.WriteAt(buf[:m], off+done); werr != nil {
				return done, werr
			}
		}
		done += int64(m)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// fileLayout is where a regular entry's data goes.
type fileLayout struct {
	segs     []segment
	realSize int64
	// logical: the reader hands over the whole file, holes as zeros.
	logical bool
	// skipZeros: a foreign sparse entry, whose map holdfast does not see;
	// blocks of zeros are left as holes.
	skipZeros bool
}

// layout returns where a regular entry's data goes and the file's size:
// from holdfast's own map when it wrote the entry, GNU sparse or not.
func (u *unpacker) layout(hdr *tar.Header) (fileLayout, error) {
	gnu := gnuSparse(hdr)
	l := fileLayout{realSize: hdr.Size, logical: gnu}
	rs, ours := hdr.PAXRecords[recRealSize]
	if ours {
		n, err := strconv.ParseInt(rs, 10, 64)
		if err != nil || n < 0 {
			return l, fmt.Errorf("%w: %q: sparse size %q is not a size", ErrCorrupt, hdr.Name, rs)
		}
		if gnu && n != hdr.Size {
			return l, fmt.Errorf("%w: %q: its sparse records disagree on its size (%d and %d)", ErrCorrupt, hdr.Name, n, hdr.Size)
		}
		l.realSize = n
	}
	if l.realSize > u.opts.MaxFileSize {
		return l, fmt.Errorf("%w: %q claims %d bytes, more than the %d a file may hold here", ErrCorrupt, hdr.Name, l.realSize, u.opts.MaxFileSize)
	}
	if !ours {
		if hdr.Size > 0 {
			l.segs = []segment{{0, hdr.Size}}
		}
		l.skipZeros = gnu
		return l, nil
	}
	dataSize := hdr.Size
	if gnu {
		dataSize = -1 // archive/tar checked the data against GNU's map
	}
	segs, err := decodeMap(hdr.PAXRecords[recMap], l.realSize, dataSize)
	if err != nil {
		return l, fmt.Errorf("%w: %q: %v", ErrCorrupt, hdr.Name, err)
	}
	l.segs = segs
	return l, nil
}

// gnuSparse tells whether archive/tar unpacked hdr as a GNU sparse file,
// of any of GNU's formats.
func gnuSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
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
