package reconcile

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/layout"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// fakeUID is the project users' uid the fake hands out: no process on the
// machine runs as it, so the teardown never waits for one.
const fakeUID = 3999999

// fakePrivd records calls and fails or blocks those it is told to.
type fakePrivd struct {
	mu       sync.Mutex
	calls    []string // "Method project"
	fail     map[string]error
	failOnce map[string]error // fails the next call only
	refusals []*privdv1.Refusal
	// block, when set for a method, is waited on (or ctx) before answering.
	block    map[string]chan struct{}
	inFlight map[string]int
	maxPer   int
	total    int
	maxTotal int

	// manage answers RunManage (nil: every command succeeds); manageReqs
	// records the requests.
	manage     func(*privdv1.RunManageRequest) *privdv1.RunManageResponse
	manageReqs []*privdv1.RunManageRequest
	// sites holds the installed site per project, to answer changed as
	// privd does.
	sites map[string]*privdv1.InstallSiteRequest
	// onReload runs on each ReloadApache (a test starts "Apache" there).
	onReload func()
	// rolledBack is ReloadApache's answer of that name: the sites Apache
	// did not survive, put back by privd.
	rolledBack map[string]string
	logLines   []string
	// uidReqs are the uids EnsureUser was asked for; takenUIDs are
	// answered AlreadyExists, as privd answers an id in use.
	uidReqs   []uint32
	takenUIDs map[uint32]bool
	// db is each project's SQLite database (snapshot_test.go).
	db map[string][]byte
}

func newFake() *fakePrivd {
	return &fakePrivd{fail: map[string]error{}, failOnce: map[string]error{}, block: map[string]chan struct{}{}, inFlight: map[string]int{},
		sites: map[string]*privdv1.InstallSiteRequest{}}
}

func (f *fakePrivd) enter(ctx context.Context, method, project string) error {
	f.mu.Lock()
	f.calls = append(f.calls, strings.TrimSpace(method+" "+project))
	f.inFlight[project]++
	f.total++
	if project != "" {
		f.maxPer = max(f.maxPer, f.inFlight[project])
	}
	f.maxTotal = max(f.maxTotal, f.total)
	err := f.fail[method]
	if e, ok := f.failOnce[method]; ok {
		err = e
		delete(f.failOnce, method)
	}
	ch := f.block[method]
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight[project]--
		f.total--
		f.mu.Unlock()
	}()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	return err
}

func (f *fakePrivd) setFail(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.fail, method)
	} else {
		f.fail[method] = err
	}
}

func (f *fakePrivd) callList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakePrivd) EnsureUser(ctx context.Context, in *privdv1.EnsureUserRequest, _ ...grpc.CallOption) (*privdv1.EnsureUserResponse, error) {
	if err := f.enter(ctx, "EnsureUser", in.Project); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.uidReqs = append(f.uidReqs, in.Uid)
	taken := f.takenUIDs[in.Uid]
	f.mu.Unlock()
	if taken {
		return nil, status.Errorf(codes.AlreadyExists, "uid %d is already used by user someone", in.Uid)
	}
	return &privdv1.EnsureUserResponse{User: "opus-" + in.Project, Uid: fakeUID, Gid: fakeUID, Created: true}, nil
}

func (f *fakePrivd) DeleteUser(ctx context.Context, in *privdv1.DeleteUserRequest, _ ...grpc.CallOption) (*privdv1.DeleteUserResponse, error) {
	if err := f.enter(ctx, "DeleteUser", in.Project); err != nil {
		return nil, err
	}
	return &privdv1.DeleteUserResponse{Deleted: true}, nil
}

func (f *fakePrivd) SecureTree(ctx context.Context, in *privdv1.SecureTreeRequest, _ ...grpc.CallOption) (*privdv1.SecureTreeResponse, error) {
	if err := f.enter(ctx, "SecureTree", in.Project); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &privdv1.SecureTreeResponse{Secured: 5, Refusals: f.refusals}, nil
}

func (f *fakePrivd) RemoveTree(ctx context.Context, in *privdv1.RemoveTreeRequest, _ ...grpc.CallOption) (*privdv1.RemoveTreeResponse, error) {
	if err := f.enter(ctx, "RemoveTree", in.Project); err != nil {
		return nil, err
	}
	return &privdv1.RemoveTreeResponse{Removed: 5}, nil
}

func (f *fakePrivd) RunManage(ctx context.Context, in *privdv1.RunManageRequest, _ ...grpc.CallOption) (*privdv1.RunManageResponse, error) {
	if err := f.enter(ctx, "RunManage", in.Project); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.manageReqs = append(f.manageReqs, proto.Clone(in).(*privdv1.RunManageRequest))
	if f.manage != nil {
		return f.manage(in), nil
	}
	return &privdv1.RunManageResponse{Output: "ok\n"}, nil
}

func (f *fakePrivd) InstallSite(ctx context.Context, in *privdv1.InstallSiteRequest, _ ...grpc.CallOption) (*privdv1.InstallSiteResponse, error) {
	if err := f.enter(ctx, "InstallSite", in.Project); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	changed := f.sites[in.Project] == nil || !proto.Equal(f.sites[in.Project], in)
	f.sites[in.Project] = proto.Clone(in).(*privdv1.InstallSiteRequest)
	return &privdv1.InstallSiteResponse{Changed: changed}, nil
}

func (f *fakePrivd) CertificateRequest(ctx context.Context, in *privdv1.CertificateRequestRequest, _ ...grpc.CallOption) (*privdv1.CertificateRequestResponse, error) {
	if err := f.enter(ctx, "CertificateRequest", in.Project); err != nil {
		return nil, err
	}
	key, err := cert.NewKey(2)
	if err != nil {
		return nil, err
	}
	csr, err := cert.Request(key, append([]string{in.Project + ".opus.test"}, in.Aliases...))
	if err != nil {
		return nil, err
	}
	return &privdv1.CertificateRequestResponse{Csr: csr}, nil
}

func (f *fakePrivd) EnsureBackend(ctx context.Context, in *privdv1.EnsureBackendRequest, _ ...grpc.CallOption) (*privdv1.EnsureBackendResponse, error) {
	if err := f.enter(ctx, "EnsureBackend", in.Project); err != nil {
		return nil, err
	}
	return &privdv1.EnsureBackendResponse{MasterPid: 4343}, nil
}

func (f *fakePrivd) RemoveBackend(ctx context.Context, in *privdv1.RemoveBackendRequest, _ ...grpc.CallOption) (*privdv1.RemoveBackendResponse, error) {
	if err := f.enter(ctx, "RemoveBackend", in.Project); err != nil {
		return nil, err
	}
	return &privdv1.RemoveBackendResponse{Removed: true}, nil
}

func (f *fakePrivd) RemoveSite(ctx context.Context, in *privdv1.RemoveSiteRequest, _ ...grpc.CallOption) (*privdv1.RemoveSiteResponse, error) {
	if err := f.enter(ctx, "RemoveSite", in.Project); err != nil {
		return nil, err
	}
	return &privdv1.RemoveSiteResponse{Removed: true}, nil
}

func (f *fakePrivd) ReloadApache(ctx context.Context, in *privdv1.ReloadApacheRequest, _ ...grpc.CallOption) (*privdv1.ReloadApacheResponse, error) {
	if err := f.enter(ctx, "ReloadApache", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	hook, rolledBack := f.onReload, f.rolledBack
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	return &privdv1.ReloadApacheResponse{MasterPid: 4242, RolledBack: rolledBack}, nil
}

func (f *fakePrivd) TailLog(ctx context.Context, in *privdv1.TailLogRequest, _ ...grpc.CallOption) (*privdv1.TailLogResponse, error) {
	if err := f.enter(ctx, "TailLog", in.Project); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &privdv1.TailLogResponse{Lines: f.logLines}, nil
}

// Stats is never called by the reconciler (opusd's metrics call it).
func (f *fakePrivd) Stats(ctx context.Context, _ *privdv1.StatsRequest, _ ...grpc.CallOption) (*privdv1.StatsResponse, error) {
	return &privdv1.StatsResponse{}, f.enter(ctx, "Stats", "")
}

// fakeClock advances one second per reading, so step times are ordered.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

type env struct {
	st    *store.Store
	path  string
	base  string
	privd *fakePrivd
	clock *fakeClock
	git   *fakeGit
	// web stands in for Apache: it answers the health check with status
	// for the project's host name and 404 (the catch-all) for others.
	web    *httptest.Server
	status atomic.Int32
	hosts  sync.Map // Host headers seen
	// tweak adjusts the Options of start.
	tweak func(*Options)
}

const testSuffix = ".opus.test"

func (e *env) serveHTTP(w http.ResponseWriter, r *http.Request) {
	e.hosts.Store(r.Host, true)
	if !strings.HasSuffix(r.Host, testSuffix) {
		http.NotFound(w, r)
		return
	}
	w.WriteHeader(int(e.status.Load()))
}

func (e *env) options(concurrency int) Options {
	o := Options{BaseDir: e.base, Concurrency: concurrency, Clock: e.clock,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		ServerSuffix: testSuffix, HTTPPort: 8080, HTTPSPort: 8443, TLSSecurityLevel: 2,
		Uploads: fakeUploads{}, Git: e.git,
		HealthAddr: e.web.Listener.Addr().String(), HealthTimeout: 2 * time.Second}
	if e.tweak != nil {
		e.tweak(&o)
	}
	return o
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "opusd.db")
	st, err := store.Open(context.Background(), path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{st: st, path: path, base: filepath.Join(dir, "base"), privd: newFake(),
		clock: &fakeClock{t: time.Now()}, git: &fakeGit{repos: map[string]map[string]fakeCommit{}}}
	e.status.Store(http.StatusOK)
	e.web = httptest.NewServer(http.HandlerFunc(e.serveHTTP))
	t.Cleanup(e.web.Close)
	return e
}

func (e *env) start(t *testing.T, concurrency int) *Reconciler {
	t.Helper()
	if err := os.MkdirAll(e.base, 0o755); err != nil {
		t.Fatal(err)
	}
	r := New(e.st, e.privd, e.options(concurrency))
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.Stop(ctx)
	})
	return r
}

// create records a project and its CREATE operation as the service does.
func (e *env) create(t *testing.T, name string) string {
	t.Helper()
	var id string
	err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		p := &store.Project{Name: name, OwnerUID: 1000, Generation: 1, Status: store.Status{Phase: store.PhasePending}}
		if err := tx.CreateProject(p); err != nil {
			return err
		}
		op, err := tx.NewOperation(p, store.OpCreate, 1000)
		id = op.ID
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// mutate bumps the generation (and so marks a delete) with a new operation.
func (e *env) mutate(t *testing.T, name string, kind store.OpKind) string {
	t.Helper()
	var id string
	err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		p, err := tx.Project(name)
		if err != nil {
			return err
		}
		if kind == store.OpDelete {
			p.Deleting = true
		} else {
			p.Generation++
		}
		if err := tx.PutProject(p); err != nil {
			return err
		}
		op, err := tx.NewOperation(p, kind, 1000)
		if op != nil {
			id = op.ID
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) wait(t *testing.T, id string) *store.Operation {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch, release := e.st.Changed(id)
		op, err := e.st.GetOperation(context.Background(), id)
		if err != nil {
			release()
			t.Fatal(err)
		}
		if op.State.Final() {
			release()
			return op
		}
		select {
		case <-ch:
			release()
		case <-deadline:
			release()
			t.Fatalf("operation %s still %s", id, op.State)
		}
	}
}

// The step lists of a deploy and a teardown that went through.
const (
	deployedSteps = "user:DONE directories:DONE database:DONE recover:DONE data:DONE sources:DONE render:DONE secure:DONE backend:DONE snapshot:DONE migrate:DONE superuser:DONE certificate:DONE vhost:DONE reload:DONE health:DONE"
	tornDownSteps = "site:DONE reload:DONE backend:DONE tree:DONE user:DONE database:DONE forget:DONE"
)

// stepMessage returns the message of op's last step called name.
// stepMessage is the message of op's first step called name (a failed
// change's undo runs the steps again after it).
func stepMessage(op *store.Operation, name string) string {
	for _, s := range op.Steps {
		if s.Name == name {
			return s.Message
		}
	}
	return ""
}

func stepNames(op *store.Operation) string {
	var s []string
	for _, st := range op.Steps {
		s = append(s, st.Name+":"+string(st.State))
	}
	return strings.Join(s, " ")
}

func TestDeployOrderAndStatus(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 2)
	id := e.create(t, "blog")
	r.Kick("blog")
	op := e.wait(t, id)
	if op.State != store.OpSucceeded {
		t.Fatalf("op %s: %s", op.State, op.Error)
	}
	if got, want := stepNames(op), deployedSteps; got != want {
		t.Fatalf("steps = %q, want %q", got, want)
	}
	for i, s := range op.Steps {
		if s.StartTime.IsZero() || !s.EndTime.After(s.StartTime) || s.Message == "" {
			t.Errorf("step %d = %+v: want times and a message", i, s)
		}
	}
	if got, want := strings.Join(e.privd.callList(), ","), "EnsureUser blog,SecureTree blog,EnsureBackend blog,RunManage blog,InstallSite blog,ReloadApache"; got != want {
		t.Fatalf("privd calls = %q, want %q", got, want)
	}
	p, _ := e.st.GetProject(context.Background(), "blog")
	if p.Status.Phase != store.PhaseReady || p.Status.ObservedGeneration != 1 || p.Status.SystemUser != "opus-blog" || p.Status.UID != fakeUID {
		t.Fatalf("status = %+v", p.Status)
	}
	l := layout.For(e.base, "blog")
	for path, mode := range map[string]os.FileMode{l.Root: 0o751, l.Code: 0o751, l.Secrets: 0o770, l.Data: 0o770, l.Static: 0o775} {
		fi, err := os.Lstat(path)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want dir %v", path, fi.Mode(), err, mode)
		}
	}
}

func TestIdempotentRerun(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	id := e.create(t, "shop")
	r.Kick("shop")
	e.wait(t, id)
	// A stray file in data survives a re-run (nothing is recreated).
	l := layout.For(e.base, "shop")
	os.WriteFile(filepath.Join(l.Data, "db.sqlite3"), []byte("x"), 0o600)
	id2 := e.mutate(t, "shop", store.OpAddApp)
	r.Kick("shop")
	op := e.wait(t, id2)
	if op.State != store.OpSucceeded || op.Steps[1].Message != "directories exist" {
		t.Fatalf("re-run: %s %q %+v", op.State, op.Error, op.Steps)
	}
	if b, err := os.ReadFile(filepath.Join(l.Data, "db.sqlite3")); err != nil || string(b) != "x" {
		t.Fatalf("data changed by re-run: %q %v", b, err)
	}
	p, _ := e.st.GetProject(context.Background(), "shop")
	if p.Status.ObservedGeneration != 2 || p.Status.Phase != store.PhaseReady {
		t.Fatalf("status = %+v", p.Status)
	}
	// A kick with nothing to do makes no operation and no privd call.
	n := len(e.privd.callList())
	r.Kick("shop")
	time.Sleep(100 * time.Millisecond)
	ops, _ := e.st.ListOperations(context.Background(), "shop", 0)
	if len(ops) != 2 || len(e.privd.callList()) != n {
		t.Fatalf("idle kick: %d ops, %d calls (want 2, %d)", len(ops), len(e.privd.callList()), n)
	}
}

// TestFailedChangeUndone: a change whose step fails is undone: the
// operation fails with the step's error after the steps ran again toward
// the previous spec, and the project is READY at a new generation with
// that spec, naming the failed operation.
func TestFailedChangeUndone(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	e.deployed(t, r, "wiki")
	prev := e.project(t, "wiki")

	e.privd.mu.Lock()
	e.privd.failOnce["SecureTree"] = status.Error(codes.Internal, "openat2: permission denied")
	e.privd.mu.Unlock()
	id2 := e.change(t, "wiki", store.OpUpdateSettings, func(s *store.Spec) { s.Settings.Debug = true })
	r.Kick("wiki")
	op := e.wait(t, id2)
	if op.State != store.OpFailed || !strings.Contains(op.Error, "step secure") || !strings.Contains(op.Error, "permission denied") {
		t.Fatalf("op = %s %q", op.State, op.Error)
	}
	chain := "user:DONE directories:DONE database:DONE recover:DONE data:DONE sources:DONE render:DONE secure:"
	if got, want := stepNames(op), chain+"FAILED undo:DONE "+chain+"DONE"; !strings.HasPrefix(got, want) || strings.Contains(got, "FAILED health") {
		t.Fatalf("steps = %q, want them to start %q", got, want)
	}
	p := e.project(t, "wiki")
	if p.Spec.Settings.Debug || p.Status.Phase != store.PhaseReady || p.Generation != prev.Generation+2 || p.Status.ObservedGeneration != p.Generation {
		t.Fatalf("after the failed change: debug %v, generation %d (was %d), status %+v", p.Spec.Settings.Debug, p.Generation, prev.Generation, p.Status)
	}
	if f := p.Status.LastFailure; f == nil || f.Operation != id2 || !strings.Contains(f.Error, "permission denied") || p.Status.LastError != "" {
		t.Fatalf("last failure %+v, last error %q", f, p.Status.LastError)
	}
	// A reconcile (nobody's change) leaves the failure on show; the next
	// change that succeeds clears it.
	mustSucceed(t, e.runOn(t, r, "wiki", store.OpReconcile, func(*store.Spec) {}))
	if e.project(t, "wiki").Status.LastFailure == nil {
		t.Errorf("a reconcile cleared the last failure")
	}
	mustSucceed(t, e.runOn(t, r, "wiki", store.OpUpdateSettings, func(s *store.Spec) { s.Settings.Debug = true }))
	if p := e.project(t, "wiki"); p.Status.LastFailure != nil || !p.Applied.Settings.Debug {
		t.Errorf("after a successful change: last failure %+v, applied debug %v", p.Status.LastFailure, p.Applied.Settings.Debug)
	}
}

// TestUndoFailsToo: when the host itself is broken, undoing the failed
// change fails as well; then, and only then, the project is FAILED with
// both errors, and a later run repairs it toward the previous spec.
func TestUndoFailsToo(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	e.deployed(t, r, "wiki")

	e.privd.setFail("SecureTree", status.Error(codes.Internal, "openat2: permission denied"))
	id2 := e.mutate(t, "wiki", store.OpUpdateApp)
	r.Kick("wiki")
	op := e.wait(t, id2)
	if op.State != store.OpFailed || !strings.Contains(op.Error, "step secure") || !strings.Contains(op.Error, "Undoing it failed too: step secure") {
		t.Fatalf("op = %s %q", op.State, op.Error)
	}
	p, _ := e.st.GetProject(context.Background(), "wiki")
	if p.Status.Phase != store.PhaseFailed || p.Status.ObservedGeneration != 1 || p.Generation != 3 || p.Status.LastError != op.Error {
		t.Fatalf("status after failure = %+v (generation %d)", p.Status, p.Generation)
	}
	// Once privd works again a kick repairs it with a RECONCILE operation.
	e.privd.setFail("SecureTree", nil)
	r.Kick("wiki")
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, _ = e.st.GetProject(context.Background(), "wiki")
		if p.Status.Phase == store.PhaseReady {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not repaired: %+v", p.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ops, _ := e.st.ListOperations(context.Background(), "wiki", 1)
	if ops[0].Kind != store.OpReconcile || ops[0].State != store.OpSucceeded || p.Status.LastError != "" || p.Status.ObservedGeneration != 3 {
		t.Fatalf("repair op %+v, status %+v", ops[0], p.Status)
	}
}

func TestUnavailablePrivdMessage(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	e.privd.setFail("EnsureUser", status.Error(codes.Unavailable, "connection refused"))
	id := e.create(t, "down")
	r.Kick("down")
	op := e.wait(t, id)
	if op.State != store.OpFailed || !strings.Contains(op.Error, "opus-privd is not reachable") {
		t.Fatalf("op = %s %q", op.State, op.Error)
	}
	if _, err := os.Stat(layout.For(e.base, "down").Root); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directories made after user step failed: %v", err)
	}
}

func TestSecureRefusalsAreWarnings(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	e.privd.refusals = []*privdv1.Refusal{{Path: "code/evil", Reason: "symlink"}}
	id := e.create(t, "warn")
	r.Kick("warn")
	op := e.wait(t, id)
	if op.State != store.OpSucceeded || !strings.Contains(stepMessage(op, "secure"), "code/evil (symlink)") {
		t.Fatalf("op %s, secure message %q", op.State, stepMessage(op, "secure"))
	}
}

func TestDirectoryReplacedBySymlinkRefused(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	l := layout.For(e.base, "link")
	os.MkdirAll(l.Root, 0o751)
	target := t.TempDir()
	if err := os.Symlink(target, l.Data); err != nil {
		t.Fatal(err)
	}
	id := e.create(t, "link")
	r.Kick("link")
	op := e.wait(t, id)
	if op.State != store.OpFailed || !strings.Contains(op.Error, "not a directory") {
		t.Fatalf("op %s %q", op.State, op.Error)
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Fatalf("wrote through the symlink: %v", ents)
	}
}

func TestTeardown(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	id := e.create(t, "gone")
	r.Kick("gone")
	e.wait(t, id)
	// An update queued behind the delete is cancelled, not run.
	pending := e.mutate(t, "gone", store.OpAddApp)
	del := e.mutate(t, "gone", store.OpDelete)
	before := len(e.privd.callList())
	r.Kick("gone")
	op := e.wait(t, del)
	if op.State != store.OpSucceeded || stepNames(op) != tornDownSteps {
		t.Fatalf("delete op %s %q: %s", op.State, op.Error, stepNames(op))
	}
	if got, want := strings.Join(e.privd.callList()[before:], ","), "RemoveSite gone,ReloadApache,RemoveBackend gone,RemoveTree gone,DeleteUser gone"; got != want {
		t.Fatalf("teardown calls = %q, want %q", got, want)
	}
	if _, err := e.st.GetProject(context.Background(), "gone"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("project still recorded: %v", err)
	}
	if _, err := e.st.GetOperation(context.Background(), pending); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cancelled op of deleted project kept: %v", err)
	}
}

func TestTeardownFailureKeepsRecord(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	id := e.create(t, "stuck")
	r.Kick("stuck")
	e.wait(t, id)
	e.privd.setFail("DeleteUser", status.Error(codes.FailedPrecondition, "user opus-stuck lacks the Opus marker"))
	del := e.mutate(t, "stuck", store.OpDelete)
	r.Kick("stuck")
	op := e.wait(t, del)
	if op.State != store.OpFailed || !strings.Contains(op.Error, "lacks the Opus marker") {
		t.Fatalf("op %s %q", op.State, op.Error)
	}
	p, err := e.st.GetProject(context.Background(), "stuck")
	if err != nil || !p.Deleting || p.Status.Phase != store.PhaseFailed {
		t.Fatalf("project after failed teardown: %+v %v", p, err)
	}
}

func TestCrashRecovery(t *testing.T) {
	e := newEnv(t)
	id := e.create(t, "crash")
	// What a killed opusd leaves: the op RUNNING halfway, phase DEPLOYING.
	e.st.UpdateOperation(context.Background(), id, func(op *store.Operation) error {
		op.State = store.OpRunning
		op.Steps = []store.Step{{Name: "user", State: store.StepDone}, {Name: "directories", State: store.StepRunning}}
		return nil
	})
	e.st.UpdateProject(context.Background(), "crash", func(p *store.Project) error {
		p.Status.Phase = store.PhaseDeploying
		return nil
	})
	// A fresh reconciler finishes it without being kicked.
	e.start(t, 1)
	op := e.wait(t, id)
	if op.State != store.OpSucceeded || stepNames(op) != "resume:DONE "+deployedSteps {
		t.Fatalf("resumed op %s %q: %s", op.State, op.Error, stepNames(op))
	}
	p, _ := e.st.GetProject(context.Background(), "crash")
	if p.Status.Phase != store.PhaseReady || p.Status.ObservedGeneration != 1 {
		t.Fatalf("status = %+v", p.Status)
	}
}

func TestRecoveryOfDeletingProject(t *testing.T) {
	e := newEnv(t)
	e.create(t, "half")
	e.st.UpdateProject(context.Background(), "half", func(p *store.Project) error {
		p.Deleting, p.Status.ObservedGeneration = true, 1
		return nil
	})
	// The CREATE op is open but moot: the teardown cancels it and runs a
	// DELETE of its own.
	e.start(t, 1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := e.st.GetProject(context.Background(), "half"); errors.Is(err, store.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("deleting project not torn down on start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := strings.Join(e.privd.callList(), ","); got != "RemoveSite half,ReloadApache,RemoveBackend half,RemoveTree half,DeleteUser half" {
		t.Fatalf("calls = %q", got)
	}
}

func TestSerialPerProjectParallelAcross(t *testing.T) {
	e := newEnv(t)
	gate := make(chan struct{})
	e.privd.block["EnsureUser"] = gate
	r := e.start(t, 2)
	a := e.create(t, "alpha")
	b := e.create(t, "beta")
	r.Kick("alpha")
	r.Kick("beta")
	// Both projects reach privd at once.
	deadline := time.Now().Add(5 * time.Second)
	for len(e.privd.callList()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("calls = %v: projects not worked on in parallel", e.privd.callList())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Kicks during a run coalesce into exactly one more run.
	a2 := e.mutate(t, "alpha", store.OpAddApp)
	for i := 0; i < 10; i++ {
		r.Kick("alpha")
	}
	close(gate)
	e.wait(t, a)
	e.wait(t, b)
	e.wait(t, a2)
	time.Sleep(100 * time.Millisecond)
	n := 0
	for _, c := range e.privd.callList() {
		if c == "EnsureUser alpha" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("alpha ran %d times, want 2", n)
	}
	if e.privd.maxPer != 1 {
		t.Fatalf("a project had %d privd calls in flight at once", e.privd.maxPer)
	}
	if e.privd.maxTotal != 2 {
		t.Fatalf("max in flight = %d, want 2", e.privd.maxTotal)
	}
}

func TestStopInterruptsAndNextStartResumes(t *testing.T) {
	e := newEnv(t)
	gate := make(chan struct{}) // never opened: the step hangs
	e.privd.block["EnsureUser"] = gate
	os.MkdirAll(e.base, 0o755)
	r := New(e.st, e.privd, Options{BaseDir: e.base, Clock: e.clock, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	id := e.create(t, "slow")
	r.Kick("slow")
	for len(e.privd.callList()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := r.Stop(ctx); err == nil {
		t.Fatal("Stop with a hung step returned no error")
	}
	op, _ := e.st.GetOperation(context.Background(), id)
	if op.State != store.OpRunning {
		t.Fatalf("interrupted op is %s, want RUNNING", op.State)
	}
	delete(e.privd.block, "EnsureUser")
	e.start(t, 1)
	if op := e.wait(t, id); op.State != store.OpSucceeded || op.Steps[0].Name != "resume" {
		t.Fatalf("after restart: %s %s", op.State, stepNames(op))
	}
}
