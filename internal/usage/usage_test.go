package usage

import (
	"fmt"
	"os"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitFor polls cond until it holds; a generous deadline turns a hang into
// a failure, it measures nothing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gate holds walks in their pause hook until opened, and counts them.
type gate struct {
	mu      sync.Mutex
	open    chan struct{}
	running map[string]int // walks held now, by the directory's volume
	most    int            // most walks held at once
	now     int
}

func newGate() *gate { return &gate{open: make(chan struct{}), running: map[string]int{}} }

// pause is Config.pause: it holds the walk of a volume root (the first
// directory a walk reads) until the gate opens.
func (g *gate) pause(dir string) {
	if !strings.HasPrefix(path.Base(dir), "vol") {
		return
	}
	g.mu.Lock()
	g.running[dir]++
	g.now++
	g.most = max(g.most, g.now)
	g.mu.Unlock()
	<-g.open
	g.mu.Lock()
	g.now--
	g.mu.Unlock()
}

func (g *gate) held() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.now
}

func TestReadNeverWaitsForAWalk(t *testing.T) {
	root := tmpfsDir(t)
	vol := root + "/vol1"
	writeFile(t, vol+"/a", mib)
	g := newGate()
	w := New(Config{Refresh: 10 * time.Millisecond, pause: g.pause})
	defer w.Close()
	defer close(g.open)

	// The first walk is held: every Read meanwhile answers at once, unmeasured.
	r := w.Read("v1", vol)
	assert.False(t, r.Measured)
	waitFor(t, "the first walk to start", func() bool { return g.held() == 1 })
	for range 100 {
		assert.False(t, w.Read("v1", vol).Measured)
	}
	g.open <- struct{}{} // let that one walk go
	waitFor(t, "a figure", func() bool { return w.Read("v1", vol).Measured })
	first := w.Read("v1", vol)
	assert.Equal(t, int64(mib), first.Bytes)

	// The next walk (Refresh is 10 ms) is held too: Reads answer the last
	// figure, older each time, never waiting.
	writeFile(t, vol+"/b", mib)
	waitFor(t, "the second walk to start", func() bool { return g.held() == 1 })
	a := w.Read("v1", vol)
	time.Sleep(20 * time.Millisecond)
	b := w.Read("v1", vol)
	assert.Equal(t, int64(mib), b.Bytes, "the figure of the walk that finished")
	assert.Greater(t, b.Age, a.Age)
	g.open <- struct{}{}
	waitFor(t, "the new figure", func() bool { return w.Read("v1", vol).Bytes == 2*mib })
}

func TestOneWalkPerVolumeAndParallelLimit(t *testing.T) {
	root := tmpfsDir(t)
	g := newGate()
	w := New(Config{Refresh: time.Millisecond, Parallel: 2, pause: g.pause})
	defer w.Close()
	const n = 5
	for i := range n {
		writeFile(t, fmt.Sprintf("%s/vol%d/f", root, i), (i+1)*4096)
		w.Read(fmt.Sprint("v", i), fmt.Sprintf("%s/vol%d", root, i))
	}
	waitFor(t, "two walks held", func() bool { return g.held() == 2 })
	// Keep asking while they are held: no third walk may start.
	for range 50 {
		for i := range n {
			w.Read(fmt.Sprint("v", i), fmt.Sprintf("%s/vol%d", root, i))
		}
		time.Sleep(time.Millisecond)
	}
	assert.Equal(t, 2, g.held())
	close(g.open)
	for i := range n {
		waitFor(t, fmt.Sprint("volume ", i, " measured"), func() bool {
			r := w.Read(fmt.Sprint("v", i), fmt.Sprintf("%s/vol%d", root, i))
			return r.Measured && r.Bytes == int64((i+1)*4096)
		})
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	assert.LessOrEqual(t, g.most, 2, "walks at once")
}

func TestForgetStopsTheWalk(t *testing.T) {
	root := tmpfsDir(t)
	vol := root + "/vol1"
	writeFile(t, vol+"/a", mib)
	g := newGate()
	w := New(Config{Refresh: time.Hour, pause: g.pause})
	defer w.Close()
	w.Read("v1", vol)
	waitFor(t, "the walk to start", func() bool { return g.held() == 1 })
	w.Forget("v1")
	close(g.open)
	w.mu.Lock()
	_, tracked := w.vols["v1"]
	w.mu.Unlock()
	assert.False(t, tracked)
	// The cancelled walk's figure is never published: the name is new again.
	waitFor(t, "the walk to end", func() bool { return g.held() == 0 })
	w.walks.Wait()
	assert.False(t, w.Read("v1", vol).Measured)
}

func TestIdleVolumesAreDropped(t *testing.T) {
	root := tmpfsDir(t)
	require.NoError(t, os.Mkdir(root+"/vol1", 0o755))
	w := New(Config{Refresh: 10 * time.Millisecond, Idle: 50 * time.Millisecond})
	defer w.Close()
	w.Read("v1", root+"/vol1")
	waitFor(t, "the idle volume to be dropped", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.vols) == 0
	})
}

func TestAnotherDirectoryStartsAgain(t *testing.T) {
	root := tmpfsDir(t)
	writeFile(t, root+"/vol1/a", mib)
	writeFile(t, root+"/vol2/a", 2*mib)
	w := New(Config{Refresh: time.Hour})
	defer w.Close()
	w.Read("v", root+"/vol1")
	waitFor(t, "a figure", func() bool { return w.Read("v", root+"/vol1").Measured })
	assert.False(t, w.Read("v", root+"/vol2").Measured, "a figure of the old directory")
	waitFor(t, "the new figure", func() bool { return w.Read("v", root+"/vol2").Bytes == 2*mib })
}
