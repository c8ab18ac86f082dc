package apache

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// spread returns n arrival times evenly spread over d, from 0.
func spread(n int, d time.Duration) []time.Duration {
	at := make([]time.Duration, n)
	for i := range at {
		at[i] = d * time.Duration(i) / time.Duration(n)
	}
	return at
}

// TestCoalescer runs callers arriving at given times against a fake
// graceful restart taking fnTime, on synctest's fake clock (so times are
// exact, whatever the load of the machine). Every caller must be served
// by a run that started after it arrived and ended before it returned.
func TestCoalescer(t *testing.T) {
	tests := []struct {
		name     string
		arrivals []time.Duration // when each caller calls Do
		window   time.Duration
		lead     time.Duration
		fnTime   time.Duration
		minRuns  int
		maxRuns  int
		maxWait  time.Duration // longest a caller may wait (0: not checked)
	}{
		{name: "lone request runs at once", arrivals: []time.Duration{0},
			window: 2 * time.Second, fnTime: 100 * time.Millisecond, minRuns: 1, maxRuns: 1, maxWait: 100 * time.Millisecond},
		{name: "lone request waits only the lead", arrivals: []time.Duration{0},
			window: 2 * time.Second, lead: 20 * time.Millisecond, fnTime: 100 * time.Millisecond, minRuns: 1, maxRuns: 1, maxWait: 120 * time.Millisecond},
		{name: "lone requests far apart each run at once", arrivals: []time.Duration{0, 3 * time.Second, 9 * time.Second},
			window: 2 * time.Second, lead: 20 * time.Millisecond, fnTime: 100 * time.Millisecond, minRuns: 3, maxRuns: 3, maxWait: 120 * time.Millisecond},
		{name: "20 at once share one run", arrivals: make([]time.Duration, 20),
			window: 2 * time.Second, lead: 20 * time.Millisecond, fnTime: 100 * time.Millisecond, minRuns: 1, maxRuns: 1, maxWait: 120 * time.Millisecond},
		{name: "20 within the lead share one run", arrivals: spread(20, 19*time.Millisecond),
			window: 2 * time.Second, lead: 20 * time.Millisecond, fnTime: 100 * time.Millisecond, minRuns: 1, maxRuns: 1, maxWait: 120 * time.Millisecond},
		{name: "20 at once without a lead: the first alone, the rest share the next", arrivals: make([]time.Duration, 20),
			window: 2 * time.Second, fnTime: 100 * time.Millisecond, minRuns: 1, maxRuns: 2, maxWait: 2200 * time.Millisecond},
		{name: "20 spread over 4s, window 2s", arrivals: spread(20, 4*time.Second),
			window: 2 * time.Second, lead: 20 * time.Millisecond, fnTime: 100 * time.Millisecond, minRuns: 2, maxRuns: 3, maxWait: 2200 * time.Millisecond},
		{name: "20 spread over 30s, window 15s", arrivals: spread(20, 30*time.Second),
			window: 15 * time.Second, fnTime: 300 * time.Millisecond, minRuns: 2, maxRuns: 3, maxWait: 15600 * time.Millisecond},
		// With no window a request during a run still waits for the next
		// run: the running one may predate its change.
		{name: "a request during a run is served by the next", arrivals: []time.Duration{0, 50 * time.Millisecond},
			window: 0, fnTime: 100 * time.Millisecond, minRuns: 2, maxRuns: 2, maxWait: 150 * time.Millisecond},
		{name: "requests during a run share the next", arrivals: []time.Duration{0, 10 * time.Millisecond, 20 * time.Millisecond, 90 * time.Millisecond},
			window: 500 * time.Millisecond, fnTime: 100 * time.Millisecond, minRuns: 2, maxRuns: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var mu sync.Mutex
				type span struct{ start, end time.Duration }
				var runs []span
				c := &Coalescer[int]{Window: tt.window, Lead: tt.lead, Fn: func(context.Context) (int, error) {
					mu.Lock()
					runs = append(runs, span{start: time.Since(start)})
					n := len(runs) - 1
					mu.Unlock()
					time.Sleep(tt.fnTime)
					mu.Lock()
					runs[n].end = time.Since(start)
					mu.Unlock()
					return n, nil
				}}
				type served struct {
					arrived, returned time.Duration
					run               int
				}
				got := make([]served, len(tt.arrivals))
				var wg sync.WaitGroup
				for i, at := range tt.arrivals {
					wg.Add(1)
					go func() {
						defer wg.Done()
						time.Sleep(at)
						arrived := time.Since(start)
						n, err := c.Do(context.Background())
						if err != nil {
							t.Errorf("caller %d: %v", i, err)
						}
						got[i] = served{arrived, time.Since(start), n}
					}()
				}
				wg.Wait()
				if len(runs) < tt.minRuns || len(runs) > tt.maxRuns {
					t.Errorf("%d runs %v, want %d to %d", len(runs), runs, tt.minRuns, tt.maxRuns)
				}
				for i, g := range got {
					r := runs[g.run]
					if r.start < g.arrived {
						t.Errorf("caller %d arrived at %v, served by run %d that started before, at %v", i, g.arrived, g.run, r.start)
					}
					if g.returned < r.end {
						t.Errorf("caller %d returned at %v, before its run ended at %v", i, g.returned, r.end)
					}
					if w := g.returned - g.arrived; tt.maxWait > 0 && w > tt.maxWait {
						t.Errorf("caller %d waited %v, want at most %v", i, w, tt.maxWait)
					}
				}
				for i := 1; i < len(runs); i++ {
					if gap := runs[i].start - runs[i-1].end; gap < tt.window {
						t.Errorf("run %d started %v after run %d ended, want at least the window %v", i, gap, i-1, tt.window)
					}
				}
			})
		})
	}
}

// TestCoalescerCallerGivesUp: a caller whose context ends returns at once
// with its error; the run it asked for still happens, for the others.
func TestCoalescerCallerGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ran := make(chan struct{})
		c := &Coalescer[int]{Window: time.Second, Fn: func(context.Context) (int, error) {
			time.Sleep(time.Second)
			close(ran)
			return 1, nil
		}}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := c.Do(ctx); err == nil {
			t.Fatal("Do with a cancelled context succeeded")
		}
		<-ran // the run still happens (a deadlock here fails the test)
	})
}

// TestSitesReloadCoalesces: concurrent ReloadApache calls through Sites
// share one graceful restart.
func TestSitesReloadCoalesces(t *testing.T) {
	tests := []struct {
		callers int
		want    int
	}{{1, 1}, {10, 1}, {50, 1}}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.callers), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fake := &fakeControl{delay: 50 * time.Millisecond}
				s := NewSites(testConfig(), fake, Options{ReloadWindow: 100 * time.Millisecond})
				var wg sync.WaitGroup
				resps := make(chan *privdv1.ReloadApacheResponse, tt.callers)
				for range tt.callers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r, err := s.Reload(context.Background(), &privdv1.ReloadApacheRequest{})
						if err != nil {
							t.Error(err)
							return
						}
						resps <- r
					}()
				}
				wg.Wait()
				close(resps)
				if _, g := fake.counts(); g != tt.want {
					t.Errorf("%d callers: %d gracefuls, want %d", tt.callers, g, tt.want)
				}
				started := 0
				for r := range resps {
					if r.GetMasterPid() != 4242 {
						t.Errorf("response %v, want pid 4242", r)
					}
					if r.GetStarted() {
						started++
					}
				}
				if started != tt.callers {
					t.Errorf("%d of %d responses say Apache was started, want all (one shared start)", started, tt.callers)
				}
			})
		})
	}
}
