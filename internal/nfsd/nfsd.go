// Package nfsd runs Linux's kernel NFS server inside the qemu guest that
// make vmtest boots, for tests that need a real server: NFSv3 with rpcbind,
// mountd and statd, NFSv4.0-4.2, exports that come and go, root_squash,
// and a server that restarts.
//
// vmtest/nfsd.sh packs the daemons (Debian's nfs-kernel-server, nfs-common,
// rpcbind, libwrap0) and the nfsd module into the guest; nothing starts
// them at boot. The first [Start] in a process starts the server, or finds
// it running when an earlier test binary in the same guest started it, and
// every test then makes its own exports with [Server.Export], which go away
// when the test ends, so tests stay independent of each other.
//
// The server serves two filesystems, an ext4 image at [Ext4] and a tmpfs at
// [Tmpfs], on 127.0.0.1, with a 10 s grace and lease time, the grace ended
// at once.
package nfsd

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/guest"
)

// Where the server's filesystems are mounted in the guest.
const (
	Ext4  = "/srv/ext4"
	Tmpfs = "/srv/tmpfs"
)

// Host is the address the server serves and tests mount from.
const Host = "127.0.0.1"

// modulesList is vmtest/nfsd.sh's list of modules to load, in order.
const modulesList = "/vmtest/nfsd/modules"

// DefaultExportOptions are the options of an export unless the test gives
// others: root may write, any source port.
const DefaultExportOptions = "rw,sync,no_subtree_check,no_root_squash,insecure"

// Server is the guest's kernel NFS server.
type Server struct{}

var (
	startOnce sync.Once
	startErr  error
	seq       atomic.Int64
	// mu serialises what changes the whole server (stop, start, versions)
	// against tests in parallel.
	mu sync.Mutex
)

// Require skips t unless it runs in the guest with the kernel NFS server's
// tools packed in.
func Require(t testing.TB) {
	t.Helper()
	guest.Require(t, "NFS client (and the guest has the kernel NFS server)")
	if _, err := os.Stat(modulesList); err != nil {
		t.Skip("the guest has no kernel NFS server: " + modulesList + " is missing (vmtest/run.sh packs it unless VMTEST_NFSD=0)")
	}
}

// Start returns the server, starting it on the first call in the guest.
// It fails t if the server cannot start.
func Start(t testing.TB) *Server {
	t.Helper()
	Require(t)
	startOnce.Do(func() { startErr = start() })
	if startErr != nil {
		t.Fatalf("starting the kernel NFS server: %v", startErr)
	}
	return &Server{}
}

// running reports whether nfsd has threads, that is, serves.
func running() bool {
	b, err := os.ReadFile("/proc/fs/nfsd/threads")
	if err != nil {
		return false
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n > 0
}

func start() error {
	if guest.Mounted("/proc/fs/nfsd") && running() {
		return nil // an earlier test binary in this guest started it
	}
	t0 := time.Now()
	if err := guest.LoadModules(modulesList); err != nil {
		return err
	}
	for _, d := range []string{"/var/lib/nfs/rpc_pipefs", "/var/lib/nfs/v4recovery", "/var/lib/nfs/sm", "/var/lib/nfs/sm.bak", "/run/rpcbind", Ext4, Tmpfs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if _, err := os.Lstat("/var/run"); os.IsNotExist(err) {
		os.Symlink("/run", "/var/run")
	}
	for _, f := range []string{"/var/lib/nfs/etab", "/var/lib/nfs/rmtab", "/var/lib/nfs/state", "/etc/exports"} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			return err
		}
	}
	os.Chown("/var/lib/nfs/sm", 101, 65534) // statd
	os.Chown("/var/lib/nfs/sm.bak", 101, 65534)
	os.Chown("/var/lib/nfs/state", 101, 65534)
	if !guest.Mounted(Ext4) {
		img := "/tmp/nfsd-ext4.img"
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			return err
		}
		if err := os.Truncate(img, 128<<20); err != nil {
			return err
		}
		// Full paths: the tools, not busybox's.
		if err := guest.Run("/usr/sbin/mke2fs", "-q", "-F", "-t", "ext4", img); err != nil {
			return err
		}
		if err := guest.Run("/usr/sbin/mount", "-o", "loop", img, Ext4); err != nil {
			return err
		}
	}
	if !guest.Mounted(Tmpfs) {
		if err := unix.Mount("tmpfs", Tmpfs, "tmpfs", 0, "size=64m,mode=755"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", Tmpfs, err)
		}
	}
	if !guest.Mounted("/proc/fs/nfsd") {
		if err := unix.Mount("nfsd", "/proc/fs/nfsd", "nfsd", 0, ""); err != nil {
			return fmt.Errorf("mount nfsd: %w", err)
		}
	}
	if !guest.Mounted("/var/lib/nfs/rpc_pipefs") {
		if err := unix.Mount("rpc_pipefs", "/var/lib/nfs/rpc_pipefs", "rpc_pipefs", 0, ""); err != nil {
			return fmt.Errorf("mount rpc_pipefs: %w", err)
		}
	}
	for _, c := range [][]string{
		{"/usr/sbin/rpcbind", "-w"},
		{"/usr/sbin/exportfs", "-ra"},
		{"/usr/sbin/rpc.mountd", "--no-udp"},
		{"/usr/sbin/rpc.statd", "--no-notify"},
	} {
		if err := guest.Run(c[0], c[1:]...); err != nil {
			return err
		}
	}
	if err := startThreads(nil, true); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "nfsd: the kernel NFS server serves %s and %s on %s (started in %v)\n", Ext4, Tmpfs, Host, time.Since(t0).Round(time.Millisecond))
	return nil
}

// startThreads starts nfsd's threads, with the versions in off turned off
// (e.g. "3"), and with endGrace ends the grace period so that NFSv4 opens
// need not wait for it.
func startThreads(off []string, endGrace bool) error {
	args := []string{"--no-udp", "--grace-time", "10", "--lease-time", "10"}
	for _, v := range off {
		args = append(args, "-N", v)
	}
	if err := guest.Run("/usr/sbin/rpc.nfsd", append(args, "8")...); err != nil {
		return err
	}
	if !running() {
		return fmt.Errorf("rpc.nfsd started no threads")
	}
	if !endGrace {
		return nil
	}
	return finishGrace()
}

func finishGrace() error {
	if err := os.WriteFile("/proc/fs/nfsd/v4_end_grace", []byte("Y"), 0); err != nil {
		return fmt.Errorf("ending the NFSv4 grace period: %w", err)
	}
	return nil
}

// Export is a directory the server exports, to 127.0.0.1 unless made by
// [Server.ExportTo].
type Export struct {
	// Dir is the directory on the server, which is also the export's path.
	Dir string
	// Options are its export options.
	Options string
	// Client is who may mount it, as exportfs takes it: Host or a subnet.
	Client string
}

// Share is the export as a holdfast share= option.
func (e Export) Share() string { return Host + ":" + e.Dir }

var unsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// Export makes a new empty directory on fs (Ext4 or Tmpfs) and exports it
// with options (DefaultExportOptions if empty); both go away when the test
// ends.
func (s *Server) Export(t testing.TB, fs, options string) Export {
	t.Helper()
	return s.ExportTo(t, fs, Host, options)
}

// ExportTo is [Server.Export] to client (an address or a subnet such as
// 192.168.77.0/24), for clients in other network namespaces.
func (s *Server) ExportTo(t testing.TB, fs, client, options string) Export {
	t.Helper()
	if options == "" {
		options = DefaultExportOptions
	}
	n := seq.Add(1)
	if fs == Tmpfs && !strings.Contains(options, "fsid=") {
		// No device number for the server to derive a file handle from.
		options += ",fsid=" + strconv.FormatInt(1000+n, 10)
	}
	dir := filepath.Join(fs, fmt.Sprintf("%s-%d", unsafe.ReplaceAllString(t.Name(), "_"), n))
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	e := Export{Dir: dir, Options: options, Client: client}
	if err := guest.Run("/usr/sbin/exportfs", "-o", options, client+":"+dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Unexport(e) // ignore an export the test removed already
		os.RemoveAll(dir)
	})
	return e
}

// Unexport removes the export, as exportfs -u does, and flushes the
// kernel's export cache so that clients see it at once.
func (s *Server) Unexport(e Export) error {
	if err := guest.Run("/usr/sbin/exportfs", "-u", e.client()+":"+e.Dir); err != nil {
		return err
	}
	return guest.Run("/usr/sbin/exportfs", "-f")
}

// Reexport exports e again with its options.
func (s *Server) Reexport(e Export) error {
	return guest.Run("/usr/sbin/exportfs", "-o", e.Options, e.client()+":"+e.Dir)
}

func (e Export) client() string {
	if e.Client == "" {
		return Host
	}
	return e.Client
}

// Stop stops nfsd's threads: the server no longer answers, as when it is
// down, but its exports and state stay.
func (s *Server) Stop() error {
	mu.Lock()
	defer mu.Unlock()
	return guest.Run("/usr/sbin/rpc.nfsd", "0")
}

// Resume starts nfsd's threads again after Stop, with every version, as
// a server coming back: NFSv4 clients reclaim their state in the grace
// period (10 s), which Resume does not end.
func (s *Server) Resume() error {
	mu.Lock()
	defer mu.Unlock()
	if running() {
		return nil
	}
	return startThreads(nil, false /* clients reclaim */)
}

// Without restarts the server with the versions given turned off (e.g.
// "3" for a server set up for NFSv4 only, "4.2"), until the test ends.
func (s *Server) Without(t testing.TB, versions ...string) {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if err := guest.Run("/usr/sbin/rpc.nfsd", "0"); err != nil {
		t.Fatal(err)
	}
	if err := startThreads(versions, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		err := guest.Run("/usr/sbin/rpc.nfsd", "0")
		if err == nil {
			err = startThreads(nil, true)
		}
		if err != nil {
			t.Errorf("restoring the server's versions: %v", err)
		}
	})
}

// Versions is what the server offers, from /proc/fs/nfsd/versions, e.g.
// "-2 +3 +4 +4.1 +4.2".
func (s *Server) Versions() string {
	b, _ := os.ReadFile("/proc/fs/nfsd/versions")
	return strings.TrimSpace(string(b))
}
