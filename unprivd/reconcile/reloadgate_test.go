package reconcile

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// TestReloadGate drives the gate with deploy runs that approach, come to
// the gate, or leave without a reload at given times, on synctest's fake
// clock, against a fake ReloadApache taking 100 ms. It checks how many
// calls were made, when each project got its answer, and that each was
// served by a call that began after it came to the gate.
func TestReloadGate(t *testing.T) {
	const s = time.Second
	type ev struct {
		at   time.Duration
		name string
		what string // "approach", "reload", "leave"
	}
	tests := []struct {
		name  string
		evs   []ev
		calls int
		done  map[string]time.Duration // when each reload returned
	}{
		{"lone deploy waits for nothing",
			[]ev{{0, "a", "approach"}, {3 * s, "a", "reload"}},
			1, map[string]time.Duration{"a": 3*s + 100*time.Millisecond}},
		{"burst shares one call when the last arrives",
			[]ev{{0, "a", "approach"}, {0, "b", "approach"}, {0, "c", "approach"},
				{1 * s, "a", "reload"}, {2 * s, "b", "reload"}, {4 * s, "c", "reload"}},
			1, map[string]time.Duration{"a": 4*s + 100*time.Millisecond, "b": 4*s + 100*time.Millisecond, "c": 4*s + 100*time.Millisecond}},
		{"a deploy that fails before its reload releases the others",
			[]ev{{0, "a", "approach"}, {0, "b", "approach"}, {1 * s, "a", "reload"}, {5 * s, "b", "leave"}},
			1, map[string]time.Duration{"a": 5*s + 100*time.Millisecond}},
		{"a stuck deploy holds the others no longer than maxReloadHold",
			[]ev{{0, "a", "approach"}, {0, "stuck", "approach"}, {1 * s, "a", "reload"}},
			1, map[string]time.Duration{"a": 1*s + maxReloadHold + 100*time.Millisecond}},
		{"a project coming during the call gets the next one",
			[]ev{{0, "a", "approach"}, {1 * s, "a", "reload"}, {1*s + 50*time.Millisecond, "b", "approach"}, {1*s + 50*time.Millisecond, "b", "reload"}},
			2, map[string]time.Duration{"a": 1*s + 100*time.Millisecond, "b": 1*s + 150*time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				g := newReloadGate(maxReloadHold)
				var mu sync.Mutex
				var calls []time.Duration // start of each call
				call := func(context.Context) (*privdv1.ReloadApacheResponse, error) {
					mu.Lock()
					calls = append(calls, time.Since(start))
					n := len(calls)
					mu.Unlock()
					time.Sleep(100 * time.Millisecond)
					return &privdv1.ReloadApacheResponse{MasterPid: int32(n)}, nil
				}
				type got struct {
					came, done time.Duration
					call       int
				}
				res := map[string]got{}
				var wg sync.WaitGroup
				for _, e := range tt.evs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						time.Sleep(e.at)
						switch e.what {
						case "approach":
							g.approach(e.name)
						case "leave":
							g.leave(e.name)
						case "reload":
							came := time.Since(start)
							r, err := g.reload(context.Background(), e.name, call)
							if err != nil {
								t.Errorf("%s: %v", e.name, err)
								return
							}
							mu.Lock()
							res[e.name] = got{came, time.Since(start), int(r.GetMasterPid())}
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				if len(calls) != tt.calls {
					t.Errorf("%d ReloadApache calls at %v, want %d", len(calls), calls, tt.calls)
				}
				for name, want := range tt.done {
					r, ok := res[name]
					if !ok {
						t.Errorf("%s never got an answer", name)
						continue
					}
					if r.done != want {
						t.Errorf("%s answered at %v, want %v", name, r.done, want)
					}
					if began := calls[r.call-1]; began < r.came {
						t.Errorf("%s came at %v but was served by a call begun at %v", name, r.came, began)
					}
				}
			})
		})
	}
}

// TestReloadGateGivesUp: a waiter whose context ends returns its error;
// the others are still served.
func TestReloadGateGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newReloadGate(maxReloadHold)
		g.approach("a")
		g.approach("b")
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		calls := 0
		call := func(ctx context.Context) (*privdv1.ReloadApacheResponse, error) {
			calls++
			return &privdv1.ReloadApacheResponse{}, ctx.Err()
		}
		if _, err := g.reload(ctx, "a", call); err == nil {
			t.Fatal("reload outlived its context")
		}
		// b shares the call a opened: a's end must not cancel it.
		if _, err := g.reload(context.Background(), "b", call); err != nil {
			t.Fatal(err)
		}
		if calls != 1 {
			t.Errorf("%d calls, want 1 shared", calls)
		}
	})
}

// TestBurstSharesOneReload: deploys running together share one
// ReloadApache call (the gate holds the first ones while the others are
// still migrating); a deploy running alone later makes its own at once.
func TestBurstSharesOneReload(t *testing.T) {
	e := newEnv(t)
	migrating := make(chan struct{})
	e.privd.mu.Lock()
	e.privd.block["RunManage"] = migrating
	e.privd.mu.Unlock()
	r := e.start(t, 4)
	names := []string{"bursta", "burstb", "burstc"}
	ids := map[string]string{}
	for _, n := range names {
		ids[n] = e.createSpec(t, n, store.Spec{})
	}
	for _, n := range names {
		r.Kick(n)
	}
	count := func(method string) int {
		n := 0
		for _, c := range e.privd.callList() {
			if strings.HasPrefix(c, method) {
				n++
			}
		}
		return n
	}
	// Release the migrations only once all three are in them, then let
	// them finish at different moments (the fake privd answers in order).
	deadline := time.Now().Add(10 * time.Second)
	for count("RunManage") < len(names) {
		if time.Now().After(deadline) {
			t.Fatalf("RunManage calls %d, want %d in flight", count("RunManage"), len(names))
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(migrating)
	for _, n := range names {
		mustSucceed(t, e.wait(t, ids[n]))
	}
	if n := count("ReloadApache"); n != 1 {
		t.Errorf("%d ReloadApache calls for %d deploys running together, want 1: %v", n, len(names), e.privd.callList())
	}

	id := e.createSpec(t, "alone", store.Spec{})
	r.Kick("alone")
	mustSucceed(t, e.wait(t, id))
	if n := count("ReloadApache"); n != 2 {
		t.Errorf("%d ReloadApache calls after a lone deploy, want 2", n)
	}
}

// Only first deploys approach the gate: an update of a live project (or
// opusd's start-up pass over every project) must not hold a new project's
// graceful restart for the gate's whole hold.
func TestOnlyFirstDeploysApproachTheGate(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 4)
	id := e.createSpec(t, "live", store.Spec{})
	r.Kick("live")
	mustSucceed(t, e.wait(t, id))

	migrating := make(chan struct{})
	e.privd.mu.Lock()
	e.privd.block["RunManage"] = migrating
	e.privd.mu.Unlock()
	approaching := func() []string {
		r.gate.mu.Lock()
		defer r.gate.mu.Unlock()
		var names []string
		for n := range r.gate.approaching {
			names = append(names, n)
		}
		slices.Sort(names)
		return names
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; calls %v", what, e.privd.callList())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	manageCalls := func() int {
		n := 0
		for _, c := range e.privd.callList() {
			if strings.HasPrefix(c, "RunManage") {
				n++
			}
		}
		return n
	}
	upd := e.mutate(t, "live", store.OpReconcile)
	r.Kick("live")
	waitFor("the update's migration", func() bool { return manageCalls() == 2 })
	if got := approaching(); len(got) != 0 {
		t.Errorf("an update approaches the gate: %v", got)
	}
	fresh := e.createSpec(t, "fresh", store.Spec{})
	r.Kick("fresh")
	waitFor("the new project's migration", func() bool { return manageCalls() == 3 })
	if got := approaching(); !slices.Equal(got, []string{"fresh"}) {
		t.Errorf("approaching = %v, want [fresh]", got)
	}
	close(migrating)
	mustSucceed(t, e.wait(t, upd))
	mustSucceed(t, e.wait(t, fresh))
	if got := approaching(); len(got) != 0 {
		t.Errorf("after the runs, approaching = %v", got)
	}
}
