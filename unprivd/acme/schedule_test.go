package acme

import (
	"testing"
	"time"
)

func TestRenewAt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		life      time.Duration
		wantAfter time.Duration // RenewAt - notBefore
	}{
		{"Let's Encrypt's 90 days: 30 days before", 90 * 24 * time.Hour, 60 * 24 * time.Hour},
		{"a 6-day certificate: 2 days before", 6 * 24 * time.Hour, 4 * 24 * time.Hour},
		{"a 90 s test certificate: 30 s before", 90 * time.Second, 60 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RenewAt(t0, t0.Add(tt.life)); !got.Equal(t0.Add(tt.wantAfter)) {
				t.Fatalf("RenewAt = %s after issue, want %s", got.Sub(t0), tt.wantAfter)
			}
		})
	}
}

func TestBackoffDelay(t *testing.T) {
	mid := func() float64 { return 0.5 }    // no jitter
	low := func() float64 { return 0 }      // -20%
	high := func() float64 { return 0.999 } // just under +20%
	tests := []struct {
		name string
		b    Backoff
		n    int
		lo   time.Duration
		hi   time.Duration
	}{
		{"first failure: Min", Backoff{Rand: mid}, 1, time.Minute, time.Minute},
		{"doubles", Backoff{Rand: mid}, 2, 2 * time.Minute, 2 * time.Minute},
		{"doubles again", Backoff{Rand: mid}, 4, 8 * time.Minute, 8 * time.Minute},
		{"capped at Max", Backoff{Rand: mid}, 30, DefaultRetryMax, DefaultRetryMax},
		{"no overflow after many failures", Backoff{Rand: mid}, 1 << 20, DefaultRetryMax, DefaultRetryMax},
		{"jitter down", Backoff{Rand: low}, 1, 48 * time.Second, 48 * time.Second},
		{"jitter up", Backoff{Rand: high}, 1, 71 * time.Second, 72 * time.Second},
		{"own bounds", Backoff{Min: time.Second, Max: 5 * time.Second, Rand: mid}, 10, 5 * time.Second, 5 * time.Second},
		{"Max below Min is Min", Backoff{Min: time.Minute, Max: time.Second, Rand: mid}, 3, time.Minute, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := tt.b.Delay(tt.n); d < tt.lo || d > tt.hi {
				t.Fatalf("Delay(%d) = %s, want %s to %s", tt.n, d, tt.lo, tt.hi)
			}
		})
	}
	// The real jitter stays within ±20% and spreads.
	seen := map[time.Duration]bool{}
	for range 100 {
		d := Backoff{}.Delay(3)
		if d < 192*time.Second || d > 288*time.Second {
			t.Fatalf("Delay(3) = %s, outside 4 min ± 20%%", d)
		}
		seen[d] = true
	}
	if len(seen) < 50 {
		t.Fatalf("100 delays gave only %d values: no jitter", len(seen))
	}
}

func TestNextTry(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	b := Backoff{Rand: func() float64 { return 0.5 }}
	tests := []struct {
		name     string
		n        int
		notAfter time.Time
		want     time.Time
	}{
		{"no certificate yet: backoff", 1, time.Time{}, now.Add(time.Minute)},
		{"far from expiry: backoff", 5, now.Add(30 * 24 * time.Hour), now.Add(16 * time.Minute)},
		{"near expiry: halfway there", 10, now.Add(2 * time.Hour), now.Add(time.Hour)},
		{"expired: backoff", 2, now.Add(-time.Hour), now.Add(2 * time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := b.NextTry(now, tt.n, tt.notAfter); !got.Equal(tt.want) {
				t.Fatalf("NextTry = %s, want %s", got.Sub(now), tt.want.Sub(now))
			}
		})
	}
}
