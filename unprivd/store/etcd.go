package store

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/btree"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/mirror"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The state on etcd: every bucket's key K is the etcd key
// PREFIX + BUCKET + "/" + K, its value the same JSON document as in the
// bbolt file, so the schema (and SchemaVersion) is one for both. Two keys
// are etcd's own:
//
//	meta/commit            written by every commit (its value names the
//	                       committer): a commit succeeds only if this key
//	                       is as its transaction read it, so commits from
//	                       every host are serialized as bbolt's are
//	meta/sequence/BUCKET   the bucket's last sequence number (bbolt keeps
//	                       it in the bucket itself)
//
// Each opusd keeps a copy of everything under the prefix in memory: read
// once at open, then kept current by one watch (there is no polling).
// Reads (View) answer from that copy, at the revision it has reached, so
// they cost what bbolt's do and keep answering while the cluster cannot be
// reached. Update reads the same copy, runs fn once more whenever another
// host committed first, and returns once the copy has this commit: a
// caller reads its own writes. The copy is a B-tree cloned (copy on write,
// in constant time) for every transaction, so each one sees one revision.

// EtcdOptions says where OpenEtcd finds the cluster and how it talks to it.
type EtcdOptions struct {
	// Endpoints are the cluster's client URLs (http://HOST:PORT, or
	// https:// with TLS).
	Endpoints []string
	// Prefix is put before every key this store writes, so several Opus
	// installations (or tests) can share one cluster; "" means "/opus/".
	Prefix string
	// TLS is the client's TLS configuration (its CA and, for client
	// authentication, its certificate); nil means plain connections.
	TLS *tls.Config
	// DialTimeout bounds connecting and reading the state at open; 0
	// means 5 seconds.
	DialTimeout time.Duration
	// RequestTimeout bounds each commit; 0 means 5 seconds. A store that
	// cannot reach the cluster within it refuses the change with
	// ErrUnavailable.
	RequestTimeout time.Duration
	// Host is this opusd's host name (config host_name): it names this
	// host's commits (meta/commit) and tells the projects it serves
	// (Store.ServedHere). Required.
	Host string
	// HostTTL is how long this host stays listed (RegisterHost) after its
	// opusd last renewed its lease; 0 means 10 seconds.
	HostTTL time.Duration
	Options
}

// ErrUnavailable means the state store cannot be reached: changes are
// refused until it can (reads answer from what this opusd last saw).
var ErrUnavailable = errors.New("the state store is unreachable")

// maxCommitAttempts bounds how often Update runs fn again after losing to
// another host's commit.
const maxCommitAttempts = 100

// OpenEtcd opens the state kept in an etcd cluster under opt.Prefix,
// creating its schema version on first use. Unlike Open it takes no lock:
// several opusds (one per host) share the state.
func OpenEtcd(ctx context.Context, opt EtcdOptions) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(opt.Endpoints) == 0 {
		return nil, errors.New("etcd state store: no endpoints")
	}
	if opt.Prefix == "" {
		opt.Prefix = "/opus/"
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = 5 * time.Second
	}
	if opt.RequestTimeout == 0 {
		opt.RequestTimeout = 5 * time.Second
	}
	if opt.HostTTL == 0 {
		opt.HostTTL = 10 * time.Second
	}
	if opt.Host == "" {
		return nil, errors.New("etcd state store: no host name")
	}
	opt.Options = opt.Options.withDefaults()
	where := fmt.Sprintf("etcd %s prefix %s", strings.Join(opt.Endpoints, ","), opt.Prefix)
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   opt.Endpoints,
		DialTimeout: opt.DialTimeout,
		TLS:         opt.TLS,
		// Pings find a dead connection (a partition) in seconds, so the
		// watch is re-established and commits fail fast.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("open state (%s): %w", where, err)
	}
	e := &etcdKV{
		c: c, prefix: opt.Prefix, where: where, timeout: opt.RequestTimeout,
		committer: opt.Host, hostTTL: opt.HostTTL, advanced: make(chan struct{}),
	}
	lctx, cancel := context.WithTimeout(ctx, opt.DialTimeout)
	err = e.load(lctx)
	cancel()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("open state (%s): %w: %w", where, ErrUnavailable, err)
	}
	e.ctx, e.stop = context.WithCancel(context.Background())
	e.done = make(chan struct{})
	go e.follow(e.ctx)
	s, err := newStore(ctx, e, opt.Options)
	if err != nil {
		return nil, fmt.Errorf("open state (%s): %w", where, err)
	}
	s.host = opt.Host
	e.mu.Lock()
	e.changed = s.base.changed
	e.mu.Unlock()
	return s, nil
}

// changed is told of every key a commit (this opusd's or, when
// elsewhere, another host's) put or deleted: operation watchers wake, and
// a change to a store's or facet's project records goes to that store (by
// its bucket), whose decode cache drops what it no longer needs and whose
// OnChangedElsewhere function hears of other hosts' changes.
func (b *base) changed(bucket, key string, elsewhere bool) {
	if bucket == string(bucketOperations) {
		b.watch.Publish(key)
		return
	}
	b.mu.Lock()
	s := b.stores[bucket]
	b.mu.Unlock()
	if s == nil {
		return
	}
	s.cache.forget([]string{key})
	if fns := s.elsewhere.Load(); fns != nil && elsewhere {
		for _, fn := range *fns {
			fn(key)
		}
	}
}

// etcdKV is the records on etcd, with this opusd's copy of them.
type etcdKV struct {
	c         *clientv3.Client
	prefix    string
	where     string
	timeout   time.Duration
	committer string
	hostTTL   time.Duration

	// writer serializes this opusd's commits, as bbolt's writer lock does:
	// only another host's commit can make one run fn again.
	writer sync.Mutex

	mu   sync.Mutex
	tree *btree.BTreeG[item]
	// rev is the cluster revision tree shows; advanced is closed (and
	// replaced) whenever it grows.
	rev      int64
	advanced chan struct{}
	// changed is called, outside mu, with each key the watch saw change
	// and whether another host's commit changed it.
	changed func(bucket, key string, elsewhere bool)

	// leases are the registrations' leases, revoked at close.
	leaseMu sync.Mutex
	leases  []clientv3.LeaseID
	// ctx ends when the store closes: the watch and lease renewals
	// stop.
	ctx  context.Context
	stop context.CancelFunc
	done chan struct{}
}

// item is one key in the copy: "BUCKET/KEY", KEY's bytes, the value and
// the revision that wrote it.
type item struct {
	key string
	k   []byte
	val []byte
	mod int64
}

func itemLess(a, b item) bool { return a.key < b.key }

// commitKey is written by every commit; sequenceKey holds bucket's last
// sequence number.
var commitKey = []byte("commit")

func sequenceKey(bucket []byte) []byte { return append([]byte("sequence/"), bucket...) }

func treeKey(bucket, key []byte) string { return string(bucket) + "/" + string(key) }

func (e *etcdKV) describe() string { return e.where }

func (e *etcdKV) close() error {
	if e.stop != nil {
		e.stop()
		<-e.done
	}
	// A host that stops leaves the list at once (one that dies, when its
	// lease runs out).
	e.leaseMu.Lock()
	leases := e.leases
	e.leases = nil
	e.leaseMu.Unlock()
	for _, id := range leases {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		e.c.Revoke(ctx, id)
		cancel()
	}
	return e.c.Close()
}

// holdLease records the lease a registration holds now (replacing old),
// for close to revoke.
func (e *etcdKV) holdLease(old, id clientv3.LeaseID) {
	e.leaseMu.Lock()
	defer e.leaseMu.Unlock()
	e.leases = slices.DeleteFunc(e.leases, func(l clientv3.LeaseID) bool { return l == old })
	e.leases = append(e.leases, id)
}

// load reads everything under the prefix at one revision into a new copy.
func (e *etcdKV) load(ctx context.Context) error {
	resp, err := e.c.Get(ctx, e.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	rev := resp.Header.Revision
	t := btree.NewG(32, itemLess)
	pages, errc := mirror.NewSyncer(e.c, e.prefix, rev).SyncBase(ctx)
	for page := range pages {
		for _, kv := range page.Kvs {
			if it, ok := e.item(kv.Key, kv.Value, kv.ModRevision); ok {
				t.ReplaceOrInsert(it)
			}
		}
	}
	if err := <-errc; err != nil {
		return err
	}
	var old *btree.BTreeG[item]
	e.mu.Lock()
	old, e.tree = e.tree, t
	e.advance(rev)
	changed := e.changed
	e.mu.Unlock()
	if old != nil && changed != nil {
		// Reloaded after a compaction: what changed in between is not
		// known key by key, so every operation's watchers look again.
		for _, tr := range []*btree.BTreeG[item]{old, t} {
			tr.Ascend(func(it item) bool {
				bucket, key, _ := strings.Cut(it.key, "/")
				changed(bucket, key, true)
				return true
			})
		}
	}
	return nil
}

// item makes the copy's entry of etcd key k, or false for a key that is
// not one of a bucket's.
func (e *etcdKV) item(k, v []byte, mod int64) (item, bool) {
	rest, ok := bytes.CutPrefix(k, []byte(e.prefix))
	if !ok {
		return item{}, false
	}
	i := bytes.IndexByte(rest, '/')
	if i <= 0 {
		return item{}, false
	}
	return item{key: string(rest), k: rest[i+1:], val: v, mod: mod}, true
}

// advance records that the copy shows revision rev; mu is held.
func (e *etcdKV) advance(rev int64) {
	if rev > e.rev {
		e.rev = rev
		close(e.advanced)
		e.advanced = make(chan struct{})
	}
}

// follow keeps the copy current with one watch from the revision it
// shows, until ctx ends; a broken watch is started again, a compacted
// one after reading everything again.
func (e *etcdKV) follow(ctx context.Context) {
	defer close(e.done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		e.mu.Lock()
		from := e.rev + 1
		e.mu.Unlock()
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		reload := false
		for wr := range e.c.Watch(wctx, e.prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify()) {
			if wr.CompactRevision != 0 {
				reload = true
				break
			}
			if wr.Err() != nil {
				break
			}
			backoff = 100 * time.Millisecond
			e.apply(wr)
		}
		cancel()
		if reload {
			lctx, cancel := context.WithTimeout(ctx, e.timeout)
			err := e.load(lctx)
			cancel()
			if err == nil {
				continue
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// apply puts one watch response's events (whole revisions) into the copy.
// A revision whose meta/commit names another committer (or that has none:
// a lease ran out) changed things elsewhere.
func (e *etcdKV) apply(wr clientv3.WatchResponse) {
	type change struct {
		bucket, key string
		rev         int64
	}
	var changes []change
	mine := map[int64]bool{}
	commit := treeKey(bucketMeta, commitKey)
	e.mu.Lock()
	rev := e.rev
	for _, ev := range wr.Events {
		it, ok := e.item(ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
		rev = max(rev, ev.Kv.ModRevision)
		if !ok {
			continue
		}
		if ev.Type == clientv3.EventTypeDelete {
			e.tree.Delete(it)
		} else {
			e.tree.ReplaceOrInsert(it)
		}
		if it.key == commit {
			mine[it.mod] = ev.Type == clientv3.EventTypePut && string(it.val) == e.committer
			continue
		}
		bucket, key, _ := strings.Cut(it.key, "/")
		changes = append(changes, change{bucket, key, ev.Kv.ModRevision})
	}
	if wr.IsProgressNotify() {
		rev = max(rev, wr.Header.Revision)
	}
	e.advance(rev)
	changed := e.changed
	e.mu.Unlock()
	if changed != nil {
		for _, c := range changes {
			changed(c.bucket, c.key, !mine[c.rev])
		}
	}
}

// register keeps key under a lease of hostTTL, renewed until the store
// closes; a lease lost (the cluster out of reach for longer than ttl) is
// replaced by a new one as soon as the cluster answers.
func (e *etcdKV) register(ctx context.Context, bucket, key, value []byte, mine func(old []byte) bool) error {
	k := e.prefix + treeKey(bucket, key)
	grant := func(ctx context.Context) (clientv3.LeaseID, error) {
		ctx, cancel := context.WithTimeout(ctx, e.timeout)
		defer cancel()
		l, err := e.c.Grant(ctx, int64(max(e.hostTTL/time.Second, 1)))
		if err != nil {
			return 0, e.commitError(err)
		}
		// Written if absent, or over a record mine says is this one's
		// (its own, left by its last run): never over another's.
		resp, err := e.c.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, string(value), clientv3.WithLease(l.ID))).
			Else(clientv3.OpGet(k)).Commit()
		if err == nil && !resp.Succeeded {
			kvs := resp.Responses[0].GetResponseRange().Kvs
			if len(kvs) == 1 && !mine(kvs[0].Value) {
				e.c.Revoke(ctx, l.ID)
				return 0, &TakenError{Record: kvs[0].Value}
			}
			_, err = e.c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", modOf(kvs))).
				Then(clientv3.OpPut(k, string(value), clientv3.WithLease(l.ID))).Commit()
		}
		if err != nil {
			return 0, e.commitError(err)
		}
		return l.ID, nil
	}
	id, err := grant(ctx)
	if err != nil {
		return err
	}
	e.holdLease(0, id)
	go func() {
		for {
			// KeepAlive's channel closes when the lease is lost or the
			// store closes.
			if ch, err := e.c.KeepAlive(e.ctx, id); err == nil {
				for range ch {
				}
			}
			for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
				select {
				case <-e.ctx.Done():
					return
				case <-time.After(backoff):
				}
				// Lost (cut off longer than the TTL): back once the
				// cluster answers, unless another took the name meanwhile.
				last := id
				if id, err = grant(e.ctx); err == nil {
					e.holdLease(last, id)
					break
				}
				id = last
			}
		}
	}()
	return nil
}

// modOf is the revision that last wrote the one key of kvs (0: none).
func modOf(kvs []*mvccpb.KeyValue) int64 {
	if len(kvs) == 1 {
		return kvs[0].ModRevision
	}
	return 0
}

// TakenError is RegisterHost's refusal: another opusd holds the name.
type TakenError struct {
	// Record is the holder's registration (a Host, JSON).
	Record []byte
}

func (e *TakenError) Error() string { return "the name is held by another opusd" }

func (e *etcdKV) shared() bool { return true }

// snapshot returns a copy of the copy (constant time, copy on write) and
// the revision it shows.
func (e *etcdKV) snapshot() (*btree.BTreeG[item], int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tree.Clone(), e.rev
}

// caughtUp waits until the copy shows revision rev, or ctx ends.
func (e *etcdKV) caughtUp(ctx context.Context, rev int64) error {
	for {
		e.mu.Lock()
		now, next := e.rev, e.advanced
		e.mu.Unlock()
		if now >= rev {
			return nil
		}
		select {
		case <-next:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (e *etcdKV) view(_ context.Context, fn func(kvTx) error) error {
	t, _ := e.snapshot()
	return fn(&etcdTx{tree: t})
}

func (e *etcdKV) update(ctx context.Context, began func(), fn func(kvTx) error) error {
	e.writer.Lock()
	defer e.writer.Unlock()
	began()
	for attempt := 1; ; attempt++ {
		t, _ := e.snapshot()
		tx := &etcdTx{tree: t, writable: true, writes: map[string]*[]byte{}}
		if err := fn(tx); err != nil {
			return err
		}
		if len(tx.writes) == 0 {
			return nil
		}
		seen := int64(0)
		if it, ok := t.Get(item{key: treeKey(bucketMeta, commitKey)}); ok {
			seen = it.mod
		}
		commit := e.prefix + treeKey(bucketMeta, commitKey)
		ops := make([]clientv3.Op, 0, len(tx.writes)+1)
		for k, v := range tx.writes {
			if v == nil {
				ops = append(ops, clientv3.OpDelete(e.prefix+k))
			} else {
				ops = append(ops, clientv3.OpPut(e.prefix+k, string(*v)))
			}
		}
		ops = append(ops, clientv3.OpPut(commit, e.committer))
		// A commit sent to a cluster that does not answer may still be
		// applied when it answers again, long after this one reported a
		// refusal. So first a read that needs the leader and a quorum
		// (linearizable), which changes nothing whenever it is served: the
		// commit goes out only to a cluster that just answered. (What is
		// left is a cluster lost in the instant between the two.)
		pctx, pcancel := context.WithTimeout(ctx, e.timeout)
		_, err := e.c.Get(pctx, commit)
		pcancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return e.commitError(err)
		}
		cctx, cancel := context.WithTimeout(ctx, e.timeout)
		resp, err := e.c.Txn(cctx).
			If(clientv3.Compare(clientv3.ModRevision(commit), "=", seen)).
			Then(ops...).
			Else(clientv3.OpGet(commit)).
			Commit()
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return e.commitError(err)
		}
		// Read-your-writes: the copy must show this commit (or the one
		// that beat it) before the caller, or fn again, reads it.
		want := resp.Header.Revision
		if !resp.Succeeded {
			if r := resp.Responses; len(r) == 1 && len(r[0].GetResponseRange().Kvs) == 1 {
				want = r[0].GetResponseRange().Kvs[0].ModRevision
			}
		}
		err = e.caughtUp(cctx, want)
		cancel()
		if resp.Succeeded {
			// Committed: a copy slow to show it is no reason to say
			// otherwise (the caller might do it again).
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w (%s): another host's change did not reach this one within %s", ErrUnavailable, e.where, e.timeout)
		}
		if attempt == maxCommitAttempts {
			return fmt.Errorf("state store (%s): %d attempts in a row lost to other hosts' changes; try again", e.where, attempt)
		}
		// Lost to another host's commit: a random pause, longer each
		// time, so that two hosts racing for the same records do not
		// keep colliding.
		select {
		case <-time.After(time.Duration(rand.Int64N(int64(attempt) * int64(2*time.Millisecond)))):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// commitError says why a commit failed: the cluster out of reach (within
// the request timeout, or without a leader) is ErrUnavailable; anything
// else (a request the cluster refuses) is itself.
func (e *etcdKV) commitError(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		status.Code(err) == codes.Unavailable, status.Code(err) == codes.DeadlineExceeded,
		strings.Contains(err.Error(), "no leader"):
		return fmt.Errorf("%w (%s): %w", ErrUnavailable, e.where, err)
	}
	return fmt.Errorf("state store (%s): commit: %w", e.where, err)
}

// etcdTx is a transaction on one clone of the copy. A writable one puts
// its writes into its clone too (so it reads them back) and records them
// for the commit: key → value, or nil for a delete.
type etcdTx struct {
	tree     *btree.BTreeG[item]
	writable bool
	writes   map[string]*[]byte
}

var errReadOnly = errors.New("store: write in a read-only transaction")

func (t *etcdTx) get(bucket, key []byte) []byte {
	if it, ok := t.tree.Get(item{key: treeKey(bucket, key)}); ok {
		return it.val
	}
	return nil
}

func (t *etcdTx) put(bucket, key, value []byte) error {
	if !t.writable {
		return errReadOnly
	}
	k := treeKey(bucket, key)
	v := bytes.Clone(value)
	t.tree.ReplaceOrInsert(item{key: k, k: []byte(k[len(bucket)+1:]), val: v})
	t.writes[k] = &v
	return nil
}

func (t *etcdTx) del(bucket, key []byte) error {
	if !t.writable {
		return errReadOnly
	}
	k := treeKey(bucket, key)
	t.tree.Delete(item{key: k})
	t.writes[k] = nil
	return nil
}

func (t *etcdTx) ascend(bucket, from []byte, fn func(k, v []byte) error) error {
	prefix := string(bucket) + "/"
	var err error
	t.tree.AscendGreaterOrEqual(item{key: prefix + string(from)}, func(it item) bool {
		if !strings.HasPrefix(it.key, prefix) {
			return false
		}
		err = fn(it.k, it.val)
		return err == nil
	})
	return stopped(err)
}

func (t *etcdTx) descend(bucket, below []byte, fn func(k, v []byte) error) error {
	prefix := string(bucket) + "/"
	pivot := string(bucket) + "0" // '/'+1: just past the bucket
	if below != nil {
		pivot = prefix + string(below)
	}
	var err error
	t.tree.DescendLessOrEqual(item{key: pivot}, func(it item) bool {
		if it.key == pivot {
			return true
		}
		if !strings.HasPrefix(it.key, prefix) {
			return false
		}
		err = fn(it.k, it.val)
		return err == nil
	})
	return stopped(err)
}

func (t *etcdTx) nextSequence(bucket []byte) (uint64, error) {
	var n uint64
	if v := t.get(bucketMeta, sequenceKey(bucket)); v != nil {
		var err error
		if n, err = strconv.ParseUint(string(v), 10, 64); err != nil {
			return 0, fmt.Errorf("store: sequence of %s: %q is not a number", bucket, v)
		}
	}
	n++
	return n, t.put(bucketMeta, sequenceKey(bucket), sequenceText(n))
}
