// Package quota limits directories with the project quotas of xfs and
// ext4: a directory gets a project id of its own, inherited by everything
// made inside it, and a hard block limit on that id. The kernel then fails
// writes past the limit (EDQUOT) inside that directory only, and reports
// the id's usage, which is the directory's own.
package quota

import (
	"errors"
	"fmt"
)

// The project ids holdfast allocates: FirstID to FirstID+IDCount-1. Ids an
// administrator names in /etc/projid are skipped as well, but keeping
// one's own projects below FirstID keeps them apart for certain.
const (
	FirstID uint32 = 2_000_000_000
	IDCount uint32 = 1_000_000
)

// Quota is what the kernel knows of one project id.
type Quota struct {
	// Limit is the hard block limit in bytes; 0 is none.
	Limit uint64
	// Used is the bytes the id's files take on disk.
	Used uint64
	// Inodes is the number of files and directories with the id.
	Inodes uint64
}

// Free reports whether no directory holds the id and no limit is set on it.
func (q Quota) Free() bool { return q.Limit == 0 && q.Used == 0 && q.Inodes == 0 }

// ErrUnsupported is wrapped by the errors saying why a filesystem has no
// project quotas holdfast can use.
var ErrUnsupported = errors.New("no project quotas")

// ErrNoFreeID is returned when every id tried is in use.
var ErrNoFreeID = errors.New("no free project id")

// Owned reports whether id is in holdfast's range.
func Owned(id uint32) bool { return id >= FirstID && id-FirstID < IDCount }

// candidates returns n ids of the range to try for key, starting at a
// point derived from key (so that names rarely collide) and wrapping.
func candidates(key string, n int) []uint32 {
	var h uint32 = 2166136261 // FNV-1a
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return sequence(FirstID+h%IDCount, n)
}

// sequence returns n ids of the range from start on, wrapping at its end.
func sequence(start uint32, n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = FirstID + (start-FirstID+uint32(i))%IDCount
	}
	return out
}

// unsupported builds the error for a filesystem without project quotas:
// what is missing and the fix, then the alternative.
func unsupported(flag, path, missing, fix string) error {
	return fmt.Errorf("%w: %s %s %s: %s; or use type=loop size=… for a size-limited volume on any filesystem",
		ErrUnsupported, flag, path, missing, fix)
}
