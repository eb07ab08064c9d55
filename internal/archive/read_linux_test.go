package archive

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/treetest"
)

// rawStream builds a stream from headers as given (data for TypeReg is
// strings.Repeat("x", Size)), with no end marker: what another tar, or an
// attacker, writes.
func rawStream(t *testing.T, hdrs ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hdrs {
		if h.Format == tar.FormatUnknown {
			h.Format = tar.FormatPAX
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		require.NoError(t, tw.WriteHeader(h))
		if h.Typeflag == tar.TypeReg {
			_, err := tw.Write([]byte(strings.Repeat("x", int(h.Size))))
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

func reg(name string) *tar.Header { return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: 3} }
func dir(name string) *tar.Header { return &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755} }
func link(typ byte, name, to string) *tar.Header {
	return &tar.Header{Typeflag: typ, Name: name, Linkname: to}
}
func sparse(name, realSize, m string, size int64) *tar.Header {
	h := reg(name)
	h.Size = size
	h.PAXRecords = map[string]string{recRealSize: realSize, recMap: m}
	return h
}

// gnuSparseStream builds a stream of one GNU sparse 1.0 entry as holdfast
// writes it, with data as given (which may not match segs) and holdfast's
// own records recs.
func gnuSparseStream(name string, realSize int64, segs []segment, data []byte, recs map[string]string) []byte {
	b := sparseEntry(name, 0o644, 0, 0, time.Unix(0, 0), time.Time{}, recs, realSize, segs)
	b = append(b, data...)
	b = append(b, make([]byte, padding(int64(len(data)))+2*blockSize)...)
	return b
}

// goodStream is a holdfast stream of a small tree, for cutting and flipping.
func goodStream(t *testing.T) []byte {
	t.Helper()
	src := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(src, "d"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "d", "f"), bytes.Repeat([]byte("data"), 1000), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "g"), []byte("tail"), 0o644))
	var buf bytes.Buffer
	_, err := Write(&buf, src, WriteOptions{})
	require.NoError(t, err)
	return buf.Bytes()
}

// Each bad stream is refused with an error naming what is wrong, and leaves
// the target exactly as it was: its files, its own times, no staging left.
func TestReadRefusesBadStreams(t *testing.T) {
	requireRoot(t)
	good := goodStream(t)
	fileData := bytes.Index(good, []byte("datadata"))
	require.Positive(t, fileData)
	flipped := bytes.Clone(good)
	flipped[fileData+100] ^= 1
	badHeader := bytes.Clone(good)
	hdrAt := bytes.Index(good, []byte("d/f\x00"))
	require.Zero(t, hdrAt%512, "d/f's name starts its ustar header block")
	badHeader[hdrAt+100] ^= 0x40 // its mode field: the block's checksum fails
	endAt := bytes.Index(good, []byte(recEnd))
	cutAtBoundary := good[:(endAt/512-1)*512] // before the end marker's header

	for _, tc := range []struct {
		name, want string
		stream     []byte
		err        error
	}{
		{"dotdot", `climbs out of the volume`, rawStream(t, reg("../evil")), ErrUnsafe},
		{"dotdot inside", `climbs out`, rawStream(t, dir("a/"), reg("a/../../evil")), ErrUnsafe},
		{"absolute", `absolute name "/etc/evil"`, rawStream(t, reg("/etc/evil")), ErrUnsafe},
		{"hard link out", `points out of the volume`, rawStream(t, link(tar.TypeLink, "l", "../../etc/passwd")), ErrUnsafe},
		{"hard link absolute", `points out of the volume`, rawStream(t, link(tar.TypeLink, "l", "/etc/passwd")), ErrUnsafe},
		{"hard link to nothing", `names no file unpacked before it`, rawStream(t, link(tar.TypeLink, "l", "keep")), ErrUnsafe},
		{"hard link to a directory", `names no file`, rawStream(t, dir("d/"), link(tar.TypeLink, "l", "d")), ErrUnsafe},
		{"symlink out", `points out of the volume`, rawStream(t, dir("a/"), link(tar.TypeSymlink, "a/s", "../../etc")), ErrUnsafe},
		{"through a symlink", `reached through a symlink`, rawStream(t, dir("sub/"), link(tar.TypeSymlink, "s", "sub"), reg("s/x")), ErrUnsafe},
		{"through a symlink out", `reached through a symlink`, rawStream(t, link(tar.TypeSymlink, "s", "/etc"), reg("s/evil")), ErrUnsafe},
		{"parent missing", `not in the archive before it`, rawStream(t, reg("nodir/x")), ErrUnsafe},
		{"duplicate", `"a" appears twice`, rawStream(t, reg("a"), reg("a")), ErrCorrupt},
		{"duplicate dir and file", `appears twice`, rawStream(t, dir("a/"), reg("a")), ErrCorrupt},
		{"root not first", `must be the first entry`, rawStream(t, reg("a"), dir("./")), ErrCorrupt},
		{"socket type", `does not restore`, rawStream(t, &tar.Header{Typeflag: 'Z', Name: "weird"}), ErrCorrupt},
		{"absurd size", `more than the`, rawStream(t, sparse("huge", "4611686018427387904", "0,3", 3)), ErrCorrupt},
		{"sparse map past the size", `passes the file's size`, rawStream(t, sparse("s", "10", "8,3", 3)), ErrCorrupt},
		{"sparse map overlapping", `overlaps`, rawStream(t, sparse("s", "100", "10,2,11,1", 3)), ErrCorrupt},
		{"sparse map short", `covers 2 bytes`, rawStream(t, sparse("s", "100", "10,2", 3)), ErrCorrupt},
		{"sparse map garbage", `not an offset`, rawStream(t, sparse("s", "100", "a,b", 3)), ErrCorrupt},
		{"gnu sparse name climbs out", `climbs out`, gnuSparseStream("../evil", 10, []segment{{0, 3}}, []byte("abc"), map[string]string{}), ErrUnsafe},
		{"gnu sparse cut in its data", `"s"`, gnuSparseStream("s", 100, []segment{{10, 30}}, []byte("abc"), map[string]string{})[:4*blockSize+3], ErrCorrupt},
		{"gnu sparse map past the size", `after entry`, gnuSparseStream("s", 10, []segment{{8, 3}}, []byte("abc"), map[string]string{}), ErrCorrupt},
		{"gnu and holdfast sizes disagree", `disagree on its size`, gnuSparseStream("s", 100, []segment{{10, 3}}, []byte("abc"),
			map[string]string{recRealSize: "200", recMap: "10,3"}), ErrCorrupt},
		{"gnu sparse, holdfast map past the size", `passes the file's size`, gnuSparseStream("s", 100, []segment{{10, 3}}, []byte("abc"),
			map[string]string{recRealSize: "100", recMap: "99,3"}), ErrCorrupt},
		{"truncated in data", `ends inside its data`, good[:fileData+1000], ErrCorrupt},
		{"truncated at an entry boundary", `without its end marker`, cutAtBoundary, ErrCorrupt},
		{"truncated header", `after entry`, good[:fileData-300], ErrCorrupt},
		{"flipped data byte", `does not match the stream's SHA-256`, flipped, ErrCorrupt},
		{"corrupt header", `after entry`, badHeader, ErrCorrupt},
		{"cut after the first header", `holds no entries`, good[:1024], ErrCorrupt},
		{"empty", `holds no entries`, nil, ErrCorrupt},
		{"not tar", `after entry 0`, bytes.Repeat([]byte("garbage!"), 200), ErrCorrupt},
		{"existing name", `already holds "keep"`, rawStream(t, reg("new"), reg("keep")), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(target, "keep"), []byte("mine"), 0o600))
			before := treetest.Snapshot(t, target)
			_, err := Read(bytes.NewReader(tc.stream), target, ReadOptions{MaxFileSize: 1 << 40})
			require.Error(t, err)
			t.Log(err)
			require.Contains(t, err.Error(), tc.want)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
			}
			treetest.RequireSame(t, before, treetest.Snapshot(t, target))
		})
	}
}

// A stream another tar wrote (no holdfast records, no end marker) unpacks.
func TestReadForeignStream(t *testing.T) {
	requireRoot(t)
	target := t.TempDir()
	_, err := Read(bytes.NewReader(rawStream(t, dir("a/"), reg("a/f"), link(tar.TypeSymlink, "a/s", "f"), link(tar.TypeLink, "h", "a/f"))), target, ReadOptions{})
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(target, "h"))
	require.NoError(t, err)
	require.Equal(t, "xxx", string(b))
}
