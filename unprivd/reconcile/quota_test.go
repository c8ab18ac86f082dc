package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/unprivd/store"
)

// TestSnapshotQuota: the data snapshots of all of an owner's projects
// count against snapshot_quota. Over it, the owner's oldest snapshot goes
// first, another project's included (record and file); one a pending
// restore needs stays; a database larger than the room left is not
// snapshotted and the step says why; another owner's snapshots are
// untouched.
func TestSnapshotQuota(t *testing.T) {
	e, r, _ := snapEnvWith(t, func(o *Options) { o.SnapshotQuota = 25 })
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	put := func(name string, owner uint32, restore string, snaps ...store.Snapshot) {
		t.Helper()
		err := e.st.Update(context.Background(), func(tx *store.Tx) error {
			return tx.CreateProject(&store.Project{Name: name, OwnerUID: owner, Spec: store.Spec{RestoreSnapshot: restore}, Snapshots: snaps})
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range snaps {
			dir := filepath.Join(e.base, "snapshots", name)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, s.ID), make([]byte, s.Size), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	other := store.Snapshot{ID: "20200101T000000Z-aaaaaa", Time: old, Size: 10}
	foreign := store.Snapshot{ID: "20200101T000000Z-bbbbbb", Time: old.Add(-time.Hour), Size: 100}
	put("sibling", 1000, "", other) // the same owner as "live"
	put("stranger", 2000, "", foreign)

	e.privd.setDB("live", "rows-at-v1") // 10 bytes
	op := e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = "v2" })
	mustSucceed(t, op)
	if n := len(e.project(t, "sibling").Snapshots); n != 1 {
		t.Fatalf("within the quota (20 of 25 bytes), the sibling's snapshot went: %d left", n)
	}

	e.privd.setDB("live", "rows-at-v2") // 10 bytes again (the fake migrate grew it)
	op = e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = "v3" })
	mustSucceed(t, op)
	if m := stepMessage(op, "snapshot"); !strings.Contains(m, "1 older dropped") {
		t.Errorf("snapshot step over the quota: %q", m)
	}
	if n := len(e.project(t, "sibling").Snapshots); n != 0 {
		t.Errorf("over the quota (30 of 25 bytes), the owner's oldest snapshot (the sibling's) stayed")
	}
	if _, err := os.Stat(filepath.Join(e.base, "snapshots", "sibling", other.ID)); !os.IsNotExist(err) {
		t.Errorf("the dropped snapshot's file is still there (%v)", err)
	}
	if n := len(e.project(t, "live").Snapshots); n != 2 {
		t.Errorf("live keeps %d snapshots, want 2 (20 of 25 bytes)", n)
	}
	if p := e.project(t, "stranger"); len(p.Snapshots) != 1 {
		t.Errorf("another owner's snapshot was dropped")
	}
	if _, err := os.Stat(filepath.Join(e.base, "snapshots", "stranger", foreign.ID)); err != nil {
		t.Errorf("another owner's snapshot file: %v", err)
	}

	// A pending restore pins 20 bytes of the sibling's: 5 bytes of room
	// are left, and the 10-byte database does not fit.
	pinned := store.Snapshot{ID: "20200101T000000Z-cccccc", Time: old, Size: 20}
	if err := e.st.Update(context.Background(), func(tx *store.Tx) error { return tx.DeleteProject("sibling") }); err != nil {
		t.Fatal(err)
	}
	put("sibling", 1000, pinned.ID, pinned)
	before := e.project(t, "live").Snapshots
	e.privd.setDB("live", "rows-at-v3")
	op = e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = "v1" })
	mustSucceed(t, op)
	if m := stepMessage(op, "snapshot"); !strings.Contains(m, "no data snapshot") || !strings.Contains(m, "snapshot quota") {
		t.Errorf("snapshot step without room in the quota: %q", m)
	}
	if p := e.project(t, "sibling"); len(p.Snapshots) != 1 {
		t.Errorf("the pinned snapshot went")
	}
	if got := e.project(t, "live").Snapshots; len(got) != len(before) {
		t.Errorf("a snapshot that does not fit was recorded: %+v", got)
	}
}
