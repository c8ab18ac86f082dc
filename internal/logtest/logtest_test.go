package logtest

import (
	"strings"
	"sync"
	"testing"
)

// TestBuffer: writes from many goroutines all arrive, whole, while the
// buffer is read (run with -race to catch an unguarded access).
func TestBuffer(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("line\n"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := strings.Count(b.String(), "line\n"); n != 800 {
		t.Fatalf("%d lines arrived, want 800", n)
	}
}
