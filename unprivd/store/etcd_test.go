package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/etcdtest"
)

// etcdServer starts a real etcd for one test (skipped under -short: make
// unit starts nothing).
func etcdServer(t *testing.T) *etcdtest.Server {
	t.Helper()
	return etcdtest.ForTest(t, filepath.Join(t.TempDir(), "etcd"))
}

func openEtcd(t *testing.T, srv *etcdtest.Server, prefix string, timeout time.Duration) *Store {
	t.Helper()
	return openEtcdAs(t, srv, prefix, timeout, "h")
}

func openEtcdAs(t *testing.T, srv *etcdtest.Server, prefix string, timeout time.Duration, host string) *Store {
	t.Helper()
	s, err := OpenEtcd(context.Background(), EtcdOptions{
		Endpoints: []string{srv.ClientURL}, Prefix: prefix, RequestTimeout: timeout,
		Host: host, HostTTL: 2 * time.Second,
		Options: Options{UserName: func(uid uint32) (string, error) { return fmt.Sprint("u", uid), nil }},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestKVSameOnBoltAndEtcd runs one random sequence of transactions on a
// bbolt file and on etcd and compares every answer: the records' code
// sees one behaviour whatever keeps them.
func TestKVSameOnBoltAndEtcd(t *testing.T) {
	srv := etcdServer(t)
	ctx := context.Background()
	b, err := Open(ctx, filepath.Join(t.TempDir(), "s.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	e := openEtcd(t, srv, "/kvtest/", 0)
	buckets := [][]byte{[]byte("projects"), []byte("project_ops"), []byte("uids")}
	key := func(r *rand.Rand) []byte {
		return fmt.Appendf(nil, "k%02d/%d", r.IntN(20), r.IntN(3))
	}
	// One transaction: a seeded list of steps, each logging what it saw.
	txn := func(seed uint64, write bool) func(kvTx) (string, error) {
		return func(t kvTx) (string, error) {
			r := rand.New(rand.NewPCG(seed, 1))
			var log bytes.Buffer
			for range 30 {
				bk := buckets[r.IntN(len(buckets))]
				k := key(r)
				op := r.IntN(6)
				if !write && (op == 1 || op == 2 || op == 5) {
					op = 0
				}
				switch op {
				case 0:
					fmt.Fprintf(&log, "get %s %s=%q\n", bk, k, t.get(bk, k))
				case 1:
					v := fmt.Appendf(nil, "v%d", r.IntN(1000))
					fmt.Fprintf(&log, "put %s %s %s: %v\n", bk, k, v, t.put(bk, k, v))
				case 2:
					fmt.Fprintf(&log, "del %s %s: %v\n", bk, k, t.del(bk, k))
				case 3, 4:
					var from []byte
					if r.IntN(3) > 0 {
						from = k
					}
					n := r.IntN(8)
					walk := t.ascend
					if op == 4 {
						walk = t.descend
					}
					fmt.Fprintf(&log, "walk%d %s from %q:", op, bk, from)
					err := walk(bk, from, func(k, v []byte) error {
						fmt.Fprintf(&log, " %s=%s", k, v)
						if n--; n == 0 {
							return errStop
						}
						return nil
					})
					fmt.Fprintf(&log, " (%v)\n", err)
				case 5:
					n, err := t.nextSequence(bk)
					fmt.Fprintf(&log, "seq %s %d %v\n", bk, n, err)
				}
			}
			if write && r.IntN(5) == 0 {
				return log.String(), errors.New("rolled back")
			}
			return log.String(), nil
		}
	}
	run := func(s *Store, seed uint64, write bool) string {
		var out string
		f := txn(seed, write)
		do := func(t kvTx) error {
			var err error
			out, err = f(t)
			return err
		}
		var err error
		if write {
			err = s.kv.update(ctx, func() {}, do)
		} else {
			err = s.kv.view(ctx, do)
		}
		return fmt.Sprintf("%s-> %v", out, err)
	}
	for i := range uint64(150) {
		write := i%3 != 2
		if got, want := run(e, i, write), run(b, i, write); got != want {
			t.Fatalf("transaction %d (write %v): etcd saw\n%s\nbbolt saw\n%s", i, write, got, want)
		}
	}
}

// TestEtcdStoresShareState is two opusds (two hosts) on one cluster: what
// one commits the other reads, its operation watchers wake on the other's
// changes, and concurrent read-modify-writes from both lose nothing.
func TestEtcdStoresShareState(t *testing.T) {
	srv := etcdServer(t)
	ctx := context.Background()
	a := openEtcd(t, srv, "/share/", 0)
	b := openEtcd(t, srv, "/share/", 0)
	var op *Operation
	if err := a.Update(ctx, func(tx *Tx) error {
		p := &Project{Name: "blog", OwnerUID: 1000}
		if err := tx.CreateProject(p); err != nil {
			return err
		}
		var err error
		op, err = tx.NewOperation(p, OpKind("create"), 1000)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// b's copy follows a's commit through the watch.
	waitFor(t, func() bool { _, err := b.GetProject(ctx, "blog"); return err == nil })
	woke, release := b.Changed(op.ID)
	defer release()
	if _, err := a.UpdateOperation(ctx, op.ID, func(o *Operation) error { o.State = OpRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woke:
	case <-time.After(10 * time.Second):
		t.Fatal("b's watcher of the operation did not wake when a changed it")
	}
	if got, err := b.GetOperation(ctx, op.ID); err != nil || got.State != OpRunning {
		t.Fatalf("b reads %+v, %v after waking; want RUNNING", got, err)
	}
	// Both bump one counter at once: serialized commits lose no bump.
	const each = 25
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	for _, s := range []*Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				_, err := s.UpdateProject(ctx, "blog", func(p *Project) error { p.Generation++; return nil })
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Each host's copy catches up with the other's last commit (reads are
	// as of the copy's revision); a lost bump never would.
	for _, s := range []*Store{a, b} {
		var p *Project
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if p, err = s.GetProject(ctx, "blog"); err != nil || p.Generation >= 2*each || time.Now().After(deadline) {
				break
			}
		}
		if err != nil || p.Generation != 2*each {
			t.Fatalf("generation %v (%v) after %d bumps from each host; want %d", p.Generation, err, each, 2*each)
		}
	}
	// A name is taken once, whichever host asks.
	err := b.Update(ctx, func(tx *Tx) error { return tx.CreateProject(&Project{Name: "blog"}) })
	if !errors.Is(err, ErrExists) {
		t.Fatalf("b creating a's project: %v; want ErrExists", err)
	}
	// Another prefix is another installation: it sees nothing of these.
	other := openEtcd(t, srv, "/other/", 0)
	if ps, err := other.ListProjects(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("another prefix lists %d projects (%v); want none", len(ps), err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestEtcdUnreachable: with the cluster paused (a partition) or killed, a
// change fails within the request timeout with ErrUnavailable and leaves
// nothing; reads answer from the last state seen; once the cluster is
// back, the same change goes through.
func TestEtcdUnreachable(t *testing.T) {
	srv := etcdServer(t)
	ctx := context.Background()
	s := openEtcd(t, srv, "/part/", 2*time.Second)
	if err := s.Update(ctx, func(tx *Tx) error { return tx.CreateProject(&Project{Name: "blog", Generation: 1}) }); err != nil {
		t.Fatal(err)
	}
	for _, cut := range []struct {
		name      string
		cut, back func() error
	}{
		{"paused", srv.Pause, srv.Resume},
		{"killed", srv.Kill, srv.Restart},
	} {
		t.Run(cut.name, func(t *testing.T) {
			if err := cut.cut(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err := s.UpdateProject(ctx, "blog", func(p *Project) error { p.Generation++; return nil })
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("change while the cluster is %s: %v; want ErrUnavailable", cut.name, err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("the refusal took %s; the request timeout is 2s", d)
			}
			p, err := s.GetProject(ctx, "blog")
			if err != nil || p.Generation != 1 {
				t.Errorf("read while %s: %+v, %v; want generation 1", cut.name, p, err)
			}
			if err := cut.back(); err != nil {
				t.Fatal(err)
			}
			// Nothing of the refused change reached the cluster.
			c, err := srv.Client()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			resp, err := c.Get(ctx, "/part/projects/blog")
			if err != nil || len(resp.Kvs) != 1 || bytes.Contains(resp.Kvs[0].Value, []byte(`"generation":2`)) {
				t.Fatalf("the cluster after the refused change: %v %v", resp, err)
			}
			var after *Project
			deadline := time.Now().Add(20 * time.Second)
			for {
				after, err = s.UpdateProject(ctx, "blog", func(p *Project) error { p.Generation = 1; return nil })
				if err == nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil || after.Generation != 1 {
				t.Fatalf("change once the cluster is back: %v", err)
			}
		})
	}
}

// TestEtcdNewerSchemaRefused: a state written by a newer opusd is not
// read by this one, on etcd as in the bbolt file.
func TestEtcdNewerSchemaRefused(t *testing.T) {
	srv := etcdServer(t)
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Put(context.Background(), "/newer/meta/schema_version", fmt.Sprint(SchemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	_, err = OpenEtcd(context.Background(), EtcdOptions{Endpoints: []string{srv.ClientURL}, Prefix: "/newer/", Host: "h"})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("newer opusd")) {
		t.Fatalf("OpenEtcd on a newer schema: %v", err)
	}
}

// TestEtcdHosts: a registered host is listed by every opusd while its
// own renews its lease, and not once that opusd is gone for the TTL; a
// project changed by one host is reported to the other as changed
// elsewhere, and never to the host that changed it.
func TestEtcdHosts(t *testing.T) {
	srv := etcdServer(t)
	ctx := context.Background()
	a := openEtcdAs(t, srv, "/hosts/", 0, "a")
	b := openEtcdAs(t, srv, "/hosts/", 0, "b")
	if !a.Shared() {
		t.Fatal("an etcd store says it is not shared")
	}
	if !a.ServedHere(&Project{Host: "a"}) || a.ServedHere(&Project{Host: "b"}) || a.ServedHere(&Project{}) {
		t.Fatal("host a's store does not tell its projects from b's and unplaced ones")
	}
	heard := func(s *Store) chan string {
		c := make(chan string, 16)
		s.OnChangedElsewhere(func(p string) { c <- p })
		return c
	}
	atA, atB := heard(a), heard(b)
	if err := a.RegisterHost(ctx, Host{Name: "a", Front: "127.0.0.1:80", Capacity: 10, Instance: "a-1"}); err != nil {
		t.Fatal(err)
	}
	if err := b.RegisterHost(ctx, Host{Name: "b", Front: "127.0.0.1:81", Capacity: 5, Instance: "b-1"}); err != nil {
		t.Fatal(err)
	}
	names := func(s *Store) string {
		hs, err := s.Hosts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, h := range hs {
			out = append(out, h.Name)
		}
		return fmt.Sprint(out)
	}
	waitFor(t, func() bool { return names(a) == "[a b]" && names(b) == "[a b]" })
	// Renewed past its TTL, a live host stays.
	time.Sleep(3 * time.Second)
	if got := names(a); got != "[a b]" {
		t.Fatalf("hosts after the TTL with both alive: %s", got)
	}
	if err := a.Update(ctx, func(tx *Tx) error { return tx.CreateProject(&Project{Name: "blog", Host: "b"}) }); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-atB:
		if p != "blog" {
			t.Fatalf("b heard of %q changed elsewhere; want blog", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b did not hear of a's new project")
	}
	if _, err := b.UpdateProject(ctx, "blog", func(p *Project) error { p.Status.Phase = PhaseReady; return nil }); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-atA:
		if p != "blog" {
			t.Fatalf("a heard of %q; want blog", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a did not hear of b's change")
	}
	// Neither hears of its own commits.
	select {
	case p := <-atA:
		t.Fatalf("a heard of its own or a repeated change to %q", p)
	case p := <-atB:
		t.Fatalf("b heard of its own change to %q", p)
	case <-time.After(500 * time.Millisecond):
	}
	// Another opusd claiming a's name is refused while a holds it, and a
	// keeps its place; a's own opusd, restarted (its instance), takes its
	// place back at once.
	c := openEtcdAs(t, srv, "/hosts/", 0, "a")
	err := c.RegisterHost(ctx, Host{Name: "a", Front: "10.0.0.9:80", Capacity: 1, Instance: "other"})
	if err == nil || !strings.Contains(err.Error(), "host_name a is another host's") || !strings.Contains(err.Error(), "127.0.0.1:80") {
		t.Fatalf("a second opusd claiming a's name: %v", err)
	}
	if hs, _ := a.Hosts(ctx); len(hs) < 1 || hs[0].Front != "127.0.0.1:80" {
		t.Fatalf("a's record after the refused claim: %+v", hs)
	}
	if err := c.RegisterHost(ctx, Host{Name: "a", Front: "127.0.0.1:80", Capacity: 10, Instance: "a-1"}); err != nil {
		t.Fatalf("a's own opusd, restarted: %v", err)
	}
	// b's opusd stops: gone from the list within its TTL (and a bit).
	b.Close()
	waitFor(t, func() bool { return names(a) == "[a]" })
}

// TestBoltHosts: in a file the one registered host is this one, and
// nothing is ever changed elsewhere.
func TestBoltHosts(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "s.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Shared() {
		t.Fatal("a bbolt store says it is shared")
	}
	if !s.ServedHere(&Project{Host: "other"}) || !s.ServedHere(&Project{}) {
		t.Fatal("a bbolt store's host does not serve every project")
	}
	if err := s.RegisterHost(ctx, Host{Name: "solo", Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	hs, err := s.Hosts(ctx)
	if err != nil || len(hs) != 1 || hs[0].Name != "solo" {
		t.Fatalf("hosts %+v, %v; want solo", hs, err)
	}
}

// TestEtcdTLS: a cluster that requires client certificates serves a store
// that presents one, and refuses a client without.
func TestEtcdTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd; -short (make unit) starts nothing")
	}
	if why := etcdtest.Missing(); why != "" {
		t.Skip(why)
	}
	srv, err := etcdtest.StartWith(filepath.Join(t.TempDir(), "etcd"), etcdtest.Options{TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Kill()
	tc, err := srv.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := OpenEtcd(ctx, EtcdOptions{Endpoints: []string{srv.ClientURL}, Prefix: "/tls/", Host: "h", TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(ctx, func(tx *Tx) error { return tx.CreateProject(&Project{Name: "blog"}) }); err != nil {
		t.Fatal(err)
	}
	// Without a certificate (the CA alone, as any process on the host
	// could have): refused.
	anon := tc.Clone()
	anon.Certificates = nil
	_, err = OpenEtcd(ctx, EtcdOptions{Endpoints: []string{srv.ClientURL}, Prefix: "/tls/", Host: "x", TLS: anon, DialTimeout: 2 * time.Second})
	if err == nil {
		t.Fatal("a client without a certificate opened the store")
	}
}
