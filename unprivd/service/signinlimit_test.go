package service

import (
	"fmt"
	"testing"
	"time"
)

// TestFailures drives the failure counter with a fake clock: each step
// records failures of a key or asks whether a key is allowed, at a time
// relative to t0.
func TestFailures(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	type step struct {
		at      time.Duration
		fail    string // record one failure of this key
		times   int    // this many (default 1)
		allowed string // or ask about this key
		want    bool
	}
	for _, tc := range []struct {
		name           string
		limit, maxKeys int
		window         time.Duration
		steps          []step
		wantKeysAtEnd  int
	}{
		{
			name: "below the limit", limit: 3, maxKeys: 10, window: time.Minute,
			steps: []step{
				{fail: "a", times: 2},
				{allowed: "a", want: true},
				{allowed: "b", want: true},
			},
			wantKeysAtEnd: 1,
		},
		{
			name: "at the limit, only that key", limit: 3, maxKeys: 10, window: time.Minute,
			steps: []step{
				{fail: "a", times: 3},
				{allowed: "a", want: false},
				{allowed: "b", want: true},
				{fail: "b", times: 2},
				{allowed: "b", want: true},
			},
			wantKeysAtEnd: 2,
		},
		{
			name: "the window slides", limit: 3, maxKeys: 10, window: time.Minute,
			steps: []step{
				{at: 0, fail: "a"},
				{at: 20 * time.Second, fail: "a"},
				{at: 40 * time.Second, fail: "a"},
				{at: 59 * time.Second, allowed: "a", want: false},
				// The first failure is a minute old: two remain.
				{at: 60 * time.Second, allowed: "a", want: true},
				{at: 61 * time.Second, fail: "a"},
				{at: 61 * time.Second, allowed: "a", want: false},
				{at: 101 * time.Second, allowed: "a", want: true},
			},
			wantKeysAtEnd: 1,
		},
		{
			name: "all expired: the key is forgotten", limit: 2, maxKeys: 10, window: time.Minute,
			steps: []step{
				{fail: "a", times: 5},
				{at: time.Minute, allowed: "a", want: true},
			},
			wantKeysAtEnd: 0,
		},
		{
			name: "many failures keep it refused a window after the last", limit: 2, maxKeys: 10, window: time.Minute,
			steps: []step{
				{at: 0, fail: "a"},
				{at: 50 * time.Second, fail: "a", times: 100},
				{at: 109 * time.Second, allowed: "a", want: false},
				{at: 110 * time.Second, allowed: "a", want: true},
			},
			wantKeysAtEnd: 0,
		},
		{
			name: "keys capped: the least recently failed goes", limit: 2, maxKeys: 3, window: time.Hour,
			steps: []step{
				{at: 0, fail: "a", times: 2},
				{at: 1, fail: "b", times: 2},
				{at: 2, fail: "c", times: 2},
				{at: 3, fail: "a"}, // a is the most recent now; b the oldest
				{at: 4, fail: "d"},
				{at: 5, allowed: "a", want: false},
				{at: 5, allowed: "b", want: true},
				{at: 5, allowed: "c", want: false},
			},
			wantKeysAtEnd: 3,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFailures(tc.limit, tc.window, tc.maxKeys)
			for i, s := range tc.steps {
				now := t0.Add(s.at)
				if s.fail != "" {
					for range max(s.times, 1) {
						f.fail(s.fail, now)
					}
					continue
				}
				if got := f.allowed(s.allowed, now); got != s.want {
					t.Errorf("step %d: allowed(%q) at +%v = %v, want %v", i, s.allowed, s.at, got, s.want)
				}
			}
			if n := f.len(); n != tc.wantKeysAtEnd {
				t.Errorf("%d keys remembered, want %d", n, tc.wantKeysAtEnd)
			}
		})
	}
}

// TestFailuresBounded: a flood of distinct keys never holds more than
// maxKeys keys nor more than limit times per key.
func TestFailuresBounded(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	f := newFailures(5, time.Hour, 100)
	for i := range 10000 {
		f.fail(fmt.Sprint("k", i%1000), t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n := f.len(); n != 100 {
		t.Fatalf("%d keys after a flood, want the cap 100", n)
	}
	for _, el := range f.keys {
		if n := len(el.Value.(*failEntry).times); n > 5 {
			t.Fatalf("a key holds %d times, limit 5", n)
		}
	}
}

// TestInFlight: one holder per key at a time; released keys are free
// again; other keys are independent.
func TestInFlight(t *testing.T) {
	var f inFlight
	rel, ok := f.try("a")
	if !ok {
		t.Fatal("first try of a refused")
	}
	if _, ok := f.try("a"); ok {
		t.Fatal("a second check of a ran beside the first")
	}
	relB, ok := f.try("b")
	if !ok {
		t.Fatal("b refused while a is checked")
	}
	rel()
	if rel2, ok := f.try("a"); !ok {
		t.Fatal("a still busy after release")
	} else {
		rel2()
	}
	relB()
	if len(f.keys) != 0 {
		t.Errorf("keys left: %v", f.keys)
	}
}
