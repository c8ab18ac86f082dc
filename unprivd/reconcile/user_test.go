package reconcile

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/unprivd/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestUserStepNeverReusesUIDs: each project's user is asked for with a
// fresh id from the range; an id privd finds in use is skipped for good; a
// destroyed project's id is not handed to the next project, even one of the
// same name; a failed run keeps the project's id for the next.
func TestUserStepNeverReusesUIDs(t *testing.T) {
	e := newEnv(t)
	e.privd.takenUIDs = map[uint32]bool{70001: true}
	e.tweak = func(o *Options) { o.ProjectUIDs = config.UIDRange{First: 70000, Last: 70099} }
	r := e.start(t, 1)
	deploy := func(name string) *store.Operation {
		t.Helper()
		id := e.create(t, name)
		r.Kick(name)
		return e.wait(t, id)
	}
	if op := deploy("blog"); op.State != store.OpSucceeded {
		t.Fatalf("blog: %s %s", op.State, op.Error)
	}
	op := deploy("shop")
	if op.State != store.OpSucceeded || !strings.Contains(stepMessage(op, "user"), "skipped uids in use on the host: [70001]") {
		t.Fatalf("shop: %s %s; user step %q", op.State, op.Error, stepMessage(op, "user"))
	}
	del := e.mutate(t, "blog", store.OpDelete)
	r.Kick("blog")
	if op := e.wait(t, del); op.State != store.OpSucceeded {
		t.Fatalf("destroy blog: %s %s", op.State, op.Error)
	}
	if op := deploy("blog"); op.State != store.OpSucceeded {
		t.Fatalf("blog again: %s %s", op.State, op.Error)
	}
	// A first deploy that fails after the user step leaves no project,
	// and its id is never handed out again: the next create gets another.
	e.privd.setFail("SecureTree", status.Error(codes.Internal, "boom"))
	if op := deploy("wiki"); op.State != store.OpFailed {
		t.Fatalf("wiki with SecureTree failing: %s", op.State)
	}
	e.privd.setFail("SecureTree", nil)
	if op := deploy("wiki"); op.State != store.OpSucceeded {
		t.Fatalf("wiki again: %s %s", op.State, op.Error)
	}
	e.privd.mu.Lock()
	got := slices.Clone(e.privd.uidReqs)
	e.privd.mu.Unlock()
	// blog 70000; shop 70001 (taken) then 70002; blog again 70003; wiki
	// 70004, removed with the failed first deploy; wiki again 70005.
	if want := []uint32{70000, 70001, 70002, 70003, 70004, 70005}; !slices.Equal(got, want) {
		t.Fatalf("EnsureUser asked for uids %v, want %v", got, want)
	}
	var recs []store.UIDRecord
	if err := e.st.View(context.Background(), func(tx *store.Tx) (err error) { recs, err = tx.UIDs(); return err }); err != nil {
		t.Fatal(err)
	}
	var owners []string
	for _, rec := range recs {
		owners = append(owners, rec.Project+"/"+map[bool]string{true: "taken", false: "ok"}[rec.Taken != ""])
	}
	if want := "blog/ok,/taken,shop/ok,blog/ok,wiki/ok,wiki/ok"; strings.Join(owners, ",") != want {
		t.Fatalf("uid records %v, want %s", owners, want)
	}
	p, err := e.st.GetProject(context.Background(), "blog")
	if err != nil || p.Status.AllocatedUID != 70003 {
		t.Fatalf("blog's allocated uid: %+v %v", p, err)
	}
}
