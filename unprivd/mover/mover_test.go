package mover

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/etcdtest"
	"github.com/opus-hosting/opus/unprivd/store"
)

// TestSourceGivesUpOnDeadTarget (issue 20 attack): a move whose target
// stopped answering before it took the data (its opusd died, or was
// stopped, just after the move was asked for) is ended by the source
// once the target would have given up itself (giveUp): before, nothing
// ended it, and the project stayed "moving" for as long as the target was
// gone, every change to it refused, destroy included. A move the target
// may still take (it is listed, or the move is recent) is left alone,
// and so is one whose copy the target is deploying.
func TestSourceGivesUpOnDeadTarget(t *testing.T) {
	srv := etcdtest.ForTest(t, filepath.Join(t.TempDir(), "etcd"))
	ctx := context.Background()
	open := func(host string) *store.Store {
		st, err := store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: []string{srv.ClientURL}, Prefix: "/mover/", Host: host, HostTTL: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if err := st.RegisterHost(ctx, store.Host{Name: host, Front: "127.0.0.1:80", Capacity: 10}); err != nil {
			t.Fatal(err)
		}
		return st
	}
	a := open("a")
	open("live") // a target that answers
	tests := []struct {
		name, to string
		age      time.Duration
		state    store.MoveState
		ended    bool
	}{
		{name: "deadold", to: "gone", age: giveUp + time.Minute, state: store.MoveExported, ended: true},
		{name: "deadrecent", to: "gone", age: time.Minute, state: store.MoveExported},
		{name: "liveold", to: "live", age: giveUp + time.Minute, state: store.MoveExported},
		{name: "deaddeploying", to: "gone", age: giveUp + time.Minute, state: store.MoveDeploying},
	}
	for _, tt := range tests {
		err := a.Update(ctx, func(tx *store.Tx) error {
			p := &store.Project{Name: tt.name, OwnerUID: 1000, Host: "a", Status: store.Status{Phase: store.PhaseReady}}
			if err := tx.CreateProject(p); err != nil {
				return err
			}
			op, err := tx.NewOperation(p, store.OpMove, 1000)
			if err != nil {
				return err
			}
			// Exported, with no files: the source has nothing to offer
			// again (the test's mover has no peer listener).
			p.Move = &store.Move{ID: "20261205T000000Z-" + tt.name, From: "a", To: tt.to, Operation: op.ID,
				Token: strings.Repeat("ab", 32), State: tt.state, Time: time.Now().Add(-tt.age)}
			return tx.PutProject(p)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	m := New(a, Options{Host: "a", BaseDir: t.TempDir(), MaxBytes: 1 << 20, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := m.pass(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := a.GetProject(ctx, tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if ended := p.Move == nil; ended != tt.ended {
				t.Fatalf("move ended: %v, want %v (move %+v)", ended, tt.ended, p.Move)
			}
			ops, err := a.ListOperations(ctx, tt.name, 1)
			if err != nil || len(ops) != 1 {
				t.Fatalf("operations: %v, %v", ops, err)
			}
			if failed := ops[0].State == store.OpFailed; failed != tt.ended {
				t.Fatalf("operation %s: %s (%s); want failed %v", ops[0].ID, ops[0].State, ops[0].Error, tt.ended)
			}
			if tt.ended && !strings.Contains(ops[0].Error, "gone") {
				t.Errorf("the failed move's reason does not name its target: %s", ops[0].Error)
			}
		})
	}
}

// TestPruneFetchLeftovers: what a fetch cut short by the end of its opusd
// left under moves/ (the fetched file, "in-ID", and its temporary file)
// is removed at the next pass when no move needs it, such as when the
// source gave up on the move meanwhile; a move's export still needed is
// kept.
func TestPruneFetchLeftovers(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "moves")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"in-20261205T000000Z-abc", ".in-20261205T000000Z-abc.tmp123", "20261205T000000Z-old", "20261205T000000Z-old-media", "20261205T000000Z-kept", "20261205T000000Z-kept-media"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := &Mover{opt: Options{BaseDir: base}}
	if err := m.prune(map[string]bool{"20261205T000000Z-kept": true}); err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range es {
		left = append(left, e.Name())
	}
	if got, want := strings.Join(left, " "), "20261205T000000Z-kept 20261205T000000Z-kept-media"; got != want {
		t.Errorf("left under moves/: %s; want %s", got, want)
	}
}

// TestIncomingCopyKeepsOwner: the target's copy, which becomes the project,
// is its owner's by the same uid and name, with the same secret key, spec
// and generation, on the target, restoring the data the move carried.
func TestIncomingCopyKeepsOwner(t *testing.T) {
	p := &store.Project{Name: "blog", OwnerUID: 1001, OwnerName: "alice", Host: "a", Generation: 7,
		Spec:    store.Spec{Admin: true},
		Secrets: &store.Secrets{SecretKey: "k"},
		Move: &store.Move{ID: "20261205T000000Z-abcdef", From: "a", To: "b",
			Files: []store.MoveFile{{ID: "20261205T000000Z-abcdef", Size: 10}, {ID: "20261205T000000Z-abcdef-media", Size: 3}}},
	}
	c := incomingCopy(p, "b", time.Now())
	if c.OwnerUID != 1001 || c.OwnerName != "alice" || c.Host != "b" || c.Generation != 7 || !c.Spec.Admin || c.Secrets.SecretKey != "k" {
		t.Fatalf("copy %+v; want alice's (1001) project on b at generation 7 with its spec and key", c)
	}
	if c.Spec.RestoreSnapshot != p.Move.ID || len(c.Snapshots) != 1 || c.Snapshots[0].Size != 10 || c.Snapshots[0].MediaSize != 3 || !c.Snapshots[0].Media {
		t.Fatalf("copy restores %q from %+v; want the move's data", c.Spec.RestoreSnapshot, c.Snapshots)
	}
	c.Secrets.SecretKey = "changed"
	if p.Secrets.SecretKey != "k" {
		t.Fatal("the copy shares its secrets with the project")
	}
}
