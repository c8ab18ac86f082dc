package opusd

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/unprivd/store"
)

// TestStoreWorking checks the store health check against a real state
// file: a write transaction held open does not fail it (reads still go
// through) until it has lasted longer than the stall limit, and it passes
// again once the write has ended.
func TestStoreWorking(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "opusd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	patient, strict := storeWorking(st, time.Hour), storeWorking(st, time.Millisecond)
	if err := strict.Check(ctx); err != nil {
		t.Fatalf("idle store: %v", err)
	}
	inside, release := make(chan struct{}), make(chan struct{})
	result := make(chan error, 1)
	go func() {
		result <- st.Update(ctx, func(*store.Tx) error { close(inside); <-release; return nil })
	}()
	<-inside
	if err := patient.Check(ctx); err != nil {
		t.Errorf("write held for less than the limit: %v", err)
	}
	// Real time must pass the 1 ms limit; poll rather than guess a sleep.
	var stalled error
	for deadline := time.Now().Add(10 * time.Second); stalled == nil && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		stalled = strict.Check(ctx)
	}
	if stalled == nil || !strings.Contains(stalled.Error(), "write transaction has been in progress") {
		t.Errorf("write held past the limit: check = %v, want a stalled write", stalled)
	}
	close(release)
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	if err := strict.Check(ctx); err != nil {
		t.Errorf("after the write ended: %v", err)
	}
}
