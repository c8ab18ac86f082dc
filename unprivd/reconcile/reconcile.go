// Package reconcile drives the host toward each project's committed spec.
//
// API calls only commit a new spec (and a PENDING operation) in the store and
// Kick the reconciler. The reconciler runs an ordered list of idempotent steps
// per project, recording each step's start, end, state and message in the
// project's open operations as it goes, so WatchOperation shows progress.
// Projects are worked on one run at a time each (a Kick during a run queues
// exactly one more run), different projects in parallel up to a bound.
//
// Because the spec is committed before any work and every step is
// idempotent, a crash at any point is repaired by running the steps again:
// Start enqueues every project that is behind its spec, being deleted, or has
// an unfinished operation (one left RUNNING by a killed opusd is resumed).
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/layout"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/acme"
	"github.com/opus-hosting/opus/unprivd/postgres"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Clock tells the time of steps and operations; tests use a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Uploads unpacks stored app archives (implemented by source.Store).
type Uploads interface {
	// Extract unpacks uid's uploaded archive digest into dest, which must
	// not exist.
	Extract(ctx context.Context, uid uint32, digest, dest string) error
}

// Fetcher fetches git sources (implemented by *source.Git).
type Fetcher interface {
	// Fetch writes the tree of ref in the repository at url into dest,
	// which must not exist, and returns the commit: its full hash and its
	// subject.
	Fetch(ctx context.Context, url, ref string, allowLocal bool, dest string) (source.Commit, error)
}

// afterStep runs after each step is done and recorded. It does nothing:
// only a test build (tag faultinject, fault_inject.go) sets it, to kill
// opusd right there and prove that a restart repairs the crash.
var afterStep = func(deleting bool, step string) {}

// Defaults of Options.
const (
	// DefaultHealthTimeout bounds the health check: a fresh mod_wsgi
	// daemon imports Django and the apps before it answers, and on a busy
	// host other projects' graceful restarts may restart it while it does
	// (each one kills the daemon mid-start), so allow for several tries.
	DefaultHealthTimeout = 90 * time.Second
	// selfSignedValidity is how long a self-signed certificate is made for.
	selfSignedValidity = 365 * 24 * time.Hour
	// renewBefore is how long before expiry a self-signed certificate is
	// replaced.
	renewBefore = 30 * 24 * time.Hour
)

// Options configures a Reconciler.
type Options struct {
	// BaseDir holds the project trees (see package layout), and opusd's
	// copies of self-signed certificates in BaseDir/tls.
	BaseDir string
	// ServerSuffix makes a project's host name (NAME + suffix).
	ServerSuffix string
	// HTTPPort and HTTPSPort are Apache's ports for project vhosts.
	HTTPPort, HTTPSPort int
	// ProjectUIDs is the range project users' ids are allocated from
	// (config.Default's when zero); see user.go.
	ProjectUIDs config.UIDRange
	// WSGIProcesses and WSGIThreads size each project's mod_wsgi daemon
	// group; 0 lets privd use its configured default.
	WSGIProcesses, WSGIThreads int
	// TLSSecurityLevel is the OpenSSL security level Apache serves
	// certificates at: self-signed ones are made to pass it, and an
	// owner's certificate below it is never sent to privd.
	TLSSecurityLevel int
	// Uploads unpacks uploaded app archives; nil refuses upload apps.
	Uploads Uploads
	// Git fetches git apps; nil refuses git apps.
	Git Fetcher
	// Postgres provisions PostgreSQL for projects that ask Opus to; nil
	// fails such projects' runs (see database.go).
	Postgres Provisioner
	// HealthAddr is where the health check connects (host:port); empty
	// means 127.0.0.1:HTTPPort.
	HealthAddr string
	// HealthTimeout bounds the health check; 0 means DefaultHealthTimeout.
	HealthTimeout time.Duration
	// Concurrency bounds how many projects are worked on at once; 0 means
	// 16. Most of a run is waiting (for privd, which bounds the Python
	// processes it runs at once itself, and for Apache); the deploys of a
	// burst that run together share a graceful restart (reloadgate.go).
	Concurrency int
	// Clock defaults to the system clock.
	Clock Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// SnapshotMaxBytes and SnapshotKeep bound each project's data
	// snapshots (config.Config's); a zero SnapshotMaxBytes takes none.
	SnapshotMaxBytes int64
	SnapshotKeep     int
	// SnapshotQuota bounds the bytes of the data snapshots of all the
	// projects of one owner (config.Config's); 0 is no bound.
	SnapshotQuota int64
	// RevisionsKeep is how many revisions of each app a successful run
	// keeps (store.Project.TrimRevisions); 0 means
	// store.DefaultRevisionsKeep.
	RevisionsKeep int
	// Succeeded is told of each run that succeeded, after it is
	// committed (opusd's disk pruner starts a pass); it must return at
	// once. Nil: nobody.
	Succeeded func(project string)
	// PGDump and PGRestore copy a project's PostgreSQL database out and
	// back in for data snapshots (postgres.Dump and postgres.Restore when
	// nil; tests replace them).
	PGDump    func(ctx context.Context, c postgres.Conn, w io.Writer) error
	PGRestore func(ctx context.Context, c postgres.Conn, r io.Reader) error
	// Deploy and Teardown replace the step lists (tests); nil means
	// DeploySteps() and TeardownSteps().
	Deploy, Teardown []Step
	// ACME, when set, obtains every project's certificate (but an
	// owner's) from the host's ACME CA and renews it (acme.go); nil keeps
	// self-signed certificates. ACMECheckInterval bounds the time between
	// two looks for certificates due (config's, an hour when 0);
	// ACMEBackoff spaces tries after failures.
	ACME              Issuer
	ACMECheckInterval time.Duration
	ACMEBackoff       acme.Backoff
	// Observer learns of each step and operation that ends (opusd's
	// metrics); nil: nobody.
	Observer Observer
	// Kinds, when set, are the only kinds of operations this reconciler
	// claims (marks RUNNING, records its steps in, ends); it leaves the
	// others alone, and never opens a RECONCILE or DELETE operation of its
	// own unless Kinds has that kind, so a project with no open operation
	// of these kinds is not its to work on. Empty: every kind but the
	// exclusive ones (exclusiveKinds), which only a reconciler that names
	// them claims. Several reconcilers (one per store facet) share the
	// operations of a project name; Kinds keeps them off each other's.
	Kinds []store.OpKind
	// Claim, when set, further decides which open operations of its kinds
	// this reconciler works on (the incoming facet's: a move's operation
	// only until its copy is deployed; the mover ends it).
	Claim func(op *store.Operation) bool
	// DeleteKind is the kind of the operation a teardown opens when no
	// claimed one is open (a record marked Deleting without one); empty
	// means DELETE. The departing facet's reconciler tears down a moved
	// project's old copy as DEPART.
	DeleteKind store.OpKind
	// Finish, when set, stores the project at the end of a successful
	// run instead of putting it back (or, after a teardown, instead of
	// deleting it; p.Deleting says which), in the commit that ends the
	// run's operations (the incoming facet's: the move's switch, or its
	// end when the copy failed and was torn down; see unprivd/mover).
	Finish func(tx *store.Tx, p *store.Project) error
}

// exclusiveKinds are the operation kinds only a reconciler whose
// Options.Kinds names them claims: a reconciler with no Kinds leaves them
// to it.
var exclusiveKinds = map[store.OpKind]bool{store.OpMove: true, store.OpDepart: true}

// deleteKind is Options.DeleteKind, DELETE by default.
func (r *Reconciler) deleteKind() store.OpKind {
	if r.opt.DeleteKind != "" {
		return r.opt.DeleteKind
	}
	return store.OpDelete
}

// claimsOp reports whether op is this reconciler's to work on: of a kind
// it claims (Options.Kinds), and one Options.Claim takes.
func (r *Reconciler) claimsOp(op *store.Operation) bool {
	return r.claims(op.Kind) && (r.opt.Claim == nil || r.opt.Claim(op))
}

// claims reports whether operations of kind are this reconciler's to
// work on (Options.Kinds).
func (r *Reconciler) claims(kind store.OpKind) bool {
	if len(r.opt.Kinds) > 0 {
		return slices.Contains(r.opt.Kinds, kind)
	}
	return !exclusiveKinds[kind]
}

// Observer learns what the reconciler did. Its methods are called after
// what they report is committed to the store, from the reconciler's
// workers: they must return at once.
type Observer interface {
	// StepEnded: step ran to its end, done or failed (not cut short by
	// a shutdown: it runs again), in d.
	StepEnded(step string, d time.Duration)
	// OperationEnded: an operation of kind reached state, a final one.
	OperationEnded(kind store.OpKind, state store.OpState)
}

type noObserver struct{}

func (noObserver) StepEnded(string, time.Duration)            {}
func (noObserver) OperationEnded(store.OpKind, store.OpState) {}

// endedOps are the operations a transaction ends, told to the Observer
// once it has committed.
type endedOps []*store.Operation

// end sets op's final state and end time, and remembers it.
func (e *endedOps) end(op *store.Operation, state store.OpState, at time.Time) {
	op.State, op.EndTime = state, at
	*e = append(*e, op)
}

// tell reports the ended operations to o.
func (e endedOps) tell(o Observer) {
	for _, op := range e {
		o.OperationEnded(op.Kind, op.State)
	}
}

// Reconciler drives projects toward their spec. Make one with New.
type Reconciler struct {
	st       *store.Store
	privd    privdv1.PrivdClient
	opt      Options
	log      *slog.Logger
	deploy   []Step
	teardown []Step
	gate     *reloadGate

	// acmeNudge wakes the renewal loop (nil without ACME).
	acmeNudge chan struct{}

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []string
	queued   map[string]bool
	running  map[string]bool
	dirty    map[string]bool
	started  bool
	stopping bool

	// hard is the context of privd calls and file work; Stop cancels it
	// when its grace period runs out.
	hard       context.Context
	cancelHard context.CancelFunc
	workers    sync.WaitGroup
}

// New returns a Reconciler over st that asks privd for privileged work. It
// does nothing until Start.
func New(st *store.Store, privd privdv1.PrivdClient, opt Options) *Reconciler {
	if opt.Concurrency <= 0 {
		opt.Concurrency = 16
	}
	if opt.Clock == nil {
		opt.Clock = systemClock{}
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Observer == nil {
		opt.Observer = noObserver{}
	}
	if opt.HealthAddr == "" {
		opt.HealthAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(opt.HTTPPort))
	}
	if opt.HealthTimeout <= 0 {
		opt.HealthTimeout = DefaultHealthTimeout
	}
	if opt.PGDump == nil {
		opt.PGDump = postgres.Dump
	}
	if opt.PGRestore == nil {
		opt.PGRestore = postgres.Restore
	}
	r := &Reconciler{
		st: st, privd: privd, opt: opt, log: opt.Logger,
		deploy: opt.Deploy, teardown: opt.Teardown, gate: newReloadGate(maxReloadHold),
		queued: map[string]bool{}, running: map[string]bool{}, dirty: map[string]bool{},
	}
	if r.deploy == nil {
		r.deploy = DeploySteps()
	}
	if r.teardown == nil {
		r.teardown = TeardownSteps()
	}
	if opt.ACME != nil {
		if r.opt.ACMECheckInterval <= 0 {
			r.opt.ACMECheckInterval = time.Hour
		}
		r.acmeNudge = make(chan struct{}, 1)
	}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// Start starts the workers and enqueues every project that needs work:
// behind its spec, being deleted, or with an unfinished operation. Step
// work runs under ctx; cancelling it aborts steps at once (prefer Stop).
func (r *Reconciler) Start(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return errors.New("reconciler already started")
	}
	r.started = true
	r.hard, r.cancelHard = context.WithCancel(ctx)
	r.mu.Unlock()

	var todo []string
	err := r.st.Update(ctx, func(tx *store.Tx) error {
		ps, err := tx.Projects()
		if err != nil {
			return err
		}
		for _, p := range ps {
			if !r.st.ServedHere(p) {
				continue
			}
			if adoptApplied(p) {
				if err := tx.PutProject(p); err != nil {
					return err
				}
			}
			need := p.Deleting || p.Status.ObservedGeneration < p.Generation
			if !need {
				ops, err := tx.Operations(p.Name, 0)
				if err != nil {
					return err
				}
				for _, op := range ops {
					if !op.State.Final() && r.claimsOp(op) {
						need = true
						break
					}
				}
			}
			if need {
				todo = append(todo, p.Name)
			}
		}
		return nil
	})
	if err != nil {
		r.cancelHard()
		return fmt.Errorf("reconciler start: %w", err)
	}
	// Changes committed through other hosts' opusds (a project placed
	// here, a change asked of it there) reach this one by the store's
	// watch; its own calls Kick.
	r.st.OnChangedElsewhere(func(name string) {
		p, err := r.st.GetProject(context.Background(), name)
		if err == nil && r.st.ServedHere(p) {
			r.Kick(name)
		}
	})
	for i := 0; i < r.opt.Concurrency; i++ {
		r.workers.Add(1)
		go r.worker()
	}
	go func() {
		<-r.hard.Done()
		r.mu.Lock()
		r.stopping = true
		r.cond.Broadcast()
		r.mu.Unlock()
	}()
	for _, name := range todo {
		r.log.Info("reconcile on start", "project", name)
		r.Kick(name)
	}
	if r.acmeNudge != nil {
		go r.renewLoop(r.hard)
	}
	return nil
}

// adoptApplied gives a project recorded before opusd kept the applied spec
// one, when its host is known to match its spec (READY at its
// generation), so that its next failed change is undone too. It reports
// whether p changed.
func adoptApplied(p *store.Project) bool {
	if p.Applied != nil || p.Deleting || p.Status.Phase != store.PhaseReady || p.Status.ObservedGeneration != p.Generation {
		return false
	}
	p.Applied = appliedSpec(p.Spec)
	return true
}

// appliedSpec is spec as kept for undo: without the superuser's password
// (used once, at the first deploy) and without pending drops of app data.
func appliedSpec(spec store.Spec) *store.Spec {
	a := spec.Clone()
	if a.Superuser != nil {
		a.Superuser.Password = ""
	}
	a.DropAppData = nil
	a.RestoreSnapshot = ""
	return &a
}

// Kick asks for a run of project name. A run already going on for it is
// followed by one more; Kicks while queued coalesce.
func (r *Reconciler) Kick(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		return
	}
	if r.running[name] {
		r.dirty[name] = true
		return
	}
	if r.queued[name] {
		return
	}
	r.queued[name] = true
	r.queue = append(r.queue, name)
	r.cond.Signal()
}

// Queue reports how many projects wait for a worker and how many are
// being worked on.
func (r *Reconciler) Queue() (waiting, running int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue), len(r.running)
}

// Stop stops taking work, lets the steps in flight finish, and returns
// when every worker is done. If ctx ends first, the steps in flight are
// cancelled; their operations stay RUNNING and are resumed by the next
// Start.
func (r *Reconciler) Stop(ctx context.Context) error {
	r.mu.Lock()
	if !r.started {
		r.mu.Unlock()
		return nil
	}
	r.stopping = true
	r.cond.Broadcast()
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.workers.Wait(); close(done) }()
	select {
	case <-done:
		r.cancelHard()
		return nil
	case <-ctx.Done():
		r.cancelHard()
		<-done
		return fmt.Errorf("reconciler stop: steps cancelled: %w", ctx.Err())
	}
}

func (r *Reconciler) isStopping() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopping
}

func (r *Reconciler) worker() {
	defer r.workers.Done()
	for {
		r.mu.Lock()
		for len(r.queue) == 0 && !r.stopping {
			r.cond.Wait()
		}
		if r.stopping {
			r.mu.Unlock()
			return
		}
		name := r.queue[0]
		r.queue = r.queue[1:]
		delete(r.queued, name)
		r.running[name] = true
		r.mu.Unlock()

		r.run(name)
		r.done(name)
	}
}

// done ends the work on project name that marked it running (a run, or
// exclusive): a Kick meanwhile queues one more run.
func (r *Reconciler) done(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, name)
	if r.dirty[name] {
		delete(r.dirty, name)
		if !r.queued[name] && !r.stopping {
			r.queued[name] = true
			r.queue = append(r.queue, name)
			r.cond.Signal()
		}
	}
}

// Task is one run over one project, handed to every step.
type Task struct {
	// Project is the record as it was when the run began; steps that change
	// the status use Update, which also refreshes this copy.
	Project *store.Project
	// Layout is the project's tree under the base directory.
	Layout layout.Project
	// Privd is the root daemon.
	Privd privdv1.PrivdClient
	// Clock is the reconciler's clock.
	Clock Clock
	// Log carries the project and operation.
	Log *slog.Logger
	st  *store.Store
	opt *Options

	// What earlier steps of this run found, for later ones.
	codeChanged  bool   // sources or render wrote something
	appsChanged  bool   // sources put an app's new code in place
	undoing      bool   // the run undoes a failed change
	certPEM      []byte // certificate step → vhost step
	keyPEM       []byte
	vhostChanged bool // vhost step → reload step
	reloaded     bool // reload step ran a graceful restart
	backendFresh bool // backend step started or restarted the backend
	siteRemoved  bool // teardown: the vhost was removed
	// live is what the run changed in the code directory: put back when
	// it fails, committed to the status when it succeeds (restore.go).
	live liveChange

	// The migrate step runs createsuperuser in its Python process; the
	// superuser step reports what came of it.
	superuserMade bool  // it created the superuser
	superuserErr  error // its createsuperuser failed

	gate *reloadGate // the reload step's way to Apache (nil: straight to privd)

	// spec and gen are the spec the run deploys and its generation, as
	// claimed: what becomes the project's applied spec if the run
	// succeeds (Project may be refreshed with a newer spec meanwhile).
	spec store.Spec
	gen  int64
	// deleting says the run is a teardown, as claimed. Not
	// Project.Deleting: Update refreshes Project, and a destroy asked for
	// while a deploy runs must not turn that deploy's end into forgetting
	// the project (its own run tears it down next).
	deleting bool
}

// ServerName is the project's virtual host name.
func (t *Task) ServerName() string { return t.Project.Name + t.opt.ServerSuffix }

// Update applies fn to the stored project in one transaction and refreshes
// t.Project. Steps use it to record status (resolved commits, the system
// user) and to clear secrets once used (the superuser's password).
func (t *Task) Update(ctx context.Context, fn func(*store.Project)) error {
	p, err := t.st.UpdateProject(context.WithoutCancel(ctx), t.Project.Name, func(p *store.Project) error {
		if !t.st.ServedHere(p) {
			return errServedElsewhere
		}
		fn(p)
		return nil
	})
	if err != nil {
		return fmt.Errorf("record status: %w", err)
	}
	t.Project = p
	return nil
}

// claim prepares a run: it decides whether project name needs one, and
// marks its open operations RUNNING (creating a RECONCILE or DELETE
// operation when none is open). It returns nil when there is nothing to do.
//
// undoing reports that the run resumes the undo of a failed change: an
// open operation already carries its error (see undoFailed).
func (r *Reconciler) claim(ctx context.Context, name string) (p *store.Project, ids []string, undoing bool, err error) {
	var ended endedOps
	defer func() {
		if err == nil {
			ended.tell(r.opt.Observer)
		}
	}()
	err = r.st.Update(ctx, func(tx *store.Tx) error {
		ended, ids, undoing = nil, nil, false
		p, err = tx.Project(name)
		if errors.Is(err, store.ErrNotFound) {
			p = nil
			return nil
		}
		if err != nil {
			return err
		}
		if !r.st.ServedHere(p) {
			// Another host's: its opusd works on it.
			p = nil
			return nil
		}
		ops, err := tx.Operations(name, 0)
		if err != nil {
			return err
		}
		var open []*store.Operation
		for _, op := range ops {
			if op.State.Final() || !r.claimsOp(op) {
				// Another reconciler's (Options.Kinds) are not even
				// cancelled: it ends them.
				continue
			}
			if op.Error != "" {
				undoing = true
			} else if p.Deleting && op.Kind != r.deleteKind() {
				// Work toward a spec that is going away is moot.
				op.Error = fmt.Sprintf("cancelled: project %s is being deleted", name)
				ended.end(op, store.OpFailed, r.opt.Clock.Now())
				if err := tx.PutOperation(op); err != nil {
					return err
				}
				continue
			}
			open = append(open, op)
		}
		if len(open) == 0 && !p.Deleting && p.Status.ObservedGeneration >= p.Generation {
			p = nil
			return nil
		}
		if len(open) == 0 {
			kind := store.OpReconcile
			if p.Deleting {
				kind = r.deleteKind()
			}
			if !r.claims(kind) {
				// The spec's change (or the delete) is for a reconciler
				// of that kind, with its own operation.
				p = nil
				return nil
			}
			op, err := tx.NewOperation(p, kind, p.OwnerUID)
			if err != nil {
				return err
			}
			open = append(open, op)
		}
		now := r.opt.Clock.Now()
		for _, op := range open {
			if op.State == store.OpRunning {
				// Left RUNNING by an opusd that stopped mid-run: every step
				// runs again, which is safe because each is idempotent.
				op.Steps = []store.Step{{Name: "resume", State: store.StepDone, StartTime: now, EndTime: now,
					Message: "opusd stopped during this operation; running every step again"}}
			}
			op.State = store.OpRunning
			if err := tx.PutOperation(op); err != nil {
				return err
			}
			ids = append(ids, op.ID)
		}
		if p.Deleting {
			p.Status.Phase = store.PhaseDeleting
		} else {
			p.Status.Phase = store.PhaseDeploying
		}
		return tx.PutProject(p)
	})
	return p, ids, undoing, err
}

// record applies fn to every operation of the run in one transaction.
func (r *Reconciler) record(ctx context.Context, ids []string, fn func(*store.Operation)) error {
	return r.st.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		for _, id := range ids {
			op, err := tx.Operation(id)
			if err != nil {
				return err
			}
			fn(op)
			if err := tx.PutOperation(op); err != nil {
				return err
			}
		}
		return nil
	})
}

// run does one reconcile of project name. When a step fails, what the run
// changed is undone (see undoFailed): the project goes back to the last
// spec a run deployed, or, if it never deployed, away.
func (r *Reconciler) run(name string) {
	ctx := r.hard
	log := r.log.With("project", name)
	p, ids, undoing, err := r.claim(ctx, name)
	if err != nil {
		log.Error("reconcile: claim", "err", err)
		return
	}
	if p == nil {
		return
	}
	log = log.With("operations", ids, "generation", p.Generation, "deleting", p.Deleting)
	log.Info("reconcile begins")
	// Only a project's first deploy counts as approaching the gate: it
	// is sure to install a vhost, and it is what arrives in bursts. An
	// update, a settings change or opusd's start-up pass over every
	// project rarely needs a graceful restart, and counting them would
	// hold other deploys' reloads for nothing. (They still pass the gate
	// and share a batch when they do need one.)
	if !p.Deleting && p.Status.ObservedGeneration == 0 {
		r.gate.approach(name)
		defer r.gate.leave(name)
	}
	for {
		t := r.task(p, log)
		t.undoing = undoing
		step, err := r.steps(ctx, t, ids)
		switch {
		case errors.Is(err, errInterrupted):
			return
		case err == nil:
			t.finish()
			r.succeed(ctx, log, t, ids)
			return
		}
		err = t.restore(ctx, err)
		if undoing || p.Deleting {
			// Undoing a failed change failed too, or a teardown failed:
			// nothing is left to go back to.
			r.fail(ctx, log, t, ids, step, err)
			return
		}
		if p = r.undoFailed(ctx, log, t, ids, step, err); p == nil {
			return
		}
		undoing = true
		log = log.With("undo", true, "generation", p.Generation, "deleting", p.Deleting)
	}
}

// task makes the Task of one pass over p.
func (r *Reconciler) task(p *store.Project, log *slog.Logger) *Task {
	return &Task{Project: p, Layout: layout.For(r.opt.BaseDir, p.Name), Privd: r.privd, Clock: r.opt.Clock,
		Log: log, st: r.st, opt: &r.opt, gate: r.gate, spec: p.Spec.Clone(), gen: p.Generation, deleting: p.Deleting}
}

// errServedElsewhere stops a run whose project another host serves now
// (it moved during the run): nothing of this host's run is recorded in
// the record that is the other host's.
var errServedElsewhere = errors.New("the project is served by another host now")

// errInterrupted says a pass stopped for opusd's shutdown; its operations
// stay RUNNING for the next start to resume.
var errInterrupted = errors.New("interrupted by shutdown")

// steps runs t's chain (the deploy or the teardown steps), recording each
// step in the operations ids. It returns the failed step's name and error.
func (r *Reconciler) steps(ctx context.Context, t *Task, ids []string) (string, error) {
	steps := r.deploy
	if t.deleting {
		steps = r.teardown
	}
	log := t.Log
	for _, step := range steps {
		if r.isStopping() {
			log.Info("reconcile interrupted by shutdown before step", "step", step.Name)
			return step.Name, errInterrupted
		}
		start := r.opt.Clock.Now()
		if err := r.record(ctx, ids, func(op *store.Operation) {
			op.Steps = append(op.Steps, store.Step{Name: step.Name, State: store.StepRunning, StartTime: start})
		}); err != nil {
			log.Error("reconcile: record step", "step", step.Name, "err", err)
			return step.Name, errInterrupted
		}
		msg, err := step.Run(ctx, t)
		end := r.opt.Clock.Now()
		if err == nil || ctx.Err() == nil {
			r.opt.Observer.StepEnded(step.Name, end.Sub(start))
		}
		if err != nil && ctx.Err() != nil {
			// Shutdown cut the step short: leave the operation RUNNING for
			// the next start to resume.
			r.record(ctx, ids, func(op *store.Operation) {
				setLastStep(op, store.StepFailed, end, "interrupted by opusd shutdown; runs again at next start")
			})
			log.Warn("reconcile step interrupted by shutdown", "step", step.Name, "err", err)
			return step.Name, errInterrupted
		}
		if err != nil {
			log.Error("reconcile step failed", "step", step.Name, "err", err)
			return step.Name, err
		}
		r.record(ctx, ids, func(op *store.Operation) { setLastStep(op, store.StepDone, end, msg) })
		log.Info("reconcile step done", "step", step.Name, "message", msg, "took", end.Sub(start))
		afterStep(t.deleting, step.Name)
	}
	return "", nil
}

func setLastStep(op *store.Operation, state store.StepState, end time.Time, msg string) {
	if n := len(op.Steps); n > 0 {
		op.Steps[n-1].State, op.Steps[n-1].EndTime, op.Steps[n-1].Message = state, end, msg
	}
}

// fail records a run that failed for good: its operations fail with the
// step's error and the project's phase becomes FAILED with last_error.
// That is the end of a failed teardown, or of undoing a failed change
// (the change's own error comes first then); what the host has is left
// as it is for the host administrator (observed_generation does not move).
func (r *Reconciler) fail(ctx context.Context, log *slog.Logger, t *Task, ids []string, step string, stepErr error) {
	text := fmt.Sprintf("step %s: %v", step, stepErr)
	end := r.opt.Clock.Now()
	var ended endedOps
	err := r.st.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		ended = nil
		last := text
		for _, id := range ids {
			op, err := tx.Operation(id)
			if err != nil {
				return err
			}
			setLastStep(op, store.StepFailed, end, stepErr.Error())
			if op.Error != "" {
				op.Error += "\nUndoing it failed too: " + text
			} else {
				op.Error = text
			}
			ended.end(op, store.OpFailed, end)
			last = op.Error
			if err := tx.PutOperation(op); err != nil {
				return err
			}
		}
		p, err := tx.Project(t.Project.Name)
		if err != nil {
			return err
		}
		if !r.st.ServedHere(p) {
			return errServedElsewhere
		}
		p.Status.Phase, p.Status.LastError = store.PhaseFailed, last
		return tx.PutProject(p)
	})
	if err != nil {
		log.Error("reconcile: record failure", "err", err)
		return
	}
	ended.tell(r.opt.Observer)
}

// undoFailed records a failed change and turns the run around so that
// nothing of the change is left (all or nothing): the project's spec goes
// back to Applied, what the last successful run deployed, at a new
// generation, and the run goes on toward it; a project that never
// deployed is torn down instead, so that its name is free for the
// corrected command. The operations keep their error and stay RUNNING
// until the host is back (succeed then ends them FAILED): a crash meanwhile
// resumes the undo, not the change. Changes asked for while the failed
// one ran were made on top of it: they are cancelled. It returns the
// project to go on with, or nil when the failure is final (recorded).
func (r *Reconciler) undoFailed(ctx context.Context, log *slog.Logger, t *Task, ids []string, step string, stepErr error) *store.Project {
	text := fmt.Sprintf("step %s: %v", step, stepErr)
	end := r.opt.Clock.Now()
	var next *store.Project
	destroying := false
	var ended endedOps
	err := r.st.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		ended, next, destroying = nil, nil, false
		p, err := tx.Project(t.Project.Name)
		if err != nil {
			return err
		}
		if !r.st.ServedHere(p) {
			return errServedElsewhere
		}
		if p.Deleting {
			// A destroy was asked for while the change ran: undoing the
			// change is moot, the destroy removes everything. The change
			// ends FAILED now; the destroy's operation, left open, runs
			// next (its Kick came during this run) and ends as it ends,
			// not "cancelled" while the project goes away.
			for _, id := range ids {
				op, err := tx.Operation(id)
				if err != nil {
					return err
				}
				setLastStep(op, store.StepFailed, end, stepErr.Error())
				op.Error = text
				ended.end(op, store.OpFailed, end)
				if err := tx.PutOperation(op); err != nil {
					return err
				}
			}
			p.Status.Phase = store.PhaseDeleting
			destroying = true
			return tx.PutProject(p)
		}
		var undo string
		switch {
		case p.Applied != nil:
			p.Spec = p.Applied.Clone()
			if sec := p.Secrets; sec != nil && sec.Replaced != "" {
				// A restore from a backup had replaced the key.
				sec.SecretKey, sec.Replaced = sec.Replaced, ""
				undo = ", with the secret key it had"
			}
			p.Status.Phase = store.PhaseDeploying
			undo = fmt.Sprintf("the change failed: putting back what was deployed before (generation %d)", p.Status.ObservedGeneration) + undo
			// The change's migrations (or its restore) may have run: its
			// data snapshot goes back too, so that the code put back
			// finds the database it left.
			for _, s := range p.Snapshots {
				if s.Generation == t.gen {
					p.Spec.RestoreSnapshot = s.ID
					what := "the database as it was"
					if s.Media {
						what = "the database and media files as they were"
					}
					undo += fmt.Sprintf(", and %s before the change (data snapshot %s; what was written since is gone)", what, s.ID)
				}
			}
		case p.Status.ObservedGeneration == 0:
			p.Deleting = true
			p.Status.Phase = store.PhaseDeleting
			undo = "the project's first deploy failed: removing everything it made, so that nothing of it is left"
		default:
			// A record from before opusd kept the applied spec.
			return errNoUndo
		}
		p.Generation++
		mine := map[string]bool{}
		for _, id := range ids {
			mine[id] = true
			op, err := tx.Operation(id)
			if err != nil {
				return err
			}
			setLastStep(op, store.StepFailed, end, stepErr.Error())
			op.Error = text
			op.Steps = append(op.Steps, store.Step{Name: "undo", State: store.StepDone, StartTime: end, EndTime: end, Message: undo})
			if err := tx.PutOperation(op); err != nil {
				return err
			}
		}
		ops, err := tx.Operations(p.Name, 0)
		if err != nil {
			return err
		}
		for _, op := range ops {
			if mine[op.ID] || op.State.Final() || !r.claimsOp(op) {
				continue
			}
			ended.end(op, store.OpFailed, end)
			op.Error = fmt.Sprintf("cancelled: it was asked for while operation %s ran, and was made on top of that change, which failed and was undone; nothing of it was applied, ask again", ids[0])
			if err := tx.PutOperation(op); err != nil {
				return err
			}
		}
		if err := tx.PutProject(p); err != nil {
			return err
		}
		next = p
		return nil
	})
	if errors.Is(err, errNoUndo) {
		r.fail(ctx, log, t, ids, step, stepErr)
		return nil
	}
	if err == nil {
		ended.tell(r.opt.Observer)
	}
	if err == nil && destroying {
		log.Warn("change failed while the project's destroy waits; destroying it", "step", step, "err", stepErr)
		return nil
	}
	if err != nil {
		log.Error("reconcile: record failure", "err", err)
		return nil
	}
	log.Warn("change failed; undoing it", "step", step, "err", stepErr, "generation", next.Generation, "deleting", next.Deleting)
	return next
}

// errNoUndo says a project has no applied spec to go back to.
var errNoUndo = errors.New("no applied spec recorded")

// succeed finishes a run: a deployed project is READY at the run's
// generation, which becomes its applied spec; a torn-down one is
// forgotten (its operations are kept so their watchers see them end).
// Operations that carry an error were a failed change this run undid:
// they end FAILED, and the project's status says so.
func (r *Reconciler) succeed(ctx context.Context, log *slog.Logger, t *Task, ids []string) {
	end := r.opt.Clock.Now()
	var ended endedOps
	err := r.st.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		ended = nil
		var failed *store.Operation
		changed := false
		for _, id := range ids {
			op, err := tx.Operation(id)
			if err != nil {
				return err
			}
			state := store.OpSucceeded
			if op.Error != "" {
				state, failed = store.OpFailed, op
			} else if op.Kind != store.OpReconcile {
				changed = true
			}
			ended.end(op, state, end)
			if err := tx.PutOperation(op); err != nil {
				return err
			}
		}
		p, err := tx.Project(t.Project.Name)
		if err != nil {
			return err
		}
		if !r.st.ServedHere(p) {
			return errServedElsewhere
		}
		if t.deleting {
			if r.opt.Finish != nil {
				return r.opt.Finish(tx, p)
			}
			return tx.DeleteProject(p.Name, ids...)
		}
		t.commitApplied(p)
		if p.Secrets != nil {
			p.Secrets.Replaced = "" // the restore that replaced it is done
		}
		p.Status.ObservedGeneration, p.Status.LastError = t.gen, ""
		p.Applied = appliedSpec(t.spec)
		switch {
		case failed != nil:
			p.Status.LastFailure = &store.Failure{Operation: failed.ID, Error: failed.Error, Time: end}
		case changed:
			p.Status.LastFailure = nil
		}
		if !p.Deleting {
			p.Status.Phase = store.PhaseReady
		}
		if r.opt.Finish != nil {
			return r.opt.Finish(tx, p)
		}
		return tx.PutProject(p)
	})
	if err != nil {
		log.Error("reconcile: record success", "err", err)
		return
	}
	ended.tell(r.opt.Observer)
	log.Info("reconcile done")
	// A project that serves now may want its first certificate.
	r.NudgeACME()
	if r.opt.Succeeded != nil {
		r.opt.Succeeded(t.Project.Name)
	}
}
