package nfs

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// exportFresh is how old the export's figures may grow before a Status or
// a sample asks the kernel again.
const exportFresh = 20 * time.Second

// statfsWait bounds how long an Unmount waits for holdfast's own statfs of
// the export to return before it unmounts (a quarter of --nfs-timeout when
// that is shorter).
const statfsWait = 5 * time.Second

// Status keys of the export's filesystem figures: the whole filesystem the
// server exports, shared with whatever else lives there, not the volume's
// own usage.
const (
	statExportSize  = "exportFilesystemSize"
	statExportUsed  = "exportFilesystemUsed"
	statExportAvail = "exportFilesystemAvailable"
	statExportAge   = "exportFilesystemAge" // seconds since the figures were taken
	statExportErr   = "exportFilesystemError"
)

// exportFigures is one statfs of a mounted export.
type exportFigures struct {
	at                 time.Time
	size, used, avail  uint64
	err                error
	asking             bool          // a statfs is in flight
	askedAt            time.Time     // when it began
	answered           chan struct{} // closed when the statfs in flight returns
	unmounting         bool          // no statfs may start: the mount is going away
	haveFigures, asked bool
}

// exportStats keeps the last statfs of each mounted NFS volume, by
// mountpoint. statfs on a hard NFS mount waits for the server for as long
// as it takes, so it runs in a goroutine of its own, at most one per
// mountpoint, and readers only ever see what it last brought back.
type exportStats struct {
	mu     sync.Mutex
	figs   map[string]*exportFigures
	statfs func(path string, st *unix.Statfs_t) error
	now    func() time.Time
}

func newExportStats() *exportStats {
	return &exportStats{figs: map[string]*exportFigures{}, statfs: unix.Statfs, now: time.Now}
}

// refresh starts a statfs of target unless one is in flight or the last
// figures are fresh.
func (s *exportStats) refresh(target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.figs[target]
	if f == nil {
		f = &exportFigures{}
		s.figs[target] = f
	}
	now := s.now()
	if f.asking || f.unmounting || (f.asked && now.Sub(f.at) < exportFresh) {
		return
	}
	f.asking, f.askedAt, f.answered = true, now, make(chan struct{})
	go s.ask(target, f)
}

// quiesce stops statfs calls on target, which is about to be unmounted,
// and waits up to wait for the one in flight: a statfs holds the mount,
// and umount2 would find it busy. A server that does not answer keeps its
// statfs, and the unmount then deals with a mount stuck on that server.
func (s *exportStats) quiesce(target string, wait time.Duration) (stuck bool) {
	s.mu.Lock()
	f := s.figs[target]
	if f == nil {
		f = &exportFigures{}
		s.figs[target] = f
	}
	f.unmounting = true
	answered := f.answered
	asking := f.asking
	s.mu.Unlock()
	if !asking {
		return false
	}
	select {
	case <-answered:
		return false
	case <-time.After(wait):
		return true
	}
}

// resume lets statfs calls on target start again: its unmount failed.
func (s *exportStats) resume(target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.figs[target]; f != nil {
		f.unmounting = false
	}
}

// ask runs one statfs and records what it brought back, unless target was
// forgotten (unmounted) meanwhile.
func (s *exportStats) ask(target string, f *exportFigures) {
	var st unix.Statfs_t
	err := s.statfs(target, &st)
	s.mu.Lock()
	defer s.mu.Unlock()
	defer close(f.answered)
	f.asking, f.asked, f.at, f.err = false, true, s.now(), err
	if err == nil {
		bs := uint64(st.Bsize)
		if st.Frsize > 0 {
			bs = uint64(st.Frsize)
		}
		f.size, f.used, f.avail = st.Blocks*bs, (st.Blocks-st.Bfree)*bs, st.Bavail*bs
		f.haveFigures = true
	}
}

// forget drops target's figures; a statfs still in flight records into an
// entry nobody reads.
func (s *exportStats) forget(target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.figs, target)
}

// status adds target's last figures to st. It only reads: the sampler
// (Meter) keeps them fresh, so a docker volume inspect never starts a
// statfs, let alone waits for one.
func (s *exportStats) status(target string, st map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.figs[target]
	if f == nil {
		return
	}
	now := s.now()
	if f.haveFigures {
		st[statExportSize] = f.size
		st[statExportUsed] = f.used
		st[statExportAvail] = f.avail
		st[statExportAge] = int64(now.Sub(f.at).Round(time.Second) / time.Second)
	}
	switch {
	case f.asking && now.Sub(f.askedAt) >= exportFresh:
		st[statExportErr] = fmt.Sprintf("the server has not answered statfs for %s (is it up?)",
			now.Sub(f.askedAt).Round(time.Second))
	case f.err != nil:
		st[statExportErr] = "statfs: " + f.err.Error()
	}
}
