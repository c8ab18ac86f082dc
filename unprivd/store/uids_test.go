package store

import (
	"context"
	"errors"
	"testing"
)

// TestAllocateUIDNeverReuses: ids go out in order, each once; a record is
// kept after its project is gone, an id marked taken is skipped for good,
// the range's end is a clear error, and ids outside the range (an earlier
// configuration's) do not disturb it.
func TestAllocateUIDNeverReuses(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	alloc := func(project string, first, last uint32) (uint32, error) {
		var uid uint32
		err := s.Update(ctx, func(tx *Tx) (err error) { uid, err = tx.AllocateUID(project, first, last); return err })
		return uid, err
	}
	for i, want := range []uint32{70000, 70001, 70002} {
		got, err := alloc("p"+string(rune('a'+i)), 70000, 70009)
		if err != nil || got != want {
			t.Fatalf("allocation %d: %d, %v; want %d", i, got, err, want)
		}
	}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.MarkUIDTaken(70003, "user foo") }); err != nil {
		t.Fatal(err)
	}
	if got, err := alloc("pd", 70000, 70009); err != nil || got != 70004 {
		t.Fatalf("after a taken id: %d, %v; want 70004", got, err)
	}
	// Another range below and above: its own sequence.
	if got, err := alloc("low", 60000, 60100); err != nil || got != 60000 {
		t.Fatalf("lower range: %d, %v", got, err)
	}
	if got, err := alloc("high", 80000, 80100); err != nil || got != 80000 {
		t.Fatalf("higher range: %d, %v", got, err)
	}
	if got, err := alloc("pe", 70000, 70009); err != nil || got != 70005 {
		t.Fatalf("back in the first range: %d, %v; want 70005", got, err)
	}
	for range 4 {
		if _, err := alloc("fill", 70000, 70009); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := alloc("none", 70000, 70009); !errors.Is(err, ErrUIDsExhausted) {
		t.Fatalf("past the range's end: %d, %v; want ErrUIDsExhausted", got, err)
	}
	var recs []UIDRecord
	if err := s.View(ctx, func(tx *Tx) (err error) { recs, err = tx.UIDs(); return err }); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 12 || recs[0].UID != 60000 || recs[1].Project != "pa" || recs[4].Taken != "user foo" || recs[4].Project != "" || recs[11].Project != "high" {
		t.Fatalf("records: %+v", recs)
	}
	// Reopening keeps everything.
	s.Close()
	s2, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	var uid uint32
	if err := s2.Update(ctx, func(tx *Tx) (err error) { uid, err = tx.AllocateUID("x", 80000, 80100); return err }); err != nil || uid != 80001 {
		t.Fatalf("after reopening: %d, %v; want 80001", uid, err)
	}
}
