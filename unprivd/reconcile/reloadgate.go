package reconcile

import (
	"context"
	"sync"
	"time"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// maxReloadHold bounds how long a deploy's graceful restart waits for
// other deploys on their way to theirs.
const maxReloadHold = 20 * time.Second

// reloadCallTimeout bounds the ReloadApache call a batch shares.
const reloadCallTimeout = 5 * time.Minute

// reloadGate lets a burst of deploys share graceful restarts of the front.
// privd's own coalescing (privd/apache.Coalescer) only sees the requests
// that reach it; opusd also knows which other projects are still on their
// way to a reload (their deploy runs are under way and before their
// reload step). A deploy that needs a graceful restart waits at the gate
// while other deploys are approaching, for at most maxReloadHold; then
// everyone waiting shares one ReloadApache call. A lone deploy waits for
// nothing. (Since the front runs no Python, a graceful restart costs the
// front a fraction of a second and no project its daemon; the gate keeps
// a burst of creates to a few of them, as docs/performance.md counts.)
//
// Why two layers decide, and why neither can starve a deploy: the gate
// decides when opusd asks (it knows who is coming), privd's coalescer
// when Apache restarts (it is the only one that sees every caller, and it
// must never run a restart that began before a caller's vhost was
// written). A deploy waits at the gate at most maxReloadHold from the
// batch's first waiter (the timer releases the batch whoever still
// approaches), and the shared call is bounded by reloadCallTimeout. In
// privd, a caller is served by the next run that starts after it called;
// runs start at most Window after the previous run ended and each run is
// bounded by the coalescer's Timeout. So a deploy's reload waits at most
// maxReloadHold + reloadCallTimeout, whatever other deploys do; the two
// layers only ever merge requests, never hold one back indefinitely.
//
// Correctness does not depend on the gate: every member installed its
// vhost before it came to the gate, so the shared call (which privd
// serves with a graceful restart begun after the call) covers them all.
type reloadGate struct {
	maxHold time.Duration

	mu          sync.Mutex
	approaching map[string]bool // deploy runs that have not passed their reload step
	open        *gateBatch      // projects waiting at the gate, or nil
}

// gateBatch is the projects released together and their shared call.
type gateBatch struct {
	done  chan struct{}
	timer *time.Timer
	call  func() (*privdv1.ReloadApacheResponse, error)
	res   *privdv1.ReloadApacheResponse
	err   error
}

func newReloadGate(maxHold time.Duration) *reloadGate {
	return &reloadGate{maxHold: maxHold, approaching: map[string]bool{}}
}

// approach says that project name's deploy run has begun: it may come to
// the gate.
func (g *reloadGate) approach(name string) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.approaching[name] = true
}

// leave says that project name will not come to the gate in this run (it
// passed its reload step, needed none, or its run ended).
func (g *reloadGate) leave(name string) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.approaching, name)
	if g.open != nil && len(g.approaching) == 0 {
		g.releaseLocked(g.open)
	}
}

// reload has Apache reloaded for project name: it waits while other
// deploys are approaching (at most maxHold from the first waiter), then
// shares one call of call with everyone waiting. call runs with the
// values of the first waiter's ctx but not its cancellation, bounded by
// reloadCallTimeout. reload returns early with ctx's error if ctx ends. A
// nil gate just calls call.
func (g *reloadGate) reload(ctx context.Context, name string, call func(context.Context) (*privdv1.ReloadApacheResponse, error)) (*privdv1.ReloadApacheResponse, error) {
	if g == nil {
		return call(ctx)
	}
	g.mu.Lock()
	delete(g.approaching, name)
	b := g.open
	if b == nil {
		// Not the first waiter's cancellation: the others still need it.
		callCtx := context.WithoutCancel(ctx)
		b = &gateBatch{done: make(chan struct{}), call: func() (*privdv1.ReloadApacheResponse, error) {
			ctx, cancel := context.WithTimeout(callCtx, reloadCallTimeout)
			defer cancel()
			return call(ctx)
		}}
		g.open = b
		b.timer = time.AfterFunc(g.maxHold, func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.releaseLocked(b)
		})
	}
	if len(g.approaching) == 0 {
		g.releaseLocked(b)
	}
	g.mu.Unlock()
	select {
	case <-b.done:
		return b.res, b.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// releaseLocked closes batch b (once) and makes its call; later comers
// form the next batch.
func (g *reloadGate) releaseLocked(b *gateBatch) {
	if g.open != b {
		return
	}
	g.open = nil
	b.timer.Stop()
	go func() {
		b.res, b.err = b.call()
		close(b.done)
	}()
}
