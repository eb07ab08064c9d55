package nfs

import (
	"slices"
	"sync"
)

// fakeCounters records what the backend counts.
type fakeCounters struct {
	mu       sync.Mutex
	attempts []string
	timeouts int
}

func (f *fakeCounters) NFSMountAttempt(version string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts = append(f.attempts, version)
}

func (f *fakeCounters) NFSMountTimeout() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.timeouts++
}

func (f *fakeCounters) counted() ([]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.attempts), f.timeouts
}
