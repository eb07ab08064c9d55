package volfs

// Mounter is the kernel's mount table as the driver and backends use it.
// The real one is in mounter_linux.go; FakeMounter serves unit tests.
type Mounter interface {
	// Mount is mount(2).
	Mount(source, target, fstype string, flags uintptr, data string) error
	// Unmount is umount2(2).
	Unmount(target string, flags int) error
	// Mountpoints returns the mountpoints at or below dir and their
	// filesystem types, from /proc/self/mountinfo.
	Mountpoints(dir string) (map[string]string, error)
}
