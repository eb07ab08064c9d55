package volfs

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// FakeMounter is an in-memory mount table for unit tests. It records
// mounts without touching the kernel.
type FakeMounter struct {
	mu     sync.Mutex
	mounts map[string]string // target -> fstype
	// Fail, when set, is returned by the next Mount and then cleared.
	Fail error
}

// NewFakeMounter returns an empty fake mount table.
func NewFakeMounter() *FakeMounter {
	return &FakeMounter{mounts: map[string]string{}}
}

// Mount records target as mounted with fstype ("bind" for bind mounts).
func (f *FakeMounter) Mount(source, target, fstype string, flags uintptr, data string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.Fail; err != nil {
		f.Fail = nil
		return err
	}
	if flags&unix.MS_BIND != 0 {
		fstype = "bind"
	}
	f.mounts[filepath.Clean(target)] = fstype
	return nil
}

// Unmount forgets target, failing with EINVAL if it is not mounted.
func (f *FakeMounter) Unmount(target string, flags int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	target = filepath.Clean(target)
	if _, ok := f.mounts[target]; !ok {
		return fmt.Errorf("unmount %s: %w", target, unix.EINVAL)
	}
	delete(f.mounts, target)
	return nil
}

// Mountpoints returns the recorded mounts at or below dir.
func (f *FakeMounter) Mountpoints(dir string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir = filepath.Clean(dir)
	out := map[string]string{}
	for t, fs := range f.mounts {
		if t == dir || strings.HasPrefix(t, dir+"/") {
			out[t] = fs
		}
	}
	return out, nil
}
