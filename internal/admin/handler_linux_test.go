package admin

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func serve(t *testing.T, d Driver) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "h.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	srv := &http.Server{Handler: Handler(d), ConnContext: ConnContext}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return NewClient(sock)
}

func TestBackupRestoreThroughTheSocket(t *testing.T) {
	require.Zero(t, os.Geteuid(), "run as root: the admin protocol answers root only")
	root := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(root, "src"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "src", "f"), []byte("hello"), 0o644))
	c := serve(t, dirDriver{root})
	ctx := context.Background()

	var buf bytes.Buffer
	note, err := c.Backup(ctx, "src", false, &buf)
	require.NoError(t, err)
	require.Equal(t, "exact: not in use", note)
	res, err := c.Restore(ctx, "dst", map[string]string{"type": "local"}, bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	require.Equal(t, 2, res.Entries)
	b, err := os.ReadFile(filepath.Join(root, "dst", "f"))
	require.NoError(t, err)
	require.Equal(t, "hello", string(b))

	_, err = c.Backup(ctx, "nope", false, &buf)
	require.ErrorContains(t, err, `no volume "nope"`)
	_, err = c.Restore(ctx, "dst", nil, bytes.NewReader(buf.Bytes()))
	require.ErrorContains(t, err, `volume "dst" exists`)
	_, err = c.Restore(ctx, "cut", nil, bytes.NewReader(buf.Bytes()[:1024]))
	require.ErrorContains(t, err, "corrupt or truncated")
	require.NoDirExists(t, filepath.Join(root, "cut"))
	_, err = c.Release(ctx, "src", "abc")
	require.ErrorContains(t, err, `"abc" is not a lease on "src"`)
}
