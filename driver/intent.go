package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// An intent file in a volume's directory says which request is changing
// the volume, so that one database commit per request is enough: a crash
// leaves either the commit or the intent, and start-up finishes the job.
//
//   - Create writes a create intent before the backend makes anything and
//     deletes it after the record is committed. A create intent without a
//     record is undone at start-up; with a record it is just deleted.
//   - Remove writes a remove intent before the backend destroys anything,
//     then deletes the record, then the directory. A remove intent is
//     always completed: the backend may already have destroyed the key.
//
// An intent is written to a temporary file renamed over the intent, so a
// kill never leaves a half-written or emptied one (an emptied remove intent
// would let start-up keep a volume whose key Remove had destroyed).
// Intents are not fsynced: they need to survive a crash of holdfast (the
// kernel keeps the page cache), and after a power cut an unacknowledged
// request may be lost either way.
const (
	intentFile = ".holdfast-intent"
	intentTemp = ".holdfast-intent.tmp"
)

// Intent operations.
const (
	intentCreate = "create"
	intentRemove = "remove"
)

type intent struct {
	Op     string
	Volume *Volume
}

// writeIntent records that op is under way for v.
func writeIntent(v *Volume, op string) error {
	b, err := json.Marshal(intent{Op: op, Volume: v})
	if err != nil {
		return fmt.Errorf("encode intent for %s: %w", v.Name, err)
	}
	tmp := filepath.Join(v.Dir, intentTemp)
	err = os.WriteFile(tmp, b, 0o600)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(v.Dir, intentFile))
	}
	if err != nil {
		return fmt.Errorf("record %s of %s: %w", op, v.Name, err)
	}
	return nil
}

// readIntent returns the intent in dir, or nil if there is none.
func readIntent(dir string) (*intent, error) {
	// A temporary intent is one a kill kept from being renamed into place:
	// that request had not begun.
	if err := dropFile(filepath.Join(dir, intentTemp)); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, intentFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	in := &intent{}
	err = json.Unmarshal(b, in)
	if err != nil || in.Volume == nil || in.Volume.Name != filepath.Base(dir) || (in.Op != intentCreate && in.Op != intentRemove) {
		return nil, fmt.Errorf("%s is damaged (a power cut during a request?): %q", filepath.Join(dir, intentFile), b)
	}
	return in, nil
}

// dropIntent deletes v's intent once the request is committed.
func dropIntent(v *Volume) error { return dropFile(filepath.Join(v.Dir, intentFile)) }

func dropFile(path string) error {
	err := os.Remove(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
