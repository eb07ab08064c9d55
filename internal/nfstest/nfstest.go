// Package nfstest runs a throwaway userspace NFSv3 server for tests.
//
// The server (github.com/willscott/go-nfs over a go-billy osfs) listens on
// 127.0.0.1 and serves one host directory as the export "/". It speaks MOUNT
// and NFS on the same TCP port and needs no rpcbind, so the kernel client can
// mount it with [Server.MountSource] and [Server.MountData]. Its file handles
// live in memory, so a server restarted with [StartPort] serves the same files
// but the old handles are stale (ESTALE) to a client that kept its mount.
//
// The kernel NFS client is only available in the qemu guest (HOLDFAST_VM=1);
// the server itself runs anywhere. The first Start replaces go-nfs's global
// logger with one that hides a harmless message (see quietLogger).
package nfstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	nfs "github.com/willscott/go-nfs"
	nfshelper "github.com/willscott/go-nfs/helpers"
	"golang.org/x/sys/unix"
)

// Host is the address the server listens on and the kernel client mounts from.
const Host = "127.0.0.1"

// handleCacheSize bounds go-nfs's in-memory file-handle table. Handles evicted
// from it turn into ESTALE on the client, so it is far larger than any test needs.
const handleCacheSize = 1 << 16

// Server is a running NFSv3 server. Mount it with
//
//	unix.Mount(s.MountSource(), target, "nfs", 0, s.MountData())
//
// Close stops it; the zero value is not usable, use [Start] or [StartPort].
type Server struct {
	// Dir is the served directory.
	Dir string
	// Port is the TCP port of both the MOUNT and the NFS service.
	Port int

	ln   *trackingListener
	done chan struct{} // closed when Serve has returned
}

// Start serves dir (which must exist) on 127.0.0.1 at a free TCP port.
func Start(dir string) (*Server, error) {
	return StartPort(dir, 0)
}

// StartPort is [Start] on a given port; 0 picks a free one. Starting a new
// server on the port of a closed one brings a "dead" server back, e.g. to test
// that a client recovers (file handles of the old server are then stale).
func StartPort(dir string, port int) (*Server, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("nfstest: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("nfstest: %s is not a directory", abs)
	}
	quietOnce.Do(func() { nfs.SetLogger(quietLogger{nfs.Log}) })
	l, err := net.Listen("tcp", net.JoinHostPort(Host, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("nfstest: listen: %w", err)
	}
	s := &Server{
		Dir:  abs,
		Port: l.Addr().(*net.TCPAddr).Port,
		ln:   &trackingListener{Listener: l, conns: map[net.Conn]struct{}{}},
		done: make(chan struct{}),
	}
	base := statHandler{nfshelper.NewNullAuthHandler(changeFS{osfs.New(abs)}), abs}
	handler := nfshelper.NewCachingHandler(base, handleCacheSize)
	go func() {
		defer close(s.done)
		_ = nfs.Serve(s.ln, handler)
	}()
	return s, nil
}

// Addr returns the server's "127.0.0.1:port".
func (s *Server) Addr() string {
	return net.JoinHostPort(Host, strconv.Itoa(s.Port))
}

// MountSource returns the mount(2) source for the export: "127.0.0.1:/".
func (s *Server) MountSource() string {
	return Host + ":/"
}

// MountData returns the mount(2) data for fstype "nfs": NFSv3 over TCP with
// both services on s.Port, and no NLM locking (there is no lockd/statd).
func (s *Server) MountData() string {
	return fmt.Sprintf("addr=%s,vers=3,nolock,proto=tcp,port=%d,mountport=%d,mountproto=tcp", Host, s.Port, s.Port)
}

// Close stops the server: it closes the listener and every open connection,
// so a mounted client sees the server die, and waits until the accept loop
// has ended and the port is free again. It is safe to call more than once.
func (s *Server) Close() error {
	err := s.ln.closeAll()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		return errors.New("nfstest: server did not stop within 10s")
	}
	return err
}

var quietOnce sync.Once

// quietLogger drops go-nfs's "[ERROR] No handler for 100227.0": the kernel
// client probing for NFS_ACL, which the server does not offer and which is
// harmless, but reads like a failure in test logs. Everything else passes.
type quietLogger struct {
	nfs.Logger
}

func (l quietLogger) Errorf(format string, args ...interface{}) {
	if format == "No handler for %d.%d" && len(args) == 2 && fmt.Sprint(args[0]) == "100227" {
		return
	}
	l.Logger.Errorf(format, args...)
}

// trackingListener remembers accepted connections so that Close can cut them;
// go-nfs itself only stops accepting.
type trackingListener struct {
	net.Listener
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, l: l}
	l.conns[tc] = struct{}{}
	return tc, nil
}

func (l *trackingListener) closeAll() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	conns := l.conns
	l.conns = map[net.Conn]struct{}{}
	l.mu.Unlock()

	err := l.Listener.Close()
	for c := range conns {
		c.(*trackedConn).Conn.Close()
	}
	return err
}

type trackedConn struct {
	net.Conn
	l *trackingListener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// changeFS adds billy.Change to osfs (which lacks it) so that SETATTR works:
// without it chmod, chown, truncate-with-times and touch fail on the client.
type changeFS struct {
	billy.Filesystem
}

func (fs changeFS) path(name string) string { return fs.Join(fs.Root(), name) }

func (fs changeFS) Chmod(name string, mode os.FileMode) error {
	return os.Chmod(fs.path(name), mode)
}

func (fs changeFS) Lchown(name string, uid, gid int) error {
	return os.Lchown(fs.path(name), uid, gid)
}

func (fs changeFS) Chown(name string, uid, gid int) error {
	return os.Chown(fs.path(name), uid, gid)
}

func (fs changeFS) Chtimes(name string, atime, mtime time.Time) error {
	return os.Chtimes(fs.path(name), atime, mtime)
}

// statHandler reports the served directory's real sizes (go-nfs's default
// handler reports zeros), so df and statfs on the mount mean something.
type statHandler struct {
	nfs.Handler
	dir string
}

func (h statHandler) FSStat(_ context.Context, _ billy.Filesystem, s *nfs.FSStat) error {
	var st unix.Statfs_t
	if err := unix.Statfs(h.dir, &st); err != nil {
		return err
	}
	bs := uint64(st.Bsize)
	s.TotalSize, s.FreeSize, s.AvailableSize = st.Blocks*bs, st.Bfree*bs, st.Bavail*bs
	s.TotalFiles, s.FreeFiles, s.AvailableFiles = st.Files, st.Ffree, st.Ffree
	return nil
}
