package reconcile

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/opus-hosting/opus/internal/etcdtest"
	"github.com/opus-hosting/opus/unprivd/store"
)

// TestRunStopsWhenServedElsewhere: a run on a project another host serves
// now (it moved while the run went on) records nothing in its record:
// the step's status write is refused, and so are the run's end and undo.
func TestRunStopsWhenServedElsewhere(t *testing.T) {
	srv := etcdtest.ForTest(t, filepath.Join(t.TempDir(), "etcd"))
	ctx := context.Background()
	st, err := store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: []string{srv.ClientURL}, Prefix: "/elsewhere/", Host: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Update(ctx, func(tx *store.Tx) error {
		return tx.CreateProject(&store.Project{Name: "blog", Host: "a", Generation: 1, Status: store.Status{Phase: store.PhaseDeploying}})
	}); err != nil {
		t.Fatal(err)
	}
	p, err := st.GetProject(ctx, "blog")
	if err != nil {
		t.Fatal(err)
	}
	// The run began here; then the project became b's.
	if _, err := st.UpdateProject(ctx, "blog", func(q *store.Project) error { q.Host = "b"; return nil }); err != nil {
		t.Fatal(err)
	}
	before, _ := st.GetProject(ctx, "blog")
	task := &Task{Project: p, st: st}
	err = task.Update(ctx, func(q *store.Project) { q.Status.Phase = store.PhaseFailed; q.Status.LastError = "from a" })
	if !errors.Is(err, errServedElsewhere) {
		t.Fatalf("a status write of a's run on b's project: %v; want refused", err)
	}
	after, _ := st.GetProject(ctx, "blog")
	if after.Status.Phase != before.Status.Phase || after.Status.LastError != "" || !after.UpdateTime.Equal(before.UpdateTime) {
		t.Fatalf("b's record changed by a's run: %+v", after.Status)
	}
}
