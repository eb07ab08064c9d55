package crypt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// loopDev is a loop device attached to a backing file. The device detaches
// itself (autoclear) once its last user is gone, so Close, after the
// filesystem or mapping on it holds it open, hands its life to the kernel.
type loopDev struct {
	Path string
	f    *os.File
}

// attachLoop attaches file to a free loop device with LOOP_CONFIGURE and
// autoclear.
func attachLoop(file string) (*loopDev, error) {
	backing, err := os.OpenFile(file, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open backing file: %w", err)
	}
	defer backing.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/loop-control (is the loop module loaded?): %w", err)
	}
	defer ctl.Close()
	for range 10 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		dev, err := openLoop(path, n)
		if err != nil {
			return nil, err
		}
		cfg := &unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:], file)
		err = unix.IoctlLoopConfigure(int(dev.Fd()), cfg)
		if errors.Is(err, unix.EBUSY) {
			dev.Close() // taken by someone else meanwhile: try the next
			continue
		}
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("attach %s to %s: %w", file, path, err)
		}
		return &loopDev{Path: path, f: dev}, nil
	}
	return nil, errors.New("attach loop device: every free device was taken before it could be used")
}

// openLoop opens loop device n, creating its node if devtmpfs has none.
func openLoop(path string, n int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		if err := unix.Mknod(path, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create %s: %w", path, err)
		}
		f, err = os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return f, nil
}

// Close drops this process's hold on the device.
func (l *loopDev) Close() error { return l.f.Close() }

// loopsOf lists the loop devices whose backing file is file. It compares
// device and inode numbers, not paths: a device attached by an earlier
// holdfast in another mount namespace (a managed plugin before a restart)
// shows a path that means nothing here.
func loopsOf(file string) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Stat(file, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("stat %s: %w", file, err)
	}
	paths, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	var devs []string
	for _, p := range paths {
		dev := "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(p)))
		f, err := os.Open(dev)
		if err != nil {
			continue // detached meanwhile
		}
		info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
		f.Close()
		if err == nil && info.Device == st.Dev && info.Inode == st.Ino {
			devs = append(devs, dev)
		}
	}
	return devs, nil
}

// detachLoops detaches every loop device backed by file. A device still in
// use is marked to detach when its user goes.
func detachLoops(file string) error {
	devs, err := loopsOf(file)
	if err != nil {
		return err
	}
	var errs []error
	for _, dev := range devs {
		f, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			errs = append(errs, fmt.Errorf("open %s: %w", dev, err))
			continue
		}
		err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.ENXIO) {
			errs = append(errs, fmt.Errorf("detach %s: %w", dev, err))
		}
	}
	return errors.Join(errs...)
}
