package bench

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// otherBoot is the boot id simulateReboot writes: no kernel has it.
const otherBoot = "00000000-0000-4000-8000-000000000000"

// simulateReboot makes the state of a stopped holdfast in dir look as if
// the machine had rebooted while every volume was in use: each record
// gets a lease and a boot id no kernel has, so the next start drops every
// lease and rewrites every record, the most a start after a reboot does.
// holdfast itself has no switch for this; its records carry the boot id,
// so the state is what changes.
func simulateReboot(dir string) error {
	path := filepath.Join(dir, "root", "holdfast.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	return db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("volumes"))
		if b == nil {
			return fmt.Errorf("%s has no volumes bucket", path)
		}
		type kv struct{ k, v []byte }
		var recs []kv
		err := b.ForEach(func(k, v []byte) error {
			var rec map[string]json.RawMessage
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			rec["BootID"] = json.RawMessage(`"` + otherBoot + `"`)
			rec["Leases"] = json.RawMessage(`{"bench-before-reboot":"2026-01-01T00:00:00Z"}`)
			buf, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			recs = append(recs, kv{append([]byte(nil), k...), buf})
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := b.Put(r.k, r.v); err != nil {
				return err
			}
		}
		return nil
	})
}
