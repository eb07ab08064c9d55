// Package failpoint lets tests fail any fallible step of holdfast on
// purpose. Every step that can fail in production (a mount, a command, a
// commit, a file written, renamed or removed) calls Check with its name
// first; a nil *Set, the production value, never fails. A test records
// which steps an operation runs (the enumeration comes from the code as it
// runs, not from a hand-kept list), then fails each of them in turn.
package failpoint

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
)

// Set decides which step fails. The zero value records steps and fails
// none. It is safe for concurrent use.
type Set struct {
	mu    sync.Mutex
	seen  []string
	armed string
	nth   int // fail the nth Check of armed, counting from 1
	count int
	err   error
	fired bool
}

// Injected is the error a failed step returns.
type Injected struct {
	Step string
	Err  error
}

func (e *Injected) Error() string { return fmt.Sprintf("%s: %v (injected)", e.Step, e.Err) }
func (e *Injected) Unwrap() error { return e.Err }

// Check records step and returns an *Injected error if it is the step
// armed to fail. On a nil Set it does nothing.
func (s *Set) Check(step string) error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, step)
	if step != s.armed || s.fired {
		return nil
	}
	s.count++
	if s.count < s.nth {
		return nil
	}
	s.fired = true
	return &Injected{Step: step, Err: s.err}
}

// Arm makes the nth Check of step (from 1) fail once with err (EIO when
// nil), and forgets the steps seen so far.
func (s *Set) Arm(step string, nth int, err error) {
	if err == nil {
		err = syscall.EIO
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed, s.nth, s.count, s.err, s.fired = step, nth, 0, err, false
	s.seen = nil
}

// Disarm stops failing steps and forgets the steps seen so far.
func (s *Set) Disarm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed, s.fired, s.seen = "", false, nil
}

// Fired says whether the armed step has failed.
func (s *Set) Fired() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fired
}

// Steps returns the steps checked since the last Arm or Disarm, in order.
func (s *Set) Steps() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

// IsInjected says whether err comes from a failed step.
func IsInjected(err error) bool {
	var in *Injected
	return errors.As(err, &in)
}
