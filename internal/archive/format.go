package archive

import (
	"fmt"
	"strconv"
	"strings"
)

// PAX records of holdfast's own (see the package documentation).
const (
	recVersion  = "HOLDFAST.version"
	recRealSize = "HOLDFAST.sparse.realsize"
	recMap      = "HOLDFAST.sparse.map"
	recEnd      = "HOLDFAST.end"
	recSHA256   = "HOLDFAST.sha256"
	recXattr    = "SCHILY.xattr."

	formatVersion = "1"
)

// segment is one run of data in a sparse file.
type segment struct{ off, len int64 }

// encodeMap renders segments as OFF,LEN,OFF,LEN...
func encodeMap(segs []segment) string {
	parts := make([]string, 0, 2*len(segs))
	for _, s := range segs {
		parts = append(parts, strconv.FormatInt(s.off, 10), strconv.FormatInt(s.len, 10))
	}
	return strings.Join(parts, ",")
}

// decodeMap parses a sparse map and checks it against the file's real size
// and the entry's data size: segments in order, not overlapping, inside the
// file, their lengths adding up to the data the entry carries (unless
// dataSize is negative: unknown).
func decodeMap(s string, realSize, dataSize int64) ([]segment, error) {
	if s == "" {
		if dataSize > 0 {
			return nil, fmt.Errorf("empty sparse map but %d bytes of data", dataSize)
		}
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts)%2 != 0 {
		return nil, fmt.Errorf("sparse map has an odd number of fields (%d)", len(parts))
	}
	segs := make([]segment, 0, len(parts)/2)
	var end, total int64
	for i := 0; i < len(parts); i += 2 {
		off, err1 := strconv.ParseInt(parts[i], 10, 64)
		n, err2 := strconv.ParseInt(parts[i+1], 10, 64)
		if err1 != nil || err2 != nil || off < 0 || n <= 0 {
			return nil, fmt.Errorf("sparse map field %d (%q,%q) is not an offset and a positive length", i/2, parts[i], parts[i+1])
		}
		if off < end || off > realSize-n {
			return nil, fmt.Errorf("sparse map segment %d (%d+%d) overlaps the one before it or passes the file's size %d", i/2, off, n, realSize)
		}
		end, total = off+n, total+n
	}
	if dataSize >= 0 && total != dataSize {
		return nil, fmt.Errorf("sparse map covers %d bytes but the entry carries %d", total, dataSize)
	}
	for i := 0; i < len(parts); i += 2 {
		off, _ := strconv.ParseInt(parts[i], 10, 64)
		n, _ := strconv.ParseInt(parts[i+1], 10, 64)
		segs = append(segs, segment{off, n})
	}
	return segs, nil
}
