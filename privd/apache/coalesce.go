package apache

import (
	"context"
	"sync"
	"time"
)

// Coalescer makes calls to Do that arrive within Window of the first one
// share a single run of the function. A graceful restart restarts every
// project's mod_wsgi daemons, so a burst of deploys must pay for it once.
//
// A caller that arrives while a run is already under way starts the next
// batch: the running one may have read the configuration before that
// caller's change was written.
type Coalescer[T any] struct {
	// Window is how long the first caller of a batch waits for others.
	Window time.Duration
	// Timeout bounds one run of Fn, which does not use any caller's
	// context (one caller giving up must not fail the others).
	Timeout time.Duration
	// Fn is the shared work.
	Fn func(ctx context.Context) (T, error)

	mu      sync.Mutex
	pending *batch[T]
}

type batch[T any] struct {
	done chan struct{}
	val  T
	err  error
}

// Do joins the pending batch, or starts one, and returns its result. It
// returns early with ctx's error if ctx ends first; the batch still runs.
func (c *Coalescer[T]) Do(ctx context.Context) (T, error) {
	c.mu.Lock()
	b := c.pending
	if b == nil {
		b = &batch[T]{done: make(chan struct{})}
		c.pending = b
		go c.run(b)
	}
	c.mu.Unlock()
	select {
	case <-b.done:
		return b.val, b.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

func (c *Coalescer[T]) run(b *batch[T]) {
	time.Sleep(c.Window)
	c.mu.Lock()
	c.pending = nil // later callers form the next batch
	c.mu.Unlock()
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	b.val, b.err = c.Fn(ctx)
	close(b.done)
}
