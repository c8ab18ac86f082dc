package apache

import (
	"context"
	"sync"
	"testing"
	"time"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

func TestCoalescer(t *testing.T) {
	tests := []struct {
		name    string
		waves   []int         // callers arriving together, wave after wave
		gap     time.Duration // between waves
		window  time.Duration
		fnDelay time.Duration
		want    int // runs of Fn
	}{
		{"one caller", []int{1}, 0, 50 * time.Millisecond, 0, 1},
		{"burst shares one", []int{20}, 0, 50 * time.Millisecond, 0, 1},
		{"two waves inside the window", []int{5, 5}, 10 * time.Millisecond, 100 * time.Millisecond, 0, 1},
		{"waves after the window run again", []int{3, 3, 3}, 150 * time.Millisecond, 50 * time.Millisecond, 0, 3},
		// A wave arriving while Fn runs must not join that run: it starts the next.
		{"arrivals during a run form one next batch", []int{4, 4}, 80 * time.Millisecond, 50 * time.Millisecond, 150 * time.Millisecond, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			runs := 0
			c := &Coalescer[int]{Window: tt.window, Fn: func(context.Context) (int, error) {
				mu.Lock()
				runs++
				n := runs
				mu.Unlock()
				time.Sleep(tt.fnDelay)
				return n, nil
			}}
			var wg sync.WaitGroup
			results := make(chan int, 100)
			for i, n := range tt.waves {
				if i > 0 {
					time.Sleep(tt.gap)
				}
				for range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						v, err := c.Do(context.Background())
						if err != nil {
							t.Error(err)
						}
						results <- v
					}()
				}
			}
			wg.Wait()
			close(results)
			if runs != tt.want {
				t.Errorf("Fn ran %d times, want %d", runs, tt.want)
			}
			total := 0
			for v := range results {
				total++
				if v < 1 || v > tt.want {
					t.Errorf("caller got result of run %d", v)
				}
			}
			if want := sum(tt.waves); total != want {
				t.Errorf("%d callers returned, want %d", total, want)
			}
		})
	}
}

func sum(xs []int) (s int) {
	for _, x := range xs {
		s += x
	}
	return s
}

func TestCoalescerCallerGivesUp(t *testing.T) {
	ran := make(chan struct{})
	c := &Coalescer[int]{Window: 100 * time.Millisecond, Fn: func(context.Context) (int, error) {
		close(ran)
		return 1, nil
	}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Do(ctx); err == nil {
		t.Fatal("Do with a cancelled context succeeded")
	}
	select {
	case <-ran: // the batch still ran for everyone else
	case <-time.After(2 * time.Second):
		t.Fatal("batch did not run after its first caller gave up")
	}
}

func TestSitesReloadCoalesces(t *testing.T) {
	tests := []struct {
		callers int
		want    int
	}{{1, 1}, {10, 1}, {50, 1}}
	for _, tt := range tests {
		fake := &fakeControl{}
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
		for r := range resps {
			if r.GetMasterPid() != 4242 || !r.GetStarted() {
				t.Errorf("response %v, want pid 4242 started", r)
			}
		}
	}
}
