// Package admin is the protocol of the holdfast admin command (holdfast ls,
// backup, restore, leases, release): HTTP on the plugin's own Unix socket,
// on /Holdfast.* paths dockerd never calls, answered only to root (the
// peer's SO_PEERCRED credentials).
package admin

import (
	"context"
	"io"
	"time"
)

// Paths the admin protocol answers.
const (
	PathList    = "/Holdfast.List"
	PathLeases  = "/Holdfast.Leases"
	PathRelease = "/Holdfast.Release"
	PathBackup  = "/Holdfast.Backup"
	PathRestore = "/Holdfast.Restore"

	// Prefix is what every admin path starts with.
	Prefix = "/Holdfast."

	// trailerErr carries an error that happened once a backup's stream
	// had begun, when the status line is long gone.
	trailerErr = "Holdfast-Error"
	// trailerNote says how consistent a backup is.
	trailerNote = "Holdfast-Note"
)

// Volume is one line of holdfast ls.
type Volume struct {
	Name    string    `json:"name"`
	Type    string    `json:"type"`
	Size    int64     `json:"size"` // bytes; 0: no limit of its own
	Used    int64     `json:"used"` // bytes; -1: unknown (not mounted, remote)
	Mounted bool      `json:"mounted"`
	Leases  int       `json:"leases"`
	Created time.Time `json:"created"`
}

// Lease is one mount dockerd holds on a volume.
type Lease struct {
	ID    string    `json:"id"`
	Since time.Time `json:"since"`
}

// Restored is what a restore unpacked.
type Restored struct {
	Entries int   `json:"entries"`
	Bytes   int64 `json:"bytes"`
}

// Driver is what the admin protocol asks of holdfast's driver.
type Driver interface {
	// Volumes lists every volume.
	Volumes() ([]Volume, error)
	// Leases lists the leases on the volume name.
	Leases(name string) ([]Lease, error)
	// Release drops the lease id on name and says what that did (for
	// example "unmounted: it was the last lease"); it refuses an id that is
	// not a lease on name.
	Release(name, id string) (string, error)
	// Backup streams the volume's files to w (see internal/archive); note,
	// when not empty, says how consistent the copy is ("live copy: ...").
	Backup(ctx context.Context, name string, w io.Writer, freeze bool) (note string, err error)
	// Restore creates name with opts and unpacks r into it; it refuses a
	// volume that already exists with data, and on error leaves no volume.
	Restore(ctx context.Context, name string, opts map[string]string, r io.Reader) (Restored, error)
}
