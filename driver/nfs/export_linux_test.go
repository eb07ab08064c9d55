package nfs

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// fakeStatfs answers statfs calls only when the test lets one through.
type fakeStatfs struct {
	mu    sync.Mutex
	calls int
	gate  chan error
}

func (f *fakeStatfs) statfs(_ string, st *unix.Statfs_t) error {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	err := <-f.gate
	st.Bsize, st.Frsize, st.Blocks, st.Bfree, st.Bavail = 4096, 4096, 1000, 400, 300
	return err
}

func (f *fakeStatfs) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// settle waits until no statfs is in flight for target.
func settle(t *testing.T, s *exportStats, target string) {
	t.Helper()
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		f := s.figs[target]
		return f != nil && !f.asking
	}, 10*time.Second, time.Millisecond)
}

func TestExportStatsNeverWaitForTheServer(t *testing.T) {
	fake := &fakeStatfs{gate: make(chan error)}
	now := time.Unix(1_000_000, 0)
	s := newExportStats()
	s.statfs = fake.statfs
	s.now = func() time.Time { return now }

	// The server does not answer: Status returns at once, without figures.
	s.refresh("/mp")
	st := map[string]any{}
	s.status("/mp", st)
	assert.NotContains(t, st, statExportSize)
	assert.NotContains(t, st, statExportErr, "not yet overdue")
	require.Eventually(t, func() bool { return fake.callCount() == 1 }, 10*time.Second, time.Millisecond)
	s.status("/mp", map[string]any{})
	s.refresh("/mp")
	assert.Equal(t, 1, fake.callCount(), "at most one statfs in flight per mountpoint")

	// Still no answer after exportFresh: Status says so.
	now = now.Add(exportFresh + time.Second)
	st = map[string]any{}
	s.status("/mp", st)
	assert.Contains(t, st[statExportErr], "has not answered statfs for 21s")

	// The answer arrives: the whole export's figures, with their age.
	fake.gate <- nil
	settle(t, s, "/mp")
	now = now.Add(3 * time.Second)
	st = map[string]any{}
	s.status("/mp", st)
	assert.Equal(t, uint64(4096000), st[statExportSize])
	assert.Equal(t, uint64(600*4096), st[statExportUsed])
	assert.Equal(t, uint64(300*4096), st[statExportAvail])
	assert.Equal(t, int64(3), st[statExportAge])
	assert.NotContains(t, st, statExportErr)
	assert.Equal(t, 1, fake.callCount(), "fresh figures are not asked again")

	// Stale figures are kept while a new statfs runs, and a failure is shown.
	now = now.Add(exportFresh)
	s.refresh("/mp")
	require.Eventually(t, func() bool { return fake.callCount() == 2 }, 10*time.Second, time.Millisecond)
	fake.gate <- errors.New("stale file handle")
	settle(t, s, "/mp")
	st = map[string]any{}
	s.status("/mp", st)
	assert.Equal(t, uint64(4096000), st[statExportSize], "the last figures stay")
	assert.Equal(t, "statfs: stale file handle", st[statExportErr])

	// Unmount forgets them; a statfs that answers after that changes nothing.
	s.forget("/mp")
	s.mu.Lock()
	assert.Empty(t, s.figs)
	s.mu.Unlock()
}

// An Unmount waits for holdfast's own statfs, which holds the mount (umount2
// would find it busy and detach it lazily), and none starts meanwhile.
func TestExportStatsQuiesceBeforeUnmount(t *testing.T) {
	fake := &fakeStatfs{gate: make(chan error)}
	s := newExportStats()
	s.statfs = fake.statfs
	s.refresh("/mp")
	require.Eventually(t, func() bool { return fake.callCount() == 1 }, 10*time.Second, time.Millisecond)

	done := make(chan struct{})
	go func() { assert.False(t, s.quiesce("/mp", time.Hour)); close(done) }()
	select {
	case <-done:
		t.Fatal("quiesce returned while holdfast's statfs still held the mount")
	case <-time.After(100 * time.Millisecond):
	}
	fake.gate <- nil
	<-done

	s.now = func() time.Time { return time.Now().Add(time.Hour) } // stale
	s.refresh("/mp")
	s.status("/mp", map[string]any{})
	assert.Equal(t, 1, fake.callCount(), "no statfs while the mount is going away")

	s.resume("/mp") // the unmount failed: figures again
	s.refresh("/mp")
	require.Eventually(t, func() bool { return fake.callCount() == 2 }, 10*time.Second, time.Millisecond)
	fake.gate <- nil
	settle(t, s, "/mp")

	// A server that never answers: quiesce gives up after its wait.
	s.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	s.refresh("/mp")
	require.Eventually(t, func() bool { return fake.callCount() == 3 }, 10*time.Second, time.Millisecond)
	assert.True(t, s.quiesce("/mp", 10*time.Millisecond), "its statfs is stuck")
	fake.gate <- nil
}

func TestStatusOfUnmountedNFSHasNoExportFigures(t *testing.T) {
	b := New(nil, 0, nil)
	v := newVolume(t, b, map[string]string{"addr": "127.0.0.1", "device": ":/srv"})
	st := b.Status(v)
	assert.NotContains(t, st, statExportSize)
	assert.Equal(t, "/srv", st["export"])
}

// withoutExportFigures returns st without the export's figures, which
// appear whenever the background statfs has answered: for tests comparing
// the rest of a Status exactly.
func withoutExportFigures(st map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range st {
		if !strings.HasPrefix(k, "exportFilesystem") {
			out[k] = v
		}
	}
	return out
}
