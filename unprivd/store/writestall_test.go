package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestWriteStalled holds an Update open on a real bbolt file and checks,
// with injected times rather than sleeps, that WriteStalled sees it past
// the limit (while reads still go through, which is why a read alone is no
// liveness check), and that every way the write can end clears it.
func TestWriteStalled(t *testing.T) {
	const limit = 20 * time.Second
	tests := []struct {
		name string
		end  func() error // what the held transaction's function does last
		want string       // error Update returns ("" for nil)
	}{
		{"commit", func() error { return nil }, ""},
		{"rollback on error", func() error { return errors.New("refused") }, "refused"},
		{"rollback on panic", func() error { panic("boom") }, "panic: boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, _ := openTemp(t)
			createProject(t, s, "p", 1000)
			if d, stalled := s.WriteStalled(time.Now().Add(time.Hour), limit); stalled || d != 0 {
				t.Fatalf("no write in progress: WriteStalled = %s, %v; want 0, false", d, stalled)
			}

			inside, release := make(chan struct{}), make(chan struct{})
			result := make(chan error, 1)
			before := time.Now()
			go func() {
				defer func() {
					if r := recover(); r != nil {
						result <- fmt.Errorf("panic: %v", r)
					}
				}()
				result <- s.Update(ctx, func(tx *Tx) error {
					p, err := tx.Project("p")
					if err != nil {
						return err
					}
					p.Generation++
					if err := tx.PutProject(p); err != nil {
						return err
					}
					close(inside)
					<-release
					return tc.end()
				})
			}()
			<-inside
			after := time.Now()

			if d, stalled := s.WriteStalled(after, limit); stalled || d < 0 || d > after.Sub(before) {
				t.Errorf("write just begun: WriteStalled = %s, %v; want at most %s, false", d, stalled, after.Sub(before))
			}
			if _, stalled := s.WriteStalled(before.Add(limit), limit); stalled {
				t.Error("stalled at exactly the limit after the write began; want only past it")
			}
			now := after.Add(limit + time.Second)
			d, stalled := s.WriteStalled(now, limit)
			if !stalled || d < now.Sub(after) || d > now.Sub(before) {
				t.Errorf("write held past the limit: WriteStalled = %s, %v; want %s-%s, true", d, stalled, now.Sub(after), now.Sub(before))
			}
			// Reads do not wait for the writer: they cannot tell it is stuck.
			if p, err := s.GetProject(ctx, "p"); err != nil || p.Generation != 1 {
				t.Errorf("read during the write: %v, %v; want the committed generation 1", p, err)
			}

			close(release)
			err := <-result
			if got := fmt.Sprint(err); (tc.want == "" && err != nil) || (tc.want != "" && got != tc.want) {
				t.Fatalf("Update = %v, want %q", err, tc.want)
			}
			if d, stalled := s.WriteStalled(time.Now().Add(time.Hour), limit); stalled || d != 0 {
				t.Errorf("after the write ended: WriteStalled = %s, %v; want 0, false", d, stalled)
			}
			// The stamp did not break writing: the next Update works and
			// the generation is as the held one left it.
			wantGen := int64(1)
			if tc.want == "" {
				wantGen = 2
			}
			p, err := s.UpdateProject(ctx, "p", func(*Project) error { return nil })
			if err != nil || p.Generation != wantGen {
				t.Errorf("next update: %v, %v; want generation %d", p, err, wantGen)
			}
		})
	}
}

// TestWriteStalledClearedAfterConcurrentWrites: writers handing the lock
// to each other never leave a stamp behind (each clears only its own).
func TestWriteStalledClearedAfterConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	createProject(t, s, "p", 1000)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 40 {
		wg.Go(func() {
			_, err := s.UpdateProject(ctx, "p", func(p *Project) error { p.Generation++; return nil })
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if d, stalled := s.WriteStalled(time.Now().Add(time.Hour), 20*time.Second); stalled || d != 0 {
		t.Errorf("after all writes ended: WriteStalled = %s, %v; want 0, false", d, stalled)
	}
}
