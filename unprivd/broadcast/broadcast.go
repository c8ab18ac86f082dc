// Package broadcast wakes every goroutine waiting on a key at once. A
// waiter takes a channel for the key; the next Publish of that key closes
// it. opusd's state store publishes an operation's id after each commit
// that changed the operation, so WatchOperation streams wake at once
// instead of polling.
package broadcast

import "sync"

// Hub hands out, per key, one channel that the next Publish of the key
// closes. The zero value is ready to use; a Hub is safe for concurrent
// use. It holds only keys someone waits on: a key's entry goes at its
// Publish or when its last waiter releases it.
type Hub struct {
	mu   sync.Mutex
	subs map[string]*entry
}

// entry is the channel of one key's waiters and how many hold it.
type entry struct {
	ch   chan struct{}
	refs int
}

// Subscribe returns a channel closed at the next Publish of key, and a
// release function to call when no longer waiting (once or more; only
// the first call counts). Subscribe before reading the state the key
// stands for, so no change between the read and the wait is missed.
func (h *Hub) Subscribe(key string) (<-chan struct{}, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs == nil {
		h.subs = map[string]*entry{}
	}
	e := h.subs[key]
	if e == nil {
		e = &entry{ch: make(chan struct{})}
		h.subs[key] = e
	}
	e.refs++
	var once sync.Once
	return e.ch, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			e.refs--
			// After a Publish, key may already have a newer entry of
			// other waiters: leave it alone.
			if e.refs == 0 && h.subs[key] == e {
				delete(h.subs, key)
			}
		})
	}
}

// Publish wakes every waiter on key (closes their channel); waiters that
// subscribe from now on wait for the next Publish.
func (h *Hub) Publish(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e := h.subs[key]; e != nil {
		close(e.ch)
		delete(h.subs, key)
	}
}

// Keys reports how many keys have waiters (for tests: released waiters
// leave nothing behind).
func (h *Hub) Keys() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}
