package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/opus-hosting/opus/internal/testrun"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// users is a host's user database for the store (Options.UserName): uid
// → login name; any other uid has no user.
func users(names map[uint32]string) func(uint32) (string, error) {
	return func(uid uint32) (string, error) {
		if n, ok := names[uid]; ok {
			return n, nil
		}
		return "", fmt.Errorf("uid %d: %w", uid, store.ErrNoUser)
	}
}

// needHelpers skips a test that runs helper processes as other uids
// where it cannot (not root).
func needHelpers(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("runs helper processes as other uids: needs root")
	}
}

// ownerState is what a refused call must leave as it was: the project's
// record and its operations.
func ownerState(t *testing.T, st *store.Store, name string) (*store.Project, []*store.Operation) {
	t.Helper()
	ctx := context.Background()
	p, err := st.GetProject(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := st.ListOperations(ctx, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A refused call would change the owner or spec, or add an
	// operation.
	var ids []*store.Operation
	for _, op := range ops {
		ids = append(ids, &store.Operation{ID: op.ID, Kind: op.Kind, Generation: op.Generation})
	}
	return &store.Project{Name: p.Name, OwnerUID: p.OwnerUID, OwnerName: p.OwnerName, Spec: p.Spec, Generation: p.Generation, Deleting: p.Deleting}, ids
}

// TestOwnerByNameAcrossHosts: on hosts sharing their state the same user
// has one name and may have different uids. alice is uid 65534 on host a
// and 65533 on host b: what she makes through a is hers through b, to
// see and change; to uid 65534 on b (bob, not her) and uid 65533 on a
// (carol) it does not exist, and their calls change nothing. A uid with
// no user on a host can own nothing there.
func TestOwnerByNameAcrossHosts(t *testing.T) {
	srv := etcdForTest(t)
	needHelpers(t)
	const aliceOnA, aliceOnB = uidA, uidB
	// No reconciler: the records stay as the calls leave them.
	a := clusterHostWith(t, srv, "a", 10, serverOpt{userName: users(map[uint32]string{0: "root", uidA: "alice", uidB: "carol"})})
	b := clusterHostWith(t, srv, "b", 10, serverOpt{userName: users(map[uint32]string{0: "root", uidB: "alice", uidA: "bob"})})

	created := a.as(t, aliceOnA, "create", "alices")
	if created.Code != "OK" {
		t.Fatalf("create through a as alice: %+v", created)
	}
	p, err := b.st.GetProject(context.Background(), "alices")
	if err != nil || p.OwnerUID != aliceOnA || p.OwnerName != "alice" {
		t.Fatalf("record: %+v, %v; want owner alice, uid %d", p, err, aliceOnA)
	}
	ops, err := b.st.ListOperations(context.Background(), "alices", 0)
	if err != nil || len(ops) != 1 || ops[0].OwnerName != "alice" {
		t.Fatalf("operations: %+v, %v; want one owned by alice", ops, err)
	}

	// Not alice: the same uid on b, another uid on a.
	before, beforeOps := ownerState(t, b.st, "alices")
	for _, who := range []struct {
		host *server
		uid  uint32
		name string
	}{{b, aliceOnA, "bob on b"}, {a, aliceOnB, "carol on a"}} {
		for _, c := range []struct{ action, arg string }{
			{"get", "alices"}, {"addapp", "alices"}, {"removeapp", "alices"}, {"updateapp", "alices"},
			{"listops", "alices"}, {"getop", created.ID}, {"watch", created.ID}, {"delete", "alices"},
		} {
			// As a project (operation) that does not exist, not an app.
			if got := who.host.as(t, who.uid, c.action, c.arg); got.Code != "NotFound" || !strings.Contains(got.Msg, fmt.Sprintf("%q not found", c.arg)) {
				t.Errorf("%s as %s: %+v; want NotFound", c.action, who.name, got)
			}
		}
		if got := who.host.as(t, who.uid, "list", ""); len(got.Names) != 0 || got.Code != "OK" {
			t.Errorf("list as %s: %+v; want none", who.name, got)
		}
	}
	if after, afterOps := ownerState(t, b.st, "alices"); !reflect.DeepEqual(after, before) || !reflect.DeepEqual(afterOps, beforeOps) {
		t.Fatalf("refused calls changed the project: %+v %+v; was %+v %+v", after, afterOps, before, beforeOps)
	}

	// alice through b, as her uid there.
	if got := b.as(t, aliceOnB, "list", ""); !slices.Equal(got.Names, []string{"alices"}) {
		t.Errorf("list through b as alice: %+v", got)
	}
	for _, action := range []string{"get", "listops"} {
		if got := b.as(t, aliceOnB, action, "alices"); got.Code != "OK" {
			t.Errorf("%s through b as alice: %+v", action, got)
		}
	}
	if got := b.as(t, aliceOnB, "getop", created.ID); got.Code != "OK" {
		t.Errorf("getop through b as alice: %+v", got)
	}
	if got := b.as(t, aliceOnB, "addapp", "alices"); got.Code != "OK" {
		t.Fatalf("addapp through b as alice: %+v", got)
	}
	p, err = a.st.GetProject(context.Background(), "alices")
	if err != nil || len(p.Spec.Apps) != 2 || p.Generation != before.Generation+1 {
		t.Fatalf("after alice's change through b: %+v, %v; want two apps", p, err)
	}

	// Her disk usage through b, where a project of hers made through a is
	// served: her totals are her uid's there, not those of the uid it was
	// made with (bob's on b, whose uploads are his own).
	if got := a.as(t, aliceOnA, "create", "alicesonb@b"); got.Code != "OK" {
		t.Fatalf("create through a as alice for host b: %+v", got)
	}
	for _, arg := range []string{"", "alicesonb"} {
		got := b.as(t, aliceOnB, "disk", arg)
		if want := []string{fmt.Sprintf("user %d alice", aliceOnB), "project alicesonb alice"}; got.Code != "OK" || !slices.Equal(got.Names, want) {
			t.Errorf("disk usage %q through b as alice: %+v; want %q", arg, got, want)
		}
	}

	// A uid no user has on a host owns nothing there: no project is made
	// that would be anyone's with that uid on any host.
	if got := a.as(t, 65532, "create", "nameless"); got.Code != "FailedPrecondition" {
		t.Errorf("create as a uid without a name: %+v; want FailedPrecondition", got)
	}
	if _, err := a.st.GetProject(context.Background(), "nameless"); err == nil {
		t.Error("the refused create was recorded")
	}

	// A host whose user database cannot answer serves a plain user
	// nothing rather than guess who they are, and makes no project
	// without its owner's name; an admin (root) still sees everything.
	down := clusterHostWith(t, srv, "c", 10, serverOpt{userName: func(uint32) (string, error) { return "", errors.New("nss source down") }})
	ctx := context.Background()
	for _, action := range []string{"list", "get"} {
		if got := down.as(t, aliceOnA, action, "alices"); got.Code != "Unavailable" || !strings.Contains(got.Msg, "user database") {
			t.Errorf("%s with the user database down: %+v; want Unavailable naming it", action, got)
		}
	}
	if l, err := down.client.ListProjects(ctx, &opusv1.ListProjectsRequest{}); err != nil || len(l.GetProjects()) != 2 {
		t.Errorf("root's list with the user database down: %v, %v; want both projects", l.GetProjects(), err)
	}
	if _, err := down.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "blind"}); code(err) != codes.Unavailable || !strings.Contains(err.Error(), "user database") {
		t.Errorf("create with the user database down: %v; want Unavailable", err)
	}
	if _, err := a.st.GetProject(ctx, "blind"); err == nil {
		t.Error("the refused create was recorded")
	}
}

// TestOwnerByUIDOnOneHost: with one host's state (bbolt) the owner is
// the uid, as before names were kept: another uid is not the owner even
// under the same name; the name is recorded all the same.
func TestOwnerByUIDOnOneHost(t *testing.T) {
	testrun.SkipShort(t, "runs helper processes as other uids")
	needHelpers(t)
	s := startServer(t, serverOpt{userName: users(map[uint32]string{0: "root", uidA: "alice", uidB: "alice"})})
	if got := s.as(t, uidA, "create", "alices"); got.Code != "OK" {
		t.Fatalf("create: %+v", got)
	}
	before, beforeOps := ownerState(t, s.st, "alices")
	if before.OwnerUID != uidA || before.OwnerName != "alice" {
		t.Fatalf("record owner %d %q; want %d alice", before.OwnerUID, before.OwnerName, uidA)
	}
	for _, action := range []string{"get", "addapp", "listops", "delete"} {
		if got := s.as(t, uidB, action, "alices"); got.Code != "NotFound" {
			t.Errorf("%s as uid %d (also alice): %+v; want NotFound", action, uidB, got)
		}
	}
	if got := s.as(t, uidB, "list", ""); len(got.Names) != 0 {
		t.Errorf("list as uid %d: %v; want none", uidB, got.Names)
	}
	if after, afterOps := ownerState(t, s.st, "alices"); !reflect.DeepEqual(after, before) || !reflect.DeepEqual(afterOps, beforeOps) {
		t.Fatalf("refused calls changed the project: %+v; was %+v", after, before)
	}
	if got := s.as(t, uidA, "get", "alices"); got.Code != "OK" {
		t.Errorf("get as the owner: %+v", got)
	}
}
