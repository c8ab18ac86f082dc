package servicetest_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/opus-hosting/opus/internal/etcdtest"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/service/servicetest"
	"github.com/opus-hosting/opus/unprivd/store"
)

// TestStartServesTheGivenStore: with Options.Store, the API keeps its
// state in that store (here on a real etcd), not in a bbolt file of its
// own: a project created through the socket is seen by another store
// opened on the same etcd prefix.
func TestStartServesTheGivenStore(t *testing.T) {
	srv := etcdtest.ForTest(t, filepath.Join(t.TempDir(), "etcd"))
	ctx := context.Background()
	open := func() *store.Store {
		st, err := store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: []string{srv.ClientURL}, Prefix: "/servicetest/", Host: "h"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	st := open()
	if err := st.RegisterHost(ctx, store.Host{Name: "h", Capacity: 10, Instance: "h-1"}); err != nil {
		t.Fatal(err)
	}
	o := servicetest.Start(t, servicetest.Options{Admin: true, Store: st})
	if o.Store != st {
		t.Fatalf("Opusd.Store is %p, not the store given (%p)", o.Store, st)
	}
	if _, err := o.Client(t).CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "given"}); err != nil {
		t.Fatal(err)
	}
	err := open().View(ctx, func(tx *store.Tx) error {
		_, err := tx.Project("given")
		return err
	})
	if err != nil {
		t.Fatalf("the project created through the API is not in the etcd store: %v", err)
	}
}
