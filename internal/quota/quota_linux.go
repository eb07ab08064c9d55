package quota

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// quotactl(2) commands and flags (linux/quota.h, linux/dqblk_xfs.h); x/sys
// has none of them.
const (
	prjQuota   = 2
	qGetFmt    = 0x800004
	qGetQuota  = 0x800007
	qSetQuota  = 0x800008
	qXGetQStat = 'X'<<8 + 5

	qifBLimits = 1 // if_dqblk.dqb_valid: the block limits are set

	pdqAcct = 0x10 // fs_quota_stat.qs_flags: project usage accounted
	pdqEnfd = 0x20 // and limits enforced

	blockSize = 1024 // QIF_DQBLKSIZE: the unit of dqb_*limit
)

// FS_IOC_FSGETXATTR and FS_IOC_FSSETXATTR (linux/fs.h), for a file's
// project id and the flag that makes a directory pass it on.
const (
	fsIocFsGetXattr    = 0x801c581f
	fsIocFsSetXattr    = 0x401c5820
	fsXflagProjInherit = 0x200
)

// fsxattr is struct fsxattr.
type fsxattr struct {
	Xflags     uint32
	Extsize    uint32
	Nextents   uint32
	Projid     uint32
	Cowextsize uint32
	Pad        [8]byte
}

// dqblk is struct if_dqblk.
type dqblk struct {
	Bhardlimit uint64
	Bsoftlimit uint64
	Curspace   uint64
	Ihardlimit uint64
	Isoftlimit uint64
	Curinodes  uint64
	Btime      uint64
	Itime      uint64
	Valid      uint32
	_          uint32
}

// Filesystem magic numbers (linux/magic.h) of the types Check names.
var fsNames = map[int64]string{
	unix.XFS_SUPER_MAGIC:       "xfs",
	unix.EXT4_SUPER_MAGIC:      "ext4",
	unix.TMPFS_MAGIC:           "tmpfs",
	unix.BTRFS_SUPER_MAGIC:     "btrfs",
	unix.OVERLAYFS_SUPER_MAGIC: "overlayfs",
	unix.NFS_SUPER_MAGIC:       "nfs",
	unix.FUSE_SUPER_MAGIC:      "fuse",
}

// quotactl runs quotactl_fd(2) for PRJQUOTA on the filesystem holding path.
func quotactl(path string, cmd uint32, id uint32, addr unsafe.Pointer) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, _, errno := unix.Syscall6(unix.SYS_QUOTACTL_FD, uintptr(fd), uintptr(cmd<<8|prjQuota), uintptr(id), uintptr(addr), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// KernelHasQuotas reports whether this kernel answers quotactl_fd(2) for
// the filesystem holding path (it does not when built without CONFIG_QUOTA).
// Q_GETFMT tells: ENOSYS only without quota support, ESRCH where the
// filesystem's quotas are off (Q_XGETQSTAT gives ENOSYS then as well).
func KernelHasQuotas(path string) bool {
	var fmt uint32
	return !errors.Is(quotactl(path, qGetFmt, 0, unsafe.Pointer(&fmt)), unix.ENOSYS)
}

// Check returns nil when the filesystem holding path accounts and enforces
// project quotas, else an error wrapping ErrUnsupported that says what is
// missing and how to fix it. flag names path in it (e.g. "--root").
func Check(path, flag string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("check project quotas of %s %s: %w", flag, path, err)
	}
	name, known := fsNames[int64(st.Type)]
	if !known {
		name = fmt.Sprintf("a filesystem of type %#x", st.Type)
	}
	where := fmt.Sprintf("%s is on %s", path, name)
	if name != "xfs" && name != "ext4" {
		return unsupported(flag, where+",", "which has no project quotas holdfast can use", "put it on xfs or ext4 with project quotas ("+xfsFix+"; "+ext4Fix+")")
	}
	if !KernelHasQuotas(path) {
		return unsupported(flag, where+",", "but this kernel has no disk quotas (quotactl_fd: ENOSYS)", "boot a kernel built with CONFIG_QUOTA (and CONFIG_XFS_QUOTA for xfs), 5.14 or later")
	}
	var stat [128]byte // struct fs_quota_stat, 80 bytes
	// ENOSYS and ESRCH: no quota of any type is on.
	err := quotactl(path, qXGetQStat, 0, unsafe.Pointer(&stat[0]))
	switch {
	case err != nil && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.ESRCH):
		return fmt.Errorf("check project quotas of %s %s: quotactl Q_XGETQSTAT: %w", flag, path, err)
	}
	flags := uint16(stat[2]) | uint16(stat[3])<<8 // qs_flags, after qs_version and a pad byte
	fix := ext4Fix
	if name == "xfs" {
		fix = xfsFix
	}
	switch {
	case err != nil || flags&pdqAcct == 0:
		return unsupported(flag, where, "without project quotas", fix)
	case flags&pdqEnfd == 0:
		if name == "ext4" {
			fix = "mount it with -o prjquota"
		}
		return unsupported(flag, where, "with project quotas accounted but not enforced", fix)
	}
	return nil
}

const (
	xfsFix  = "mount the xfs filesystem with -o prjquota (xfs turns quotas on only at mount, not by remount)"
	ext4Fix = "make the ext4 filesystem with mkfs.ext4 -O quota,project (or tune2fs -O quota,project while unmounted) and mount it with -o prjquota, on a kernel with CONFIG_QUOTA and CONFIG_QFMT_V2"
)

// Get returns the quota of project id on the filesystem holding path. An
// id the filesystem has never seen is a zero Quota.
func Get(path string, id uint32) (Quota, error) {
	var d dqblk
	err := quotactl(path, qGetQuota, id, unsafe.Pointer(&d))
	if errors.Is(err, unix.ENOENT) {
		return Quota{}, nil
	}
	if err != nil {
		return Quota{}, fmt.Errorf("read project quota %d on %s: %w", id, path, err)
	}
	return Quota{Limit: d.Bhardlimit * blockSize, Used: d.Curspace, Inodes: d.Curinodes}, nil
}

// SetLimit sets the hard block limit of project id on the filesystem
// holding path to bytes, rounded up to a KiB; 0 removes the limit.
func SetLimit(path string, id uint32, bytes uint64) error {
	d := dqblk{Bhardlimit: (bytes + blockSize - 1) / blockSize, Valid: qifBLimits}
	if err := quotactl(path, qSetQuota, id, unsafe.Pointer(&d)); err != nil {
		return fmt.Errorf("set project quota %d on %s to %d bytes: %w", id, path, bytes, err)
	}
	return nil
}

// DirID returns the project id of dir.
func DirID(dir string) (uint32, error) {
	x, err := getXattr(dir)
	return x.Projid, err
}

// SetDirID gives dir project id and the flag that passes it on to what is
// made inside. dir should be empty: files already there keep their id.
func SetDirID(dir string, id uint32) error {
	x, err := getXattr(dir)
	if err != nil {
		return err
	}
	x.Projid = id
	x.Xflags |= fsXflagProjInherit
	if err := ioctlXattr(dir, fsIocFsSetXattr, &x); err != nil {
		return fmt.Errorf("set project id %d on %s: %w", id, dir, err)
	}
	return nil
}

func getXattr(dir string) (fsxattr, error) {
	var x fsxattr
	if err := ioctlXattr(dir, fsIocFsGetXattr, &x); err != nil {
		return x, fmt.Errorf("read project id of %s: %w", dir, err)
	}
	return x, nil
}

func ioctlXattr(path string, req uintptr, x *fsxattr) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(x)))
	if errno != 0 {
		return errno
	}
	return nil
}

// Allocator hands out project ids of holdfast's range. One Allocator per
// process serialises Assign, so two volumes never get the same id.
type Allocator struct {
	// Projid is the file of ids an administrator uses; ProjidFile when "".
	Projid string

	mu sync.Mutex
}

// maxTries bounds the ids Assign looks at.
const maxTries = 4096

// Assign gives the empty directory dir a free project id of holdfast's
// range, chosen from key (a volume name), and returns it. An id is free
// when no file holds it, no limit is set on it and /etc/projid does not
// name it; once dir holds it, it is in use for the next Assign.
func (a *Allocator) Assign(dir, key string) (uint32, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	taken, err := a.adminIDs()
	if err != nil {
		return 0, err
	}
	for _, id := range candidates(key, maxTries) {
		if taken[id] {
			continue
		}
		q, err := Get(dir, id)
		if err != nil {
			return 0, err
		}
		if q.Free() {
			return id, SetDirID(dir, id)
		}
	}
	return 0, fmt.Errorf("%w for %s among %d ids tried of %d-%d", ErrNoFreeID, dir, maxTries, FirstID, FirstID+IDCount-1)
}

func (a *Allocator) adminIDs() (map[uint32]bool, error) {
	path := a.Projid
	if path == "" {
		path = ProjidFile
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the project ids in use: %w", err)
	}
	return parseProjid(string(b)), nil
}
