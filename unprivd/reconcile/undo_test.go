package reconcile

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/unprivd/store"
)

// TestChangeDuringFailingRunCancelled: a change asked for while another
// change runs is made on top of it; when that one fails and is undone,
// the later one is cancelled with a message saying so, and nothing of
// either reaches the spec.
func TestChangeDuringFailingRunCancelled(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	e.deployed(t, r, "wiki")
	prev := e.project(t, "wiki")

	ch := make(chan struct{})
	e.privd.mu.Lock()
	e.privd.block["SecureTree"] = ch
	e.privd.failOnce["SecureTree"] = status.Error(codes.Internal, "openat2: permission denied")
	e.privd.mu.Unlock()
	calls := len(e.privd.callList())
	first := e.change(t, "wiki", store.OpUpdateSettings, func(s *store.Spec) { s.Settings.Debug = true })
	r.Kick("wiki")
	waitCall(t, e, calls, "SecureTree wiki")
	second := e.change(t, "wiki", store.OpUpdateSettings, func(s *store.Spec) { s.Settings.Env = map[string]string{"A": "b"} })
	r.Kick("wiki")
	close(ch)

	op := e.wait(t, first)
	if op.State != store.OpFailed || !strings.Contains(op.Error, "permission denied") {
		t.Fatalf("first change: %s %q", op.State, op.Error)
	}
	op2 := e.wait(t, second)
	if op2.State != store.OpFailed || !strings.Contains(op2.Error, "cancelled") || !strings.Contains(op2.Error, first) {
		t.Fatalf("second change: %s %q, want it cancelled naming %s", op2.State, op2.Error, first)
	}
	waitPhase(t, e, "wiki", store.PhaseReady)
	p := e.project(t, "wiki")
	if !reflect.DeepEqual(p.Spec, prev.Spec) || p.Status.ObservedGeneration != p.Generation || p.Status.LastFailure == nil || p.Status.LastFailure.Operation != first {
		t.Fatalf("after both: spec %+v (want %+v), status %+v", p.Spec, prev.Spec, p.Status)
	}
}

// TestUndoResumedAfterCrash: opusd stopped while it undid a failed change
// (the operation RUNNING with its error, the spec already back): the next
// start finishes the undo, and the operation ends FAILED with the
// change's error, not cancelled and not succeeded.
func TestUndoResumedAfterCrash(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	e.deployed(t, r, "wiki")
	stop(t, r)

	const failure = "step migrate: manage.py migrate failed: RuntimeError: opus-unit-boom"
	var opID string
	err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		p, err := tx.Project("wiki")
		if err != nil {
			return err
		}
		p.Generation++
		p.Status.Phase = store.PhaseDeploying
		if err := tx.PutProject(p); err != nil {
			return err
		}
		op, err := tx.NewOperation(p, store.OpUpdateSettings, 1000)
		if err != nil {
			return err
		}
		op.State, op.Error, opID = store.OpRunning, failure, op.ID
		return tx.PutOperation(op)
	})
	if err != nil {
		t.Fatal(err)
	}
	e.start(t, 1)
	op := e.wait(t, opID)
	if op.State != store.OpFailed || op.Error != failure || len(op.Steps) == 0 || op.Steps[0].Name != "resume" {
		t.Fatalf("resumed undo: %s %q, steps %s", op.State, op.Error, stepNames(op))
	}
	p := e.project(t, "wiki")
	if p.Status.Phase != store.PhaseReady || p.Status.ObservedGeneration != p.Generation || p.Status.LastFailure == nil || p.Status.LastFailure.Error != failure {
		t.Fatalf("status %+v", p.Status)
	}
}

// TestFailedCreateUndoResumedAfterCrash: opusd stopped while it tore down
// a project whose first deploy failed: the next start finishes the
// teardown, and the create operation ends FAILED with its own error.
func TestFailedCreateUndoResumedAfterCrash(t *testing.T) {
	e := newEnv(t)
	const failure = "step migrate: manage.py migrate failed: RuntimeError: opus-unit-boom"
	id := e.create(t, "wiki")
	err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		p, err := tx.Project("wiki")
		if err != nil {
			return err
		}
		p.Deleting, p.Status.Phase = true, store.PhaseDeleting
		p.Generation++
		if err := tx.PutProject(p); err != nil {
			return err
		}
		op, err := tx.Operation(id)
		if err != nil {
			return err
		}
		op.State, op.Error = store.OpRunning, failure
		return tx.PutOperation(op)
	})
	if err != nil {
		t.Fatal(err)
	}
	e.start(t, 1)
	op := e.wait(t, id)
	if op.State != store.OpFailed || op.Error != failure || !strings.HasSuffix(stepNames(op), "forget:DONE") {
		t.Fatalf("resumed teardown: %s %q, steps %s", op.State, op.Error, stepNames(op))
	}
	if _, err := e.st.GetProject(context.Background(), "wiki"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("project after the resumed teardown: %v", err)
	}
}

// TestStartAdoptsApplied: a project recorded before opusd kept the applied
// spec gets one at start when it is READY at its generation (without the
// superuser's password), so its next failed change is undone; one that is
// not is left alone.
func TestStartAdoptsApplied(t *testing.T) {
	e := newEnv(t)
	spec := store.Spec{Superuser: &store.Superuser{Username: "admin", Email: "a@example.com", Password: "pw-123456"}, Settings: store.Settings{Debug: true}}
	err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		for name, phase := range map[string]store.Phase{"old": store.PhaseReady, "sick": store.PhaseFailed} {
			p := &store.Project{Name: name, OwnerUID: 1000, Generation: 1, Spec: spec.Clone(),
				Status: store.Status{Phase: phase, ObservedGeneration: 1}}
			if err := tx.CreateProject(p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r := New(e.st, e.privd, e.options(1))
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stop(t, r)
	p := e.project(t, "old")
	want := spec.Clone()
	want.Superuser.Password = ""
	if p.Applied == nil || !reflect.DeepEqual(*p.Applied, want) || p.Spec.Superuser.Password != "pw-123456" {
		t.Errorf("old: applied %+v, want %+v; spec superuser %+v", p.Applied, want, p.Spec.Superuser)
	}
	if p := e.project(t, "sick"); p.Applied != nil {
		t.Errorf("a FAILED project got an applied spec: %+v", p.Applied)
	}
}

func stop(t *testing.T, r *Reconciler) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitCall waits for call among privd's calls after the first n.
func waitCall(t *testing.T, e *env, n int, call string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(e.privd.callList()[n:], call) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s: %v", call, e.privd.callList())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitPhase(t *testing.T, e *env, name string, phase store.Phase) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := e.project(t, name)
		if p.Status.Phase == phase && p.Status.ObservedGeneration == p.Generation {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never %s at its generation: %+v (generation %d)", name, phase, p.Status, p.Generation)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDestroyDuringFailingChange: a destroy asked for while a change runs
// is not "cancelled, nothing of it applied" when that change fails: the
// project is destroyed, so the destroy's operation succeeds, and the
// failed change's operation ends FAILED with its own error.
func TestDestroyDuringFailingChange(t *testing.T) {
	for _, first := range []bool{false, true} {
		name := map[bool]string{false: "change", true: "create"}[first]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			r := e.start(t, 1)
			id := e.create(t, "wiki")
			if !first {
				r.Kick("wiki")
				mustSucceed(t, e.wait(t, id))
			}
			ch := make(chan struct{})
			e.privd.mu.Lock()
			e.privd.block["SecureTree"] = ch
			e.privd.failOnce["SecureTree"] = status.Error(codes.Internal, "openat2: permission denied")
			e.privd.mu.Unlock()
			calls := len(e.privd.callList())
			change := id
			if !first {
				change = e.change(t, "wiki", store.OpUpdateSettings, func(s *store.Spec) { s.Settings.Debug = true })
			}
			r.Kick("wiki")
			waitCall(t, e, calls, "SecureTree wiki")
			del := e.mutate(t, "wiki", store.OpDelete)
			r.Kick("wiki")
			watch := func(id string) <-chan *store.Operation {
				out := make(chan *store.Operation, 1)
				go func() {
					var last *store.Operation
					deadline := time.Now().Add(10 * time.Second)
					for time.Now().Before(deadline) {
						op, err := e.st.GetOperation(context.Background(), id)
						if err == nil {
							last = op
							if op.State.Final() {
								break
							}
						}
						time.Sleep(2 * time.Millisecond)
					}
					out <- last
				}()
				return out
			}
			delCh, changeCh := watch(del), watch(change)
			close(ch)
			op := <-changeCh
			if op == nil || op.State != store.OpFailed || !strings.Contains(op.Error, "permission denied") {
				t.Fatalf("failed change: %+v", op)
			}
			dop := <-delCh
			if dop == nil || dop.State != store.OpSucceeded {
				t.Fatalf("destroy asked for meanwhile: %+v, want it SUCCEEDED (the project is destroyed)", dop)
			}
			if _, err := e.st.GetProject(context.Background(), "wiki"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("project still recorded after its destroy: %v", err)
			}
		})
	}
}

// TestDestroyDuringDeployTearsDown: a destroy asked for while a deploy
// runs (after a step recorded status, which refreshes the run's copy of
// the project) is carried out by a teardown: the deploy that succeeds does
// not take the refreshed record's Deleting for its own and forget the
// project with its user, backend and site still on the host.
func TestDestroyDuringDeployTearsDown(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	id := e.create(t, "wiki")
	ch := make(chan struct{})
	e.privd.mu.Lock()
	e.privd.block["ReloadApache"] = ch
	e.privd.mu.Unlock()
	r.Kick("wiki")
	waitCall(t, e, 0, "ReloadApache")
	del := e.mutate(t, "wiki", store.OpDelete)
	r.Kick("wiki")
	close(ch)
	mustSucceed(t, e.wait(t, id))
	if op := e.wait(t, del); op.State != store.OpSucceeded || stepNames(op) != tornDownSteps {
		t.Fatalf("destroy: %s %q, steps %s", op.State, op.Error, stepNames(op))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := e.st.GetProject(context.Background(), "wiki")
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("project never destroyed: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, call := range []string{"RemoveSite wiki", "RemoveBackend wiki", "RemoveTree wiki", "DeleteUser wiki"} {
		if !slices.Contains(e.privd.callList(), call) {
			t.Errorf("project forgotten without %s (destroy op %s): calls %v", call, del, e.privd.callList())
		}
	}
}

// deployed creates project name and waits until r deployed it.
func (e *env) deployed(t *testing.T, r *Reconciler, name string) {
	t.Helper()
	id := e.create(t, name)
	r.Kick(name)
	mustSucceed(t, e.wait(t, id))
}
