package logwrites

import (
	"fmt"
	"io"
)

// Replayer applies a log's entries, in order, to an image of the logged
// device: the image must start as the device was when logging began.
type Replayer struct {
	log  *Log
	dst  io.WriterAt
	next int // the first entry not yet applied
	// zero is a discard's content: the kernel leaves it undefined, the
	// loop devices the suites log to read it back as zeros.
	zero []byte
}

// NewReplayer returns a Replayer writing to dst, with no entry applied.
func NewReplayer(l *Log, dst io.WriterAt) *Replayer { return &Replayer{log: l, dst: dst} }

// Applied returns how many entries have been applied.
func (r *Replayer) Applied() int { return r.next }

// ReplayTo applies every entry up to and including index i. Entries
// already applied are not applied again; going backwards is an error (the
// image would need the writes undone).
func (r *Replayer) ReplayTo(i int) error {
	if i >= len(r.log.Entries) {
		return fmt.Errorf("replay to entry %d: the log has %d entries", i, len(r.log.Entries))
	}
	if i < r.next-1 {
		return fmt.Errorf("replay to entry %d: entries up to %d are already applied; start again from the first image", i, r.next-1)
	}
	for ; r.next <= i; r.next++ {
		if err := r.apply(r.log.Entries[r.next]); err != nil {
			return err
		}
	}
	return nil
}

// apply writes one entry's data, or zeros for a discard, at its place.
func (r *Replayer) apply(e Entry) error {
	ss := r.log.SectorSize
	off := int64(e.Sector) * ss
	if e.Flags&FlagDiscard != 0 {
		return r.discard(e, off, int64(e.Sectors)*ss)
	}
	data, err := r.log.Data(e)
	if err != nil || len(data) == 0 {
		return err
	}
	if _, err := r.dst.WriteAt(data, off); err != nil {
		return fmt.Errorf("replay entry %d (%d sectors at sector %d): %w", e.Index, e.Sectors, e.Sector, err)
	}
	return nil
}

func (r *Replayer) discard(e Entry, off, n int64) error {
	if r.zero == nil {
		r.zero = make([]byte, 1<<20)
	}
	for n > 0 {
		chunk := min(n, int64(len(r.zero)))
		if _, err := r.dst.WriteAt(r.zero[:chunk], off); err != nil {
			return fmt.Errorf("replay discard entry %d at sector %d: %w", e.Index, e.Sector, err)
		}
		off += chunk
		n -= chunk
	}
	return nil
}
