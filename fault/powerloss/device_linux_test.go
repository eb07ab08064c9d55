package powerloss

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// loopDev is a loop device attached by ioctl (no losetup process) with
// autoclear: it detaches itself when its last user closes it.
type loopDev struct {
	Path string
	f    *os.File
}

// attachLoop attaches file to a free loop device.
func attachLoop(file string) (*loopDev, error) {
	backing, err := os.OpenFile(file, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/loop-control (loop module loaded?): %w", err)
	}
	defer ctl.Close()
	for range 10 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		dev, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		err = unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) {
			dev.Close()
			continue
		}
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("LOOP_CONFIGURE %s on %s: %w", path, file, err)
		}
		return &loopDev{Path: path, f: dev}, nil
	}
	return nil, errors.New("every free loop device was taken before it could be used")
}

// Close drops this process's hold; the device detaches once unused.
func (l *loopDev) Close() error { return l.f.Close() }

// run runs a program and returns its error with its output.
func run(prog string, args ...string) error {
	out, err := exec.Command(prog, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// copySparse makes dst a copy of src, copying only src's data extents
// (the images are mostly holes on tmpfs).
func copySparse(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(fi.Size()); err != nil {
		return err
	}
	size := fi.Size()
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return fmt.Errorf("seek data in %s: %w", src, err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole in %s: %w", src, err)
		}
		if _, err := in.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := io.CopyN(out, in, hole-data); err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
		off = hole
	}
	return nil
}

// fsInfo is what differs between the filesystems under test.
type fsInfo struct {
	name string
	mkfs []string // program and arguments, the image appended
	// fsck checks, read-only, a replayed image already mounted once (the
	// mount replayed the journal) and unmounted.
	fsck []string
	// mountData are the mount options of the logged filesystem.
	mountData string
	size      int64
}

var filesystems = map[string]fsInfo{
	// commit=600: the journal commits only when something syncs, so an
	// acknowledged request that forgot a sync is not saved by the 5 s
	// timer.
	"ext4": {name: "ext4", mkfs: []string{"mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", "-J", "size=4"},
		fsck: []string{"e2fsck", "-fn"}, mountData: "commit=600", size: 112 << 20},
	// xfs needs at least 300 MB.
	"xfs": {name: "xfs", mkfs: []string{"mkfs.xfs", "-q", "-f", "-K"},
		fsck: []string{"xfs_repair", "-n"}, size: 320 << 20},
}
