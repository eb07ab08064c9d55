package admin

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/holdfast/holdfast/internal/archive"
)

// dirDriver is a fake Driver whose volumes are directories under root: the
// archive parts are real, the volume management is not.
type dirDriver struct{ root string }

func (d dirDriver) path(name string) (string, error) {
	p := filepath.Join(d.root, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no volume %q", name)
	}
	return p, nil
}

func (d dirDriver) Volumes() ([]Volume, error) { return []Volume{{Name: "src", Type: "local"}}, nil }
func (d dirDriver) Leases(name string) ([]Lease, error) {
	_, err := d.path(name)
	return nil, err
}
func (d dirDriver) Release(name, id string) (string, error) {
	return "", fmt.Errorf("%q is not a lease on %q", id, name)
}

func (d dirDriver) Backup(_ context.Context, name string, w io.Writer, _ bool) (string, error) {
	p, err := d.path(name)
	if err != nil {
		return "", err
	}
	_, err = archive.Write(w, p, archive.WriteOptions{})
	return "exact: not in use", err
}

func (d dirDriver) Restore(_ context.Context, name string, _ map[string]string, r io.Reader) (Restored, error) {
	p := filepath.Join(d.root, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		return Restored{}, fmt.Errorf("volume %q exists", name)
	}
	st, err := archive.Read(r, p, archive.ReadOptions{})
	if err != nil {
		os.Remove(p)
		return Restored{}, err
	}
	return Restored{Entries: st.Entries, Bytes: st.Bytes}, nil
}
