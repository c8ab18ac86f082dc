package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "opusd.db")
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func createProject(t *testing.T, s *Store, name string, owner uint32) *Operation {
	t.Helper()
	var op *Operation
	err := s.Update(context.Background(), func(tx *Tx) error {
		p := &Project{Name: name, OwnerUID: owner, Generation: 1, Status: Status{Phase: PhasePending},
			Spec: Spec{Apps: []AppSpec{{Name: "blog", Git: &GitSource{URL: "https://example.com/blog.git", Ref: "main"}}},
				Superuser: &Superuser{Username: "admin", Password: "pw"}}}
		if err := tx.CreateProject(p); err != nil {
			return err
		}
		var err error
		op, err = tx.NewOperation(p, OpCreate, owner)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return op
}

func TestReopenSeesSameData(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	op := createProject(t, s, "blog1", 1000)
	if _, err := s.UpdateOperation(ctx, op.ID, func(o *Operation) error {
		o.State = OpSucceeded
		o.Steps = append(o.Steps, Step{Name: "user", State: StepDone, Message: "created"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	p, err := s2.GetProject(ctx, "blog1")
	if err != nil {
		t.Fatal(err)
	}
	if p.OwnerUID != 1000 || p.Generation != 1 || len(p.Spec.Apps) != 1 || p.Spec.Apps[0].Git.Ref != "main" || p.Spec.Superuser.Password != "pw" || p.CreateTime.IsZero() {
		t.Fatalf("project after reopen = %+v", p)
	}
	got, err := s2.GetOperation(ctx, op.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != OpSucceeded || len(got.Steps) != 1 || got.Steps[0].Message != "created" || got.Project != "blog1" {
		t.Fatalf("operation after reopen = %+v", got)
	}
	if !strings.HasPrefix(got.ID, "op-") || len(got.ID) != 3+32 {
		t.Fatalf("operation id %q is not op- and 32 hex digits", got.ID)
	}
}

func TestSchemaVersion(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		version string
		wantErr string
	}{
		{"current", "1", ""},
		{"newer", "2", "newer opusd"},
		{"garbage", "x", "not a version number"},
		{"zero", "0", "not a version number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "opusd.db")
			s, err := Open(ctx, path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			createProject(t, s, "keep", 1)
			s.Close()
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketMeta).Put(keySchema, []byte(tc.version))
			}); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s, err = Open(ctx, path, Options{})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				s.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Open = %v, want error containing %q", err, tc.wantErr)
			}
			// The refused file is left as it was.
			db, err = bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			db.View(func(tx *bolt.Tx) error {
				if v := tx.Bucket(bucketMeta).Get(keySchema); string(v) != tc.version {
					t.Errorf("schema_version = %q after refusal, want %q", v, tc.version)
				}
				if tx.Bucket(bucketProjects).Get([]byte("keep")) == nil {
					t.Error("project lost after refusal")
				}
				return nil
			})
		})
	}
}

func TestLockTimeout(t *testing.T) {
	s, path := openTemp(t)
	_ = s
	start := time.Now()
	_, err := Open(context.Background(), path, Options{LockTimeout: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open = %v, want lock error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second Open took %v", d)
	}
}

func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	createProject(t, s, "race", 1)
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := s.UpdateProject(ctx, "race", func(p *Project) error {
					p.Generation++
					return nil
				}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	p, err := s.GetProject(ctx, "race")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1 + workers*each); p.Generation != want {
		t.Fatalf("generation = %d, want %d", p.Generation, want)
	}
}

func TestCreateTakenNameRefused(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	createProject(t, s, "taken", 1)
	err := s.Update(ctx, func(tx *Tx) error {
		return tx.CreateProject(&Project{Name: "taken", OwnerUID: 2})
	})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("CreateProject over a taken name = %v, want ErrExists", err)
	}
	p, _ := s.GetProject(ctx, "taken")
	if p.OwnerUID != 1 {
		t.Fatalf("owner changed to %d", p.OwnerUID)
	}
}

func TestUpdateErrorCommitsNothing(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	createProject(t, s, "atomic", 1)
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx *Tx) error {
		p, err := tx.Project("atomic")
		if err != nil {
			return err
		}
		p.Generation = 99
		if err := tx.PutProject(p); err != nil {
			return err
		}
		if _, err := tx.NewOperation(p, OpAddApp, 1); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v", err)
	}
	p, _ := s.GetProject(ctx, "atomic")
	ops, _ := s.ListOperations(ctx, "atomic", 0)
	if p.Generation != 1 || len(ops) != 1 {
		t.Fatalf("after failed update: generation %d, %d operations", p.Generation, len(ops))
	}
}

func TestListOperationsNewestFirstAndPerProject(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	first := createProject(t, s, "a", 1)
	createProject(t, s, "a0", 1) // a neighbour whose name extends "a"
	createProject(t, s, "b", 1)
	var ids []string
	ids = append(ids, first.ID)
	for i := 0; i < 3; i++ {
		s.Update(ctx, func(tx *Tx) error {
			p, _ := tx.Project("a")
			op, err := tx.NewOperation(p, OpAddApp, 1)
			if err == nil {
				ids = append(ids, op.ID)
			}
			return err
		})
	}
	ops, err := s.ListOperations(ctx, "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 4 {
		t.Fatalf("got %d operations, want 4", len(ops))
	}
	for i, op := range ops {
		if want := ids[len(ids)-1-i]; op.ID != want || op.Project != "a" {
			t.Fatalf("ops[%d] = %s (%s), want %s", i, op.ID, op.Project, want)
		}
	}
	ops, _ = s.ListOperations(ctx, "a", 2)
	if len(ops) != 2 || ops[0].ID != ids[3] {
		t.Fatalf("limit 2: %d ops", len(ops))
	}
	for _, name := range []string{"b", "a0"} {
		ops, _ = s.ListOperations(ctx, name, 0)
		if len(ops) != 1 || ops[0].Project != name {
			t.Fatalf("%s: %d ops", name, len(ops))
		}
	}
	ops, _ = s.ListOperations(ctx, "zzz", 0)
	if len(ops) != 0 {
		t.Fatalf("unknown project has %d ops", len(ops))
	}
}

func TestPruneKeepsUnfinished(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	pending := createProject(t, s, "busy", 1) // stays PENDING
	for i := 0; i < MaxOperationsPerProject+10; i++ {
		err := s.Update(ctx, func(tx *Tx) error {
			p, _ := tx.Project("busy")
			op, err := tx.NewOperation(p, OpReconcile, 1)
			if err != nil {
				return err
			}
			op.State = OpSucceeded
			return tx.PutOperation(op)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	ops, _ := s.ListOperations(ctx, "busy", 0)
	if len(ops) != MaxOperationsPerProject {
		t.Fatalf("kept %d operations, want %d", len(ops), MaxOperationsPerProject)
	}
	if _, err := s.GetOperation(ctx, pending.ID); err != nil {
		t.Fatalf("unfinished operation pruned: %v", err)
	}
}

func TestDeleteProjectKeepsOnlyListed(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	old := createProject(t, s, "gone", 1)
	var del *Operation
	s.Update(ctx, func(tx *Tx) (err error) {
		p, _ := tx.Project("gone")
		del, err = tx.NewOperation(p, OpDelete, 1)
		return err
	})
	if err := s.Update(ctx, func(tx *Tx) error { return tx.DeleteProject("gone", del.ID) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetProject(ctx, "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetProject after delete = %v", err)
	}
	if _, err := s.GetOperation(ctx, old.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old op after delete = %v", err)
	}
	if _, err := s.GetOperation(ctx, del.ID); err != nil {
		t.Fatalf("kept op after delete = %v", err)
	}
	// A new project of the same name starts with an empty history.
	createProject(t, s, "gone", 2)
	ops, _ := s.ListOperations(ctx, "gone", 0)
	if len(ops) != 1 || ops[0].OwnerUID != 2 {
		t.Fatalf("recreated project sees %d ops", len(ops))
	}
}

func TestChangedFiresAfterCommit(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	op := createProject(t, s, "watch", 1)
	ch, release := s.Changed(op.ID)
	defer release()
	select {
	case <-ch:
		t.Fatal("fired before any change")
	default:
	}
	// A failed update fires nothing.
	s.UpdateOperation(ctx, op.ID, func(o *Operation) error { return errors.New("no") })
	select {
	case <-ch:
		t.Fatal("fired on a rolled-back update")
	default:
	}
	done := make(chan *Operation)
	go func() {
		<-ch
		got, _ := s.GetOperation(ctx, op.ID)
		done <- got
	}()
	s.UpdateOperation(ctx, op.ID, func(o *Operation) error { o.State = OpRunning; return nil })
	select {
	case got := <-done:
		if got.State != OpRunning {
			t.Fatalf("woken watcher read state %s", got.State)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watcher not woken")
	}
	release()
	ch2, release2 := s.Changed(op.ID)
	release2()
	_ = ch2
	if n := s.watch.Keys(); n != 0 {
		t.Fatalf("%d watch entries left after release", n)
	}
}

func TestCanceledContext(t *testing.T) {
	s, _ := openTemp(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Update(ctx, func(tx *Tx) error { return tx.CreateProject(&Project{Name: "x"}) })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Update with canceled ctx = %v", err)
	}
	if _, err := s.GetProject(context.Background(), "x"); !errors.Is(err, ErrNotFound) {
		t.Fatal("project written despite canceled context")
	}
}

func BenchmarkGetProject(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "opusd.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.Update(ctx, func(tx *Tx) error {
		for i := 0; i < 1000; i++ {
			if err := tx.CreateProject(&Project{Name: fmt.Sprintf("p%d", i)}); err != nil {
				return err
			}
		}
		return nil
	})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.GetProject(ctx, "p500"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAddRevisionNumbers: revisions are numbered from 1, an unnumbered
// (older) history keeps its positions as numbers, and dropping the oldest
// renumbers nothing.
func TestAddRevisionNumbers(t *testing.T) {
	numbers := func(st AppStatus) []int {
		var out []int
		for i := range st.Revisions {
			out = append(out, st.RevisionNumber(i))
		}
		return out
	}
	var st AppStatus
	for _, r := range []string{"a", "b", "c", "d"} {
		st.AddRevision(Revision{Resolved: r}, 3)
	}
	if got := numbers(st); !slices.Equal(got, []int{2, 3, 4}) || st.Revisions[0].Resolved != "b" {
		t.Errorf("after 4 revisions keeping 3: numbers %v, oldest %q", got, st.Revisions[0].Resolved)
	}
	legacy := AppStatus{Revisions: []Revision{{Resolved: "a"}, {Resolved: "b"}, {Resolved: "c"}}}
	if got := numbers(legacy); !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("unnumbered history numbered %v", got)
	}
	legacy.AddRevision(Revision{Resolved: "d"}, 3)
	if got := numbers(legacy); !slices.Equal(got, []int{2, 3, 4}) || legacy.Revisions[0].Number != 2 {
		t.Errorf("unnumbered history after one more, keeping 3: %v (stored %+v)", got, legacy.Revisions)
	}
}
