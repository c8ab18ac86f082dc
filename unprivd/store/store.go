// Package store is opusd's durable state: every project's spec and status and
// every operation, in one bbolt file. It is the only package that imports
// bbolt; everything else goes through Update and View.
//
// Schema (version 1). Every value is a JSON document of the Go types below.
//
//	bucket "meta"         key "schema_version" → decimal text "1". Checked on
//	                      Open: a newer version is refused (a newer opusd
//	                      wrote the file), an absent one is written.
//	bucket "projects"     key project name → Project
//	bucket "operations"   key operation id ("op-" + 32 hex digits) → Operation
//	bucket "project_ops"  key "<project>/<seq>" → operation id, where seq is
//	                      the operation's 20-digit zero-padded sequence number
//	                      (monotonic over the file), so a reverse cursor scan
//	                      of the prefix lists a project's operations newest
//	                      first without reading any other project's.
//
// A facet's project records (Store.Facet) are made on its first write,
// like the console's buckets below, and need no version bump either:
//
//	bucket "projects_<facet>"  key project name → Project (a host-local
//	                      copy of a project whose real record is in
//	                      "projects"; its operations are the project's)
//
// The web console's buckets (console.go) are made on their first write and
// need no version bump: an older opusd never opens them, and a file
// without them reads as "no accounts, links or sessions".
//
//	bucket "console_accounts" key uid (decimal) → ConsoleAccount (the user
//	                      name it belongs to, argon2id password hash,
//	                      disabled flag, last sign-in)
//	bucket "console_links"    key hex SHA-256 of a login link token →
//	                      LoginLink; deleted when used or expired
//	bucket "console_sessions" key hex SHA-256 of a session id →
//	                      ConsoleSession; deleted at sign-out, expiry,
//	                      password change, or when the account goes
//	                      (tokens themselves are never stored)
//
// Likewise the uid allocation bucket (uids.go), never pruned:
//
//	bucket "uids"         key uid, 10 zero-padded digits → UIDRecord (the
//	                      project it went to, or why it was skipped)
//
// Project records are decoded from JSON once per stored version: a
// bounded, never stale cache (cache.go) keeps them decoded, and Tx.Project,
// Tx.Projects and Tx.EachProject hand out deep copies of them, so every
// reader owns what it gets and no reader can change what another sees.
// Other records are decoded on every read.
//
// Writes use bbolt's default: the file is fsynced on every commit, so a call
// that returned has survived a crash of opusd or the host. After a commit
// that changed an operation, watchers of that operation are woken (see
// Changed).
package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opus-hosting/opus/unprivd/broadcast"
)

// SchemaVersion is the layout of the file this package reads and writes.
const SchemaVersion = 1

// MaxOperationsPerProject bounds the history kept per project: when a new
// operation is recorded, the oldest finished ones beyond this are dropped.
const MaxOperationsPerProject = 50

var (
	bucketMeta       = []byte("meta")
	bucketProjects   = []byte("projects")
	bucketOperations = []byte("operations")
	bucketProjectOps = []byte("project_ops")
	keySchema        = []byte("schema_version")
)

// ErrNotFound means the project or operation does not exist.
var ErrNotFound = errors.New("not found")

// ErrExists means a project of that name already exists.
var ErrExists = errors.New("already exists")

// Store is an open state file. It is safe for concurrent use.
//
// A Store reads and writes the project records of one bucket: the main
// store's "projects", or a facet's (Facet). Everything else (the kv, the
// clock, operations and their watchers, hosts, uids, the console) is
// shared by a store and all its facets, in base.
type Store struct {
	*base
	// bucket holds this store's project records: bucketProjects, or
	// "projects_"+NAME for facet NAME.
	bucket []byte
	// facet is the facet's name; "" for the main store.
	facet string
	// cache keeps project records decoded (cache.go); reads hand out
	// copies of them. Per store: the same name may be in several facets.
	cache decodeCache
	// projects is how many projects the last full read found: the
	// capacity of the next one's slice.
	projects atomic.Int64
	// elsewhere are OnChangedElsewhere's functions (copy on write).
	elsewhere atomic.Pointer[[]func(project string)]
}

// base is what a store shares with its facets.
type base struct {
	kv  kv
	now func() time.Time
	// watch wakes the watchers of operations a commit changed.
	watch broadcast.Hub
	// userName is Options.UserName.
	userName func(uid uint32) (string, error)
	// epoch is when the store was opened, with its monotonic clock
	// reading; writeBegan is when the write transaction in progress took
	// the writer lock, in nanoseconds since epoch (at least 1), or 0 when
	// none is. Monotonic, so a wall-clock step (NTP at boot) cannot look
	// like a stalled write. See WriteStalled.
	epoch      time.Time
	writeBegan atomic.Int64
	// host is this host's name on a shared store (EtcdOptions.Host).
	host string

	// stores are the main store and every facet made, by bucket name:
	// where a change another host committed is routed (changed).
	mu     sync.Mutex
	stores map[string]*Store
}

// Options tunes Open. The zero value is the production default.
type Options struct {
	// LockTimeout is how long Open waits for another process to release
	// the file lock; 0 means 2 seconds.
	LockTimeout time.Duration
	// Now is the clock stamping records; nil means time.Now.
	Now func() time.Time
	// UserName returns the login name a uid has now, or an error wrapping
	// ErrNoUser when no user has it: console accounts are bound to it
	// (console.go). nil means the host's user database, SystemUserName.
	UserName func(uid uint32) (string, error)
}

// Open opens (creating if needed) the state file at path, mode 0600, and
// checks its schema version. It fails after the lock timeout when another
// opusd holds the file.
func Open(ctx context.Context, path string, opt Options) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opt = opt.withDefaults()
	b, err := openBolt(path, opt)
	if err != nil {
		return nil, err
	}
	s, err := newStore(ctx, b, opt)
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	return s, nil
}

func (opt Options) withDefaults() Options {
	if opt.LockTimeout == 0 {
		opt.LockTimeout = 2 * time.Second
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.UserName == nil {
		opt.UserName = SystemUserName
	}
	return opt
}

// newStore checks (or, in a new store, writes) the schema version of the
// records in b; it closes b when it fails.
func newStore(ctx context.Context, b kv, opt Options) (*Store, error) {
	err := b.update(ctx, func() {}, func(t kvTx) error {
		if v := t.get(bucketMeta, keySchema); v != nil {
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 1 {
				return fmt.Errorf("schema_version %q is not a version number", v)
			}
			if n > SchemaVersion {
				return fmt.Errorf("schema version %d was written by a newer opusd; this one understands version %d: run the newer opusd or restore a backup", n, SchemaVersion)
			}
			return nil
		}
		return t.put(bucketMeta, keySchema, []byte(strconv.Itoa(SchemaVersion)))
	})
	if err != nil {
		b.close()
		return nil, err
	}
	s := &Store{base: &base{kv: b, now: opt.Now, userName: opt.UserName, epoch: time.Now()}, bucket: bucketProjects}
	s.stores = map[string]*Store{string(bucketProjects): s}
	return s, nil
}

// Facet returns the facet name of the state: a Store that keeps its
// project records in a bucket of their own, "projects_"+name, and shares
// everything else with s (the kv, operations and their watchers, hosts,
// uids, the console). A host keeps a second, host-local copy of a
// project there while the project's real record stays in the main store
// (a project moving in, or the leftover of one that moved out), and the
// same code (the reconciler) works on either. Operations recorded through
// a facet are the project's, in the shared history, and a facet's
// DeleteProject leaves that history alone.
//
// Every call with one name returns the same facet, whichever of the
// store's facets it is called on; name is one of a few fixed words of
// lower-case letters (it panics on anything else: a programming error).
// Closing a facet does nothing: the main store owns the kv.
func (s *Store) Facet(name string) *Store {
	if name == "" || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz") != "" {
		panic(fmt.Sprintf("store: facet name %q: want lower-case letters", name))
	}
	bucket := string(bucketProjects) + "_" + name
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.stores[bucket]
	if f == nil {
		f = &Store{base: s.base, bucket: []byte(bucket), facet: name}
		s.stores[bucket] = f
	}
	return f
}

// The facets a move uses (unprivd/mover): the target's copy of a project
// while it is deployed, and the source's old copy while it is torn down.
const (
	FacetIncoming  = "incoming"
	FacetDeparting = "departing"
)

// FacetName is the name s was made with by Facet; "" for the main store.
func (s *Store) FacetName() string { return s.facet }

// Close closes the file, or the connection to the cluster. On a facet it
// does nothing.
func (s *Store) Close() error {
	if s.facet != "" {
		return nil
	}
	return s.kv.close()
}

// Path names where the state is kept: the file's path, or the etcd
// endpoints and key prefix.
func (s *Store) Path() string { return s.kv.describe() }

// View runs fn in a read-only transaction.
func (s *Store) View(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.kv.view(ctx, func(t kvTx) error {
		return fn(&Tx{kv: t, s: s})
	})
}

// Update runs fn in one read-write transaction: everything fn does is
// committed (and fsynced) together, or nothing is when fn returns an error.
// Writers are serialized, so a read-modify-write inside fn never loses a
// concurrent update. Watchers of changed operations are woken after commit.
// On a store shared by several hosts (etcd) fn runs again when another
// host committed first: it must keep its effects to tx and to variables
// it sets anew on every run.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var fx *txEffects
	// The stamp is cleared only after the commit (and its fsync) or
	// rollback returned, also when fn panics, and only if it is still
	// this transaction's: the next writer may already have set its own.
	var began int64
	defer func() {
		if began != 0 {
			s.writeBegan.CompareAndSwap(began, 0)
		}
	}()
	err := s.kv.update(ctx, func() {
		// Set once the writer lock is held: writers queued behind this one
		// are not themselves stalled.
		began = max(int64(time.Since(s.epoch)), 1)
		s.writeBegan.Store(began)
	}, func(t kvTx) error {
		tx := &Tx{kv: t, s: s, writable: true, fx: &txEffects{}}
		if err := fn(tx); err != nil {
			return err
		}
		fx = tx.fx
		return nil
	})
	if err != nil {
		return err
	}
	for st, names := range fx.written {
		st.cache.forget(names)
	}
	for _, id := range fx.touched {
		s.watch.Publish(id)
	}
	return nil
}

// WriteStalled reports how long, as of now, the write transaction in
// progress has been running (from taking the writer lock through commit
// and fsync, or rollback), and whether that is longer than limit. With no
// write in progress it returns 0, false.
//
// It is for liveness checks: read transactions never wait for the writer,
// so a writer stuck in fsync on a dead disk, or an Update whose function
// blocks, leaves View working while every write queues behind it. now
// should come from time.Now (its monotonic reading is what is compared);
// tests pass a later time instead of sleeping.
func (s *Store) WriteStalled(now time.Time, limit time.Duration) (time.Duration, bool) {
	began := s.writeBegan.Load()
	if began == 0 {
		return 0, false
	}
	d := now.Sub(s.epoch) - time.Duration(began)
	return d, d > limit
}

// Changed returns a channel closed at the next commit that changes
// operation id, and a release function to call when no longer waiting.
// Take the channel before reading the operation, so no change is missed.
func (s *Store) Changed(id string) (<-chan struct{}, func()) { return s.watch.Subscribe(id) }

// GetProject returns one project.
func (s *Store) GetProject(ctx context.Context, name string) (*Project, error) {
	var p *Project
	err := s.View(ctx, func(tx *Tx) (err error) { p, err = tx.Project(name); return err })
	return p, err
}

// ListProjects returns every project, by name.
func (s *Store) ListProjects(ctx context.Context) ([]*Project, error) {
	var ps []*Project
	err := s.View(ctx, func(tx *Tx) (err error) { ps, err = tx.Projects(); return err })
	return ps, err
}

// UpdateProject applies fn to project name and stores the result, in one
// transaction. It returns the stored project.
func (s *Store) UpdateProject(ctx context.Context, name string, fn func(*Project) error) (*Project, error) {
	return update(ctx, s, func(tx *Tx) (*Project, error) { return tx.Project(name) }, fn, (*Tx).PutProject)
}

// GetOperation returns one operation.
func (s *Store) GetOperation(ctx context.Context, id string) (*Operation, error) {
	var op *Operation
	err := s.View(ctx, func(tx *Tx) (err error) { op, err = tx.Operation(id); return err })
	return op, err
}

// UpdateOperation applies fn to operation id and stores the result in one
// transaction.
func (s *Store) UpdateOperation(ctx context.Context, id string, fn func(*Operation) error) (*Operation, error) {
	return update(ctx, s, func(tx *Tx) (*Operation, error) { return tx.Operation(id) }, fn, (*Tx).PutOperation)
}

// update reads a record with get, applies fn and stores it with put, in
// one transaction, and returns what it stored.
func update[R any](ctx context.Context, s *Store, get func(*Tx) (*R, error), fn func(*R) error, put func(*Tx, *R) error) (*R, error) {
	var r *R
	err := s.Update(ctx, func(tx *Tx) error {
		var err error
		if r, err = get(tx); err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
		return put(tx, r)
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// ListOperations returns up to limit operations of project, newest first.
func (s *Store) ListOperations(ctx context.Context, project string, limit int) ([]*Operation, error) {
	var ops []*Operation
	err := s.View(ctx, func(tx *Tx) (err error) { ops, err = tx.Operations(project, limit); return err })
	return ops, err
}

// Tx is one transaction. It must not be used after the function it was
// passed to returns.
type Tx struct {
	kv       kvTx
	s        *Store
	writable bool
	// fx collects a writable transaction's effects (nil when read-only).
	fx *txEffects
}

// txEffects are what a commit is followed by, collected from a
// transaction and the facet views of it (Tx.Facet).
type txEffects struct {
	// touched are the operations changed, whose watchers wake.
	touched []string
	// written are the projects written or deleted, by the store whose
	// bucket they are in: their decode cache entries are dropped.
	written map[*Store][]string
}

// wrote records that project name of tx's store was written or deleted.
func (tx *Tx) wrote(name string) {
	if tx.fx == nil {
		return
	}
	if tx.fx.written == nil {
		tx.fx.written = map[*Store][]string{}
	}
	tx.fx.written[tx.s] = append(tx.fx.written[tx.s], name)
}

// Facet returns tx as seen by facet name of its store (Store.Facet): the
// same transaction, reading and writing that facet's project records, so
// that records go from one facet to another in one commit.
func (tx *Tx) Facet(name string) *Tx {
	return &Tx{kv: tx.kv, s: tx.s.Facet(name), writable: tx.writable, fx: tx.fx}
}

// Main returns tx as seen by the main store (the reverse of Facet).
func (tx *Tx) Main() *Tx {
	tx.s.mu.Lock()
	m := tx.s.stores[string(bucketProjects)]
	tx.s.mu.Unlock()
	return &Tx{kv: tx.kv, s: m, writable: tx.writable, fx: tx.fx}
}

// Now is the store's clock, for stamping records inside a transaction.
func (tx *Tx) Now() time.Time { return tx.s.now() }

// Project returns project name, or an error wrapping ErrNotFound. The
// record is the caller's own to change (and PutProject), a deep copy
// when the decode cache has it (see record).
func (tx *Tx) Project(name string) (*Project, error) {
	k := []byte(name)
	v := tx.kv.get(tx.s.bucket, k)
	if v == nil {
		return nil, fmt.Errorf("project %q: %w", name, ErrNotFound)
	}
	p, shared, err := tx.record(k, v)
	if shared {
		p = p.Clone()
	}
	return p, err
}

// Projects returns every project, ordered by name. The records are the
// caller's own to change, as with Project.
func (tx *Tx) Projects() ([]*Project, error) {
	ps := make([]*Project, 0, tx.ProjectsHint())
	err := tx.EachProject(func(p Project) error {
		ps = append(ps, &p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ps, nil
}

// ProjectsHint is how many projects the last read of all of them found:
// a capacity for what a caller collects from EachProject, not a count.
func (tx *Tx) ProjectsHint() int { return int(tx.s.projects.Load()) }

// EachProject calls fn with every project, ordered by name, until fn
// returns an error, which it returns. Each record is fn's own, as with
// Projects, passed by value: one fn does not keep costs no allocation
// beyond its slices, maps and pointers, so reading every project (the
// API's ListProjects) costs little more than with records shared by all
// readers.
func (tx *Tx) EachProject(fn func(Project) error) error { return tx.each(nil, fn) }

// EachProjectOwnedBy is EachProject for the projects owned by uid; the
// others are not copied at all.
func (tx *Tx) EachProjectOwnedBy(uid uint32, fn func(Project) error) error {
	return tx.each(func(p *Project) bool { return p.OwnerUID == uid }, fn)
}

// EachProjectWhere is EachProject for the projects keep accepts; the
// others are not copied at all. keep sees the stored record itself,
// maybe one shared by all readers: it must only look.
func (tx *Tx) EachProjectWhere(keep func(*Project) bool, fn func(Project) error) error {
	return tx.each(keep, fn)
}

// each calls fn with a deep copy of every record keep accepts (all when
// keep is nil). keep sees the record itself, maybe the cache's: it must
// only look.
func (tx *Tx) each(keep func(*Project) bool, fn func(Project) error) error {
	n := 0
	err := tx.kv.ascend(tx.s.bucket, nil, func(k, v []byte) error {
		p, shared, err := tx.record(k, v)
		if err != nil {
			return err
		}
		n++
		if keep != nil && !keep(p) {
			return nil
		}
		c := *p
		if shared {
			c.own()
		}
		return fn(c)
	})
	if err == nil && keep == nil && !tx.writable {
		tx.s.projects.Store(int64(n))
	}
	return err
}

// record returns record v of project k, decoded, and whether it is the
// decode cache's. The cache's records are shared by every reader and
// never leave this package: callers hand out a deep copy (Project.Clone),
// which costs a fraction of decoding the JSON again. Only read-only
// transactions fill the cache: a writable one may still roll back
// (harmless, as entries are matched by their bytes, but a waste of room).
func (tx *Tx) record(k, v []byte) (p *Project, shared bool, err error) {
	if p := tx.s.cache.get(k, v); p != nil {
		return p, true, nil
	}
	if p, err = decodeProject(k, v); err != nil {
		return nil, false, err
	}
	return p, !tx.writable && tx.s.cache.put(string(k), v, p), nil
}

// decodeProject decodes the stored record v of project k.
func decodeProject(k, v []byte) (*Project, error) {
	p := new(Project)
	if err := json.Unmarshal(v, p); err != nil {
		return nil, fmt.Errorf("project %q: corrupt record: %w", k, err)
	}
	return p, nil
}

// CreateProject stores a new project; it fails with ErrExists when the name
// is taken. CreateTime and UpdateTime are stamped.
func (tx *Tx) CreateProject(p *Project) error {
	if tx.kv.get(tx.s.bucket, []byte(p.Name)) != nil {
		return fmt.Errorf("project %q: %w", p.Name, ErrExists)
	}
	now := tx.Now()
	p.CreateTime, p.UpdateTime = now, now
	tx.wrote(p.Name)
	return tx.put(tx.s.bucket, p.Name, p)
}

// PutProject stores p over its previous record, stamping UpdateTime.
func (tx *Tx) PutProject(p *Project) error {
	if p.Name == "" {
		return errors.New("store: project without a name")
	}
	p.UpdateTime = tx.Now()
	tx.wrote(p.Name)
	return tx.put(tx.s.bucket, p.Name, p)
}

// DeleteProject removes project name and its operation history, except the
// operations listed in keep (the teardown's own, so their watchers still
// see them finish). A name reused later starts with an empty history.
//
// On a facet it removes the record alone: the history is the project's,
// whose real record is the main store's (keep is not needed there).
func (tx *Tx) DeleteProject(name string, keep ...string) error {
	if tx.kv.get(tx.s.bucket, []byte(name)) == nil {
		return fmt.Errorf("project %q: %w", name, ErrNotFound)
	}
	if err := tx.kv.del(tx.s.bucket, []byte(name)); err != nil {
		return err
	}
	tx.wrote(name)
	if tx.s.facet != "" {
		return nil
	}
	kept := map[string]bool{}
	for _, id := range keep {
		kept[id] = true
	}
	// Collected first: a bbolt cursor must not see its bucket change.
	var keys, ops [][]byte
	err := ascendPrefix(tx.kv, bucketProjectOps, []byte(name+"/"), func(k, v []byte) error {
		keys = append(keys, bytes.Clone(k))
		if !kept[string(v)] {
			ops = append(ops, bytes.Clone(v))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range ops {
		if err := tx.kv.del(bucketOperations, id); err != nil {
			return err
		}
	}
	for _, k := range keys {
		if err := tx.kv.del(bucketProjectOps, k); err != nil {
			return err
		}
	}
	return nil
}

// Operation returns operation id, or an error wrapping ErrNotFound.
func (tx *Tx) Operation(id string) (*Operation, error) {
	v := tx.kv.get(bucketOperations, []byte(id))
	if v == nil {
		return nil, fmt.Errorf("operation %q: %w", id, ErrNotFound)
	}
	op := new(Operation)
	if err := json.Unmarshal(v, op); err != nil {
		return nil, fmt.Errorf("operation %q: corrupt record: %w", id, err)
	}
	return op, nil
}

// NewOperation records a new PENDING operation on project (which must
// exist) owned by the project's owner, driving to the project's current
// generation. requestedBy is the uid of the caller who asked.
func (tx *Tx) NewOperation(p *Project, kind OpKind, requestedBy uint32) (*Operation, error) {
	id, err := newOpID()
	if err != nil {
		return nil, err
	}
	seq, err := tx.kv.nextSequence(bucketOperations)
	if err != nil {
		return nil, err
	}
	op := &Operation{
		ID: id, Project: p.Name, Kind: kind, State: OpPending,
		CreateTime: tx.Now(), OwnerUID: p.OwnerUID, OwnerName: p.OwnerName, RequestedBy: requestedBy,
		Generation: p.Generation, Seq: seq,
	}
	if err := tx.kv.put(bucketProjectOps, indexKey(p.Name, seq), []byte(id)); err != nil {
		return nil, err
	}
	if err := tx.PutOperation(op); err != nil {
		return nil, err
	}
	return op, tx.prune(p.Name)
}

// PutOperation stores op over its previous record.
func (tx *Tx) PutOperation(op *Operation) error {
	if err := tx.put(bucketOperations, op.ID, op); err != nil {
		return err
	}
	tx.fx.touched = append(tx.fx.touched, op.ID)
	return nil
}

// Operations returns up to limit operations of project, newest first;
// limit <= 0 means all.
func (tx *Tx) Operations(project string, limit int) ([]*Operation, error) {
	prefix := []byte(project + "/")
	var ops []*Operation
	// From just past the prefix's range, walking back.
	end := append(append([]byte(nil), prefix[:len(prefix)-1]...), '/'+1)
	err := tx.kv.descend(bucketProjectOps, end, func(k, v []byte) error {
		if !hasPrefix(k, prefix) {
			return errStop
		}
		op, err := tx.Operation(string(v))
		if err != nil {
			return err
		}
		ops = append(ops, op)
		if limit > 0 && len(ops) >= limit {
			return errStop
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ops, nil
}

// prune drops the oldest finished operations of project beyond
// MaxOperationsPerProject.
func (tx *Tx) prune(project string) error {
	prefix := []byte(project + "/")
	var n int
	if err := ascendPrefix(tx.kv, bucketProjectOps, prefix, func(_, _ []byte) error { n++; return nil }); err != nil {
		return err
	}
	var drop [][2][]byte
	err := ascendPrefix(tx.kv, bucketProjectOps, prefix, func(k, v []byte) error {
		if n-len(drop) <= MaxOperationsPerProject {
			return errStop
		}
		op, err := tx.Operation(string(v))
		if err != nil {
			return err
		}
		if op.State.Final() {
			drop = append(drop, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, d := range drop {
		if err := tx.kv.del(bucketProjectOps, d[0]); err != nil {
			return err
		}
		if err := tx.kv.del(bucketOperations, d[1]); err != nil {
			return err
		}
	}
	return nil
}

func (tx *Tx) put(bucket []byte, key string, v any) error {
	if !tx.writable {
		return errors.New("store: write in a read-only transaction")
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: encode %s %q: %w", bucket, key, err)
	}
	return tx.kv.put(bucket, []byte(key), data)
}

func indexKey(project string, seq uint64) []byte {
	return fmt.Appendf(nil, "%s/%020d", project, seq)
}

func hasPrefix(k, prefix []byte) bool {
	return len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix)
}

// newOpID returns "op-" and 16 random bytes in hex: unguessable, so knowing
// an id grants nothing (access is still checked by owner).
func newOpID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("operation id: %w", err)
	}
	return "op-" + hex.EncodeToString(b[:]), nil
}
