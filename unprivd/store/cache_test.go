package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// read reads project name in a read-only transaction (which fills the
// decode cache).
func read(t *testing.T, s *Store, name string) *Project {
	t.Helper()
	p, err := s.GetProject(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// cached is the decode cache's record of project name, or nil.
func cached(s *Store, name string) *Project {
	s.cache.mu.RLock()
	defer s.cache.mu.RUnlock()
	return s.cache.m[name].p
}

func TestReadsAreCachedAndNeverStale(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	createProject(t, s, "blog", 1000)

	first := read(t, s, "blog")
	entry := cached(s, "blog")
	if entry == nil {
		t.Fatal("a read left nothing in the decode cache")
	}
	again := read(t, s, "blog")
	if cached(s, "blog") != entry {
		t.Fatal("second read of an unchanged record decoded it again; want it served from the cache")
	}
	if n, _ := s.cache.size(); n != 1 {
		t.Fatalf("cache holds %d records, want 1", n)
	}
	// Every read is the caller's own record, never the cache's.
	for _, p := range []*Project{first, again} {
		if p == entry || !reflect.DeepEqual(p, entry) {
			t.Fatalf("read = %p (equal %v), cached = %p: want an equal, separate record", p, reflect.DeepEqual(p, entry), entry)
		}
	}
	if first == again {
		t.Fatal("two reads returned the same record")
	}

	// Every kind of write shows at once: status, spec, delete, re-create.
	cases := []struct {
		name  string
		write func(tx *Tx) error
		check func(t *testing.T, p *Project, err error)
	}{
		{"status", func(tx *Tx) error {
			p, err := tx.Project("blog")
			if err != nil {
				return err
			}
			p.Status.Phase, p.Status.SystemUser = PhaseReady, "opus-blog"
			return tx.PutProject(p)
		}, func(t *testing.T, p *Project, err error) {
			if err != nil || p.Status.Phase != PhaseReady || p.Status.SystemUser != "opus-blog" {
				t.Fatalf("after a status write: %+v, %v", p, err)
			}
		}},
		{"spec", func(tx *Tx) error {
			p, err := tx.Project("blog")
			if err != nil {
				return err
			}
			p.Spec.Apps = append(p.Spec.Apps, AppSpec{Name: "shop", Upload: &UploadSource{Digest: "sha256:00"}})
			p.Generation++
			return tx.PutProject(p)
		}, func(t *testing.T, p *Project, err error) {
			if err != nil || p.Generation != 2 || p.Spec.App("shop") == nil {
				t.Fatalf("after a spec write: %+v, %v", p, err)
			}
		}},
		{"delete", func(tx *Tx) error { return tx.DeleteProject("blog") },
			func(t *testing.T, p *Project, err error) {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("after delete: %+v, %v; want not found", p, err)
				}
			}},
		{"re-create", func(tx *Tx) error {
			return tx.CreateProject(&Project{Name: "blog", OwnerUID: 2000, Generation: 1})
		}, func(t *testing.T, p *Project, err error) {
			if err != nil || p.OwnerUID != 2000 || len(p.Spec.Apps) != 0 {
				t.Fatalf("after re-create: %+v, %v", p, err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Cached before the write, where it exists.
			s.GetProject(ctx, "blog")
			if err := s.Update(ctx, tc.write); err != nil {
				t.Fatal(err)
			}
			p, err := s.GetProject(ctx, "blog")
			tc.check(t, p, err)
			ps, err := s.ListProjects(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if p == nil {
				if len(ps) != 0 {
					t.Fatalf("list after %s = %d projects, want none", tc.name, len(ps))
				}
				return
			}
			if len(ps) != 1 || !reflect.DeepEqual(ps[0], p) {
				t.Fatalf("list after %s = %+v, want [%+v]", tc.name, ps, p)
			}
		})
	}
}

func TestRolledBackWriteLeavesNoTrace(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	createProject(t, s, "blog", 1000)
	before := read(t, s, "blog")
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx *Tx) error {
		p, err := tx.Project("blog")
		if err != nil {
			return err
		}
		p.OwnerUID = 9999
		if err := tx.PutProject(p); err != nil {
			return err
		}
		// Read back inside the writing transaction: sees its own write.
		q, err := tx.Project("blog")
		if err != nil || q.OwnerUID != 9999 {
			t.Errorf("read inside the write = %+v, %v", q, err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want boom", err)
	}
	if after := read(t, s, "blog"); after.OwnerUID != 1000 || !reflect.DeepEqual(after, before) {
		t.Fatalf("after a rolled-back write: %+v, want %+v", after, before)
	}
}

func TestDecodeCacheIsBounded(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	// Records of ~256 KiB each: more of them than the cache may hold.
	big := strings.Repeat("x", 256<<10)
	n := 2*maxCachedBytes/len(big) + 2
	if err := s.Update(ctx, func(tx *Tx) error {
		for i := range n {
			p := &Project{Name: fmt.Sprintf("p%03d", i), Status: Status{LastError: big}}
			if err := tx.CreateProject(p); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		ps, err := s.ListProjects(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != n {
			t.Fatalf("list = %d projects, want %d", len(ps), n)
		}
		for i, p := range ps {
			if p.Name != fmt.Sprintf("p%03d", i) || p.Status.LastError != big {
				t.Fatalf("list[%d] = %q, want p%03d with its record", i, p.Name, i)
			}
		}
	}
	entries, size := s.cache.size()
	if size > maxCachedBytes || entries == 0 || entries >= n {
		t.Fatalf("cache holds %d records, %d bytes; want some, not all, and at most %d bytes", entries, size, maxCachedBytes)
	}
	// Room comes back when cached projects go.
	if err := s.Update(ctx, func(tx *Tx) error { return tx.DeleteProject("p000") }); err != nil {
		t.Fatal(err)
	}
	if e2, s2 := s.cache.size(); e2 != entries-1 || s2 >= size {
		t.Fatalf("after deleting a cached project: %d records, %d bytes; want %d, under %d", e2, s2, entries-1, size)
	}
}

// TestReadsConcurrent has readers and writers race (run with -race):
// every record a reader gets is one that was committed, whole, and its
// own to change.
func TestReadsConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	const projects, writes = 4, 40
	for i := range projects {
		createProject(t, s, fmt.Sprintf("p%d", i), 1000)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 16)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := s.View(ctx, func(tx *Tx) error {
					ps, err := tx.Projects()
					if err != nil {
						return err
					}
					for _, p := range ps {
						// A writer sets LastError to the generation it wrote.
						if want := fmt.Sprint(p.Generation); p.Generation > 1 && p.Status.LastError != want {
							return fmt.Errorf("%s: generation %d with last_error %q: a torn or stale record", p.Name, p.Generation, p.Status.LastError)
						}
						// Each reader's record is its own (a shared one
						// is a data race here, and a wrong answer above).
						p.Status.LastError = "mine"
						p.Spec.Apps[0].Git.Ref = "mine"
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for w := range writes {
		name := fmt.Sprintf("p%d", w%projects)
		if _, err := s.UpdateProject(ctx, name, func(p *Project) error {
			p.Generation++
			p.Status.LastError = fmt.Sprint(p.Generation)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// Each write is seen by the next read.
		if p := read(t, s, name); p.Status.LastError != fmt.Sprint(p.Generation) || p.Generation != int64(w/projects+2) {
			t.Fatalf("after write %d: %s at generation %d (%q), want %d", w, name, p.Generation, p.Status.LastError, w/projects+2)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestDecodeCacheMatchesBytes: an entry answers only for the very bytes
// it was decoded from, so one put late by a slow reader of an older
// snapshot (after the write's forget) is never handed out for the newer
// record.
func TestDecodeCacheMatchesBytes(t *testing.T) {
	var c decodeCache
	old := &Project{Name: "blog", Generation: 1}
	c.put("blog", []byte(`{"generation":1}`), old)
	for _, tc := range []struct {
		name, key, raw string
		want           *Project
	}{
		{"same bytes", "blog", `{"generation":1}`, old},
		{"changed record", "blog", `{"generation":2}`, nil},
		{"longer record", "blog", `{"generation":1} `, nil},
		{"other project", "shop", `{"generation":1}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := c.get([]byte(tc.key), []byte(tc.raw)); got != tc.want {
				t.Fatalf("get(%s, %s) = %p, want %p", tc.key, tc.raw, got, tc.want)
			}
		})
	}
	// put copies the bytes: bbolt's may be reused once its transaction ends.
	raw := []byte(`{"generation":3}`)
	p3 := &Project{Generation: 3}
	c.put("blog", raw, p3)
	copy(raw, `{"generation":4}`)
	if c.get([]byte("blog"), []byte(`{"generation":3}`)) != p3 {
		t.Fatal("entry changed with the caller's buffer: put must copy the bytes")
	}
	if c.get([]byte("blog"), raw) != nil {
		t.Fatal("entry answers for bytes it was not decoded from")
	}
	if n, size := c.size(); n != 1 || size != len(raw) {
		t.Fatalf("size = %d entries, %d bytes; want 1, %d (a put over an entry replaces it)", n, size, len(raw))
	}
}

// benchStore is a store of n projects with two apps and some history
// each, in b's temp directory.
func benchStore(b *testing.B, n int) *Store {
	b.Helper()
	ctx := context.Background()
	s, err := Open(ctx, b.TempDir()+"/opusd.db", Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	err = s.Update(ctx, func(tx *Tx) error {
		for i := range n {
			p := &Project{Name: fmt.Sprintf("p%04d", i), OwnerUID: uint32(1000 + i%10), Generation: 3,
				Spec: Spec{Apps: []AppSpec{{Name: "blog", Git: &GitSource{URL: "https://example.com/blog.git", Ref: "main"}},
					{Name: "shop", Upload: &UploadSource{Digest: "sha256:" + strings.Repeat("ab", 32)}}},
					Settings: Settings{Hosts: []string{"www.example.com"}, Env: map[string]string{"TZ": "UTC"}}},
				Status: Status{Phase: PhaseReady, SystemUser: "opus-p", UID: 70000, GID: 70000, Apps: map[string]AppStatus{}}}
			for _, a := range p.Spec.Apps {
				st := AppStatus{RequestedRef: "main", ResolvedCommit: strings.Repeat("c", 40)}
				for r := range 5 {
					st.Revisions = append(st.Revisions, Revision{RequestedRef: fmt.Sprint("v", r), Resolved: strings.Repeat("d", 40)})
				}
				p.Status.Apps[a.Name] = st
			}
			if err := tx.CreateProject(p); err != nil {
				return err
			}
			if _, err := tx.NewOperation(p, OpCreate, p.OwnerUID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkProjects compares reading every one of 1,000 projects by
// decoding each record (what every read cost before the decode cache),
// through Projects (heap copies of the cache's records) and through
// EachProject (copies by value, what ListProjects uses).
func BenchmarkProjects(b *testing.B) {
	s := benchStore(b, 1000)
	ctx := context.Background()
	collect := func(read func(tx *Tx) ([]*Project, error)) func(tx *Tx) (int, error) {
		return func(tx *Tx) (int, error) { ps, err := read(tx); return len(ps), err }
	}
	for _, tc := range []struct {
		name string
		read func(tx *Tx) (int, error)
	}{
		{"decode", func(tx *Tx) (n int, err error) {
			err = tx.kv.ascend(bucketProjects, nil, func(k, v []byte) error {
				_, err := decodeProject(k, v)
				n++
				return err
			})
			return n, err
		}},
		{"cached", collect((*Tx).Projects)},
		{"each", func(tx *Tx) (n int, err error) {
			err = tx.EachProject(func(Project) error { n++; return nil })
			return n, err
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var n int
				if err := s.View(ctx, func(tx *Tx) (err error) { n, err = tc.read(tx); return err }); err != nil || n != 1000 {
					b.Fatalf("%d projects, %v", n, err)
				}
			}
		})
	}
}
