package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/opus-hosting/opus/client"
	"github.com/opus-hosting/opus/internal/etcdtest"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/service/servicetest"
	"github.com/opus-hosting/opus/unprivd/store"
)

// ---- the API on each state store (issue 20) ----

// storeFigures is what BenchmarkAPIStore measures on one state store.
type storeFigures struct {
	// seqTime and concTime are the seconds the creates (each call and its
	// operation to done) took from one client and from 16 at once;
	// seqN and concN how many there were.
	seqTime, concTime float64
	seqN, concN       int
	// call is each sequential CreateProject call's latency: the request's
	// commit, before the reconciler runs the operation; in seconds.
	call []float64
	// get and list are readLatencies's, at every project made.
	get, list []float64
	// commit is the latency of one store commit (an UpdateProject that
	// stores the project as it was), with the API stopped; in seconds.
	commit []float64
}

// apiStore is opusd's API over one state store, and what it measured.
type apiStore struct {
	o *servicetest.Opusd
	c *client.Client
	f storeFigures
}

// storeRounds is how many turns each store takes at each phase of
// BenchmarkAPIStore: the stores alternate, so a change in the machine's
// load during the run falls on both.
const storeRounds = 5

// BenchmarkAPIStore runs the same API figures on the two state stores in
// one run: bbolt (the default, and the reference) and etcd (a real
// single-member etcd, Debian's, started for this benchmark, its data on
// the same disk as bbolt's file). Both are served by opusd's API in this
// process (servicetest: the service and the reconciler over a stub privd,
// on a Unix socket with peer credentials, called through the Go client),
// so the only difference is the store. -bench.api projects are made
// through the API on each: the first tenth one at a time, the rest 16
// clients at once; then GetProject and ListProjects as in BenchmarkAPI;
// then, the API stopped, the latency of one store commit. Every phase is
// done in storeRounds turns, alternating the stores. Beside them, how many
// commits a create makes on etcd and what etcd itself takes for a
// linearizable read and a put (a commit asks one of each). The figures
// for the real opusd binary (and its memory) are BenchmarkAPI's.
func BenchmarkAPIStore(b *testing.B) {
	if skipReason != "" {
		b.Skip(skipReason)
	}
	n := *benchAPIN
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("api%05d", i)
	}
	seq := max(storeRounds, n/10)

	// Under the run's directory: a dead run's etcd is found by it.
	srv := etcdtest.ForTest(b, filepath.Join(testRun.TempDir(b), "etcd"))
	ec, err := srv.Client()
	if err != nil {
		b.Fatal(err)
	}
	defer ec.Close()
	st, err := store.OpenEtcd(context.Background(), store.EtcdOptions{
		Endpoints: []string{srv.ClientURL}, Prefix: "/opus-bench-" + testRun.ID + "/", Host: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	// Closed after servicetest's cleanups (registered later, run first)
	// have stopped the API over it.
	b.Cleanup(func() { st.Close() })
	// The one host new projects go to.
	if err := st.RegisterHost(context.Background(), store.Host{Name: "bench", Capacity: 1_000_000, Instance: "bench"}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := benchCtx()
	defer cancel()
	bolt := startAPIStore(ctx, b, nil)
	etcd := startAPIStore(ctx, b, st)
	stores := []*apiStore{bolt, etcd}
	revision := func() int64 {
		resp, err := ec.Get(ctx, "rev", clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		return resp.Header.Revision
	}

	rev0 := revision()
	for r := range storeRounds {
		part := names[r*seq/storeRounds : (r+1)*seq/storeRounds]
		for _, s := range stores {
			start := time.Now()
			for _, name := range part {
				t := time.Now()
				op, err := s.c.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: name})
				if err != nil {
					b.Fatalf("%s: %v", name, err)
				}
				s.f.call = append(s.f.call, time.Since(t).Seconds())
				if _, err := s.c.Wait(ctx, op.GetId(), nil); err != nil {
					b.Fatalf("%s: %v", name, err)
				}
			}
			s.f.seqTime += time.Since(start).Seconds()
			s.f.seqN += len(part)
		}
	}
	rest := names[seq:]
	for r := range storeRounds {
		part := rest[r*len(rest)/storeRounds : (r+1)*len(rest)/storeRounds]
		for _, s := range stores {
			start := time.Now()
			if err := createAll(ctx, s.c, part, 16); err != nil {
				b.Fatal(err)
			}
			s.f.concTime += time.Since(start).Seconds()
			s.f.concN += len(part)
		}
	}
	revisions := revision() - rev0
	for range storeRounds {
		for _, s := range stores {
			get, list, err := readLatencies(ctx, s.c, names, 2000/storeRounds, 200/storeRounds)
			if err != nil {
				b.Fatal(err)
			}
			s.f.get, s.f.list = append(s.f.get, get...), append(s.f.list, list...)
		}
	}
	// The stores alone: nothing else commits now.
	for _, s := range stores {
		s.o.Stop()
	}
	for r := range storeRounds {
		for _, s := range stores {
			for i := range 500 / storeRounds {
				name := names[((r*500/storeRounds+i)*7919)%n]
				t := time.Now()
				if _, err := s.o.Store.UpdateProject(ctx, name, func(*store.Project) error { return nil }); err != nil {
					b.Fatal(err)
				}
				s.f.commit = append(s.f.commit, time.Since(t).Seconds())
			}
		}
	}
	floorGet, floorPut, err := etcdFloor(ec, "/opus-bench-floor-"+testRun.ID+"/")
	if err != nil {
		b.Fatal(err)
	}

	where := fmt.Sprintf("%d projects; opusd's API in-process (servicetest), privd stubbed; stores alternating, %d turns each", n, storeRounds)
	rows := []struct {
		name, unit string
		scale      float64
		of         func(storeFigures) float64
		note       string
		lower      bool // lower is better: the ratio is etcd / bbolt
	}{
		{"create, one client", "creates/s", 1, func(f storeFigures) float64 { return float64(f.seqN) / f.seqTime }, fmt.Sprintf("%d creates one at a time: the call and its operation to done; %s", seq, where), false},
		{"create, 16 clients", "creates/s", 1, func(f storeFigures) float64 { return float64(f.concN) / f.concTime }, fmt.Sprintf("the other %d, 16 clients at once", n-seq), false},
		{"CreateProject call p50", "ms", 1e3, func(f storeFigures) float64 { return quantile(f.call, 0.5) }, "one at a time: the request's commit, before its operation runs", true},
		{"CreateProject call p99", "ms", 1e3, func(f storeFigures) float64 { return quantile(f.call, 0.99) }, "", true},
		{"store commit p50", "ms", 1e3, func(f storeFigures) float64 { return quantile(f.commit, 0.5) }, "one project stored again (UpdateProject), 500 times, the API stopped", true},
		{"store commit p99", "ms", 1e3, func(f storeFigures) float64 { return quantile(f.commit, 0.99) }, "", true},
		{"GetProject p50", "µs", 1e6, func(f storeFigures) float64 { return quantile(f.get, 0.5) }, fmt.Sprintf("%d projects", n), true},
		{"GetProject p99", "µs", 1e6, func(f storeFigures) float64 { return quantile(f.get, 0.99) }, "target < 1 ms (1,000 projects)", true},
		{"ListProjects p50", "ms", 1e3, func(f storeFigures) float64 { return quantile(f.list, 0.5) }, fmt.Sprintf("all %d projects in one answer", n), true},
		{"ListProjects p99", "ms", 1e3, func(f storeFigures) float64 { return quantile(f.list, 0.99) }, "target < 20 ms (1,000 projects)", true},
	}
	for _, r := range rows {
		bv, ev := r.of(bolt.f)*r.scale, r.of(etcd.f)*r.scale
		record(b, "apistore", "bbolt "+r.name, round3(bv), r.unit, r.note)
		record(b, "apistore", "etcd "+r.name, round3(ev), r.unit, "")
		ratio, how := ev/bv, "etcd / bbolt; above 1: etcd slower"
		if !r.lower {
			ratio, how = bv/ev, "bbolt / etcd; above 1: etcd slower"
		}
		record(b, "apistore", "etcd vs bbolt "+r.name, round3(ratio), "x", how)
	}
	record(b, "apistore", "etcd commits per create", round3(float64(revisions)/float64(n)), "commits", "etcd revisions the creates made (each commit is one), over the projects made")
	record(b, "apistore", "etcd linearizable get p50", round3(quantile(floorGet, 0.5)*1e3), "ms", "a client's read of one key through the leader: what a commit asks first")
	record(b, "apistore", "etcd put p50", round3(quantile(floorPut, 0.5)*1e3), "ms", "a client's write of one key (raft log fsync): a commit's own cost")
	record(b, "apistore", "etcd put p99", round3(quantile(floorPut, 0.99)*1e3), "ms", "")
	saveFigures(b)
}

// startAPIStore serves the API over st (nil: a new bbolt file) until the
// benchmark ends, with a client of it.
func startAPIStore(ctx context.Context, b *testing.B, st *store.Store) *apiStore {
	b.Helper()
	o := servicetest.Start(b, servicetest.Options{Admin: true, NoRecord: true, Store: st})
	c, err := client.Dial(ctx, o.Socket)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return &apiStore{o: o, c: c}
}

// etcdFloor times what one commit on etcd asks of the cluster, outside
// Opus, 200 times each on keys under prefix: a linearizable read of one
// key and a put of one small value. The keys are removed afterwards.
func etcdFloor(c *clientv3.Client, prefix string) (get, put []float64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	defer c.Delete(ctx, prefix, clientv3.WithPrefix())
	for i := range 200 {
		t := time.Now()
		if _, err := c.Put(ctx, fmt.Sprintf("%s%d", prefix, i%10), "value"); err != nil {
			return nil, nil, err
		}
		put = append(put, time.Since(t).Seconds())
		t = time.Now()
		if _, err := c.Get(ctx, prefix+"0"); err != nil {
			return nil, nil, err
		}
		get = append(get, time.Since(t).Seconds())
	}
	return get, put, nil
}
