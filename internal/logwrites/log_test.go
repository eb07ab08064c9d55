package logwrites

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// event is one synthetic logged event.
type event struct {
	flags  uint64
	sector uint64
	data   []byte // whole sectors; for a discard only its length counts
	mark   string
}

// encode lays events out as the kernel's log-writes target does: the super
// block at sector 0, then for each event a header block of ss bytes (the
// mark's text inside it) followed by the data, discards carrying none.
func encode(ss int, events []event) []byte {
	le := binary.LittleEndian
	var buf bytes.Buffer
	super := make([]byte, ss)
	le.PutUint64(super[0:], Magic)
	le.PutUint64(super[8:], Version)
	le.PutUint64(super[16:], uint64(len(events)))
	le.PutUint32(super[24:], uint32(ss))
	buf.Write(super)
	for _, ev := range events {
		hdr := make([]byte, ss)
		n := uint64(len(ev.data) / ss)
		le.PutUint64(hdr[0:], ev.sector)
		le.PutUint64(hdr[8:], n)
		le.PutUint64(hdr[16:], ev.flags)
		switch {
		case ev.flags&FlagMark != 0:
			le.PutUint64(hdr[8:], 0)
			le.PutUint64(hdr[24:], uint64(len(ev.mark)))
			copy(hdr[headerSize:], ev.mark)
			buf.Write(hdr)
		case ev.flags&FlagDiscard != 0:
			buf.Write(hdr)
		default:
			buf.Write(hdr)
			buf.Write(ev.data)
		}
	}
	return buf.Bytes()
}

// memImage is an image in memory that grows as it is written.
type memImage struct{ b []byte }

func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

func fill(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }

// apply is the model: the image after events[:n], written directly.
func apply(ss, size int, events []event, n int) []byte {
	img := make([]byte, size)
	for _, ev := range events[:n] {
		off := int(ev.sector) * ss
		switch {
		case ev.flags&FlagMark != 0:
		case ev.flags&FlagDiscard != 0:
			copy(img[off:], make([]byte, len(ev.data)))
		default:
			copy(img[off:], ev.data)
		}
	}
	return img
}

func TestOpenAndReplay(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		events := []event{
			{sector: 0, data: fill('a', 2*ss)},
			{sector: 4, data: fill('b', ss), flags: FlagMetadata},
			{flags: FlagFlush},
			{flags: FlagMark, mark: "create v1"},
			{sector: 1, data: fill('c', ss), flags: FlagFUA},
			{sector: 0, data: fill('?', 2*ss), flags: FlagDiscard},
			{sector: 6, data: fill('d', ss), flags: FlagFlush | FlagFUA},
			{flags: FlagMark, mark: "remove v1"},
			{sector: 2, data: fill('e', 3*ss)},
		}
		raw := encode(ss, events)
		l, err := Open(bytes.NewReader(raw))
		require.NoError(t, err, "sector size %d", ss)
		assert.EqualValues(t, ss, l.SectorSize)
		require.Len(t, l.Entries, len(events))
		assert.Equal(t, []int{2, 4, 6}, l.CrashPoints())
		marks, err := l.Marks()
		require.NoError(t, err)
		assert.Equal(t, map[string]int{"create v1": 3, "remove v1": 7}, marks)
		assert.EqualValues(t, 2, l.Entries[5].Sectors, "a discard keeps its length")

		// Incremental replay, crash point after crash point, equals
		// applying the prefix to a fresh image.
		img := &memImage{b: make([]byte, 8*ss)}
		r := NewReplayer(l, img)
		for _, p := range append(l.CrashPoints(), len(events)-1) {
			require.NoError(t, r.ReplayTo(p))
			assert.Equal(t, apply(ss, 8*ss, events, p+1), img.b, "sector size %d, replayed to entry %d", ss, p)
			assert.Equal(t, p+1, r.Applied())
		}
		err = r.ReplayTo(1)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "already applied")
		require.Error(t, r.ReplayTo(len(events)))
	}
}

func TestOpenRejects(t *testing.T) {
	good := encode(512, []event{{sector: 0, data: fill('a', 512)}, {flags: FlagMark, mark: "m"}})
	le := binary.LittleEndian
	mutate := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	for _, tc := range []struct {
		name, want string
		raw        []byte
	}{
		{"empty", "super block", nil},
		{"magic", "not a dm-log-writes log", mutate(func(b []byte) { b[0] ^= 1 })},
		{"version", "version 2", mutate(func(b []byte) { le.PutUint64(b[8:], 2) })},
		{"sector size", "sector size 1000", mutate(func(b []byte) { le.PutUint32(b[24:], 1000) })},
		{"more entries than written", "entry 2 of 3", mutate(func(b []byte) { le.PutUint64(b[16:], 3) })},
		{"truncated data", "entry 0 of 2", good[:512+512+100]},
		{"mark too long", "does not fit", mutate(func(b []byte) { le.PutUint64(b[2*512+512+24:], 600) })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(bytes.NewReader(tc.raw))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestMarksTwice(t *testing.T) {
	l, err := Open(bytes.NewReader(encode(512, []event{{flags: FlagMark, mark: "x"}, {flags: FlagMark, mark: "x"}})))
	require.NoError(t, err)
	_, err = l.Marks()
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), "twice"))
}
