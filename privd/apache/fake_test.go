package apache

import (
	"context"
	"sync"
	"time"
)

// fakeControl counts calls; it stands in for Apache in tests of logic.
type fakeControl struct {
	mu        sync.Mutex
	tests     int
	gracefuls int
	testErr   error
	delay     time.Duration
	running   bool
}

func (f *fakeControl) ConfigTest(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tests++
	return f.testErr
}

func (f *fakeControl) Graceful(context.Context) (int, bool, error) {
	time.Sleep(f.delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gracefuls++
	started := !f.running
	f.running = true
	return 4242, started, nil
}

func (f *fakeControl) Stop(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running = false
	return nil
}

func (f *fakeControl) counts() (tests, gracefuls int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tests, f.gracefuls
}
