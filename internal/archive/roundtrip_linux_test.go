package archive

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// roundTrip writes src and reads the stream into a new empty directory.
func roundTrip(t *testing.T, src string) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	_, err := Write(&buf, src, WriteOptions{Skip: func(n, why string) { t.Errorf("skipped %s: %s", n, why) }})
	require.NoError(t, err)
	dst := t.TempDir()
	_, err = Read(bytes.NewReader(buf.Bytes()), dst, ReadOptions{})
	require.NoError(t, err)
	return dst, buf.Bytes()
}
