package volfs

import (
	"github.com/holdfast/holdfast/internal/failpoint"
)

// FailingMounter is a Mounter whose calls can be failed on purpose: each
// is a step of faults ("mount TYPE", "unmount", "read mountinfo") before it
// reaches the Mounter it wraps. Tests sweep every mount step with it.
type FailingMounter struct {
	Mounter
	Faults *failpoint.Set
}

// Mount fails the step "mount TYPE" ("mount bind" for bind mounts) or
// calls the wrapped Mount.
func (f FailingMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	kind := fstype
	if kind == "" {
		kind = "bind"
	}
	if err := f.Faults.Check("mount " + kind); err != nil {
		return err
	}
	return f.Mounter.Mount(source, target, fstype, flags, data)
}

// Unmount fails the step "unmount" or calls the wrapped Unmount. A lazy
// detach (MNT_DETACH) is the step "unmount detach".
func (f FailingMounter) Unmount(target string, flags int) error {
	step := "unmount"
	if flags != 0 {
		step = "unmount detach"
	}
	if err := f.Faults.Check(step); err != nil {
		return err
	}
	return f.Mounter.Unmount(target, flags)
}

// Mountpoints fails the step "read mountinfo" or calls the wrapped one.
func (f FailingMounter) Mountpoints(dir string) (map[string]string, error) {
	if err := f.Faults.Check("read mountinfo"); err != nil {
		return nil, err
	}
	return f.Mounter.Mountpoints(dir)
}
