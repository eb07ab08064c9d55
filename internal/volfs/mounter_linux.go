package volfs

import (
	"fmt"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// KernelMounter is the Mounter of the running kernel.
type KernelMounter struct{}

// Mount calls mount(2).
func (KernelMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype, target, err)
	}
	return nil
}

// Unmount calls umount2(2).
func (KernelMounter) Unmount(target string, flags int) error {
	if err := unix.Unmount(target, flags); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// Mountpoints reads /proc/self/mountinfo.
func (KernelMounter) Mountpoints(dir string) (map[string]string, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	out := make(map[string]string, len(infos))
	for _, m := range infos {
		out[m.Mountpoint] = m.FSType
	}
	return out, nil
}
