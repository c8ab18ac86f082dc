package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/layout"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

const liveRepo = "https://git.example.com/shop.git"

var (
	hashV1 = strings.Repeat("1", 40)
	hashV2 = strings.Repeat("2", 40)
)

// liveEnv is an env with a project "live" deployed: hello (upload) and
// shop (git at v1). Setting failMigrate fails the next migrate, as new code
// whose migration raises would; the undo's migrate then passes, as the
// previous code's does.
func liveEnv(t *testing.T) (*env, *Reconciler, layout.Project, *atomic.Bool) {
	t.Helper()
	e := newEnv(t)
	e.git.set(liveRepo, "v1", fakeCommit{hash: hashV1, files: map[string]string{"__init__.py": "", "views.py": "# v1\n"}})
	e.git.set(liveRepo, "v2", fakeCommit{hash: hashV2, files: map[string]string{"__init__.py": "", "views.py": "# v2\n", "migrations/0002.py": "# boom\n"}})
	var failMigrate atomic.Bool
	e.privd.manage = func(req *privdv1.RunManageRequest) *privdv1.RunManageResponse {
		if req.MigrateApp == "" && slices.Contains(req.Commands, privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE) && failMigrate.CompareAndSwap(true, false) {
			return &privdv1.RunManageResponse{Output: "Traceback\nRuntimeError: opus-unit-migration-boom\n",
				FailedCommand: privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE, ExitCode: 1}
		}
		return &privdv1.RunManageResponse{Output: "ok\n"}
	}
	r := e.start(t, 1)
	id := e.createSpec(t, "live", store.Spec{Apps: []store.AppSpec{
		{Name: "hello", Upload: uploaded(digestHello), ByUID: 1000},
		{Name: "shop", Git: &store.GitSource{URL: liveRepo, Ref: "v1"}, ByUID: 1000},
	}})
	r.Kick("live")
	mustSucceed(t, e.wait(t, id))
	return e, r, layout.For(e.base, "live"), &failMigrate
}

func (e *env) run(t *testing.T, r *Reconciler, kind store.OpKind, fn func(*store.Spec)) *store.Operation {
	t.Helper()
	return e.runOn(t, r, "live", kind, fn)
}

// runOn changes project name's spec by fn, kicks r and waits for the
// operation.
func (e *env) runOn(t *testing.T, r *Reconciler, name string, kind store.OpKind, fn func(*store.Spec)) *store.Operation {
	t.Helper()
	id := e.change(t, name, kind, fn)
	r.Kick(name)
	return e.wait(t, id)
}

func noScratch(t *testing.T, code string) {
	t.Helper()
	ents, _ := os.ReadDir(code)
	for _, ent := range ents {
		if strings.HasPrefix(ent.Name(), ".") {
			t.Errorf("scratch entry %s left in code/", ent.Name())
		}
	}
}

// TestFailedRunRestoresPreviousVersion: when migrate fails, every app
// tree the run replaced, added or removed and the rendered files are put
// back, the daemon is restarted on them, the status still names what is
// deployed, and the next successful run goes ahead.
func TestFailedRunRestoresPreviousVersion(t *testing.T) {
	cases := []struct {
		name   string
		change func(*store.Spec)
	}{
		{"update", func(s *store.Spec) { s.App("shop").Git.Ref = "v2" }},
		{"add", func(s *store.Spec) {
			s.Apps = append(s.Apps, store.AppSpec{Name: "extra", Upload: uploaded(digestHello2)})
		}},
		{"remove", func(s *store.Spec) { s.Apps = s.Apps[1:] }},
		{"settings and update", func(s *store.Spec) {
			s.App("shop").Git.Ref = "v2"
			s.Settings.Debug = true
			s.Settings.Env = map[string]string{"X": "y"}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, r, l, failMigrate := liveEnv(t)
			opusJSON := readFile(t, filepath.Join(l.Code, layout.PackageName, "opus.json"))
			old := time.Now().Add(-time.Hour)
			if err := os.Chtimes(l.WSGI(), old, old); err != nil {
				t.Fatal(err)
			}
			prev := e.project(t, "live")
			before := prev.Status.Apps
			calls := len(e.privd.callList())

			failMigrate.Store(true)
			op := e.run(t, r, store.OpUpdateApp, c.change)
			if op.State != store.OpFailed || !strings.Contains(op.Error, "opus-unit-migration-boom") || strings.Contains(op.Error, "restor") || strings.Contains(op.Error, "Undoing it failed") {
				t.Fatalf("op %s %q", op.State, op.Error)
			}
			if got := readFile(t, filepath.Join(l.Code, "shop", "views.py")); got != "# v1\n" {
				t.Errorf("shop/views.py = %q after the failed run, want v1", got)
			}
			if got := readFile(t, filepath.Join(l.Code, "hello", "views.py")); got != "# one\n" {
				t.Errorf("hello/views.py = %q after the failed run", got)
			}
			if isDir(filepath.Join(l.Code, "extra")) {
				t.Errorf("the app added by the failed run is still on disk")
			}
			if got := readFile(t, filepath.Join(l.Code, layout.PackageName, "opus.json")); got != opusJSON {
				t.Errorf("opus.json not restored:\n%s\nwant\n%s", got, opusJSON)
			}
			noScratch(t, l.Code)
			if fi, err := os.Stat(l.WSGI()); err != nil || !fi.ModTime().After(old.Add(time.Minute)) {
				t.Errorf("wsgi.py was not touched after the restore (%v)", err)
			}
			// SecureTree after the failed RunManage: restored files get the
			// policy again.
			rest := e.privd.callList()[calls:]
			if i := slices.Index(rest, "RunManage live"); i < 0 || !slices.Contains(rest[i:], "SecureTree live") {
				t.Errorf("no SecureTree after the failure: %v", rest)
			}
			if slices.Contains(rest, "ReloadApache") {
				t.Errorf("a failed migrate led to an Apache reload: %v", rest)
			}
			p := e.project(t, "live")
			if len(p.Status.Apps) != len(before) || p.Status.Apps["shop"].ResolvedCommit != hashV1 || len(p.Status.Apps["shop"].Revisions) != 1 {
				t.Errorf("status apps changed by the failed run: %+v", p.Status.Apps)
			}
			// All or nothing: the spec is back where it was, at a new
			// generation the host has reached, and READY; the failure is
			// the operation's, which the status names.
			if !reflect.DeepEqual(p.Spec, prev.Spec) {
				t.Errorf("spec after the failed change:\n%+v\nwant the one before:\n%+v", p.Spec, prev.Spec)
			}
			if p.Status.Phase != store.PhaseReady || p.Generation != prev.Generation+2 || p.Status.ObservedGeneration != p.Generation || p.Status.LastError != "" {
				t.Errorf("after the failed change: generation %d (was %d), status %+v", p.Generation, prev.Generation, p.Status)
			}
			if f := p.Status.LastFailure; f == nil || f.Operation != op.ID || f.Error != op.Error {
				t.Errorf("last failure %+v, want operation %s with %q", f, op.ID, op.Error)
			}

			// Asked again once the cause is gone, the same change deploys.
			op = e.run(t, r, store.OpUpdateApp, c.change)
			mustSucceed(t, op)
			noScratch(t, l.Code)
			p = e.project(t, "live")
			for _, a := range p.Spec.Apps {
				if !isDir(filepath.Join(l.Code, a.Name)) || p.Status.Apps[a.Name].ResolvedCommit == "" {
					t.Errorf("app %s not deployed after the fix: %+v", a.Name, p.Status.Apps[a.Name])
				}
			}
			if len(p.Status.Apps) != len(p.Spec.Apps) || reflect.DeepEqual(p.Spec, prev.Spec) || p.Status.LastFailure != nil {
				t.Errorf("status apps %v, spec apps %d, spec changed %v, last failure %+v", p.Status.Apps, len(p.Spec.Apps), !reflect.DeepEqual(p.Spec, prev.Spec), p.Status.LastFailure)
			}
		})
	}
}

// TestFirstDeployFailureLeavesNothing: a project that never deployed has
// no previous state to go back to; when its first deploy fails, what the
// run made is torn down and the record goes (the failed operation stays,
// with its error), so the same create works once the cause is fixed.
func TestFirstDeployFailureLeavesNothing(t *testing.T) {
	e := newEnv(t)
	var broken atomic.Bool
	broken.Store(true)
	e.privd.manage = func(req *privdv1.RunManageRequest) *privdv1.RunManageResponse {
		if broken.Load() {
			return &privdv1.RunManageResponse{Output: "RuntimeError: opus-unit-first-boom\n", FailedCommand: privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE, ExitCode: 1}
		}
		return &privdv1.RunManageResponse{Output: "ok\n"}
	}
	r := e.start(t, 1)
	spec := store.Spec{Apps: []store.AppSpec{{Name: "hello", Upload: uploaded(digestHello)}}}
	id := e.createSpec(t, "first", spec)
	r.Kick("first")
	op := e.wait(t, id)
	if op.State != store.OpFailed || !strings.Contains(op.Error, "step migrate") || !strings.Contains(op.Error, "opus-unit-first-boom") || strings.Contains(op.Error, "restored") {
		t.Fatalf("op %s %q", op.State, op.Error)
	}
	if got, want := stepNames(op), "migrate:FAILED undo:DONE site:DONE reload:DONE backend:DONE tree:DONE user:DONE database:DONE forget:DONE"; !strings.HasSuffix(got, want) {
		t.Errorf("steps %q, want them to end %q", got, want)
	}
	if _, err := e.st.GetProject(context.Background(), "first"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the project of a failed first deploy is still recorded (%v)", err)
	}
	// The fake privd removes nothing itself: the e2e tests check the real
	// tree, user and site are gone.
	calls := e.privd.callList()
	for _, c := range []string{"RemoveSite first", "RemoveTree first", "DeleteUser first"} {
		if !slices.Contains(calls, c) {
			t.Errorf("no %s after the failed first deploy: %v", c, calls)
		}
	}

	// The same create, once the cause is fixed, deploys.
	broken.Store(false)
	id = e.createSpec(t, "first", spec)
	r.Kick("first")
	mustSucceed(t, e.wait(t, id))
	if p := e.project(t, "first"); p.Status.Phase != store.PhaseReady || p.Status.LastFailure != nil || p.Applied == nil || p.Applied.App("hello") == nil {
		t.Errorf("after the corrected create: %+v, applied %+v", p.Status, p.Applied)
	}
}

// TestRevisions: each successful move records a revision with the
// repository, requested ref, resolved commit and caller; a run that
// changes nothing records none.
func TestRevisions(t *testing.T) {
	e, r, _, _ := liveEnv(t)
	mustSucceed(t, e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = "v2"; s.App("shop").ByUID = 1002 }))
	mustSucceed(t, e.run(t, r, store.OpReconcile, func(*store.Spec) {}))
	e.git.set(liveRepo, hashV1, fakeCommit{hash: hashV1, files: map[string]string{"__init__.py": "", "views.py": "# v1\n"}})
	mustSucceed(t, e.run(t, r, store.OpRollback, func(s *store.Spec) { s.App("shop").Git.Ref = hashV1; s.App("shop").RollbackTo = 1 }))
	mustSucceed(t, e.run(t, r, store.OpReconcile, func(*store.Spec) {}))
	st := e.project(t, "live").Status.Apps["shop"]
	var got []string
	for _, rev := range st.Revisions {
		got = append(got, rev.URL+" "+rev.RequestedRef+" "+rev.Resolved[:4])
		if rev.Time.IsZero() {
			t.Errorf("revision without a time: %+v", rev)
		}
	}
	want := []string{liveRepo + " v1 1111", liveRepo + " v2 2222", liveRepo + " " + hashV1 + " 1111"}
	if !slices.Equal(got, want) || st.Revisions[1].ByUID != 1002 || st.ResolvedCommit != hashV1 || st.RequestedRef != hashV1 {
		t.Errorf("revisions %q (status %+v), want %q", got, st, want)
	}
	// Numbered from 1; the rollback's says which revision it went back to.
	for i, rev := range st.Revisions {
		wantOf := 0
		if i == 2 {
			wantOf = 1
		}
		if rev.Number != i+1 || rev.RollbackOf != wantOf {
			t.Errorf("revision %d: number %d, rollback of %d; want %d, %d", i, rev.Number, rev.RollbackOf, i+1, wantOf)
		}
	}
}

// TestUploadRevisionsNameTheUploader: an uploaded revision records whose
// upload it was, so the upload store keeps its archive for a rollback
// (store.Project.UploadsInUse); a git revision records none.
func TestUploadRevisionsNameTheUploader(t *testing.T) {
	e, r, _, _ := liveEnv(t)
	mustSucceed(t, e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("hello").Upload = uploaded(digestHello2) }))
	p := e.project(t, "live")
	revs := p.Status.Apps["hello"].Revisions
	if len(revs) != 2 || revs[0].Resolved != digestHello || revs[1].Resolved != digestHello2 {
		t.Fatalf("revisions %+v", revs)
	}
	for _, rev := range revs {
		if rev.UploaderUID == nil || *rev.UploaderUID != uploaderUID {
			t.Errorf("revision %s names uploader %v, want %d", rev.Resolved, rev.UploaderUID, uploaderUID)
		}
	}
	if rev := p.Status.Apps["shop"].Revisions[0]; rev.UploaderUID != nil {
		t.Errorf("git revision names uploader %d", *rev.UploaderUID)
	}
}

// TestDropAppData: "migrate APP zero" runs while the app is still
// installed (before the sources step takes it away), then the app leaves
// DropAppData; an app without migrations, or not installed, is not an
// error; any other failure fails the change, which is undone whole: the
// app stays, with its data, and no drop is left pending.
func TestDropAppData(t *testing.T) {
	cases := []struct {
		name     string
		answer   *privdv1.RunManageResponse
		wantFail bool
		wantMsg  string
	}{
		{"dropped", &privdv1.RunManageResponse{Output: "Unapplying hello.0001_initial... OK\n"}, false, "dropped the tables of hello"},
		{"no migrations", &privdv1.RunManageResponse{Output: "CommandError: App 'hello' does not have migrations.\n",
			FailedCommand: privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE, ExitCode: 1}, false, "hello has no migrations"},
		{"fails", &privdv1.RunManageResponse{Output: "OperationalError: database is locked\n",
			FailedCommand: privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE, ExitCode: 1}, true, "database is locked"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, r, l, _ := liveEnv(t)
			var zero []string
			e.privd.mu.Lock()
			e.privd.manage = func(req *privdv1.RunManageRequest) *privdv1.RunManageResponse {
				if req.MigrateTarget == "zero" {
					installed := isDir(filepath.Join(l.Code, req.MigrateApp)) && strings.Contains(readFile(t, filepath.Join(l.Code, layout.PackageName, "opus.json")), `"`+req.MigrateApp+`"`)
					zero = append(zero, req.MigrateApp+" installed="+map[bool]string{true: "yes", false: "no"}[installed])
					return c.answer
				}
				return &privdv1.RunManageResponse{Output: "ok\n"}
			}
			e.privd.mu.Unlock()
			op := e.run(t, r, store.OpRemoveApp, func(s *store.Spec) {
				s.Apps = s.Apps[1:]
				s.DropAppData = []string{"hello"}
			})
			if !slices.Equal(zero, []string{"hello installed=yes"}) {
				t.Errorf("migrate zero calls %v, want one for hello while installed", zero)
			}
			p := e.project(t, "live")
			if c.wantFail {
				if op.State != store.OpFailed || !strings.Contains(op.Error, c.wantMsg) || len(p.Spec.DropAppData) != 0 || p.Spec.App("hello") == nil || !isDir(filepath.Join(l.Code, "hello")) || p.Status.Phase != store.PhaseReady {
					t.Errorf("op %s %q, drop %v, hello in spec %v, phase %s", op.State, op.Error, p.Spec.DropAppData, p.Spec.App("hello") != nil, p.Status.Phase)
				}
				return
			}
			mustSucceed(t, op)
			if msg := stepMessage(op, "data"); !strings.Contains(msg, c.wantMsg) {
				t.Errorf("data step: %q, want %q", msg, c.wantMsg)
			}
			if len(p.Spec.DropAppData) != 0 || isDir(filepath.Join(l.Code, "hello")) || p.Status.Apps["hello"].ResolvedCommit != "" {
				t.Errorf("after the drop: DropAppData %v, status %+v", p.Spec.DropAppData, p.Status.Apps)
			}
			// A later run does not drop anything again.
			zero = nil
			mustSucceed(t, e.run(t, r, store.OpReconcile, func(*store.Spec) {}))
			if len(zero) != 0 {
				t.Errorf("a later run dropped again: %v", zero)
			}
		})
	}
}

// TestSettingsReachTheHost: settings become opus.json data, ServerAlias
// names and certificate names; only a change of host names changes the
// vhost (and so reloads Apache).
func TestSettingsReachTheHost(t *testing.T) {
	e, r, l, _ := liveEnv(t)
	inert := "\"; import os #\nInclude /etc/shadow"
	op := e.run(t, r, store.OpUpdateSettings, func(s *store.Spec) {
		s.Settings = store.Settings{Debug: true, Env: map[string]string{"GREETING": inert}}
	})
	mustSucceed(t, op)
	if msg := stepMessage(op, "reload"); !strings.Contains(msg, "no graceful restart") {
		t.Errorf("debug/env change: reload %q, want no graceful restart", msg)
	}
	var oj struct {
		Debug        bool              `json:"debug"`
		AllowedHosts []string          `json:"allowed_hosts"`
		Origins      []string          `json:"csrf_trusted_origins"`
		Env          map[string]string `json:"env"`
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(l.Code, layout.PackageName, "opus.json"))), &oj); err != nil {
		t.Fatal(err)
	}
	if !oj.Debug || oj.Env["GREETING"] != inert {
		t.Errorf("opus.json = %+v", oj)
	}

	op = e.run(t, r, store.OpUpdateSettings, func(s *store.Spec) { s.Settings.Hosts = []string{"www.example.com"} })
	mustSucceed(t, op)
	if msg := stepMessage(op, "reload"); !strings.Contains(msg, "graceful restart (master pid") {
		t.Errorf("hosts change: reload %q, want a graceful restart", msg)
	}
	e.privd.mu.Lock()
	site := e.privd.sites["live"]
	e.privd.mu.Unlock()
	if !slices.Equal(site.GetAliases(), []string{"www.example.com"}) {
		t.Errorf("InstallSite aliases = %v", site.GetAliases())
	}
	leaf, err := cert.Check(site.GetCertificatePem(), site.GetKeyPem(), time.Now(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.SameNames(leaf.DNSNames, []string{"live" + testSuffix, "www.example.com"}) {
		t.Errorf("certificate names %v", leaf.DNSNames)
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(l.Code, layout.PackageName, "opus.json"))), &oj); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(oj.AllowedHosts, "www.example.com") || !slices.Contains(oj.Origins, "https://www.example.com:8443") {
		t.Errorf("opus.json hosts %v origins %v", oj.AllowedHosts, oj.Origins)
	}

	// Without the alias again: the certificate is made for the one name.
	mustSucceed(t, e.run(t, r, store.OpUpdateSettings, func(s *store.Spec) { s.Settings.Hosts = nil }))
	e.privd.mu.Lock()
	site = e.privd.sites["live"]
	e.privd.mu.Unlock()
	leaf, err = cert.Check(site.GetCertificatePem(), site.GetKeyPem(), time.Now(), 2)
	if err != nil || len(site.GetAliases()) != 0 || !cert.SameNames(leaf.DNSNames, []string{"live" + testSuffix}) {
		t.Errorf("after unset: aliases %v, names %v (%v)", site.GetAliases(), leaf.DNSNames, err)
	}
}

// TestInterruptedRunIsUndone: opusd stops in the middle of an update (after
// the new code was swapped in, before the run ended). The next start first
// puts the last good version back from the undo journal, so when the
// update then fails it restores that version, not the half-applied one.
func TestInterruptedRunIsUndone(t *testing.T) {
	e, r, l, failMigrate := liveEnv(t)
	ch := make(chan struct{})
	e.privd.mu.Lock()
	e.privd.block["SecureTree"] = ch
	e.privd.mu.Unlock()
	id := e.change(t, "live", store.OpUpdateApp, func(s *store.Spec) {
		s.App("shop").Git.Ref = "v2"
		s.Settings.Debug = true
	})
	r.Kick("live")
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(e.privd.callList()[len(e.privd.callList())-1:], "SecureTree live") {
		if time.Now().After(deadline) {
			t.Fatalf("the run never reached SecureTree: %v", e.privd.callList())
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r.Stop(ctx)
	if got := readFile(t, filepath.Join(l.Code, "shop", "views.py")); got != "# v2\n" {
		t.Fatalf("interrupted run: shop/views.py = %q, want v2 half-applied", got)
	}
	if _, err := os.Stat(filepath.Join(l.Code, journalFile)); err != nil {
		t.Fatalf("no undo journal after the interrupted run: %v", err)
	}
	e.privd.mu.Lock()
	delete(e.privd.block, "SecureTree")
	e.privd.mu.Unlock()

	failMigrate.Store(true)
	e.start(t, 1)
	op := e.wait(t, id)
	if op.State != store.OpFailed || !strings.Contains(op.Error, "opus-unit-migration-boom") {
		t.Fatalf("resumed op %s %q", op.State, op.Error)
	}
	if msg := stepMessage(op, "recover"); !strings.Contains(msg, "put back the previous version") {
		t.Errorf("recover step: %q", msg)
	}
	if got := readFile(t, filepath.Join(l.Code, "shop", "views.py")); got != "# v1\n" {
		t.Errorf("after the failed resumed run: shop/views.py = %q, want v1", got)
	}
	if strings.Contains(readFile(t, filepath.Join(l.Code, layout.PackageName, "opus.json")), `"debug": true`) {
		t.Errorf("opus.json kept the interrupted run's settings")
	}
	if p := e.project(t, "live"); p.Spec.App("shop").Git.Ref != "v1" || p.Spec.Settings.Debug || p.Status.Phase != store.PhaseReady || p.Status.LastFailure == nil {
		t.Errorf("after the failed resumed run: shop at %q, debug %v, status %+v", p.Spec.App("shop").Git.Ref, p.Spec.Settings.Debug, p.Status)
	}
	noScratch(t, l.Code)
}

// TestMovingBranchReResolved: a branch is resolved again on every run, so
// updating an app to the branch it already follows deploys the branch's
// new commit.
func TestMovingBranchReResolved(t *testing.T) {
	e, r, l, _ := liveEnv(t)
	e.git.set(liveRepo, "main", fakeCommit{hash: hashV1, files: map[string]string{"__init__.py": "", "views.py": "# v1\n"}})
	mustSucceed(t, e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = "main" }))
	e.git.set(liveRepo, "main", fakeCommit{hash: hashV2, subject: "Second version", files: map[string]string{"__init__.py": "", "views.py": "# v2\n"}})
	op := e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = "main" })
	mustSucceed(t, op)
	if msg := stepMessage(op, "sources"); !strings.Contains(msg, "shop 111111111111 → 222222222222") {
		t.Errorf("sources: %q", msg)
	}
	if got := readFile(t, filepath.Join(l.Code, "shop", "views.py")); got != "# v2\n" {
		t.Errorf("shop/views.py = %q", got)
	}
	st := e.project(t, "live").Status.Apps["shop"]
	if n := len(st.Revisions); st.ResolvedCommit != hashV2 || n != 2 || st.Revisions[n-1].RequestedRef != "main" {
		t.Errorf("status %+v", st)
	}
	// The revision records its commit's subject, as the fetch gave it.
	if got := st.Revisions[len(st.Revisions)-1].Subject; got != "Second version" {
		t.Errorf("revision subject %q, want the commit's", got)
	}
}
