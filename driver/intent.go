package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/volfs"
)

// A volume's directory holds a copy of its record in a file whose name
// says where the volume is in its life, so that one database commit per
// request is enough: a crash leaves either the commit or the file, and
// start-up resumes the request.
//
//   - Create writes the record as a create intent (creatingFile) before
//     the backend makes anything, and renames it to recordFile after the
//     record is committed. A create intent without a committed record is
//     undone at start-up; with one, it is renamed.
//   - Remove renames recordFile to the remove intent (removingFile) and
//     syncs the directory before the backend destroys anything, then
//     deletes the record, then trashes the directory. A remove intent is
//     always completed: the backend may have destroyed the key.
//     A rename needs no free block, so a full --root never keeps the
//     volume that filled it from being removed.
//
// Files are written to a temporary file renamed into place, so a kill
// never leaves a half-written or emptied one (an emptied remove intent
// would let start-up keep a volume whose key Remove had destroyed).
const (
	creatingFile = ".holdfast-creating"
	recordFile   = ".holdfast-volume"
	removingFile = ".holdfast-removing"
	intentTemp   = ".holdfast-intent.tmp"
	// legacyIntent is the intent file of holdfast before recordFile: its
	// operation is in its content.
	legacyIntent = ".holdfast-intent"
)

// Intent operations.
const (
	intentCreate = "create"
	intentRemove = "remove"
)

type intent struct {
	Op     string `json:",omitempty"`
	Volume *Volume
}

// writeRecord writes v's record into its directory as file.
func (d *Driver) writeRecord(v *Volume, file string) error {
	b, err := json.Marshal(intent{Volume: v})
	if err != nil {
		return fmt.Errorf("encode record of %s: %w", v.Name, err)
	}
	tmp := filepath.Join(v.Dir, intentTemp)
	err = d.step("write " + file)
	if err == nil {
		err = writeSynced(tmp, b)
	}
	if err == nil {
		err = d.rename(tmp, filepath.Join(v.Dir, file))
	}
	if err != nil {
		return fmt.Errorf("record %s in %s: %w", file, v.Dir, err)
	}
	return nil
}

// writeSynced writes b to a new file path and syncs it: a file renamed
// into place before its data reaches the disk comes back empty after a
// power cut (ext4 and xfs allocate its blocks later), and a damaged intent
// blocks its volume's name until someone inspects it by hand.
func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// markCreated turns v's create intent into its record, once the record
// is committed.
func (d *Driver) markCreated(v *Volume) error {
	return d.rename(filepath.Join(v.Dir, creatingFile), filepath.Join(v.Dir, recordFile))
}

// markRemoving records, durably, that v is being removed: its record file
// becomes the remove intent. A volume without a record file (made by an
// older holdfast) gets a new one.
func (d *Driver) markRemoving(v *Volume) error {
	err := d.rename(filepath.Join(v.Dir, recordFile), filepath.Join(v.Dir, removingFile))
	if errors.Is(err, os.ErrNotExist) {
		err = d.writeRecord(v, removingFile)
	}
	if err == nil {
		err = d.syncFile(filepath.Join(v.Dir, removingFile))
	}
	if err == nil {
		err = d.syncDir(v.Dir)
	}
	if err != nil {
		return volfs.RootFull(fmt.Errorf("record the removal of %s: %w", v.Name, err), v.Dir)
	}
	return nil
}

// syncFile makes the content of file durable: a record written at Create
// may still be only in the page cache.
func (d *Driver) syncFile(file string) error {
	if err := d.step("sync " + filepath.Base(file)); err != nil {
		return err
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// rename is os.Rename as a step named after the files.
func (d *Driver) rename(from, to string) error {
	return d.renameAs("rename "+filepath.Base(from)+" to "+filepath.Base(to), from, to)
}

// renameAs is os.Rename as the step named step.
func (d *Driver) renameAs(step, from, to string) error {
	if err := d.step(step); err != nil {
		return err
	}
	return os.Rename(from, to)
}

// syncDir makes the entries of dir durable.
func (d *Driver) syncDir(dir string) error {
	return d.syncDirAs("sync volume directory", dir)
}

// syncDirAs is syncDir as the step named step.
func (d *Driver) syncDirAs(step, dir string) error {
	if err := d.step(step); err != nil {
		return err
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// readIntent returns the intent in dir, or nil if there is none.
func readIntent(dir string) (*intent, error) {
	// A temporary file is one a kill kept from being renamed into place:
	// that request had not begun.
	// unlink(2) alone: os.Remove would try rmdir(2) too when the file is
	// missing, as it is in nearly every directory.
	if err := unix.Unlink(filepath.Join(dir, intentTemp)); err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, &os.PathError{Op: "remove", Path: filepath.Join(dir, intentTemp), Err: err}
	}
	for _, f := range []struct{ file, op string }{{removingFile, intentRemove}, {creatingFile, intentCreate}, {legacyIntent, ""}} {
		in, err := readIntentFile(filepath.Join(dir, f.file))
		if in == nil && err == nil {
			continue
		}
		if err == nil && f.op != "" {
			in.Op = f.op
		}
		return in, err
	}
	return nil, nil
}

func readIntentFile(path string) (*intent, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	in := &intent{}
	err = json.Unmarshal(b, in)
	if err != nil || in.Volume == nil || in.Volume.Name != filepath.Base(filepath.Dir(path)) ||
		(filepath.Base(path) == legacyIntent && in.Op != intentCreate && in.Op != intentRemove) {
		return nil, fmt.Errorf("%s is damaged (a power cut during a request?): %q", path, b)
	}
	return in, nil
}

// dropCreateIntent deletes a create intent whose record was committed:
// renamed to the record file, or deleted if it is an older holdfast's.
func (d *Driver) dropCreateIntent(v *Volume) error {
	if err := dropFile(filepath.Join(v.Dir, legacyIntent)); err != nil {
		return err
	}
	err := d.markCreated(v)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func dropFile(path string) error {
	err := os.Remove(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
