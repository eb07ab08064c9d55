package guestdocker

import (
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

// The Swarm's network, which exists only inside the guest: a bridge in the
// guest's root namespace, where the kernel NFS server serves, and one
// network namespace per node joined to it by a veth pair. Not 10.0.0.0/24:
// Swarm's default ingress subnet.
const (
	// BridgeAddr is the root namespace's address on the bridge: the NFS
	// server as the nodes reach it.
	BridgeAddr = "192.168.77.1"
	// Subnet is the nodes' subnet, for exports.
	Subnet = "192.168.77.0/24"

	bridge  = "hfbr0"
	nsTools = "/vmtest/docker/bin"
)

// Swarm is two dockerd nodes, each in its own network, mount and UTS
// namespace with its own holdfast, joined in one Swarm with Nodes[0] the
// manager.
type Swarm struct {
	Nodes [2]*Node
	// holders keep each node's namespaces alive; the node's processes
	// enter them with nsenter.
	holders []*exec.Cmd
	dirs    []string
	netns   []string
}

// SwarmNode is the name of the i-th node (0 or 1): its hostname, its
// network namespace and its Swarm node name.
func SwarmNode(i int) string { return fmt.Sprintf("hfn%d", i+1) }

// NodeAddr is the i-th node's address.
func NodeAddr(i int) string { return fmt.Sprintf("192.168.77.%d", i+2) }

func tool(name string) string { return filepath.Join(nsTools, name) }

// StartSwarm builds the network, starts both nodes (in parallel) with
// holdfast at the default socket (--scope local) and a second holdfast,
// holdfast-global, with --scope global, imports [Image] on each, and
// joins them in a Swarm. Everything goes away when t ends.
func StartSwarm(t testing.TB) *Swarm {
	t.Helper()
	Require(t)
	if _, err := os.Stat(tool("ip")); err != nil {
		t.Fatalf("the guest has no %s: vmtest/docker.sh packs iproute2's ip, unshare and nsenter for the Swarm", tool("ip"))
	}
	t0 := time.Now()
	if err := Prepare(); err != nil {
		t.Fatal(err)
	}
	s := &Swarm{}
	t.Cleanup(func() {
		if err := s.teardown(); err != nil {
			t.Errorf("tearing the Swarm down: %v", err)
		}
	})
	if err := s.network(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range s.Nodes {
		n, err := s.node(i)
		if err != nil {
			t.Fatal(err)
		}
		s.Nodes[i] = n
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.startNode(n, i) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("two nodes answering in %v", time.Since(t0).Round(time.Millisecond))
	m, w := s.Nodes[0], s.Nodes[1]
	m.Must(t, "swarm", "init", "--advertise-addr", NodeAddr(0), "--listen-addr", NodeAddr(0)+":2377")
	token := m.Must(t, "swarm", "join-token", "-q", "worker")
	w.Must(t, "swarm", "join", "--token", token, "--advertise-addr", NodeAddr(1), "--listen-addr", NodeAddr(1)+":2377", NodeAddr(0)+":2377")
	fmt.Fprintf(os.Stderr, "guestdocker: a two-node Swarm in %v\n", time.Since(t0).Round(time.Millisecond))
	return s
}

func (s *Swarm) network() error {
	ip := tool("ip")
	cmds := [][]string{
		{ip, "link", "add", bridge, "type", "bridge"},
		{ip, "addr", "add", BridgeAddr + "/24", "dev", bridge},
		{ip, "link", "set", bridge, "up"},
	}
	for i := range s.Nodes {
		ns, veth := SwarmNode(i), fmt.Sprintf("hfv%d", i+1)
		s.netns = append(s.netns, ns)
		cmds = append(cmds,
			[]string{ip, "netns", "add", ns},
			[]string{ip, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{ip, "link", "set", veth, "master", bridge, "up"},
			[]string{ip, "-n", ns, "addr", "add", NodeAddr(i) + "/24", "dev", "eth0"},
			[]string{ip, "-n", ns, "link", "set", "eth0", "up"},
			[]string{ip, "-n", ns, "link", "set", "lo", "up"})
	}
	for _, c := range cmds {
		if err := guest.Run(c[0], c[1:]...); err != nil {
			return fmt.Errorf("the Swarm's network: %w", err)
		}
	}
	return nil
}

// node starts the i-th node's namespace holder: ip netns exec gives it the
// network namespace and a mount namespace of its own (slave to the root
// one, so the NFS server's filesystems stay visible), unshare a UTS
// namespace for its hostname; in it cgroup2 is mounted again and a private
// tmpfs on /run/docker/plugins lets each dockerd find its own holdfast.
func (s *Swarm) node(i int) (*Node, error) {
	name := SwarmNode(i)
	dir, err := os.MkdirTemp("", "swarm-"+name+"-")
	if err != nil {
		return nil, err
	}
	s.dirs = append(s.dirs, dir)
	if err := os.MkdirAll("/run/docker/plugins", 0o755); err != nil {
		return nil, err
	}
	ready := filepath.Join(dir, "ready")
	script := fmt.Sprintf("hostname %s && mount -t cgroup2 cgroup2 /sys/fs/cgroup && mount -t tmpfs -o mode=755 tmpfs /run/docker/plugins && touch %s && exec sleep 1000000", name, ready)
	c := exec.Command(tool("ip"), "netns", "exec", name, tool("unshare"), "-u", "sh", "-c", script)
	c.Env = Env()
	out, err := os.Create(filepath.Join(dir, "holder.log"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		return nil, err
	}
	s.holders = append(s.holders, c)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("node %s's namespaces not ready in 20 s: %s", name, tail(out.Name()))
		}
	}
	prefix := []string{tool("nsenter"), "-t", fmt.Sprint(c.Process.Pid), "-n", "-m", "-u", "--"}
	return NewNode(name, prefix, dir, "local"), nil
}

// startNode starts the node's two holdfasts and its dockerd and imports
// the image.
func (s *Swarm) startNode(n *Node, i int) error {
	if err := n.StartHoldfast(); err != nil {
		return err
	}
	g := NewNode(n.Name+"-global", n.prefix, n.dir+"/global", "global")
	g.args[1] = "/run/docker/plugins/holdfast-global.sock"
	if err := os.MkdirAll(n.dir+"/global", 0o755); err != nil {
		return err
	}
	if err := g.StartHoldfast(); err != nil {
		return err
	}
	n.Global = g
	if err := n.StartDockerd("--data-root", n.dir+"/docker", "--exec-root", n.dir+"/exec",
		"--pidfile", n.dir+"/docker.pid", "--cgroup-parent", "/"+n.Name); err != nil {
		return err
	}
	if _, err := n.Docker(context.Background(), "import", filepath.Join(Stage, "busybox.tar"), Image); err != nil {
		return err
	}
	// dockerd tells Swarm only of the legacy plugins it has used: until
	// then every task waits, "no suitable node (missing plugin on 2
	// nodes)". volume ls looks up every socket in /run/docker/plugins.
	_, err := n.Docker(context.Background(), "volume", "ls")
	return err
}

// teardown leaves the Swarm, stops every daemon, and removes the
// namespaces, the network and the nodes' directories; it reports what it
// could not undo.
func (s *Swarm) teardown() error {
	var errs []string
	note := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := len(s.Nodes) - 1; i >= 0; i-- {
		if n := s.Nodes[i]; n != nil && n.dockerd != nil {
			n.Docker(ctx, "swarm", "leave", "--force")
		}
	}
	for _, n := range s.Nodes {
		if n == nil {
			continue
		}
		note(n.Stop())
		if n.Global != nil {
			note(n.Global.Stop())
		}
	}
	for _, c := range s.holders {
		c.Process.Kill()
		c.Wait()
	}
	for _, ns := range s.netns {
		note(guest.Run(tool("ip"), "netns", "del", ns))
	}
	if len(s.netns) > 0 {
		note(guest.Run(tool("ip"), "link", "del", bridge))
	}
	for _, d := range s.dirs {
		note(removeAll(d))
	}
	if errs != nil {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// removeAll removes dir after unmounting what is left under it in this
// namespace (dockerd's overlay and shm mounts live in the nodes' own).
func removeAll(dir string) error {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			unix.Unmount(f[4], unix.MNT_DETACH)
		}
	}
	return os.RemoveAll(dir)
}
