// Package logwrites reads the log the kernel's dm-log-writes target
// records (every write, flush, FUA, discard and mark of a device, in the
// order they reached the disk) and replays it onto an image, so that a
// test can look at the device as a power cut at any flush would have left
// it. The format is the kernel's (drivers/md/dm-log-writes.c): a super
// block at sector 0, then one entry per event, each a header block of the
// device's sector size followed by the data it wrote.
package logwrites

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic and Version identify a dm-log-writes log in its super block.
const (
	Magic   = 0x6a736677736872
	Version = 1
)

// Entry flags, as the kernel records them.
const (
	FlagFlush    = 1 << 0
	FlagFUA      = 1 << 1
	FlagDiscard  = 1 << 2
	FlagMark     = 1 << 3
	FlagMetadata = 1 << 4
)

// headerSize is the size of an entry header (four little-endian u64) and
// of the super block's fields.
const (
	headerSize = 32
	superSize  = 28
)

// Entry is one logged event.
type Entry struct {
	// Index numbers the entries from 0 in log order.
	Index int
	// Sector and Sectors locate the write on the device, in units of the
	// log's sector size.
	Sector, Sectors uint64
	// Flags are the Flag* bits.
	Flags uint64
	// Mark is the text of a mark entry.
	Mark string
	// dataOff is where the entry's data starts in the log, in bytes.
	dataOff int64
}

// IsMark reports whether e is a mark.
func (e Entry) IsMark() bool { return e.Flags&FlagMark != 0 }

// IsCrashPoint reports whether the device was told to make what it had
// durable at e: a flush, or a write with FUA. Replaying the log up to and
// including such an entry gives a state a power cut may leave.
func (e Entry) IsCrashPoint() bool { return e.Flags&(FlagFlush|FlagFUA) != 0 }

// Log is a parsed dm-log-writes log.
type Log struct {
	r          io.ReaderAt
	SectorSize int64
	Entries    []Entry
}

// Open parses the log in r, which must no longer be written: remove the
// log-writes target first (its removal writes the final super block).
func Open(r io.ReaderAt) (*Log, error) {
	var sb [superSize]byte
	if _, err := r.ReadAt(sb[:], 0); err != nil {
		return nil, fmt.Errorf("read the log's super block: %w", err)
	}
	le := binary.LittleEndian
	if m := le.Uint64(sb[0:]); m != Magic {
		return nil, fmt.Errorf("not a dm-log-writes log: magic %#x, want %#x (was the log device written by the log-writes target?)", m, uint64(Magic))
	}
	if v := le.Uint64(sb[8:]); v != Version {
		return nil, fmt.Errorf("dm-log-writes log version %d: only version %d is known", v, Version)
	}
	n := le.Uint64(sb[16:])
	ss := int64(le.Uint32(sb[24:]))
	if ss < 512 || ss&(ss-1) != 0 {
		return nil, fmt.Errorf("dm-log-writes log: sector size %d is not a power of two of at least 512", ss)
	}
	l := &Log{r: r, SectorSize: ss}
	off := ss // the first entry follows the super block
	for i := uint64(0); i < n; i++ {
		e, next, err := l.readEntry(int(i), off)
		if err != nil {
			return nil, fmt.Errorf("dm-log-writes log entry %d of %d: %w", i, n, err)
		}
		l.Entries = append(l.Entries, e)
		off = next
	}
	return l, nil
}

// readEntry reads the entry whose header is at off and returns it with
// the offset of the next one.
func (l *Log) readEntry(i int, off int64) (Entry, int64, error) {
	blk := make([]byte, l.SectorSize)
	if _, err := l.r.ReadAt(blk, off); err != nil {
		return Entry{}, 0, fmt.Errorf("read header at byte %d: %w", off, err)
	}
	le := binary.LittleEndian
	e := Entry{Index: i, Sector: le.Uint64(blk[0:]), Sectors: le.Uint64(blk[8:]), Flags: le.Uint64(blk[16:]), dataOff: off + l.SectorSize}
	dataLen := le.Uint64(blk[24:])
	next := e.dataOff
	switch {
	case e.IsMark():
		if dataLen > uint64(l.SectorSize-headerSize) {
			return Entry{}, 0, fmt.Errorf("mark of %d bytes does not fit its header block", dataLen)
		}
		e.Mark = string(blk[headerSize : headerSize+dataLen])
	case e.Flags&FlagDiscard != 0:
		// A discard carries no data.
	default:
		if e.Sectors > 1<<40/uint64(l.SectorSize) {
			return Entry{}, 0, fmt.Errorf("write of %d sectors is past any device", e.Sectors)
		}
		next += int64(e.Sectors) * l.SectorSize
		if e.Sectors > 0 {
			var last [1]byte
			if _, err := l.r.ReadAt(last[:], next-1); err != nil {
				return Entry{}, 0, fmt.Errorf("the log ends inside the %d sectors this write carries: %w", e.Sectors, err)
			}
		}
	}
	return e, next, nil
}

// Data returns the bytes e wrote (nil for a mark, flush or discard).
func (l *Log) Data(e Entry) ([]byte, error) {
	if e.IsMark() || e.Flags&FlagDiscard != 0 || e.Sectors == 0 {
		return nil, nil
	}
	b := make([]byte, int64(e.Sectors)*l.SectorSize)
	if _, err := l.r.ReadAt(b, e.dataOff); err != nil {
		return nil, fmt.Errorf("read the data of entry %d: %w", e.Index, err)
	}
	return b, nil
}

// Marks returns the index of each mark entry by its text. A text marked
// twice is an error: the workload names each mark once.
func (l *Log) Marks() (map[string]int, error) {
	m := map[string]int{}
	for _, e := range l.Entries {
		if !e.IsMark() {
			continue
		}
		if _, dup := m[e.Mark]; dup {
			return nil, errors.New("mark " + e.Mark + " is in the log twice")
		}
		m[e.Mark] = e.Index
	}
	return m, nil
}

// CrashPoints returns the indexes of the entries at which a power cut is
// replayed: every flush and FUA write.
func (l *Log) CrashPoints() []int {
	var out []int
	for _, e := range l.Entries {
		if e.IsCrashPoint() {
			out = append(out, e.Index)
		}
	}
	return out
}
