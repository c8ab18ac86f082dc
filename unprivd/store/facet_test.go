package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestFacetBolt and TestFacetEtcd run testFacet on each kind of store:
// a facet's records are its own on both.
func TestFacetBolt(t *testing.T) {
	s, _ := openTemp(t)
	testFacet(t, s)
}

func TestFacetEtcd(t *testing.T) {
	testFacet(t, openEtcd(t, etcdServer(t), "/facet/", 0))
}

// names lists the projects s's bucket holds, by name.
func names(t *testing.T, s *Store) []string {
	t.Helper()
	ps, err := s.ListProjects(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// testFacet: records in a facet and in the main store (or another facet)
// are invisible to each other, also under the same name; operations are
// shared, and a facet's delete leaves them.
func testFacet(t *testing.T, s *Store) {
	ctx := context.Background()
	in := s.Facet("incoming")
	if in == s || in.Facet("incoming") != in || s.Facet("incoming") != in {
		t.Fatal("Facet does not return one store per name")
	}
	if s.FacetName() != "" || in.FacetName() != "incoming" {
		t.Fatalf("facet names %q, %q", s.FacetName(), in.FacetName())
	}
	out := s.Facet("departing")
	mainOp := createProject(t, s, "blog", 1000)
	createProject(t, s, "mainonly", 1000)
	var facetOp *Operation
	if err := in.Update(ctx, func(tx *Tx) error {
		p := &Project{Name: "blog", OwnerUID: 1000, Host: "target"}
		if err := tx.CreateProject(p); err != nil {
			return err
		}
		var err error
		facetOp, err = tx.NewOperation(p, OpKind("X"), 1000)
		if err != nil {
			return err
		}
		return tx.CreateProject(&Project{Name: "facetonly", OwnerUID: 2000})
	}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s); !slices.Equal(got, []string{"blog", "mainonly"}) {
		t.Errorf("main store lists %v; want [blog mainonly]", got)
	}
	if got := names(t, in); !slices.Equal(got, []string{"blog", "facetonly"}) {
		t.Errorf("facet lists %v; want [blog facetonly]", got)
	}
	if got := names(t, out); len(got) != 0 {
		t.Errorf("another facet lists %v; want nothing", got)
	}
	if _, err := in.GetProject(ctx, "mainonly"); !errors.Is(err, ErrNotFound) {
		t.Errorf("facet reads the main store's record: %v", err)
	}
	if _, err := s.GetProject(ctx, "facetonly"); !errors.Is(err, ErrNotFound) {
		t.Errorf("main store reads the facet's record: %v", err)
	}
	// One name, two records; each read twice (the second from each
	// store's own decode cache).
	for range 2 {
		if p := read(t, s, "blog"); p.Host != "" || p.Generation != 1 {
			t.Fatalf("main store's blog: host %q generation %d; want its own", p.Host, p.Generation)
		}
		if p := read(t, in, "blog"); p.Host != "target" || p.Generation != 0 {
			t.Fatalf("facet's blog: host %q generation %d; want its own", p.Host, p.Generation)
		}
	}
	if cached(s, "blog") == nil || cached(in, "blog") == nil || cached(s, "blog") == cached(in, "blog") {
		t.Error("the main store and the facet do not each cache their own blog")
	}
	var owned []string
	if err := in.View(ctx, func(tx *Tx) error {
		if tx.ProjectsHint() != 2 {
			return fmt.Errorf("facet's hint %d; want its own 2", tx.ProjectsHint())
		}
		return tx.EachProjectOwnedBy(2000, func(p Project) error { owned = append(owned, p.Name); return nil })
	}); err != nil || !slices.Equal(owned, []string{"facetonly"}) {
		t.Errorf("facet's projects of uid 2000: %v, %v", owned, err)
	}
	if err := in.Update(ctx, func(tx *Tx) error { return tx.CreateProject(&Project{Name: "blog"}) }); !errors.Is(err, ErrExists) {
		t.Errorf("creating blog again in the facet: %v; want ErrExists", err)
	}
	if _, err := in.UpdateProject(ctx, "blog", func(p *Project) error { p.Generation = 7; return nil }); err != nil {
		t.Fatal(err)
	}
	if p := read(t, s, "blog"); p.Generation != 1 {
		t.Errorf("the facet's update changed the main record: generation %d", p.Generation)
	}
	// The facet's operation is the project's, in the shared history, and
	// its watchers wake whichever store changes it.
	ops, err := s.ListOperations(ctx, "blog", 0)
	if err != nil || len(ops) != 2 || ops[0].ID != facetOp.ID || ops[1].ID != mainOp.ID {
		t.Fatalf("main store's history of blog: %v, %v; want the facet's op, then create", ops, err)
	}
	woke, release := s.Changed(facetOp.ID)
	defer release()
	if _, err := in.UpdateOperation(ctx, facetOp.ID, func(o *Operation) error { o.State = OpRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woke:
	case <-time.After(10 * time.Second):
		t.Fatal("the main store's watcher did not wake when the facet changed the operation")
	}
	// A facet's delete removes its record alone.
	if err := in.Update(ctx, func(tx *Tx) error { return tx.DeleteProject("blog") }); err != nil {
		t.Fatal(err)
	}
	if _, err := in.GetProject(ctx, "blog"); !errors.Is(err, ErrNotFound) {
		t.Errorf("facet's blog after its delete: %v", err)
	}
	if p := read(t, s, "blog"); p.Generation != 1 {
		t.Errorf("main store's blog after the facet's delete: generation %d", p.Generation)
	}
	for _, id := range []string{mainOp.ID, facetOp.ID} {
		if _, err := s.GetOperation(ctx, id); err != nil {
			t.Errorf("operation %s after the facet's delete: %v", id, err)
		}
	}
	if ops, err := in.ListOperations(ctx, "blog", 0); err != nil || len(ops) != 2 {
		t.Errorf("history of blog after the facet's delete: %d ops, %v; want both", len(ops), err)
	}
	// One commit moves records between the main store and facets (a
	// move's switch): all of it, or on an error nothing.
	read(t, in, "facetonly") // cached, to be dropped by the commit
	swap := func(fail error) error {
		return s.Update(ctx, func(tx *Tx) error {
			p, err := tx.Facet("incoming").Project("facetonly")
			if err != nil {
				return err
			}
			if err := tx.Facet("incoming").DeleteProject("facetonly"); err != nil {
				return err
			}
			if err := tx.CreateProject(p); err != nil {
				return err
			}
			old, err := tx.Project("mainonly")
			if err != nil {
				return err
			}
			if err := tx.Facet("departing").CreateProject(old); err != nil {
				return err
			}
			if err := tx.Facet("departing").Main().DeleteProject("mainonly"); err != nil {
				return err
			}
			return fail
		})
	}
	if err := swap(errors.New("no")); err == nil {
		t.Fatal("a failing swap committed")
	}
	if got := names(t, s); !slices.Equal(got, []string{"blog", "mainonly"}) {
		t.Errorf("main store after a failed swap lists %v", got)
	}
	if got := names(t, in); !slices.Equal(got, []string{"facetonly"}) {
		t.Errorf("facet after a failed swap lists %v", got)
	}
	if err := swap(nil); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s); !slices.Equal(got, []string{"blog", "facetonly"}) {
		t.Errorf("main store after the swap lists %v", got)
	}
	if got := names(t, in); len(got) != 0 {
		t.Errorf("incoming facet after the swap lists %v", got)
	}
	if got := names(t, out); !slices.Equal(got, []string{"mainonly"}) {
		t.Errorf("departing facet after the swap lists %v", got)
	}
	if cached(in, "facetonly") != nil {
		t.Error("the facet still caches a record the swap deleted from it")
	}
	if p := read(t, s, "facetonly"); p.OwnerUID != 2000 {
		t.Errorf("the moved record: owner %d; want the facet's 2000", p.OwnerUID)
	}
	// An operation changed through a facet's view of a transaction wakes
	// its watchers too.
	woke2, release2 := s.Changed(mainOp.ID)
	defer release2()
	if err := s.Update(ctx, func(tx *Tx) error {
		op, err := tx.Operation(mainOp.ID)
		if err != nil {
			return err
		}
		op.State = OpRunning
		return tx.Facet("incoming").PutOperation(op)
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woke2:
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher did not wake when a facet's view of a transaction changed the operation")
	}
	// Closing a facet leaves the shared kv open.
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s); !slices.Equal(got, []string{"blog", "facetonly"}) {
		t.Errorf("main store after closing a facet lists %v", got)
	}
	if got := names(t, out); !slices.Equal(got, []string{"mainonly"}) {
		t.Errorf("facet after a facet's close lists %v", got)
	}
}

func TestFacetNameChecked(t *testing.T) {
	s, _ := openTemp(t)
	for _, name := range []string{"", "in/coming", "In", "a_b", "x.y"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Facet(%q) did not panic", name)
				}
			}()
			s.Facet(name)
		}()
	}
}

// TestFacetChangedElsewhere: another host's change to a facet's record is
// heard by that facet's OnChangedElsewhere alone, one to the main record
// by the main store's alone; changes to operations still wake watchers.
func TestFacetChangedElsewhere(t *testing.T) {
	srv := etcdServer(t)
	ctx := context.Background()
	a := openEtcdAs(t, srv, "/facetw/", 0, "a")
	b := openEtcdAs(t, srv, "/facetw/", 0, "b")
	heard := func(s *Store) chan string {
		c := make(chan string, 16)
		s.OnChangedElsewhere(func(p string) { c <- p })
		return c
	}
	atMain, atIn, atOut := heard(a), heard(a.Facet("incoming")), heard(a.Facet("departing"))
	expect := func(want chan string, what string) {
		t.Helper()
		select {
		case p := <-want:
			if p != "blog" {
				t.Fatalf("%s heard of %q; want blog", what, p)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not hear of b's change", what)
		}
		for name, c := range map[string]chan string{"main": atMain, "incoming": atIn, "departing": atOut} {
			select {
			case p := <-c:
				t.Fatalf("after a change for %s, %s heard of %q too", what, name, p)
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
	if err := b.Facet("incoming").Update(ctx, func(tx *Tx) error {
		return tx.CreateProject(&Project{Name: "blog", Host: "a"})
	}); err != nil {
		t.Fatal(err)
	}
	expect(atIn, "the incoming facet")
	waitFor(t, func() bool { _, err := a.Facet("incoming").GetProject(ctx, "blog"); return err == nil })
	if _, err := a.GetProject(ctx, "blog"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a's main store reads b's facet record: %v", err)
	}
	var op *Operation
	if err := b.Update(ctx, func(tx *Tx) error {
		p := &Project{Name: "blog", Host: "b"}
		if err := tx.CreateProject(p); err != nil {
			return err
		}
		var err error
		op, err = tx.NewOperation(p, OpKind("X"), 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	expect(atMain, "the main store")
	if err := b.Facet("departing").Update(ctx, func(tx *Tx) error {
		return tx.CreateProject(&Project{Name: "blog", Host: "a"})
	}); err != nil {
		t.Fatal(err)
	}
	expect(atOut, "the departing facet")
	woke, release := a.Changed(op.ID)
	defer release()
	if _, err := b.Facet("incoming").UpdateOperation(ctx, op.ID, func(o *Operation) error { o.State = OpRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woke:
	case <-time.After(10 * time.Second):
		t.Fatal("a's watcher did not wake when b's facet changed the operation")
	}
	// A's own change to its facet is not news to a.
	if _, err := a.Facet("incoming").UpdateProject(ctx, "blog", func(p *Project) error { p.Generation++; return nil }); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]chan string{"main": atMain, "incoming": atIn, "departing": atOut} {
		select {
		case p := <-c:
			t.Fatalf("a's %s heard of a's own change to %q", name, p)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// TestFacetOnBoltIsAnotherBucket: a facet's records are in bucket
// projects_NAME of the file, so they survive a reopen there.
func TestFacetOnBoltIsAnotherBucket(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Facet("incoming").Update(ctx, func(tx *Tx) error { return tx.CreateProject(&Project{Name: "blog"}) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.View(ctx, func(tx *Tx) error {
		if tx.kv.get([]byte("projects_incoming"), []byte("blog")) == nil {
			return errors.New("no record in bucket projects_incoming")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s.Facet("incoming")); !slices.Equal(got, []string{"blog"}) {
		t.Fatalf("facet after reopen lists %v", got)
	}
}
