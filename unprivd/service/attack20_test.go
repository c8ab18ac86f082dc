package service

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// TestCreateWaitsForMoveCopy (issue 20 attack): a project that moved
// away leaves its old copy in the departing facet until its old host has
// torn it down (users, files, site), and a move being set up has a copy
// in the incoming facet. While either is there its name is not free: a
// new project of that name on the same host would be made under the same
// Linux user and directories as the copy being torn down (and so either
// inherit the last owner's data or have its own removed). Creating it is
// refused, as over a project being destroyed, and nothing is recorded.
func TestCreateWaitsForMoveCopy(t *testing.T) {
	srv := etcdForTest(t)
	ctx := context.Background()
	a := clusterHost(t, srv, "a", 10)
	for _, facet := range []string{store.FacetDeparting, store.FacetIncoming} {
		t.Run(facet, func(t *testing.T) {
			name := "moved" + facet
			// The copy a move left: another owner's, on host a.
			old := &store.Project{Name: name, OwnerUID: 4242, Host: "a", Deleting: facet == store.FacetDeparting,
				Status: store.Status{Phase: store.PhaseReady}}
			if err := a.st.Facet(facet).Update(ctx, func(tx *store.Tx) error { return tx.CreateProject(old) }); err != nil {
				t.Fatal(err)
			}
			_, err := a.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: name, Host: "a"})
			if status.Code(err) != codes.AlreadyExists {
				t.Fatalf("create %s with a copy in the %s facet: %v; want AlreadyExists", name, facet, err)
			}
			if _, err := a.st.GetProject(ctx, name); err == nil {
				t.Fatalf("project %s was recorded beside the %s copy", name, facet)
			}
			if ops, err := a.st.ListOperations(ctx, name, 10); err == nil && len(ops) != 0 {
				t.Fatalf("operations recorded for the refused create: %v", ops)
			}
			got, err := a.st.Facet(facet).GetProject(ctx, name)
			if err != nil || got.OwnerUID != 4242 {
				t.Fatalf("the %s copy after the refused create: %v, %v", facet, got, err)
			}
		})
	}
}

// TestRestoreWaitsForMoveCopy: a restore into a new project is refused
// too while a move's copy of its name is on a host, and leaves nothing.
func TestRestoreWaitsForMoveCopy(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{testUID(): true}})
	ctx := context.Background()
	putDeployed(t, s, "orig", testUID())
	file, err := backupOf(t, s, "orig")
	if err != nil {
		t.Fatal(err)
	}
	old := &store.Project{Name: "twin", OwnerUID: 4242, Host: s.svc.cfg.HostName, Deleting: true, Status: store.Status{Phase: store.PhaseReady}}
	if err := s.st.Facet(store.FacetDeparting).Update(ctx, func(tx *store.Tx) error { return tx.CreateProject(old) }); err != nil {
		t.Fatal(err)
	}
	if _, err := restoreTo(t, s, &opusv1.RestoreInfo{Name: "twin"}, file); status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "still being removed") {
		t.Fatalf("restore beside a departing copy: %v; want AlreadyExists", err)
	}
	if _, err := s.st.GetProject(ctx, "twin"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused restore recorded a project: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(s.dir, "base", "snapshots", "twin")); len(entries) != 0 {
		t.Errorf("the refused restore left snapshots: %v", entries)
	}
}
