package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opus-hosting/opus/internal/daemon/notifytest"
	"github.com/opus-hosting/opus/internal/logtest"
)

// TestWatchdog runs the watchdog on synctest's fake clock (so counts are
// exact whatever the load) against a real notify socket: a 200 ms
// WATCHDOG_USEC means a round of checks at start and every 100 ms, and a
// ping after each round that passes. It runs for 950 ms of fake time.
func TestWatchdog(t *testing.T) {
	ok := HealthCheck{"ok", func(context.Context) error { return nil }}
	failing := HealthCheck{"store", func(context.Context) error { return errors.New("disk gone") }}
	hanging := HealthCheck{"api", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}
	// slow passes, 60 ms after it is asked: within the 100 ms limit.
	slow := HealthCheck{"slow", func(ctx context.Context) error {
		select {
		case <-time.After(60 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	// recovering fails its first three rounds (0, 100, 200 ms), then passes.
	var calls atomic.Int32
	recovering := HealthCheck{"store", func(context.Context) error {
		if calls.Add(1) <= 3 {
			return errors.New("not yet")
		}
		return nil
	}}
	tests := []struct {
		name   string
		usec   string // WATCHDOG_USEC; "" leaves it unset
		pid    string // WATCHDOG_PID; "" leaves it unset
		checks []HealthCheck
		pings  int    // exactly
		log    string // in the log when set
	}{
		{"healthy pings at half the interval", "200000", "", []HealthCheck{ok, ok}, 10, "watchdog enabled"},
		{"a slow check pings when it passes", "200000", "", []HealthCheck{ok, slow}, 9, "watchdog enabled"},
		{"a failing check stops the pings", "200000", "", []HealthCheck{ok, failing}, 0, "disk gone"},
		{"a hanging check stops the pings", "200000", "", []HealthCheck{hanging}, 0, "did not finish"},
		{"pings resume once the checks pass", "200000", "", []HealthCheck{ok, recovering}, 7, "not yet"},
		{"no watchdog set", "", "", []HealthCheck{ok}, 0, ""},
		{"watchdog meant for another process", "200000", "1", []HealthCheck{ok}, 0, ""},
		{"unreadable WATCHDOG_USEC", "soon", "", []HealthCheck{ok}, 0, "bad WATCHDOG_USEC"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The socket's reader runs outside the bubble: a goroutine
			// waiting on the network never lets fake time advance.
			path, notes := notifytest.Socket(t)
			t.Setenv("NOTIFY_SOCKET", path)
			for k, v := range map[string]string{"WATCHDOG_USEC": tc.usec, "WATCHDOG_PID": tc.pid} {
				t.Setenv(k, v)
				if v == "" {
					os.Unsetenv(k)
				}
			}
			var logs logtest.Buffer
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := make(chan struct{})
				go func() {
					watchdog(ctx, slog.New(slog.NewTextHandler(&logs, nil)), tc.checks...)
					close(done)
				}()
				time.Sleep(950 * time.Millisecond)
				cancel()
				select {
				case <-done:
				case <-time.After(time.Minute):
					t.Fatal("watchdog did not return after its context ended")
				}
			})
			lines := notifytest.Drain(t, path, notes)
			if n := notifytest.Count(lines, "WATCHDOG=1"); n != tc.pings {
				t.Errorf("%d pings in 950ms, want %d\nnotes: %q\n%s", n, tc.pings, lines, logs.String())
			}
			if tc.log != "" && !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, logs.String())
			}
		})
	}
}
