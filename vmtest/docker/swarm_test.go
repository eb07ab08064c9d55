package docker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast/holdfast/internal/guestdocker"
	"github.com/holdfast/holdfast/internal/nfsd"
)

// stackYAML is a stack of two replicas, one per node, on the host network,
// each appending its node's hostname to /data/log every 0.5 s, /data a
// holdfast NFS volume of driver.
func stackYAML(driver, share string) string {
	return fmt.Sprintf(`version: "3.8"
services:
  app:
    image: %s
    command: ["sh", "-c", "while true; do echo $$NODE >>/data/log; sleep 0.5; done"]
    environment:
      NODE: "{{.Node.Hostname}}"
    volumes:
      - shared:/data
    networks: [hostnet]
    deploy:
      replicas: 2
      placement:
        max_replicas_per_node: 1
networks:
  hostnet:
    external: true
    name: host
volumes:
  shared:
    driver: %s
    driver_opts:
      type: nfs
      share: %s
`, guestdocker.Image, driver, share)
}

// deploy deploys the stack from the manager and waits until the file log
// on the server has lines from both nodes; it removes the stack, and the
// volume on each node, when t ends.
func deploy(t *testing.T, sw *guestdocker.Swarm, name, driver string, e nfsd.Export) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "stack.yaml")
	require.NoError(t, os.WriteFile(f, []byte(stackYAML(driver, guestdocker.BridgeAddr+":"+e.Dir)), 0o644))
	m := sw.Nodes[0]
	start := time.Now()
	m.Must(t, "stack", "deploy", "--resolve-image", "never", "-c", f, name)
	t.Cleanup(func() { removeStack(t, sw, name) })
	log := filepath.Join(e.Dir, "log")
	for !(countLines(log, guestdocker.SwarmNode(0)) > 0 && countLines(log, guestdocker.SwarmNode(1)) > 0) {
		if time.Since(start) > 90*time.Second {
			ps, _ := m.Docker(context.Background(), "service", "ps", "--no-trunc", name+"_app")
			t.Fatalf("both replicas did not write to %s within 90 s; service ps:\n%s\nmanager's holdfast:\n%s\nworker's holdfast:\n%s",
				log, ps, guestdocker.Tail(m.HoldfastLog), guestdocker.Tail(sw.Nodes[1].HoldfastLog))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("stack %s: both replicas writing %v after deploy", name, time.Since(start).Round(time.Millisecond))
}

// removeStack removes the stack, waits for its containers to go on both
// nodes, and removes its volume on each.
func removeStack(t *testing.T, sw *guestdocker.Swarm, name string) {
	ctx := context.Background()
	if _, err := sw.Nodes[0].Docker(ctx, "stack", "rm", name); err != nil {
		t.Errorf("stack rm %s: %v", name, err)
	}
	for _, n := range sw.Nodes {
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(300 * time.Millisecond) {
			out, err := n.Docker(ctx, "ps", "-aq", "--filter", "label=com.docker.stack.namespace="+name)
			if err == nil && strings.TrimSpace(out) == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("node %s: stack %s's containers still there a minute after stack rm: %q %v", n.Name, name, out, err)
				break
			}
		}
		if _, err := n.Docker(ctx, "volume", "rm", "-f", name+"_shared"); err != nil {
			t.Errorf("node %s: %v", n.Name, err)
		}
	}
}

// countLines counts the lines of the file that are word.
func countLines(path, word string) int {
	b, _ := os.ReadFile(path)
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if l == word {
			n++
		}
	}
	return n
}

// task is the id of the stack's container on node n.
func task(t *testing.T, n *guestdocker.Node, stack string) string {
	t.Helper()
	id := n.Must(t, "ps", "-q", "--filter", "label=com.docker.stack.namespace="+stack)
	require.Len(t, strings.Fields(id), 1, "one task of %s on node %s", stack, n.Name)
	return id
}

// countIn counts word's lines in /data/log as the container sees them.
func countIn(t *testing.T, n *guestdocker.Node, id, word string) int {
	t.Helper()
	out := n.Must(t, "exec", id, "grep", "-c", "-x", word, "/data/log")
	var c int
	_, err := fmt.Sscan(out, &c)
	require.NoError(t, err, out)
	return c
}

// nfsMountsHere lists this (the root) namespace's NFS mounts of dir.
func nfsMountsHere(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var ms []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, " - nfs") && strings.Contains(l, dir) {
			ms = append(ms, l)
		}
	}
	return ms
}

// A two-node Swarm in the guest: each node a dockerd with its own holdfast
// in its own namespaces, a stack whose two replicas, one per node, share
// one holdfast NFS volume from the guest's kernel server.
func TestSwarmTwoNodes(t *testing.T) {
	guestdocker.Require(t)
	srv := nfsd.Start(t)
	t0 := time.Now()
	sw := guestdocker.StartSwarm(t)
	m, w := sw.Nodes[0], sw.Nodes[1]
	e := srv.ExportTo(t, nfsd.Ext4, guestdocker.Subnet, "")
	deploy(t, sw, "demo", "holdfast", e)

	t.Run("each replica sees the other's writes", func(t *testing.T) {
		for i, n := range sw.Nodes {
			id := task(t, n, "demo")
			other := guestdocker.SwarmNode(1 - i)
			assert.Positive(t, countIn(t, n, id, other), "the task on %s reads %s's lines", n.Name, other)
			st := n.Must(t, "volume", "inspect", "-f", "{{.Scope}} {{.Status.mounted}} {{.Status.leases}} {{.Status.version}}", "demo_shared")
			assert.Equal(t, "local true 1 4.2", st, "node %s's own holdfast mounted the volume for its task", n.Name)
		}
		assert.Empty(t, nfsMountsHere(e.Dir), "the nodes' mounts live in their own namespaces")
	})

	t.Run("a node's holdfast killed and restarted while its task runs", func(t *testing.T) {
		id := task(t, w, "demo")
		log := filepath.Join(e.Dir, "log")
		require.NoError(t, w.KillHoldfast())
		before := countLines(log, w.Name)
		time.Sleep(2 * time.Second)
		assert.Greater(t, countLines(log, w.Name), before, "the task writes while its node's holdfast is dead")
		require.NoError(t, w.StartHoldfast())
		assert.Contains(t, strings.Fields(w.Must(t, "volume", "ls", "-q")), "demo_shared")
		assert.Equal(t, "true 1", w.Must(t, "volume", "inspect", "-f", "{{.Status.mounted}} {{.Status.leases}}", "demo_shared"),
			"the restarted holdfast adopted the mount and its lease")
		mine, theirs := countIn(t, w, id, w.Name), countIn(t, w, id, m.Name)
		time.Sleep(2 * time.Second)
		assert.Greater(t, countIn(t, w, id, w.Name), mine, "the task keeps writing")
		assert.Greater(t, countIn(t, w, id, m.Name), theirs, "and keeps seeing the manager's task")
	})

	t.Run("scope global", func(t *testing.T) { swarmScopeGlobal(t, sw, srv) })
	t.Logf("the whole two-node Swarm test took %v", time.Since(t0).Round(time.Millisecond))
}

// What --scope global changes for such a stack (README, "Swarm").
func swarmScopeGlobal(t *testing.T, sw *guestdocker.Swarm, srv *nfsd.Server) {
	m, w := sw.Nodes[0], sw.Nodes[1]
	e := srv.ExportTo(t, nfsd.Ext4, guestdocker.Subnet, "")
	deploy(t, sw, "gdemo", "holdfast-global", e)
	for _, n := range sw.Nodes {
		assert.Equal(t, "global true 1", n.Must(t, "volume", "inspect", "-f", "{{.Scope}} {{.Status.mounted}} {{.Status.leases}}", "gdemo_shared"),
			"node %s: Docker reports the scope; the node's own holdfast-global still created and mounted the volume", n.Name)
		t.Logf("node %s: volume ls: %s", n.Name, n.Must(t, "volume", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}"))
	}
	// A volume created by hand on one node.
	share := "share=" + guestdocker.BridgeAddr + ":" + e.Dir
	m.Must(t, "volume", "create", "--driver", "holdfast-global", "--opt", "type=nfs", "--opt", share, "onlyhere")
	t.Cleanup(func() { m.Docker(context.Background(), "volume", "rm", "-f", "onlyhere") })
	assert.NotContains(t, strings.Fields(w.Must(t, "volume", "ls", "-q")), "onlyhere", "the other node's holdfast has no record of it")
	_, err := w.Docker(context.Background(), "volume", "inspect", "onlyhere")
	assert.Error(t, err, "inspect on the other node")
	t.Logf("inspect on the other node: %v", err)
	// rm on one node: in use there; once free, gone there only.
	_, err = m.Docker(context.Background(), "volume", "rm", "gdemo_shared")
	assert.ErrorContains(t, err, "in use", "rm while the node's task uses it")
	m.Must(t, "volume", "rm", "onlyhere")
	assert.NotContains(t, strings.Fields(m.Must(t, "volume", "ls", "-q")), "onlyhere")
	_, err = os.Stat(filepath.Join(e.Dir, "log"))
	assert.NoError(t, err, "removing an NFS volume leaves the data on the server")
}
