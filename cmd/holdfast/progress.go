package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/go-units"
)

// progress reports a transfer's bytes and rate on stderr once a second,
// only when stderr is a terminal.
type progress struct {
	out   io.Writer
	what  string
	n     atomic.Int64
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
}

func newProgress(stderr *os.File, what string) *progress {
	p := &progress{out: stderr, what: what, start: time.Now()}
	if !isTerminal(stderr) {
		return p
	}
	p.stop = make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				fmt.Fprintf(p.out, "\r%s: %s", p.what, p.line())
			}
		}
	}()
	return p
}

// line is the bytes moved so far and the mean rate.
func (p *progress) line() string {
	n := p.n.Load()
	secs := time.Since(p.start).Seconds()
	return fmt.Sprintf("%s, %s/s   ", units.BytesSize(float64(n)), units.BytesSize(float64(n)/max(secs, 0.001)))
}

// done stops the reports and ends their line.
func (p *progress) done(err error) {
	if p.stop == nil {
		return
	}
	close(p.stop)
	p.wg.Wait()
	state := "done"
	if err != nil {
		state = "failed"
	}
	fmt.Fprintf(p.out, "\r%s: %s%s\n", p.what, p.line(), state)
}

func (p *progress) writer(w io.Writer) io.Writer { return countWriter{w, &p.n} }
func (p *progress) reader(r io.Reader) io.Reader { return countReader{r, &p.n} }

type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}
