package nfstest

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// mount speaks MOUNT+NFS from userspace, so this runs on the host too, where
// the kernel has no NFS client.
func mount(t *testing.T, s *Server) *nfsc.Target {
	t.Helper()
	c, err := rpc.DialTCP("tcp", s.Addr(), false)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	m := nfsc.Mount{Client: c}
	target, err := m.Mount("/", rpc.AuthNull)
	require.NoError(t, err)
	return target
}

func TestServeReadWrite(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "in.txt"), []byte("from host"), 0o644))
	s, err := Start(dir)
	require.NoError(t, err)
	defer s.Close()
	require.NotZero(t, s.Port)
	require.Equal(t, "127.0.0.1:/", s.MountSource())
	require.Contains(t, s.MountData(), ",port="+strings.Split(s.Addr(), ":")[1]+",")

	target := mount(t, s)
	f, err := target.Open("/in.txt")
	require.NoError(t, err)
	got, err := io.ReadAll(f)
	require.NoError(t, err)
	require.Equal(t, "from host", string(got))
	require.NoError(t, f.Close())

	w, err := target.OpenFile("/out.txt", 0o644)
	require.NoError(t, err)
	_, err = w.Write([]byte("from client"))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	got, err = os.ReadFile(filepath.Join(dir, "out.txt"))
	require.NoError(t, err)
	require.Equal(t, "from client", string(got))
}

func TestCloseCutsConnectionsAndRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := Start(dir)
	require.NoError(t, err)
	_, err = mount(t, s).FSInfo()
	require.NoError(t, err)

	// (go-nfs-client retries for ~10s on a dead server, so probe with raw TCP.)
	raw, err := net.Dial("tcp", s.Addr())
	require.NoError(t, err)
	defer raw.Close()
	require.Eventually(t, func() bool { // accepted, not just queued
		s.ln.mu.Lock()
		defer s.ln.mu.Unlock()
		return len(s.ln.conns) == 2
	}, 5*time.Second, 10*time.Millisecond)

	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")

	// An established connection must be cut, not left idle.
	require.NoError(t, raw.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = raw.Read(make([]byte, 1))
	require.Error(t, err)
	if ne, ok := err.(net.Error); ok {
		require.False(t, ne.Timeout(), "connection still open after Close")
	}
	_, err = net.DialTimeout("tcp", s.Addr(), 2*time.Second)
	require.Error(t, err, "listener still open after Close")

	// Same port again: a server that comes back.
	s2, err := StartPort(dir, s.Port)
	require.NoError(t, err)
	defer s2.Close()
	require.Equal(t, s.Port, s2.Port)
	_, err = mount(t, s2).FSInfo()
	require.NoError(t, err)
}

func TestStartRejectsMissingDir(t *testing.T) {
	_, err := Start(filepath.Join(t.TempDir(), "nope"))
	require.Error(t, err)
}
