// Package guestdocker runs dockerd inside the qemu guest that make vmtest
// boots, with holdfast as its legacy plugin, for tests that drive holdfast
// through the docker CLI against the guest's kernel NFS server
// (internal/nfsd).
//
// vmtest/docker.sh packs the libraries and modules into the initramfs and
// shares Debian's docker.io binaries with the guest over 9p; vmtest/run.sh
// (VMTEST_DOCKER=1) puts the holdfast binary at [Holdfast] and moves the
// guest's root to a tmpfs, which runc needs. The first [Start] in a guest
// starts holdfast and dockerd (overlay2 on the tmpfs root, cgroup v2, no
// bridge and no iptables: containers run with --network none) and imports a
// busybox image as [Image].
package guestdocker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/holdfast/holdfast/internal/guest"
)

const (
	// Holdfast is the holdfast binary in the guest.
	Holdfast = "/vmtest/holdfast"
	// Stage is where the 9p share with Docker's binaries is mounted.
	Stage = "/stage"
	// Image is the busybox image every test container runs.
	Image = "busybox:vmtest"
	// NFSTimeout is holdfast's --nfs-timeout in the guest.
	NFSTimeout = 5 * time.Second

	modulesList = "/vmtest/docker/modules"
)

// Node is one dockerd with its own holdfast.
type Node struct {
	// Name is the node's name, e.g. "guest".
	Name string
	// Host is dockerd's socket as -H takes it.
	Host string
	// HoldfastLog and DockerdLog are where the daemons write.
	HoldfastLog, DockerdLog string
	// holdfast is the running plugin, to kill and restart.
	holdfast *exec.Cmd
	// holdfastDone and dockerdDone close when the process exits.
	holdfastDone, dockerdDone chan struct{}
	dockerd                   *exec.Cmd
	args                      []string
	prefix                    []string // nsenter into the node's namespaces
	dir                       string
	mu                        sync.Mutex
	// Global is a Swarm node's second holdfast, with --scope global, at
	// the socket holdfast-global.sock (used as --driver holdfast-global).
	Global *Node
}

var (
	once    sync.Once
	node    *Node
	nodeErr error
)

// Require skips t unless it runs in the guest with dockerd packed in.
func Require(t testing.TB) {
	t.Helper()
	guest.Require(t, "NFS client (and the guest runs dockerd)")
	for _, p := range []string{modulesList, Holdfast} {
		if _, err := os.Stat(p); err != nil {
			t.Skip("the guest has no dockerd: " + p + " is missing (vmtest/build.sh packs it when VMTEST_PKGS has ./vmtest/docker)")
		}
	}
}

// Start returns the guest's dockerd node, starting it on the first call.
func Start(t testing.TB) *Node {
	t.Helper()
	Require(t)
	once.Do(func() { node, nodeErr = startNode() })
	if nodeErr != nil {
		t.Fatalf("starting dockerd in the guest: %v", nodeErr)
	}
	return node
}

// Prepare loads the modules and mounts the 9p share and cgroup2; done
// once per guest, by Start and by the Swarm set-up.
func Prepare() error {
	if err := guest.LoadModules(modulesList); err != nil {
		return err
	}
	// The kernel calls /sbin/modprobe for ext4's crc32c and the like.
	for _, m := range []string{"/usr/sbin/modprobe", "/sbin/modprobe", "/usr/bin/modprobe", "/bin/modprobe"} {
		if _, err := os.Stat(m); err == nil {
			os.WriteFile("/proc/sys/kernel/modprobe", []byte(m), 0)
			break
		}
	}
	if !guest.Mounted(Stage) {
		if err := os.MkdirAll(Stage, 0o755); err != nil {
			return err
		}
		if err := unix.Mount("stage", Stage, "9p", unix.MS_RDONLY, "trans=virtio,version=9p2000.L,msize=512000,cache=loose"); err != nil {
			return fmt.Errorf("mount the 9p share on %s (vmtest/run.sh shares it with VMTEST_DOCKER=1): %w", Stage, err)
		}
	}
	if !guest.Mounted("/sys/fs/cgroup") {
		if err := unix.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, ""); err != nil {
			return fmt.Errorf("mount cgroup2: %w", err)
		}
	}
	if _, err := os.Lstat("/var/run"); os.IsNotExist(err) {
		os.MkdirAll("/var", 0o755)
		os.Symlink("/run", "/var/run")
	}
	// exec.Command looks names up in this process's PATH, not the child's.
	os.Setenv("PATH", Stage+"/bin:"+os.Getenv("PATH"))
	cli := "/tmp/docker-cli/cli-plugins"
	os.MkdirAll(cli, 0o755)
	if _, err := os.Stat(filepath.Join(Stage, "docker-compose")); err == nil {
		os.Symlink(filepath.Join(Stage, "docker-compose"), filepath.Join(cli, "docker-compose"))
	}
	return nil
}

// Env is the environment for dockerd and the CLI.
func Env() []string {
	return append(os.Environ(), "PATH="+Stage+"/bin:/usr/sbin:/usr/bin:/sbin:/bin", "DOCKER_CONFIG=/tmp/docker-cli")
}

// HasCompose reports whether the share has docker-compose (v2).
func HasCompose() bool {
	_, err := os.Stat(filepath.Join(Stage, "docker-compose"))
	return err == nil
}

func startNode() (*Node, error) {
	t0 := time.Now()
	if err := Prepare(); err != nil {
		return nil, err
	}
	n := &Node{
		Name: "guest", Host: "unix:///run/docker.sock",
		HoldfastLog: "/tmp/holdfast.log", DockerdLog: "/tmp/dockerd.log",
		args: []string{"--socket", "/run/docker/plugins/holdfast.sock", "--root", "/var/lib/holdfast",
			"--key-dir", "/etc/holdfast/keys", "--nfs-timeout", NFSTimeout.String(), "--log-level", "debug"},
	}
	if err := n.StartHoldfast(); err != nil {
		return nil, err
	}
	if err := n.startDockerd(nil); err != nil {
		return nil, err
	}
	if _, err := n.Docker(context.Background(), "import", filepath.Join(Stage, "busybox.tar"), Image); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "guestdocker: dockerd with holdfast answering, %s imported, in %v\n", Image, time.Since(t0).Round(time.Millisecond))
	return n, nil
}

// NewNode describes a node whose commands run under prefix (e.g. ip netns
// exec n1 ...), with its own paths under dir; StartNode starts it.
func NewNode(name string, prefix []string, dir string, scope string) *Node {
	return &Node{
		Name: name, Host: "unix://" + dir + "/docker.sock", prefix: prefix, dir: dir,
		HoldfastLog: dir + "/holdfast.log", DockerdLog: dir + "/dockerd.log",
		args: []string{"--socket", "/run/docker/plugins/holdfast.sock", "--root", dir + "/holdfast",
			"--key-dir", dir + "/keys", "--nfs-timeout", NFSTimeout.String(), "--log-level", "debug", "--scope", scope},
	}
}

func (n *Node) command(name string, args ...string) *exec.Cmd {
	full := append(append(append([]string{}, n.prefix...), name), args...)
	c := exec.Command(full[0], full[1:]...)
	c.Env = Env()
	return c
}

// StartHoldfast starts the node's holdfast and waits for its socket.
func (n *Node) StartHoldfast() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := os.OpenFile(n.HoldfastLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	sock := n.args[1]
	// A killed holdfast leaves its socket: wait for the new one.
	if err := n.command("rm", "-f", sock).Run(); err != nil {
		return fmt.Errorf("remove holdfast's old socket %s: %w", sock, err)
	}
	c := n.command(Holdfast, n.args...)
	c.Stdout, c.Stderr = f, f
	if err := c.Start(); err != nil {
		return err
	}
	n.holdfast, n.holdfastDone = c, waitFor(c)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if n.prefix != nil && n.command("test", "-S", sock).Run() == nil || n.prefix == nil && socketUp(sock) {
			return nil
		}
	}
	return fmt.Errorf("holdfast made no socket %s in 30 s; its log:\n%s", sock, tail(n.HoldfastLog))
}

func socketUp(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// KillHoldfast kills the node's holdfast with SIGKILL.
func (n *Node) KillHoldfast() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.holdfast == nil || n.holdfast.Process == nil {
		return fmt.Errorf("holdfast is not running")
	}
	if err := n.holdfast.Process.Kill(); err != nil {
		return err
	}
	<-n.holdfastDone
	return nil
}

// waitFor reaps c and returns a channel closed when it has exited.
func waitFor(c *exec.Cmd) chan struct{} {
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	return done
}

// Stop stops the node's dockerd, then its holdfast, each with SIGTERM and
// after 30 s SIGKILL, and waits for them to exit.
func (n *Node) Stop() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []string
	for _, p := range []struct {
		name string
		c    *exec.Cmd
		done chan struct{}
	}{{"dockerd", n.dockerd, n.dockerdDone}, {"holdfast", n.holdfast, n.holdfastDone}} {
		if p.c == nil || p.c.Process == nil {
			continue
		}
		p.c.Process.Signal(unix.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.c.Process.Kill()
			<-p.done
			errs = append(errs, p.name+" did not stop within 30 s of SIGTERM")
		}
	}
	if errs != nil {
		return fmt.Errorf("node %s: %s", n.Name, strings.Join(errs, "; "))
	}
	return nil
}

func (n *Node) startDockerd(extra []string) error {
	f, err := os.OpenFile(n.DockerdLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	args := append([]string{"--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false",
		"--storage-driver=overlay2", "-H", n.Host}, extra...)
	if n.prefix == nil {
		args = append(args, "--data-root", "/var/lib/docker", "--exec-root", "/run/docker")
	}
	c := n.command("dockerd", args...)
	c.Stdout, c.Stderr = f, f
	if err := c.Start(); err != nil {
		return err
	}
	n.dockerd, n.dockerdDone = c, waitFor(c)
	return n.waitDockerd(90 * time.Second)
}

// StartDockerd starts the node's dockerd with extra flags.
func (n *Node) StartDockerd(extra ...string) error { return n.startDockerd(extra) }

func (n *Node) waitDockerd(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := n.Docker(ctx, "version", "--format", "{{.Server.Version}}")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd did not answer within %v: %v; its log:\n%s", within, err, tail(n.DockerdLog))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// Docker runs the docker CLI against the node and returns its stdout; the
// error has stderr.
func (n *Node) Docker(ctx context.Context, args ...string) (string, error) {
	full := append(append(append([]string{}, n.prefix...), "docker", "-H", n.Host), args...)
	c := exec.CommandContext(ctx, full[0], full[1:]...)
	c.Env = Env()
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	if err != nil {
		return out.String(), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// Must runs the docker CLI and fails t on an error.
func (n *Node) Must(t testing.TB, args ...string) string {
	t.Helper()
	start := time.Now()
	out, err := n.Docker(context.Background(), args...)
	if err != nil {
		t.Fatalf("%v\nholdfast log:\n%s", err, tail(n.HoldfastLog))
	}
	t.Logf("docker %s (%v)", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return strings.TrimSpace(out)
}

// tail is the end of a log file, for messages.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Tail is the end of the file at path.
func Tail(path string) string { return tail(path) }
