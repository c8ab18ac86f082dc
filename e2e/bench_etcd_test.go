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
	// seqRate and concRate are creates per second (the call and its
	// operation to done) from one client and from 16 at once.
	seqRate, concRate float64
	// call is each sequential CreateProject call's latency: the request's
	// commit, before the reconciler runs the operation; in seconds.
	call []float64
	// get and list are readLatencies's, at every project made.
	get, list []float64
	// revisions is how many etcd revisions (one per commit) the creates
	// made; 0 on bbolt.
	revisions int64
}

// BenchmarkAPIStore runs the same API figures on the two state stores in
// one run: bbolt (the default, and the reference) and etcd (a real
// single-member etcd, Debian's, started for this benchmark, its data
// beside bbolt's file on the same disk). Both are served by opusd's API in
// this process (servicetest: the service and the reconciler over a stub
// privd, on a Unix socket with peer credentials, called through the Go
// client), so the only difference is the store. -bench.api projects are
// made through the API on each: the first tenth one at a time, the rest
// 16 clients at once; then GetProject and ListProjects as in BenchmarkAPI.
// The figures for the real opusd binary (and its memory) are
// BenchmarkAPI's.
func BenchmarkAPIStore(b *testing.B) {
	if skipReason != "" {
		b.Skip(skipReason)
	}
	if why := etcdtest.Missing(); why != "" {
		b.Skip(why)
	}
	n := *benchAPIN
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("api%05d", i)
	}
	seq := max(1, n/10)

	bolt := apiOnStore(b, names, seq, nil)

	srv, err := etcdtest.Start(filepath.Join(root, "bench-etcd"))
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Kill()
	ec, err := srv.Client()
	if err != nil {
		b.Fatal(err)
	}
	defer ec.Close()
	st, err := store.OpenEtcd(context.Background(), store.EtcdOptions{
		Endpoints: []string{srv.ClientURL}, Prefix: "/opus-bench-" + testRun.ID + "/", Committer: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	// Closed after servicetest's cleanups (registered later, run first)
	// have stopped the API over it.
	b.Cleanup(func() { st.Close() })
	etcd := apiOnStore(b, names, seq, &etcdStore{st, ec})
	floorGet, floorPut, err := etcdFloor(ec, "/opus-bench-floor-"+testRun.ID+"/")
	if err != nil {
		b.Fatal(err)
	}

	where := fmt.Sprintf("%d projects; opusd's API in-process (servicetest), privd stubbed", n)
	rows := []struct {
		name, unit string
		scale      float64
		of         func(storeFigures) float64
		note       string
		lower      bool // lower is better: the ratio is etcd / bbolt
	}{
		{"create, one client", "creates/s", 1, func(f storeFigures) float64 { return f.seqRate }, fmt.Sprintf("%d creates one at a time: the call and its operation to done; %s", seq, where), false},
		{"create, 16 clients", "creates/s", 1, func(f storeFigures) float64 { return f.concRate }, fmt.Sprintf("the other %d, 16 clients at once", n-seq), false},
		{"CreateProject call p50", "ms", 1e3, func(f storeFigures) float64 { return quantile(f.call, 0.5) }, "one at a time: the request's commit, before its operation runs", true},
		{"CreateProject call p99", "ms", 1e3, func(f storeFigures) float64 { return quantile(f.call, 0.99) }, "", true},
		{"GetProject p50", "µs", 1e6, func(f storeFigures) float64 { return quantile(f.get, 0.5) }, fmt.Sprintf("%d projects", n), true},
		{"GetProject p99", "µs", 1e6, func(f storeFigures) float64 { return quantile(f.get, 0.99) }, "target < 1 ms (1,000 projects)", true},
		{"ListProjects p50", "ms", 1e3, func(f storeFigures) float64 { return quantile(f.list, 0.5) }, fmt.Sprintf("all %d projects in one answer", n), true},
		{"ListProjects p99", "ms", 1e3, func(f storeFigures) float64 { return quantile(f.list, 0.99) }, "target < 20 ms (1,000 projects)", true},
	}
	for _, r := range rows {
		bv, ev := r.of(bolt)*r.scale, r.of(etcd)*r.scale
		record(b, "apistore", "bbolt "+r.name, round3(bv), r.unit, r.note)
		record(b, "apistore", "etcd "+r.name, round3(ev), r.unit, "")
		ratio, how := ev/bv, "etcd / bbolt; above 1: etcd slower"
		if !r.lower {
			ratio, how = bv/ev, "bbolt / etcd; above 1: etcd slower"
		}
		record(b, "apistore", "etcd vs bbolt "+r.name, round3(ratio), "x", how)
	}
	record(b, "apistore", "etcd commits per create", round3(float64(etcd.revisions)/float64(n)), "commits", "etcd revisions the creates made (each commit is one), over the projects made")
	record(b, "apistore", "etcd linearizable get p50", round3(quantile(floorGet, 0.5)*1e3), "ms", "a client's read of one key through the leader: what a commit asks first")
	record(b, "apistore", "etcd put p50", round3(quantile(floorPut, 0.5)*1e3), "ms", "a client's write of one key (raft log fsync): a commit's own cost")
	record(b, "apistore", "etcd put p99", round3(quantile(floorPut, 0.99)*1e3), "ms", "")
	saveFigures(b)
}

// etcdStore is a store on etcd and a client of the same cluster, to count
// the revisions the creates make.
type etcdStore struct {
	st *store.Store
	c  *clientv3.Client
}

// apiOnStore serves the API over es's store (nil: a new bbolt file), makes
// names through it (the first seq one at a time, the rest 16 clients at
// once) and times the reads.
func apiOnStore(b *testing.B, names []string, seq int, es *etcdStore) storeFigures {
	b.Helper()
	opt := servicetest.Options{Admin: true, NoRecord: true}
	if es != nil {
		opt.Store = es.st
	}
	o := servicetest.Start(b, opt)
	ctx, cancel := benchCtx()
	defer cancel()
	c, err := client.Dial(ctx, o.Socket)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	revision := func() int64 {
		if es == nil {
			return 0
		}
		resp, err := es.c.Get(ctx, "rev", clientv3.WithCountOnly())
		if err != nil {
			b.Fatal(err)
		}
		return resp.Header.Revision
	}
	var f storeFigures
	rev0 := revision()
	start := time.Now()
	for _, name := range names[:seq] {
		t := time.Now()
		op, err := c.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: name})
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		f.call = append(f.call, time.Since(t).Seconds())
		if _, err := c.Wait(ctx, op.GetId(), nil); err != nil {
			b.Fatalf("%s: %v", name, err)
		}
	}
	f.seqRate = float64(seq) / time.Since(start).Seconds()
	start = time.Now()
	if err := createAll(ctx, c, names[seq:], 16); err != nil {
		b.Fatal(err)
	}
	f.concRate = float64(len(names)-seq) / time.Since(start).Seconds()
	f.revisions = revision() - rev0
	if f.get, f.list, err = readLatencies(ctx, c, names); err != nil {
		b.Fatal(err)
	}
	// Stopped now, not at the end: the next store's figures are taken
	// with nothing of this one running.
	o.Stop()
	return f
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
