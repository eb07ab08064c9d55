// Package usage measures how much a directory holds, off the request path.
//
// A Walker keeps, per volume, the figure of the last walk of the volume's
// directory and walks it again in the background once that figure is older
// than Config.Refresh: at most one walk per volume at a time, at most
// Config.Parallel walks at once in all. Read never waits for a walk: it
// answers the last figure and its age, or that there is none yet.
//
// What a walk counts (see walk_linux.go): the blocks every entry under the
// directory occupies (st_blocks × 512, so sparse files count what they hold,
// not their length), the directory itself included; a file with several
// hard links once, as long as the set of such inodes seen in this walk
// stays within Config.MaxLinks (beyond that, further links of files with
// several links are counted again, and the result says so); nothing below
// another mount (a mountpoint inside the directory is skipped, whatever
// filesystem it is, so a bind mount of the same filesystem too); no symlink
// is followed. A walk holds no list of paths: only one batch of names per
// directory level it is inside, at most Config.MaxDepth levels. A walk that
// reaches Config.MaxEntries entries or runs Config.MaxDuration stops, and
// its result is a lower bound that says why.
package usage

import (
	"context"
	"sync"
	"time"
)

// Defaults of Config's zero fields.
const (
	DefaultRefresh     = 20 * time.Second
	DefaultParallel    = 2
	DefaultMaxEntries  = 2_000_000
	DefaultMaxDuration = 20 * time.Second
	DefaultMaxDepth    = 256
	DefaultMaxLinks    = 100_000
	DefaultIdle        = 10 * time.Minute
)

// Config bounds a Walker. Zero fields take the defaults above.
type Config struct {
	// Refresh is how old a volume's figure may get before a new walk of
	// it starts. The figure Read answers is at most Refresh plus the walk's
	// own duration old, as its Age says.
	Refresh time.Duration
	// Parallel is how many walks may run at once, over all volumes.
	Parallel int
	// MaxEntries stops a walk after that many entries.
	MaxEntries int64
	// MaxDuration stops a walk that has run that long.
	MaxDuration time.Duration
	// MaxDepth is how many directory levels below the root a walk enters.
	MaxDepth int
	// MaxLinks is how many inodes with more than one hard link a walk
	// remembers, to count each once.
	MaxLinks int
	// Idle drops a volume not read for that long: a Walker only walks the
	// volumes someone asks about.
	Idle time.Duration

	// pause, when set, is called once before each directory a walk reads:
	// tests hold a walk there.
	pause func(dir string)
}

func (c Config) withDefaults() Config {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	set(&c.Refresh, DefaultRefresh)
	set(&c.MaxDuration, DefaultMaxDuration)
	set(&c.Idle, DefaultIdle)
	if c.Parallel <= 0 {
		c.Parallel = DefaultParallel
	}
	if c.MaxEntries <= 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.MaxDepth <= 0 {
		c.MaxDepth = DefaultMaxDepth
	}
	if c.MaxLinks <= 0 {
		c.MaxLinks = DefaultMaxLinks
	}
	return c
}

// Result is what one walk found.
type Result struct {
	// Bytes is the space the entries occupy: their blocks × 512.
	Bytes int64
	// Entries is how many entries were counted, the root included.
	Entries int64
	// Started is when the walk began; Took how long it ran.
	Started time.Time
	Took    time.Duration
	// Incomplete is empty when every entry was counted; otherwise it says
	// why Bytes is a lower bound (a budget reached, a directory unreadable
	// or too deep).
	Incomplete string
	// Overcount is empty unless some hard links may have been counted
	// more than once, and then says how many.
	Overcount string
	// Err is set when the directory itself could not be walked; Bytes is
	// then 0.
	Err string
}

// Reading is what Read answers.
type Reading struct {
	// Measured is false until the first walk of the volume has finished.
	Measured bool
	// Result is the last finished walk's, when Measured.
	Result
	// Age is how long ago that walk started.
	Age time.Duration
}

// Walker measures volumes' directories in the background. Its methods are
// safe for concurrent use.
type Walker struct {
	cfg  Config
	now  func() time.Time
	slot chan struct{}
	wake chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	loop   sync.WaitGroup
	walks  sync.WaitGroup

	mu   sync.Mutex
	vols map[string]*tracked
}

// tracked is one volume the Walker measures.
type tracked struct {
	dir      string
	last     *Result
	lastRead time.Time
	// cancel stops the walk in progress; nil when none runs.
	cancel context.CancelFunc
}

// New starts a Walker. Close stops it.
func New(cfg Config) *Walker {
	ctx, cancel := context.WithCancel(context.Background())
	w := &Walker{
		cfg:    cfg.withDefaults(),
		now:    time.Now,
		wake:   make(chan struct{}, 1),
		ctx:    ctx,
		cancel: cancel,
		vols:   map[string]*tracked{},
	}
	w.slot = make(chan struct{}, w.cfg.Parallel)
	w.loop.Add(1)
	go w.schedule()
	return w
}

// Close stops the walks in progress and the Walker.
func (w *Walker) Close() {
	w.cancel()
	w.loop.Wait()
	w.walks.Wait()
}

// Read answers the last figure of volume name, whose directory is dir,
// without waiting. The first Read of a volume starts tracking it: its
// first walk is scheduled at once, and Read answers Measured false until
// it has finished. A Read with another dir than before forgets the old
// figure.
func (w *Walker) Read(name, dir string) Reading {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	t := w.vols[name]
	if t == nil || t.dir != dir {
		if t != nil && t.cancel != nil {
			t.cancel()
		}
		t = &tracked{dir: dir}
		w.vols[name] = t
		w.poke()
	}
	t.lastRead = now
	if t.last == nil {
		return Reading{}
	}
	return Reading{Measured: true, Result: *t.last, Age: now.Sub(t.last.Started)}
}

// Forget stops measuring volume name, cancelling a walk of it in progress:
// call it when the volume is removed.
func (w *Walker) Forget(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t := w.vols[name]; t != nil {
		if t.cancel != nil {
			t.cancel()
		}
		delete(w.vols, name)
	}
}

// poke wakes the scheduler without waiting.
func (w *Walker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// tick is how often the scheduler looks for volumes due for a walk besides
// being woken.
func (w *Walker) tick() time.Duration {
	return max(w.cfg.Refresh/10, 10*time.Millisecond)
}

// schedule starts the walks that are due, as slots allow, until Close.
func (w *Walker) schedule() {
	defer w.loop.Done()
	t := time.NewTicker(w.tick())
	defer t.Stop()
	for {
		w.startDue()
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		case <-w.wake:
		}
	}
}

// startDue starts a walk of each volume due for one while a slot is free,
// the least recently measured first, and drops the volumes nobody read
// for Config.Idle.
func (w *Walker) startDue() {
	for {
		select {
		case w.slot <- struct{}{}:
		default:
			return
		}
		j := w.due()
		if j == nil {
			<-w.slot
			return
		}
		w.walks.Add(1)
		go w.run(j)
	}
}

// job is one walk to run.
type job struct {
	name string
	t    *tracked
	ctx  context.Context
}

// due picks the volume that most needs a walk and marks it running, or
// returns nil.
func (w *Walker) due() *job {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	var j *job
	for name, t := range w.vols {
		if t.cancel == nil && now.Sub(t.lastRead) > w.cfg.Idle {
			delete(w.vols, name)
			continue
		}
		if t.cancel != nil || (t.last != nil && now.Sub(t.last.Started) < w.cfg.Refresh) {
			continue
		}
		if j == nil || older(t, j.t) {
			j = &job{name: name, t: t}
		}
	}
	if j != nil {
		// Marked running before the lock is released, so that no other
		// pass picks it too.
		j.ctx, j.t.cancel = context.WithCancel(w.ctx)
	}
	return j
}

// older says whether a was measured before b (never counts as oldest).
func older(a, b *tracked) bool {
	switch {
	case a.last == nil:
		return b.last != nil
	case b.last == nil:
		return false
	}
	return a.last.Started.Before(b.last.Started)
}

// run walks j's directory, publishes the result unless the volume was
// forgotten or its directory changed meanwhile, and frees the slot.
func (w *Walker) run(j *job) {
	defer w.walks.Done()
	defer func() { <-w.slot; w.poke() }()
	r := walk(j.ctx, j.t.dir, w.cfg, w.now)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.vols[j.name] == j.t && j.ctx.Err() == nil {
		j.t.last = &r
	}
	j.t.cancel()
	j.t.cancel = nil
}
