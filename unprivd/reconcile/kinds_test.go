package reconcile

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/unprivd/store"
)

// TestKindsFilter: a reconciler with Options.Kinds works only on open
// operations of those kinds (and opens none of another kind for a spec
// change), and one without skips the exclusive kinds; an operation left
// alone stays as it was (PENDING, no steps), and so does its project.
func TestKindsFilter(t *testing.T) {
	const x, y = store.OpKind("X"), store.OpKind("Y")
	for _, tc := range []struct {
		name      string
		kinds     []store.OpKind
		exclusive []store.OpKind
		// open are the kinds of the project's open operations; ahead says
		// its spec is a generation ahead of what its host has.
		open  []store.OpKind
		ahead bool
		// want are the kinds of the operations the reconciler ends;
		// opened the kind of one it opens itself ("": none).
		want   []store.OpKind
		opened store.OpKind
		// sentinel is a kind the reconciler claims: its run, queued after
		// the project's, says the project's claim is over.
		sentinel store.OpKind
	}{
		{name: "kinds X, open X", kinds: []store.OpKind{x}, open: []store.OpKind{x}, want: []store.OpKind{x}, sentinel: x},
		{name: "kinds X, open X, ahead", kinds: []store.OpKind{x}, open: []store.OpKind{x}, ahead: true, want: []store.OpKind{x}, sentinel: x},
		{name: "kinds X, open Y", kinds: []store.OpKind{x}, open: []store.OpKind{y}, sentinel: x},
		{name: "kinds X, open Y, ahead", kinds: []store.OpKind{x}, open: []store.OpKind{y}, ahead: true, sentinel: x},
		{name: "kinds X, open X and Y", kinds: []store.OpKind{x}, open: []store.OpKind{x, y}, want: []store.OpKind{x}, sentinel: x},
		{name: "kinds X, ahead alone", kinds: []store.OpKind{x}, ahead: true, sentinel: x},
		{name: "default, open Y", open: []store.OpKind{y}, want: []store.OpKind{y}, sentinel: y},
		{name: "default, ahead alone", ahead: true, opened: store.OpReconcile, sentinel: y},
		{name: "default, exclusive X, open X", exclusive: []store.OpKind{x}, open: []store.OpKind{x}, sentinel: y},
		{name: "default, exclusive X, open X, ahead", exclusive: []store.OpKind{x}, open: []store.OpKind{x}, ahead: true, opened: store.OpReconcile, sentinel: y},
		{name: "default, exclusive X, open X and Y", exclusive: []store.OpKind{x}, open: []store.OpKind{x, y}, want: []store.OpKind{y}, sentinel: y},
		{name: "kinds X, exclusive X, open X", kinds: []store.OpKind{x}, exclusive: []store.OpKind{x}, open: []store.OpKind{x}, want: []store.OpKind{x}, sentinel: x},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := exclusiveKinds
			exclusiveKinds = map[store.OpKind]bool{}
			for _, k := range tc.exclusive {
				exclusiveKinds[k] = true
			}
			t.Cleanup(func() { exclusiveKinds = saved })
			e := newEnv(t)
			e.tweak = func(o *Options) { o.Kinds = tc.kinds }
			r := e.start(t, 1)
			ops := e.pendingProject(t, "proj", tc.ahead, tc.open)
			before := e.project(t, "proj")
			sentinel := e.pendingProject(t, "sentinel", false, []store.OpKind{tc.sentinel})
			r.Kick("proj")
			r.Kick("sentinel")
			mustSucceed(t, e.wait(t, sentinel[0].ID))
			stop(t, r)

			for _, op := range ops {
				got, err := e.st.GetOperation(context.Background(), op.ID)
				if err != nil {
					t.Fatal(err)
				}
				if slices.Contains(tc.want, op.Kind) {
					if got.State != store.OpSucceeded || stepNames(got) != deployedSteps {
						t.Errorf("%s operation: %s, steps %s; want it worked on", op.Kind, got.State, stepNames(got))
					}
				} else if got.State != store.OpPending || len(got.Steps) != 0 {
					t.Errorf("%s operation: %s, steps %s; want it left PENDING", op.Kind, got.State, stepNames(got))
				}
			}
			all, err := e.st.ListOperations(context.Background(), "proj", 0)
			if err != nil {
				t.Fatal(err)
			}
			var opened []store.OpKind
			for _, op := range all {
				if !slices.ContainsFunc(ops, func(o *store.Operation) bool { return o.ID == op.ID }) {
					opened = append(opened, op.Kind)
					mustSucceed(t, op)
				}
			}
			if want := []store.OpKind{tc.opened}; (tc.opened == "" && len(opened) != 0) || (tc.opened != "" && !slices.Equal(opened, want)) {
				t.Errorf("the reconciler opened operations %v for proj; want %q", opened, tc.opened)
			}
			p := e.project(t, "proj")
			var calls []string
			for _, c := range e.privd.callList() {
				if strings.HasSuffix(c, " proj") {
					calls = append(calls, c)
				}
			}
			if len(tc.want) == 0 && tc.opened == "" {
				if p.Status.Phase != before.Status.Phase || p.Status.ObservedGeneration != before.Status.ObservedGeneration || len(calls) != 0 {
					t.Errorf("proj was worked on: phase %s observed %d, privd calls %v", p.Status.Phase, p.Status.ObservedGeneration, calls)
				}
			} else if p.Status.Phase != store.PhaseReady || p.Status.ObservedGeneration != p.Generation || len(calls) == 0 {
				t.Errorf("proj: phase %s observed %d of %d, %d privd calls; want it deployed", p.Status.Phase, p.Status.ObservedGeneration, p.Generation, len(calls))
			}
		})
	}
}

// pendingProject records project name with a PENDING operation of each
// of kinds; ahead puts its spec a generation ahead of its (never
// deployed) host, else the host is recorded READY at its generation.
func (e *env) pendingProject(t *testing.T, name string, ahead bool, kinds []store.OpKind) []*store.Operation {
	t.Helper()
	var ops []*store.Operation
	err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		ops = nil
		p := &store.Project{Name: name, OwnerUID: 1000, Generation: 1, Status: store.Status{Phase: store.PhaseReady, ObservedGeneration: 1}}
		if ahead {
			p.Status = store.Status{Phase: store.PhasePending}
		}
		if err := tx.CreateProject(p); err != nil {
			return err
		}
		for _, k := range kinds {
			op, err := tx.NewOperation(p, k, 1000)
			if err != nil {
				return fmt.Errorf("operation %s: %w", k, err)
			}
			ops = append(ops, op)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ops
}

// TestKindsFilterUndo: a failed change undone by a reconciler with
// Options.Kinds cancels the other open operations it claims, as ever, and
// leaves those of other kinds alone.
func TestKindsFilterUndo(t *testing.T) {
	const x, y = store.OpKind("X"), store.OpKind("Y")
	e := newEnv(t)
	e.tweak = func(o *Options) { o.Kinds = []store.OpKind{x} }
	r := e.start(t, 1)
	first := e.pendingProject(t, "proj", true, []store.OpKind{x})
	r.Kick("proj")
	mustSucceed(t, e.wait(t, first[0].ID))
	var change, later, other *store.Operation
	err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		p, err := tx.Project("proj")
		if err != nil {
			return err
		}
		p.Generation++
		if err := tx.PutProject(p); err != nil {
			return err
		}
		if change, err = tx.NewOperation(p, x, 1000); err != nil {
			return err
		}
		if later, err = tx.NewOperation(p, x, 1000); err != nil {
			return err
		}
		other, err = tx.NewOperation(p, y, 1000)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	e.privd.mu.Lock()
	e.privd.failOnce["EnsureBackend"] = fmt.Errorf("backend broke")
	e.privd.mu.Unlock()
	r.Kick("proj")
	for _, op := range []*store.Operation{change, later} {
		if got := e.wait(t, op.ID); got.State != store.OpFailed {
			t.Fatalf("X operation after the failed change: %s %q; want FAILED", got.State, got.Error)
		}
	}
	stop(t, r)
	got, err := e.st.GetOperation(context.Background(), other.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.OpPending || got.Error != "" {
		t.Fatalf("Y operation after X's undo: %s %q; want it left PENDING", got.State, got.Error)
	}
}
