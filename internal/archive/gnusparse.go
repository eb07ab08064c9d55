package archive

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// GNU tar's PAX records for a sparse file in its format 1.0 (GNU tar's
// manual, "Storing Sparse Files"): the entry's data begins with the map
// (decimal numbers, one a line: how many segments, then each one's offset
// and length), padded to a block, followed by the segments back to back.
// GNU tar, bsdtar and Go's archive/tar unpack such an entry as the sparse
// file it was; archive/tar cannot write these records, so holdfast writes
// the entry's headers itself.
const (
	gnuSparseMajor    = "GNU.sparse.major"
	gnuSparseMinor    = "GNU.sparse.minor"
	gnuSparseName     = "GNU.sparse.name"
	gnuSparseRealSize = "GNU.sparse.realsize"

	blockSize = 512
	// ustar's numeric fields: 7 octal digits for ids, 11 for size and time.
	maxUstarID   = 1<<21 - 1
	maxUstarSize = 1<<33 - 1
)

// sparseEntry encodes a sparse regular file as the two headers (a PAX
// extended header carrying every field and GNU's sparse records, then the
// ustar header of a placeholder name that tars without sparse support
// unpack to) and the map block. The segments' data follows, then padding to
// a block (see padding).
func sparseEntry(name string, mode int64, uid, gid int, mtime, atime time.Time,
	records map[string]string, realSize int64, segs []segment) []byte {
	mapBlock := sparseMap(segs, realSize)
	size := int64(len(mapBlock))
	for _, s := range segs {
		size += s.len
	}
	recs := maps.Clone(records)
	recs[gnuSparseMajor] = "1"
	recs[gnuSparseMinor] = "0"
	recs[gnuSparseName] = name
	recs[gnuSparseRealSize] = strconv.FormatInt(realSize, 10)
	recs["uid"] = strconv.Itoa(uid)
	recs["gid"] = strconv.Itoa(gid)
	recs["mtime"] = paxTime(mtime)
	if !atime.IsZero() {
		recs["atime"] = paxTime(atime)
	}
	if size > maxUstarSize {
		recs["size"] = strconv.FormatInt(size, 10)
	}
	var pax strings.Builder
	for _, k := range slices.Sorted(maps.Keys(recs)) {
		pax.WriteString(paxRecord(k, recs[k]))
	}
	var b bytes.Buffer
	b.Write(ustarHeader("PaxHeaders.0/sparse", 'x', int64(pax.Len()), 0o644, 0, 0, 0))
	b.WriteString(pax.String())
	b.Write(make([]byte, padding(int64(pax.Len()))))
	b.Write(ustarHeader(sparsePlaceholder(name), '0', size, mode, uid, gid, mtime.Unix()))
	b.Write(mapBlock)
	return b.Bytes()
}

// sparseMap renders segs as format 1.0's map, padded to a block. Like GNU
// tar, it ends a file that ends in a hole with an empty segment at its
// size: GNU tar sizes the file it unpacks by the map, not by realsize.
func sparseMap(segs []segment, realSize int64) []byte {
	if n := len(segs); n == 0 || segs[n-1].off+segs[n-1].len < realSize {
		segs = append(slices.Clip(segs), segment{realSize, 0})
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%d\n", len(segs))
	for _, s := range segs {
		fmt.Fprintf(&b, "%d\n%d\n", s.off, s.len)
	}
	b.Write(make([]byte, padding(int64(b.Len()))))
	return b.Bytes()
}

// sparsePlaceholder is the name a tar that does not know GNU's sparse
// records unpacks the entry to, as GNU tar names it: GNUSparseFile.0 in
// the file's directory. It must fit ustar's 100-byte name field; the real
// name is in GNU.sparse.name.
func sparsePlaceholder(name string) string {
	dir, base := path.Split(name)
	for _, p := range []string{dir + "GNUSparseFile.0/" + base, "GNUSparseFile.0/" + base} {
		if len(p) <= 100 && printableASCII(p) {
			return p
		}
	}
	return "GNUSparseFile.0/sparse-file"
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ustarHeader encodes one ustar header block. Values that do not fit a
// field are written as 0: the PAX header before it carries them.
func ustarHeader(name string, typ byte, size, mode int64, uid, gid int, mtime int64) []byte {
	b := make([]byte, blockSize)
	copy(b[0:100], name)
	octal(b[100:108], mode&0o7777, 0o7777777)
	octal(b[108:116], int64(uid), maxUstarID)
	octal(b[116:124], int64(gid), maxUstarID)
	octal(b[124:136], size, maxUstarSize)
	octal(b[136:148], mtime, maxUstarSize)
	b[156] = typ
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// octal writes v as zero-padded octal digits and a NUL; 0 when v is
// outside [0, max].
func octal(field []byte, v, max int64) {
	if v < 0 || v > max {
		v = 0
	}
	s := strconv.FormatInt(v, 8)
	n := len(field) - 1
	copy(field, strings.Repeat("0", n-len(s))+s)
	field[n] = 0
}

// paxRecord encodes "LEN KEY=VALUE\n", LEN counting itself.
func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	n += len(strconv.Itoa(n))
	if rec := fmt.Sprintf("%d %s=%s\n", n, k, v); len(rec) == n {
		return rec
	}
	n++ // the length gained a digit
	return fmt.Sprintf("%d %s=%s\n", n, k, v)
}

// paxTime formats t as PAX does: seconds, a fraction when there is one.
func paxTime(t time.Time) string {
	sec, nsec := t.Unix(), int64(t.Nanosecond())
	if nsec == 0 {
		return strconv.FormatInt(sec, 10)
	}
	sign := ""
	if sec < 0 {
		sign, sec, nsec = "-", -(sec + 1), 1e9-nsec
	}
	return strings.TrimRight(fmt.Sprintf("%s%d.%09d", sign, sec, nsec), "0")
}

// padding is how many zero bytes follow n bytes of data to end a block.
func padding(n int64) int64 { return -n & (blockSize - 1) }

// writePadding ends a block after n bytes of data written to w.
func writePadding(w io.Writer, n int64) error {
	_, err := w.Write(make([]byte, padding(n)))
	return err
}
