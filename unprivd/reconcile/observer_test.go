package reconcile

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/unprivd/store"
)

// observed records what an Observer is told.
type observed struct {
	mu    sync.Mutex
	ops   []string // "KIND STATE"
	steps map[string][]time.Duration
}

func (o *observed) StepEnded(step string, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.steps == nil {
		o.steps = map[string][]time.Duration{}
	}
	o.steps[step] = append(o.steps[step], d)
}

func (o *observed) OperationEnded(kind store.OpKind, state store.OpState) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ops = append(o.ops, string(kind)+" "+string(state))
}

func (o *observed) take() (ops []string, steps map[string][]time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ops, steps = o.ops, o.steps
	o.ops, o.steps = nil, nil
	return ops, steps
}

// TestObserverSeesEveryEnd: the Observer is told of every operation that
// ends, once, with its kind and final state (a change that failed and was
// undone is FAILED, as is one cancelled by it), and of every step that
// ran, with its time on the reconciler's clock.
func TestObserverSeesEveryEnd(t *testing.T) {
	e := newEnv(t)
	o := &observed{}
	e.tweak = func(opt *Options) { opt.Observer = o }
	r := e.start(t, 2)

	id := e.create(t, "blog")
	r.Kick("blog")
	if op := e.wait(t, id); op.State != store.OpSucceeded {
		t.Fatalf("create: %s %s", op.State, op.Error)
	}
	waitFor(t, func() bool { o.mu.Lock(); defer o.mu.Unlock(); return len(o.ops) > 0 })
	ops, steps := o.take()
	if !slices.Equal(ops, []string{"CREATE SUCCEEDED"}) {
		t.Errorf("after a create: operations %q", ops)
	}
	for _, s := range strings.Fields(deployedSteps) {
		name := strings.TrimSuffix(s, ":DONE")
		if d := steps[name]; len(d) != 1 || d[0] <= 0 {
			t.Errorf("step %s: durations %v, want one, above 0", name, d)
		}
	}

	// A change that fails is undone: its operation ends FAILED, once,
	// the failed step counted with the others.
	e.privd.mu.Lock()
	e.privd.failOnce["SecureTree"] = status.Error(codes.Internal, "openat2: permission denied")
	e.privd.mu.Unlock()
	id = e.mutate(t, "blog", store.OpUpdateSettings)
	r.Kick("blog")
	if op := e.wait(t, id); op.State != store.OpFailed {
		t.Fatalf("failing change: %s", op.State)
	}
	waitFor(t, func() bool { o.mu.Lock(); defer o.mu.Unlock(); return len(o.ops) > 0 })
	ops, steps = o.take()
	if !slices.Equal(ops, []string{"UPDATE_SETTINGS FAILED"}) {
		t.Errorf("after a failed change: operations %q", ops)
	}
	if n := len(steps["secure"]); n != 2 {
		t.Errorf("secure step ended %d times; want 2 (the failed run, the undo)", n)
	}

	id = e.mutate(t, "blog", store.OpDelete)
	r.Kick("blog")
	if op := e.wait(t, id); op.State != store.OpSucceeded {
		t.Fatalf("delete: %s %s", op.State, op.Error)
	}
	waitFor(t, func() bool { o.mu.Lock(); defer o.mu.Unlock(); return len(o.ops) > 0 })
	if ops, _ := o.take(); !slices.Equal(ops, []string{"DELETE SUCCEEDED"}) {
		t.Errorf("after a delete: operations %q", ops)
	}
	if w, running := r.Queue(); w != 0 || running != 0 {
		t.Errorf("queue after the work: %d waiting, %d running", w, running)
	}
}

// waitFor polls cond for up to 10 s: the Observer is told after the
// commit that ends an operation, which is what a watcher wakes on.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
	}
}
