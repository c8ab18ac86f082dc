package broadcast

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// closed reports whether ch is closed, without waiting.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestPublishWakesEveryWaiterOfItsKeyOnly(t *testing.T) {
	var h Hub
	a1, releaseA1 := h.Subscribe("a")
	a2, releaseA2 := h.Subscribe("a")
	b, releaseB := h.Subscribe("b")
	defer releaseA1()
	defer releaseA2()
	defer releaseB()
	if a1 != a2 {
		t.Fatal("two waiters on one key got different channels")
	}
	h.Publish("c") // nobody waits: nothing happens, nothing is kept
	if closed(a1) || closed(b) || h.Keys() != 2 {
		t.Fatalf("Publish of another key: a closed %v, b closed %v, %d keys; want open, open, 2", closed(a1), closed(b), h.Keys())
	}
	h.Publish("a")
	if !closed(a1) || closed(b) {
		t.Fatalf("after Publish(a): a closed %v, b closed %v; want true, false", closed(a1), closed(b))
	}
	// A waiter arriving after the Publish waits for the next one.
	next, releaseNext := h.Subscribe("a")
	defer releaseNext()
	if closed(next) {
		t.Fatal("a waiter subscribing after a Publish was woken by it")
	}
	h.Publish("a")
	if !closed(next) {
		t.Fatal("second Publish did not wake the new waiter")
	}
}

func TestReleaseLeavesNothingBehind(t *testing.T) {
	var h Hub
	_, r1 := h.Subscribe("a")
	_, r2 := h.Subscribe("a")
	r1()
	r1() // a second release of the same waiter counts nothing
	if h.Keys() != 1 {
		t.Fatalf("%d keys while one waiter remains, want 1", h.Keys())
	}
	r2()
	if h.Keys() != 0 {
		t.Fatalf("%d keys after every waiter released, want 0", h.Keys())
	}
}

// TestLateReleaseSparesNewerWaiters: a waiter released after a Publish
// must not drop the entry of those who subscribed since, or they would
// never be woken.
func TestLateReleaseSparesNewerWaiters(t *testing.T) {
	var h Hub
	_, releaseOld := h.Subscribe("a")
	h.Publish("a")
	newer, releaseNewer := h.Subscribe("a")
	defer releaseNewer()
	releaseOld()
	if h.Keys() != 1 {
		t.Fatalf("%d keys after the old waiter's release, want the newer waiter's 1", h.Keys())
	}
	h.Publish("a")
	if !closed(newer) {
		t.Fatal("newer waiter not woken after an old waiter's late release")
	}
}

// TestConcurrent has waiters and publishers race (run with -race): every
// waiter that subscribed before a Publish of its key is woken by it.
func TestConcurrent(t *testing.T) {
	var h Hub
	const keys, waiters = 4, 50
	var wg sync.WaitGroup
	subscribed := make(chan struct{}, keys*waiters)
	woken := make(chan struct{}, keys*waiters)
	for i := range keys * waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch, release := h.Subscribe(fmt.Sprint(i % keys))
			defer release()
			subscribed <- struct{}{}
			select {
			case <-ch:
				woken <- struct{}{}
			case <-time.After(10 * time.Second):
			}
		}()
	}
	for range keys * waiters {
		<-subscribed
	}
	for k := range keys {
		go h.Publish(fmt.Sprint(k))
	}
	wg.Wait()
	if n := len(woken); n != keys*waiters {
		t.Fatalf("%d of %d waiters woken", n, keys*waiters)
	}
	if h.Keys() != 0 {
		t.Fatalf("%d keys left after every waiter was woken and released", h.Keys())
	}
}
