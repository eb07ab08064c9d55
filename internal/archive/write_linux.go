package archive

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// WriteOptions tunes Write.
type WriteOptions struct {
	// Skip, when set, is told of each file the stream cannot hold: sockets,
	// and the contents of another filesystem mounted inside the tree.
	Skip func(name, reason string)
}

// Stats counts what Write or Read did.
type Stats struct {
	Entries int   // entries written or unpacked, the root directory included
	Bytes   int64 // file data (holes excluded)
}

type fileID struct{ dev, ino uint64 }

type writer struct {
	tw    *tar.Writer
	raw   io.Writer // under tw, for the entries archive/tar cannot write
	sum   hash.Hash
	links map[fileID]string
	dev   uint64
	opts  WriteOptions
	stats Stats
}

// Write streams the tree at root to w as PAX tar (see the package
// documentation), ending with the end marker Read requires.
func Write(w io.Writer, root string, opts WriteOptions) (Stats, error) {
	fd, err := openNoatime(unix.AT_FDCWD, root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return Stats{}, fmt.Errorf("open %s: %w", root, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Stats{}, fmt.Errorf("stat %s: %w", root, err)
	}
	wr := &writer{tw: tar.NewWriter(w), raw: w, sum: sha256.New(), links: map[fileID]string{}, dev: st.Dev, opts: opts}
	if err := wr.dir(fd, "", &st); err != nil {
		return wr.stats, err
	}
	end := &tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "holdfast-end", Format: tar.FormatPAX,
		PAXRecords: map[string]string{recEnd: strconv.Itoa(wr.stats.Entries), recSHA256: hex.EncodeToString(wr.sum.Sum(nil))}}
	if err := wr.tw.WriteHeader(end); err != nil {
		return wr.stats, fmt.Errorf("write end marker: %w", err)
	}
	if err := wr.tw.Close(); err != nil {
		return wr.stats, fmt.Errorf("finish stream: %w", err)
	}
	return wr.stats, nil
}

// header fills the fields every entry shares from st.
func header(name string, typ byte, st *unix.Stat_t) *tar.Header {
	return &tar.Header{
		Typeflag: typ, Name: name, Format: tar.FormatPAX,
		Mode: int64(st.Mode & 0o7777), Uid: int(st.Uid), Gid: int(st.Gid),
		ModTime:    time.Unix(st.Mtim.Unix()),
		AccessTime: time.Unix(st.Atim.Unix()),
		PAXRecords: map[string]string{},
	}
}

// dir writes the directory open as fd (name "" is the root) and its contents.
func (w *writer) dir(fd int, name string, st *unix.Stat_t) error {
	hdrName := name + "/"
	if name == "" {
		hdrName = "./"
	}
	hdr := header(hdrName, tar.TypeDir, st)
	if name == "" {
		hdr.PAXRecords[recVersion] = formatVersion
	}
	if err := listXattrs(fd, ".", hdr.PAXRecords); err != nil {
		return fmt.Errorf("%s: %w", hdrName, err)
	}
	if err := w.put(hdr); err != nil {
		return err
	}
	names, err := readNames(fd)
	if err != nil {
		return fmt.Errorf("read directory %s: %w", hdrName, err)
	}
	for _, n := range names {
		if err := w.child(fd, n, path.Join(name, n)); err != nil {
			return err
		}
	}
	return nil
}

// readNames lists the directory open as fd, sorted, without closing fd.
func readNames(fd int) ([]string, error) {
	dup, err := unix.Dup(fd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	names, err := f.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

// child writes the entry base of the directory dirfd, named name in the stream.
func (w *writer) child(dirfd int, base, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	id := fileID{st.Dev, st.Ino}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
		if first, ok := w.links[id]; ok {
			hdr := header(name, tar.TypeLink, &st)
			hdr.Linkname = first
			return w.put(hdr)
		}
		w.links[id] = name
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return w.subdir(dirfd, base, name, &st)
	case unix.S_IFREG:
		return w.regular(dirfd, base, name, &st)
	case unix.S_IFLNK:
		target, err := readlinkat(dirfd, base)
		if err != nil {
			return fmt.Errorf("readlink %s: %w", name, err)
		}
		hdr := header(name, tar.TypeSymlink, &st)
		hdr.Linkname = target
		return w.special(dirfd, base, hdr)
	case unix.S_IFIFO:
		return w.special(dirfd, base, header(name, tar.TypeFifo, &st))
	case unix.S_IFCHR, unix.S_IFBLK:
		typ := byte(tar.TypeChar)
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			typ = tar.TypeBlock
		}
		hdr := header(name, typ, &st)
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		return w.special(dirfd, base, hdr)
	default:
		w.skip(name, "a socket cannot be archived; its server recreates it")
		return nil
	}
}

func (w *writer) skip(name, reason string) {
	if w.opts.Skip != nil {
		w.opts.Skip(name, reason)
	}
}

func (w *writer) subdir(dirfd int, base, name string, st *unix.Stat_t) error {
	if st.Dev != w.dev {
		w.skip(name, "another filesystem is mounted here; only the directory itself is archived")
		return w.special(dirfd, base, header(name+"/", tar.TypeDir, st))
	}
	fd, err := openNoatime(dirfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	defer unix.Close(fd)
	return w.dir(fd, name, st)
}

// special writes an entry without data, with the xattrs of base in dirfd.
func (w *writer) special(dirfd int, base string, hdr *tar.Header) error {
	if err := listXattrs(dirfd, base, hdr.PAXRecords); err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	return w.put(hdr)
}

func (w *writer) put(hdr *tar.Header) error {
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write header of %s: %w", hdr.Name, err)
	}
	w.stats.Entries++
	return nil
}

// regular writes a regular file, its data segments only when it has holes.
func (w *writer) regular(dirfd int, base, name string, st *unix.Stat_t) error {
	fd, err := openNoatime(dirfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	hdr := header(name, tar.TypeReg, st)
	if err := listXattrs(dirfd, base, hdr.PAXRecords); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	segs, err := dataSegments(fd, st.Size)
	if err != nil {
		return fmt.Errorf("find data of %s: %w", name, err)
	}
	if len(segs) != 1 || segs[0] != (segment{0, st.Size}) {
		if st.Size > 0 {
			hdr.PAXRecords[recRealSize] = strconv.FormatInt(st.Size, 10)
			hdr.PAXRecords[recMap] = encodeMap(segs)
			return w.sparse(f, hdr, st.Size, segs)
		}
		segs = nil
	}
	for _, s := range segs {
		hdr.Size += s.len
	}
	if err := w.put(hdr); err != nil {
		return err
	}
	return w.segments(io.MultiWriter(w.tw, w.sum), f, name, segs)
}

// segments copies f's data segments to out.
func (w *writer) segments(out io.Writer, f *os.File, name string, segs []segment) error {
	for _, s := range segs {
		n, err := io.Copy(out, io.NewSectionReader(f, s.off, s.len))
		w.stats.Bytes += n
		if err == nil && n < s.len {
			err = fmt.Errorf("file shrank while it was read (%d of %d bytes at %d)", n, s.len, s.off)
		}
		if err != nil {
			return fmt.Errorf("write data of %s: %w", name, err)
		}
	}
	return nil
}

// sparse writes a file with holes in GNU tar's sparse format 1.0 (see
// gnusparse.go), which archive/tar cannot write: its headers and data go to
// the stream under tw, between two of tw's entries. holdfast's own map
// records stay in its PAX header.
func (w *writer) sparse(f *os.File, hdr *tar.Header, realSize int64, segs []segment) error {
	if err := w.tw.Flush(); err != nil {
		return fmt.Errorf("write header of %s: %w", hdr.Name, err)
	}
	head := sparseEntry(hdr.Name, hdr.Mode, hdr.Uid, hdr.Gid, hdr.ModTime, hdr.AccessTime, hdr.PAXRecords, realSize, segs)
	if _, err := w.raw.Write(head); err != nil {
		return fmt.Errorf("write header of %s: %w", hdr.Name, err)
	}
	w.stats.Entries++
	var data int64
	for _, s := range segs {
		data += s.len
	}
	if err := w.segments(io.MultiWriter(w.raw, w.sum), f, hdr.Name, segs); err != nil {
		return err
	}
	if err := writePadding(w.raw, data); err != nil {
		return fmt.Errorf("write data of %s: %w", hdr.Name, err)
	}
	return nil
}

// dataSegments finds the runs of data in the first size bytes of fd.
func dataSegments(fd int, size int64) ([]segment, error) {
	var segs []segment
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return nil, fmt.Errorf("SEEK_DATA at %d: %w", off, err)
		}
		if d >= size {
			break
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE at %d: %w", d, err)
		}
		h = min(h, size)
		segs = append(segs, segment{d, h - d})
		off = h
	}
	return segs, nil
}

func readlinkat(dirfd int, base string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, base, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// openNoatime opens base in dirfd with O_NOATIME, so a backup leaves the
// access times it records as they were; without it where the kernel refuses
// (EPERM: neither the owner nor CAP_FOWNER).
func openNoatime(dirfd int, base string, flags int) (int, error) {
	fd, err := unix.Openat(dirfd, base, flags|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		fd, err = unix.Openat(dirfd, base, flags, 0)
	}
	return fd, err
}
