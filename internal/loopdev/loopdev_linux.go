package loopdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Device is a loop device attached to a backing file, held open by this
// process. The device detaches itself (autoclear) once its last user is
// gone, so Close, after the filesystem or mapping on it holds it open,
// hands its life to the kernel.
type Device struct {
	// Path is the device node, /dev/loopN.
	Path string
	f    *os.File
}

// Attach attaches file to a free loop device with autoclear: in one step
// with LOOP_CONFIGURE (Linux 5.8), or, on kernels without it (RHEL 8's
// 4.18, Ubuntu 20.04's 5.4), with LOOP_SET_FD then LOOP_SET_STATUS64.
func Attach(file string) (*Device, error) { return attach(file, false) }

// attach is Attach; legacyOnly skips LOOP_CONFIGURE, so that tests on a
// new kernel take the path of old ones.
func attach(file string, legacyOnly bool) (*Device, error) {
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
	legacy := legacyOnly
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
		if !legacy {
			err = configureLoop(dev, backing, file)
			legacy = lacksLoopConfigure(err)
		}
		if legacy {
			err = setLoopFD(dev, backing, file)
		}
		if errors.Is(err, unix.EBUSY) {
			dev.Close() // taken by someone else meanwhile: try the next
			continue
		}
		if err != nil {
			dev.Close()
			return nil, fmt.Errorf("attach %s to %s: %w", file, path, err)
		}
		return &Device{Path: path, f: dev}, nil
	}
	return nil, errors.New("attach loop device: every free device was taken before it could be used")
}

// loopInfo is the status of a device holdfast attaches: autoclear, and the
// file name shown by losetup.
func loopInfo(file string) unix.LoopInfo64 {
	info := unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}
	copy(info.File_name[:], file)
	return info
}

// lacksLoopConfigure reports whether err, from LOOP_CONFIGURE, says the
// kernel does not know the ioctl: before 5.8, lo_ioctl's default case
// answers an unknown command on a free device with EINVAL (ENOTTY is what
// block devices without the command answer elsewhere; taken too). The
// device is left untouched then, so the legacy ioctls can follow on it. On
// a kernel that has LOOP_CONFIGURE, an EINVAL for another reason only means
// the legacy ioctls are tried as well and answer for themselves.
func lacksLoopConfigure(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY)
}

// configureLoop binds backing to dev with its status in one ioctl.
func configureLoop(dev, backing *os.File, file string) error {
	cfg := &unix.LoopConfig{Fd: uint32(backing.Fd()), Info: loopInfo(file)}
	return unix.IoctlLoopConfigure(int(dev.Fd()), cfg)
}

// setLoopFD binds backing to dev, then sets its status. In between the
// device is bound without autoclear; nobody else can bind it (they get
// EBUSY), and a crash there leaves a device that start-up detaches
// (Recover finds it by its backing file's device and inode). When the
// status cannot be set, the device is unbound again before returning.
func setLoopFD(dev, backing *os.File, file string) error {
	if err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		return err
	}
	info := loopInfo(file)
	if err := unix.IoctlLoopSetStatus64(int(dev.Fd()), &info); err != nil {
		err = fmt.Errorf("set autoclear: %w", err)
		if cerr := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0); cerr != nil {
			err = errors.Join(err, fmt.Errorf("detach again: %w", cerr))
		}
		return err
	}
	return nil
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
func (d *Device) Close() error { return d.f.Close() }

// Acquire returns the loop device already attached to file, held open, or
// attaches one. Sharing the attached device matters: a filesystem still
// mounted from it (containers started before holdfast restarted use it)
// must not be mounted a second time from another device of the same image.
func Acquire(file string) (*Device, error) {
	devs, err := Find(file)
	if err != nil {
		return nil, err
	}
	if len(devs) == 0 {
		return Attach(file)
	}
	f, err := os.OpenFile(devs[0], os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", devs[0], err)
	}
	return &Device{Path: devs[0], f: f}, nil
}

// Find lists the loop devices whose backing file is file. It compares
// device and inode numbers, not paths: a device attached by an earlier
// holdfast in another mount namespace (a managed plugin before a restart)
// shows a path that means nothing here.
func Find(file string) ([]string, error) {
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

// Detach detaches every loop device backed by file. A device still in use
// (a filesystem on it detached lazily, which a process still holds) is
// marked to detach when its last user goes.
func Detach(file string) error {
	devs, err := Find(file)
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
