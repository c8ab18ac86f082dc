package apache

import (
	"context"
	"sync"
	"time"

	"github.com/opus-hosting/opus/internal/config"
)

// fakeControl counts calls; it stands in for Apache in tests of logic.
type fakeControl struct {
	mu        sync.Mutex
	tests     int
	gracefuls int
	testErr   error
	delay     time.Duration
	running   bool
	// gracefulErrs are the results of the next gracefuls, in order
	// (then nil); a non-nil one leaves Apache down.
	gracefulErrs []error
	// during runs in each graceful, as Apache's restart would.
	during func()
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
	if f.during != nil {
		f.during()
	}
	if len(f.gracefulErrs) > 0 {
		err := f.gracefulErrs[0]
		f.gracefulErrs = f.gracefulErrs[1:]
		if err != nil {
			f.running = false
			return 4242, false, err
		}
	}
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

// testBackend is where the tests' vhosts route: an address of the
// backends' range nothing listens at.
var testBackend = config.Default().BackendAddr(70001)
