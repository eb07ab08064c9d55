package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/holdfast/holdfast/internal/admin"
	"github.com/holdfast/holdfast/internal/archive"
)

var _ admin.Driver = (*Driver)(nil)

// Volumes lists every ready volume from memory: the records, and the last
// sample of size and usage. It never calls a backend.
func (d *Driver) Volumes() ([]admin.Volume, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]admin.Volume, 0, len(d.vols))
	for name, e := range d.vols {
		if e.vol == nil || e.vol.Phase != PhaseReady {
			continue
		}
		m := d.measures[name]
		used := int64(-1)
		if m.UsedKnown {
			used = m.Used
		}
		out = append(out, admin.Volume{Name: name, Type: e.vol.Type, Size: m.Size, Used: used,
			Mounted: e.vol.Mounted, Leases: len(e.vol.Leases), Created: e.vol.CreatedAt})
	}
	slices.SortFunc(out, func(a, b admin.Volume) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Leases lists the leases on name, oldest first.
func (d *Driver) Leases(name string) ([]admin.Lease, error) {
	v, err := d.get(name)
	if err != nil {
		return nil, err
	}
	out := make([]admin.Lease, 0, len(v.Leases))
	for id, since := range v.Leases {
		out = append(out, admin.Lease{ID: id, Since: since})
	}
	slices.SortFunc(out, func(a, b admin.Lease) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Release drops the lease id on name, as dockerd's Unmount of it would: the
// last lease's release unmounts the volume. It refuses an id that is not a
// lease on name, and holdfast's own leases, and says what it did.
func (d *Driver) Release(name, id string) (string, error) {
	e, v, err := d.lock(name)
	if err != nil {
		return "", err
	}
	defer e.op.Unlock()
	switch {
	case strings.HasPrefix(id, ViewLeasePrefix):
		return "", fmt.Errorf("lease %s on %s is holdfast's own view; it ends with the backup or clone reading the volume", id, name)
	case strings.HasPrefix(id, FillLeasePrefix):
		return "", fmt.Errorf("lease %s on %s is holdfast's own; it ends with the restore or clone filling the volume", id, name)
	}
	if _, ok := v.Leases[id]; !ok {
		return "", fmt.Errorf("%q is not a lease on %s; holdfast leases %s lists them", id, name, name)
	}
	b, err := d.backend(v)
	if err != nil {
		return "", err
	}
	delete(v.Leases, id)
	if err := d.save(e, v); err != nil {
		return "", fmt.Errorf("release %s on %s: %w", id, name, err)
	}
	d.cfg.Log.WithFields(logrus.Fields{"volume": name, "id": id, "left": len(v.Leases)}).Warn("lease released by holdfast release")
	if n := len(v.Leases); n > 0 {
		return fmt.Sprintf("released %s; %s stays mounted for its %d other lease(s)", id, name, n), nil
	}
	if !v.Mounted {
		return fmt.Sprintf("released %s, the last lease; %s was not mounted", id, name), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), shortOpTimeout)
	defer cancel()
	if err := d.release(ctx, e, b, v); err != nil {
		return "", fmt.Errorf("released %s, the last lease, but: %w", id, err)
	}
	return fmt.Sprintf("released %s, the last lease: %s is unmounted", id, name), nil
}

// Backup streams the files of name to w (see internal/archive) from a View
// of it, and returns the view's note on how consistent the copy is.
func (d *Driver) Backup(ctx context.Context, name string, w io.Writer, freeze bool) (string, error) {
	view, err := d.OpenView(ctx, name, freeze)
	if err != nil {
		return "", err
	}
	log := d.cfg.Log.WithField("volume", name)
	start := time.Now()
	st, err := archive.Write(&ctxWriter{ctx, w}, view.Dir, archive.WriteOptions{Skip: func(n, why string) {
		log.WithField("file", n).Warn("backup skipped a file: " + why)
	}})
	if cerr := view.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("backup of %s is complete, but ending its view failed: %w", name, cerr)
	}
	if err != nil {
		return "", fmt.Errorf("backup of %s: %w", name, err)
	}
	log.WithFields(logrus.Fields{"entries": st.Entries, "bytes": st.Bytes, "took": time.Since(start).Round(time.Millisecond)}).Info("backup done")
	return view.Note, nil
}

// ctxWriter stops a stream once its context is done (the client went away).
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// ctxReader is ctxWriter for a restore's stream.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// errHoldsData refuses a restore into a volume that is not empty.
func errHoldsData(name string) error {
	return errorf(ErrConflict, "volume %s exists and holds data; restore into a new name or remove it first", name)
}

// Restore creates name with opts through Create and unpacks r into it. An
// existing volume is filled only when it is empty and has exactly the
// options given (as a Create of it would succeed), whether a container
// uses it or not; one holding data is refused. On any error, a volume
// Restore created is removed again, and an existing one is left as it was.
func (d *Driver) Restore(ctx context.Context, name string, opts map[string]string, r io.Reader) (admin.Restored, error) {
	if err := ValidateName(name); err != nil {
		return admin.Restored{}, err
	}
	if _, ok := opts["from"]; ok {
		return admin.Restored{}, fmt.Errorf("%w from: a restore takes the files from its stream; drop --opt from=, or clone with docker volume create --opt from=SOURCE", ErrInvalidOption)
	}
	existing, err := d.restoreTarget(name, opts)
	if err != nil {
		return admin.Restored{}, err
	}
	if !existing {
		if err := d.Create(&volume.CreateRequest{Name: name, Options: opts}); err != nil {
			return admin.Restored{}, fmt.Errorf("create %s: %w", name, err)
		}
	}
	var st archive.Stats
	err = d.fill(ctx, name, func(dir string) error {
		if existing {
			if empty, err := emptyDir(dir); err != nil || !empty {
				return orErr(err, errHoldsData(name))
			}
		}
		st, err = archive.Read(&ctxReader{ctx, r}, dir, archive.ReadOptions{})
		return err
	})
	if err == nil {
		d.cfg.Log.WithFields(logrus.Fields{"volume": name, "entries": st.Entries, "bytes": st.Bytes}).Info("restore done")
		return admin.Restored{Entries: st.Entries, Bytes: st.Bytes}, nil
	}
	err = fmt.Errorf("restore into %s: %w", name, err)
	if !existing {
		if rerr := d.Remove(&volume.RemoveRequest{Name: name}); rerr != nil {
			return admin.Restored{}, fmt.Errorf("%w; removing the volume it created failed too: %v (remove it with docker volume rm %s)", err, rerr, name)
		}
		err = fmt.Errorf("%w; the volume it created was removed", err)
	}
	return admin.Restored{}, err
}

// typeTmpfs is the type whose volumes keep nothing while unmounted.
const typeTmpfs = "tmpfs"

// restoreTarget says whether name exists and may be filled by a restore
// with opts: it must have the same options; whether it is empty is checked
// once it is mounted. A new tmpfs volume is refused: the restore's own
// unmount would drop what it unpacked.
func (d *Driver) restoreTarget(name string, opts map[string]string) (bool, error) {
	cur, err := d.get(name)
	if errors.Is(err, ErrNotFound) {
		if typ, _, _, perr := d.parse(opts); perr == nil && typ == typeTmpfs {
			return false, fmt.Errorf("a new type=tmpfs volume keeps nothing once the restore unmounts it: restore into another type (type=local, loop or crypt), or into an empty tmpfs volume %s while a container uses it", name)
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	typ, _, parsed, err := d.parse(opts)
	if err != nil {
		return false, err
	}
	if err := sameVolume(cur, typ, parsed); err != nil {
		return false, err
	}
	if cur.Type == typeTmpfs && !cur.Mounted {
		return false, fmt.Errorf("the tmpfs volume %s keeps nothing once the restore unmounts it: restore into it while a container uses it, or into another type (type=local, loop or crypt)", name)
	}
	return true, nil
}

// emptyDir reports whether dir holds no entries.
func emptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}

// orErr returns err if set, else alt.
func orErr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}
