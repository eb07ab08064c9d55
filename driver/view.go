package driver

// This is the minimal view wt-admin's backup compiles against; wt-clone
// owns view.go and its full version (FIFREEZE, reflinked point-in-time
// copies) replaces this one at merge.

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/docker/go-plugins-helpers/volume"
)

// ViewLeasePrefix starts the id of the internal lease a View holds.
const ViewLeasePrefix = "holdfast-view-"

// liveCopyNote is the Note of a view of a volume containers use.
const liveCopyNote = "live copy: the volume is in use, files may change while they are read"

// View is a read-only look at a volume's files for backup and clone.
type View struct {
	Dir   string // the files, read-only to the caller
	Note  string // "" when exact; else how consistent (e.g. "live copy: files may change while they are read")
	close func() error
}

// Close ends the view, releasing its lease.
func (v *View) Close() error {
	if v.close == nil {
		return nil
	}
	err := v.close()
	v.close = nil
	return err
}

// OpenView gives access to name's files under an internal lease (id
// ViewLeasePrefix+<n>), released by Close: through its live mount when
// mounted, else by mounting it for the view's lifetime. The lease keeps
// the volume from being removed or unmounted while the view is open.
func (d *Driver) OpenView(ctx context.Context, name string, freeze bool) (*View, error) {
	v, err := d.get(name)
	if err != nil {
		return nil, err
	}
	note := ""
	if dockerLeases(v) > 0 {
		note = liveCopyNote
		if freeze {
			note += " (--freeze is not supported by this build)"
		}
	}
	id := ViewLeasePrefix + rand.Text()[:12]
	res, err := d.Mount(&volume.MountRequest{Name: name, ID: id})
	if err != nil {
		return nil, fmt.Errorf("open %s for reading: %w", name, err)
	}
	return &View{Dir: res.Mountpoint, Note: note, close: func() error {
		return d.Unmount(&volume.UnmountRequest{Name: name, ID: id})
	}}, nil
}
