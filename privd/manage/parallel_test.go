package manage

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestRunnerTurns: at most MaxParallel holders of a turn at once; others
// wait for one to be given back, or give up with their context.
func TestRunnerTurns(t *testing.T) {
	tests := []struct {
		name    string
		max     int
		callers int
		want    int // most holders seen at once
	}{
		{"default", 0, 10, DefaultMaxParallel},
		{"one at a time", 1, 5, 1},
		{"fewer callers than turns", 8, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := &Runner{MaxParallel: tt.max}
				var mu sync.Mutex
				holding, most := 0, 0
				var wg sync.WaitGroup
				for range tt.callers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						release, err := r.acquire(context.Background())
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						holding++
						most = max(most, holding)
						mu.Unlock()
						time.Sleep(time.Second) // "Python"
						mu.Lock()
						holding--
						mu.Unlock()
						release()
					}()
				}
				wg.Wait()
				if most != tt.want {
					t.Errorf("%d held a turn at once, want %d", most, tt.want)
				}
			})
		})
	}
}

func TestRunnerTurnGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &Runner{MaxParallel: 1}
		release, err := r.acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := r.acquire(ctx); err == nil {
			t.Fatal("a second turn was given while the only one was held")
		}
		release()
		if release, err = r.acquire(context.Background()); err != nil {
			t.Fatalf("turn given back, but: %v", err)
		}
		release()
	})
}
