package service

import (
	"container/list"
	"sync"
	"time"
)

// Sign-in limits. Everyone may reach the console from one address (it
// listens on 127.0.0.1 by default, so every local user is 127.0.0.1): a
// limit must never let one caller's failures keep another out.
//
//   - Login links: a valid link is 256 random bits and always signs in. An
//     unknown, used or expired token counts against the caller's address,
//     and only unknown tokens from that address are then refused.
//   - Passwords: failures count per account and per account and address.
//     A flood against account A refuses A's password for a while (A still
//     signs in with a link), never B's.
//   - Password checks: at most credential.PasswordHashers run at once on the
//     host, and one at a time per account (right or wrong, a check costs
//     the same), so no account, not even signing in with its own correct
//     password in a loop, holds more than one of them.
//
// The limits are exported for the console's tests, which drive them
// through its pages.
const (
	failWindow = 10 * time.Minute
	// MaxLinkFails unknown login links per address.
	MaxLinkFails = 20
	// MaxAccountFails wrong passwords per account, from any address.
	MaxAccountFails = 10
	// MaxAccountAddrFails wrong passwords per account from one address.
	MaxAccountAddrFails = 5
	// maxFailKeys bounds each counter's memory; beyond it the key whose
	// last failure is oldest is forgotten.
	maxFailKeys = 10000
)

// failures counts recent failures per key within a sliding window, for at
// most maxKeys keys. The caller passes the time, so tests need no clock.
type failures struct {
	limit   int
	window  time.Duration
	maxKeys int

	mu   sync.Mutex
	keys map[string]*list.Element
	// lru holds *failEntry, the most recently failed first; their last
	// failures are in that order too, so the back is both the least
	// recently used and the first to expire.
	lru list.List
}

type failEntry struct {
	key string
	// times are the key's recent failures, oldest first, at most limit:
	// more would not change the answer.
	times []time.Time
}

func newFailures(limit int, window time.Duration, maxKeys int) *failures {
	return &failures{limit: limit, window: window, maxKeys: maxKeys, keys: map[string]*list.Element{}}
}

// allowed reports whether key has fewer than limit failures in the window
// before now.
func (f *failures) allowed(key string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	el, ok := f.keys[key]
	if !ok {
		return true
	}
	e := el.Value.(*failEntry)
	f.expire(e, now)
	if len(e.times) == 0 {
		f.lru.Remove(el)
		delete(f.keys, key)
		return true
	}
	return len(e.times) < f.limit
}

// fail records a failure of key at now.
func (f *failures) fail(key string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	el, ok := f.keys[key]
	if !ok {
		for f.lru.Len() >= f.maxKeys {
			old := f.lru.Back()
			f.lru.Remove(old)
			delete(f.keys, old.Value.(*failEntry).key)
		}
		el = f.lru.PushFront(&failEntry{key: key})
		f.keys[key] = el
	}
	f.lru.MoveToFront(el)
	e := el.Value.(*failEntry)
	f.expire(e, now)
	if len(e.times) >= f.limit {
		e.times = e.times[1:]
	}
	e.times = append(e.times, now)
}

// expire drops e's failures older than the window.
func (f *failures) expire(e *failEntry, now time.Time) {
	i := 0
	for i < len(e.times) && now.Sub(e.times[i]) >= f.window {
		i++
	}
	e.times = e.times[i:]
}

// len is how many keys are remembered.
func (f *failures) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lru.Len()
}

// inFlight is a set of keys with work under way.
type inFlight struct {
	mu   sync.Mutex
	keys map[string]bool
}

// try marks key busy and returns its release, or reports that it already
// is.
func (f *inFlight) try(key string) (release func(), ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keys[key] {
		return nil, false
	}
	if f.keys == nil {
		f.keys = map[string]bool{}
	}
	f.keys[key] = true
	return func() {
		f.mu.Lock()
		delete(f.keys, key)
		f.mu.Unlock()
	}, true
}
