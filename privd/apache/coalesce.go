package apache

import (
	"context"
	"sync"
	"time"
)

// Coalescer shares runs of a function (the front Apache's graceful
// restart) among the callers of Do: a burst of deploys pays for as few
// restarts as it can, while a lone deploy does not wait for company.
// (opusd batches first, knowing which deploys are still coming; see
// unprivd/reconcile's reloadGate for why two layers decide and why neither
// can hold a deploy back without bound.)
//
// The rule is leading edge, then hold:
//
//   - When no run is under way and the last one ended at least Window ago
//     (idle), a caller starts a run at once, after only Lead (a few
//     milliseconds, so that callers arriving together share it).
//   - Otherwise the caller joins the next batch. That batch runs once the
//     run under way has ended and Window has passed since; everyone who
//     arrives until it starts shares it. So runs start at least Window
//     apart, and a burst of requests spread over S seconds costs about
//     1 + S/Window runs, not one per request.
//   - A caller is only ever served by a run that starts after it called:
//     one arriving while a run is under way waits for the next, because
//     the running one may have read the configuration before that caller's
//     change was written. Do returns only after that run has finished.
//
// Fn runs under its own context (bounded by Timeout): one caller giving up
// must not fail the others, and the batch runs even if all gave up.
//
// Sites uses it with Window DefaultReloadWindow and Lead ReloadLead.
type Coalescer[T any] struct {
	// Window is the least time between the end of one run and the start
	// of the next; requests within it are batched.
	Window time.Duration
	// Lead is how long an idle Coalescer waits before it runs, for
	// callers arriving at the same moment.
	Lead time.Duration
	// Timeout bounds one run of Fn (2 minutes if 0).
	Timeout time.Duration
	// Fn is the shared work.
	Fn func(ctx context.Context) (T, error)

	mu      sync.Mutex
	running bool      // a run of Fn is under way
	pending *batch[T] // callers waiting for the next run, or nil
	timer   bool      // the pending batch's start is scheduled
	lastEnd time.Time // when the last run ended; zero before the first
}

// ReloadLead is the Lead of Apache's graceful restarts: long enough for
// calls arriving together (the teardowns of a destroy-all) to share one,
// short against a graceful restart's own ~0.1 s.
const ReloadLead = 20 * time.Millisecond

type batch[T any] struct {
	done chan struct{}
	val  T
	err  error
}

// Do has Fn run (or joins a batch that will run) and returns the result of
// a run that started after Do was called. It returns early with ctx's
// error if ctx ends first; the run still happens for the others.
func (c *Coalescer[T]) Do(ctx context.Context) (T, error) {
	c.mu.Lock()
	if c.pending == nil {
		c.pending = &batch[T]{done: make(chan struct{})}
	}
	b := c.pending
	c.scheduleLocked()
	c.mu.Unlock()
	select {
	case <-b.done:
		return b.val, b.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// scheduleLocked arranges for the pending batch to start: after Lead when
// idle, else once Window has passed since the last run ended. While a run
// is under way there is nothing to do yet: its end schedules the batch.
func (c *Coalescer[T]) scheduleLocked() {
	if c.running || c.timer || c.pending == nil {
		return
	}
	c.timer = true
	wait := c.Lead
	if !c.lastEnd.IsZero() {
		wait = max(c.Window-time.Since(c.lastEnd), c.Lead)
	}
	time.AfterFunc(wait, c.fire)
}

// fire starts the pending batch; callers arriving from now on form the
// next one.
func (c *Coalescer[T]) fire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timer = false
	if b := c.pending; b != nil && !c.running {
		c.pending = nil
		c.running = true
		go c.run(b)
	}
}

func (c *Coalescer[T]) run(b *batch[T]) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	b.val, b.err = c.Fn(ctx)
	cancel()
	c.mu.Lock()
	c.running = false
	c.lastEnd = time.Now()
	close(b.done)
	c.scheduleLocked()
	c.mu.Unlock()
}
