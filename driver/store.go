package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/holdfast/holdfast/internal/failpoint"
	"github.com/holdfast/holdfast/internal/volfs"
)

var bucketVolumes = []byte("volumes")

// ErrLocked is returned by OpenStore when another process holds the database.
var ErrLocked = errors.New("database is locked by another holdfast process")

// Store keeps volume records in one bbolt file. Every write is committed
// and fsynced before it returns.
type Store struct {
	db *bolt.DB
	// dir holds the database: --root.
	dir string
	// faults fails commits on purpose, for tests.
	faults *failpoint.Set
	// commits counts the write transactions committed, for tests: each
	// is two fdatasyncs.
	commits atomic.Int64
}

// OpenStore opens (creating if needed) the database at path and takes its
// exclusive lock, failing with ErrLocked if another process holds it.
func OpenStore(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{db: db, dir: filepath.Dir(path)}
	// A commit costs two fdatasyncs even when it changes nothing: the
	// bucket is created by the first start only, not at every start.
	exists := false
	err = db.View(func(tx *bolt.Tx) error {
		exists = tx.Bucket(bucketVolumes) != nil
		return nil
	})
	if err == nil && !exists {
		err = s.update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(bucketVolumes)
			return err
		})
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	return s, nil
}

// Close releases the database and its lock.
func (s *Store) Close() error { return s.db.Close() }

// update runs fn in one write transaction and commits it (fsynced).
func (s *Store) update(fn func(*bolt.Tx) error) error {
	err := s.db.Update(fn)
	if err == nil {
		s.commits.Add(1)
	}
	return err
}

// Put writes v's record.
func (s *Store) Put(v *Volume) error {
	buf, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode volume %s: %w", v.Name, err)
	}
	err = s.faults.Check("commit")
	if err == nil {
		err = s.update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketVolumes).Put([]byte(v.Name), buf)
		})
	}
	if err != nil {
		return volfs.NoSpace(fmt.Errorf("save volume %s: %w", v.Name, err), "--root", s.dir)
	}
	return nil
}

// PutAll writes the records of vols in one commit.
func (s *Store) PutAll(vols []*Volume) error {
	if len(vols) == 0 {
		return nil
	}
	bufs := make([][]byte, len(vols))
	for i, v := range vols {
		buf, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode volume %s: %w", v.Name, err)
		}
		bufs[i] = buf
	}
	err := s.faults.Check("commit")
	if err == nil {
		err = s.update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketVolumes)
			for i, v := range vols {
				if err := b.Put([]byte(v.Name), bufs[i]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		return volfs.NoSpace(fmt.Errorf("save %d volumes: %w", len(vols), err), "--root", s.dir)
	}
	return nil
}

// Delete removes the record of name.
func (s *Store) Delete(name string) error {
	err := s.faults.Check("commit")
	if err == nil {
		err = s.update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketVolumes).Delete([]byte(name))
		})
	}
	if err != nil {
		return volfs.NoSpace(fmt.Errorf("delete volume %s: %w", name, err), "--root", s.dir)
	}
	return nil
}

// All returns every record.
func (s *Store) All() ([]*Volume, error) {
	var vols []*Volume
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVolumes).ForEach(func(k, buf []byte) error {
			v := &Volume{}
			if err := json.Unmarshal(buf, v); err != nil {
				return fmt.Errorf("decode volume %s: %w", k, err)
			}
			vols = append(vols, v)
			return nil
		})
	})
	return vols, err
}
