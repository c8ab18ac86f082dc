package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/cert/certtest"
	"github.com/opus-hosting/opus/internal/layout"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Upload digests the fake upload store knows.
var (
	digestHello   = "sha256:" + strings.Repeat("a", 64)
	digestHello2  = "sha256:" + strings.Repeat("b", 64)
	digestNoInit  = "sha256:" + strings.Repeat("c", 64)
	digestMissing = "sha256:" + strings.Repeat("d", 64)
)

var uploadTrees = map[string]map[string]string{
	digestHello:  {"__init__.py": "", "urls.py": "urlpatterns = []\n", "views.py": "# one\n"},
	digestHello2: {"__init__.py": "", "urls.py": "urlpatterns = []\n", "views.py": "# two\n"},
	digestNoInit: {"views.py": "# not a package\n"},
}

func writeFiles(dest string, files map[string]string) error {
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("destination %s exists", dest)
	}
	for name, content := range files {
		p := filepath.Join(dest, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return os.MkdirAll(dest, 0o755)
}

// uploaderUID uploaded every archive of uploadTrees.
const uploaderUID = 1000

// uploaded is an app source of uploaderUID's archive digest.
func uploaded(digest string) *store.UploadSource {
	return uploadedBy(uploaderUID, digest)
}

func uploadedBy(uid uint32, digest string) *store.UploadSource {
	return &store.UploadSource{Digest: digest, UploaderUID: &uid}
}

// fakeUploads extracts the trees of uploadTrees, uploaderUID's uploads:
// like the real store, it has nothing under any other uid.
type fakeUploads struct{}

func (fakeUploads) Extract(_ context.Context, uid uint32, digest, dest string) error {
	files, ok := uploadTrees[digest]
	if !ok || uid != uploaderUID {
		return fmt.Errorf("archive %s is not stored; upload it again", digest)
	}
	return writeFiles(dest, files)
}

// fakeCommit is what a ref of a fake repository resolves to.
type fakeCommit struct {
	hash, subject string
	files         map[string]string
}

// fakeGit serves repos[url][ref] and counts fetches.
type fakeGit struct {
	mu      sync.Mutex
	repos   map[string]map[string]fakeCommit
	fetches int
}

func (g *fakeGit) set(url, ref string, c fakeCommit) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.repos[url] == nil {
		g.repos[url] = map[string]fakeCommit{}
	}
	g.repos[url][ref] = c
}

func (g *fakeGit) Fetch(_ context.Context, url, ref string, allowLocal bool, dest string) (source.Commit, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fetches++
	c, ok := g.repos[url][ref]
	if !ok {
		return source.Commit{}, fmt.Errorf("git fetch %s: ref %q not found", url, ref)
	}
	return source.Commit{Hash: c.hash, Subject: c.subject}, writeFiles(dest, c.files)
}

// createSpec records a project with spec as the service does.
func (e *env) createSpec(t *testing.T, name string, spec store.Spec) string {
	t.Helper()
	var id string
	err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		p := &store.Project{Name: name, OwnerUID: 1000, Generation: 1, Spec: spec, Status: store.Status{Phase: store.PhasePending}}
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

// change applies fn to the spec, bumps the generation and records an
// operation, as the service does.
func (e *env) change(t *testing.T, name string, kind store.OpKind, fn func(*store.Spec)) string {
	t.Helper()
	var id string
	err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		p, err := tx.Project(name)
		if err != nil {
			return err
		}
		fn(&p.Spec)
		p.Generation++
		if err := tx.PutProject(p); err != nil {
			return err
		}
		op, err := tx.NewOperation(p, kind, 1000)
		id = op.ID
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) project(t *testing.T, name string) *store.Project {
	t.Helper()
	p, err := e.st.GetProject(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustSucceed(t *testing.T, op *store.Operation) {
	t.Helper()
	if op.State != store.OpSucceeded {
		t.Fatalf("operation %s: %s %q\nsteps: %s", op.Kind, op.State, op.Error, stepNames(op))
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSourcesLifecycle follows two apps through add, redeploy without
// change, a new git version and removal.
func TestSourcesLifecycle(t *testing.T) {
	e := newEnv(t)
	const repo = "https://git.example.com/shop.git"
	e.git.set(repo, "v1", fakeCommit{hash: strings.Repeat("1", 40), files: map[string]string{"__init__.py": "", "views.py": "# v1\n"}})
	e.git.set(repo, "v2", fakeCommit{hash: strings.Repeat("2", 40), files: map[string]string{"__init__.py": "", "views.py": "# v2\n", "urls.py": "urlpatterns = []\n"}})
	r := e.start(t, 1)
	l := layout.For(e.base, "shopsite")
	id := e.createSpec(t, "shopsite", store.Spec{Apps: []store.AppSpec{
		{Name: "hello", Upload: uploaded(digestHello), ByUID: 1000},
		{Name: "shop", Git: &store.GitSource{URL: repo, Ref: "v1"}, ByUID: 1001},
	}})
	r.Kick("shopsite")
	mustSucceed(t, e.wait(t, id))

	if got := readFile(t, filepath.Join(l.Code, "shop", "views.py")); got != "# v1\n" {
		t.Errorf("shop/views.py = %q", got)
	}
	var oj struct {
		InstalledApps []string `json:"installed_apps"`
		URLApps       []string `json:"url_apps"`
		AllowedHosts  []string `json:"allowed_hosts"`
		Origins       []string `json:"csrf_trusted_origins"`
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(l.Code, layout.PackageName, "opus.json"))), &oj); err != nil {
		t.Fatal(err)
	}
	if strings.Join(oj.InstalledApps, ",") != "hello,shop" || strings.Join(oj.URLApps, ",") != "hello" ||
		strings.Join(oj.AllowedHosts, ",") != "shopsite"+testSuffix ||
		strings.Join(oj.Origins, ",") != "http://shopsite"+testSuffix+":8080,https://shopsite"+testSuffix+":8443" {
		t.Errorf("opus.json = %+v", oj)
	}
	p := e.project(t, "shopsite")
	if st := p.Status.Apps["shop"]; st.ResolvedCommit != strings.Repeat("1", 40) || len(st.Revisions) != 1 ||
		st.Revisions[0].RequestedRef != "v1" || st.Revisions[0].ByUID != 1001 || st.Revisions[0].Time.IsZero() {
		t.Errorf("shop status = %+v", st)
	}
	if st := p.Status.Apps["hello"]; st.ResolvedCommit != digestHello || len(st.Revisions) != 1 {
		t.Errorf("hello status = %+v", st)
	}
	secret := readFile(t, filepath.Join(l.Secrets, "secrets.json"))

	steps := []struct {
		name        string
		change      func(*store.Spec)
		wantSources string // in the sources step's message
		wantReload  string // in the reload step's message
		revisions   map[string]int
		dirs        map[string]bool
		shopViews   string
	}{
		{
			name:        "nothing changed",
			change:      func(*store.Spec) {},
			wantSources: "hello unchanged (aaaaaaaaaaaa); shop unchanged at 111111111111",
			// A new generation restarts the project's daemon even when
			// nothing was rewritten: a run cut short after swapping code
			// in would otherwise leave the old code running.
			wantReload: "front unchanged: no graceful restart; touched wsgi.py",
			revisions:  map[string]int{"hello": 1, "shop": 1},
			dirs:       map[string]bool{"hello": true, "shop": true},
			shopViews:  "# v1\n",
		},
		{
			name:        "git app to v2",
			change:      func(s *store.Spec) { s.App("shop").Git.Ref = "v2" },
			wantSources: "shop 111111111111 → 222222222222",
			wantReload:  "touched wsgi.py",
			revisions:   map[string]int{"hello": 1, "shop": 2},
			dirs:        map[string]bool{"hello": true, "shop": true},
			shopViews:   "# v2\n",
		},
		{
			name:        "upload replaced",
			change:      func(s *store.Spec) { s.App("hello").Upload.Digest = digestHello2 },
			wantSources: "hello aaaaaaaaaaaa → bbbbbbbbbbbb",
			wantReload:  "touched wsgi.py",
			revisions:   map[string]int{"hello": 2, "shop": 2},
			dirs:        map[string]bool{"hello": true, "shop": true},
			shopViews:   "# v2\n",
		},
		{
			name:        "app removed",
			change:      func(s *store.Spec) { s.Apps = s.Apps[1:] },
			wantSources: "removed hello",
			wantReload:  "touched wsgi.py",
			revisions:   map[string]int{"shop": 2},
			dirs:        map[string]bool{"hello": false, "shop": true},
			shopViews:   "# v2\n",
		},
	}
	for _, c := range steps {
		t.Run(c.name, func(t *testing.T) {
			op := e.wait(t, func() string {
				id := e.change(t, "shopsite", store.OpUpdateApp, c.change)
				r.Kick("shopsite")
				return id
			}())
			mustSucceed(t, op)
			if msg := stepMessage(op, "sources"); !strings.Contains(msg, c.wantSources) {
				t.Errorf("sources: %q, want it to contain %q", msg, c.wantSources)
			}
			if msg := stepMessage(op, "reload"); !strings.Contains(msg, c.wantReload) {
				t.Errorf("reload: %q, want it to contain %q", msg, c.wantReload)
			}
			p := e.project(t, "shopsite")
			if len(p.Status.Apps) != len(c.revisions) {
				t.Errorf("status apps = %v", p.Status.Apps)
			}
			for app, n := range c.revisions {
				if got := len(p.Status.Apps[app].Revisions); got != n {
					t.Errorf("%s has %d revisions, want %d", app, got, n)
				}
			}
			for d, want := range c.dirs {
				if got := isDir(filepath.Join(l.Code, d)); got != want {
					t.Errorf("code/%s exists: %v, want %v", d, got, want)
				}
			}
			if got := readFile(t, filepath.Join(l.Code, "shop", "views.py")); got != c.shopViews {
				t.Errorf("shop/views.py = %q, want %q", got, c.shopViews)
			}
			ents, _ := os.ReadDir(l.Code)
			for _, ent := range ents {
				if strings.HasPrefix(ent.Name(), ".") {
					t.Errorf("scratch entry %s left in code/", ent.Name())
				}
			}
			if readFile(t, filepath.Join(l.Secrets, "secrets.json")) != secret {
				t.Errorf("the secret key changed on redeploy")
			}
		})
	}
}

// TestBadSourceKeepsDeployedApp: a source that is not an app, or cannot
// be had, fails with a message naming the problem and leaves the deployed
// app as it was.
func TestBadSourceKeepsDeployedApp(t *testing.T) {
	cases := []struct {
		name   string
		source store.AppSpec
		want   string
	}{
		{"no __init__.py", store.AppSpec{Name: "hello", Upload: uploaded(digestNoInit)}, "no __init__.py at the top level"},
		{"archive gone", store.AppSpec{Name: "hello", Upload: uploaded(digestMissing)}, "is not stored"},
		{"another uploader's digest", store.AppSpec{Name: "hello", Upload: uploadedBy(uploaderUID+1, digestHello2)}, "is not stored"},
		{"recorded before uploads had owners", store.AppSpec{Name: "hello", Upload: &store.UploadSource{Digest: digestHello2}}, "upload the directory again"},
		{"unknown ref", store.AppSpec{Name: "hello", Git: &store.GitSource{URL: "https://git.example.com/x.git", Ref: "nope"}}, `ref "nope" not found`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			r := e.start(t, 1)
			l := layout.For(e.base, "keep")
			id := e.createSpec(t, "keep", store.Spec{Apps: []store.AppSpec{{Name: "hello", Upload: uploaded(digestHello)}}})
			r.Kick("keep")
			mustSucceed(t, e.wait(t, id))
			id = e.change(t, "keep", store.OpUpdateApp, func(s *store.Spec) { s.Apps[0] = c.source })
			r.Kick("keep")
			op := e.wait(t, id)
			if op.State != store.OpFailed || !strings.Contains(op.Error, "step sources") || !strings.Contains(op.Error, c.want) {
				t.Fatalf("op %s %q, want a sources failure with %q", op.State, op.Error, c.want)
			}
			if got := readFile(t, filepath.Join(l.Code, "hello", "views.py")); got != "# one\n" {
				t.Errorf("deployed app changed: views.py = %q", got)
			}
			p := e.project(t, "keep")
			if p.Status.Phase != store.PhaseReady || p.Status.LastFailure == nil || !strings.Contains(p.Status.LastFailure.Error, c.want) || p.Status.Apps["hello"].ResolvedCommit != digestHello {
				t.Errorf("status = %+v", p.Status)
			}
			if a := p.Spec.App("hello"); a == nil || a.Upload == nil || a.Upload.Digest != digestHello {
				t.Errorf("spec after the failed update: %+v, want the deployed upload back", p.Spec.Apps)
			}
			ents, _ := os.ReadDir(l.Code)
			for _, ent := range ents {
				if strings.HasPrefix(ent.Name(), ".") {
					t.Errorf("scratch entry %s left in code/", ent.Name())
				}
			}
		})
	}
}

// TestManageFailureCarriesPythonError: a failing manage.py command fails
// the run with the tail of its output, bounded, in the operation's error
// and the project's last error.
func TestManageFailureCarriesPythonError(t *testing.T) {
	var out strings.Builder
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&out, "  File \"line-%d.py\", line %d, in <module>\n", i, i)
	}
	out.WriteString("RuntimeError: opus-unit-boom\n")
	cases := []struct {
		name    string
		spec    store.Spec
		failed  privdv1.ManageCommand
		step    string
		command string
	}{
		{"check", store.Spec{}, privdv1.ManageCommand_MANAGE_COMMAND_CHECK, "migrate", "manage.py check failed"},
		{"migrate", store.Spec{}, privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE, "migrate", "manage.py migrate failed"},
		{"createsuperuser", store.Spec{Superuser: &store.Superuser{Username: "admin", Password: "pw-123456"}},
			privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER, "superuser", "manage.py createsuperuser failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.privd.manage = func(req *privdv1.RunManageRequest) *privdv1.RunManageResponse {
				for _, cmd := range req.Commands {
					if cmd == c.failed {
						return &privdv1.RunManageResponse{Output: out.String(), FailedCommand: c.failed, ExitCode: 1}
					}
				}
				return &privdv1.RunManageResponse{Output: "ok\n"}
			}
			r := e.start(t, 1)
			id := e.createSpec(t, "boom", c.spec)
			r.Kick("boom")
			op := e.wait(t, id)
			if op.State != store.OpFailed || !strings.Contains(op.Error, "step "+c.step) || !strings.Contains(op.Error, c.command) ||
				!strings.Contains(op.Error, "RuntimeError: opus-unit-boom") || !strings.Contains(op.Error, "line-199.py") {
				t.Fatalf("op %s %q", op.State, op.Error)
			}
			if strings.Contains(op.Error, "line-100.py") || len(op.Error) > outputTotalMax+500 {
				t.Errorf("error is not bounded to the last lines (%d bytes)", len(op.Error))
			}
			// A failed first deploy leaves no project: the error lives in
			// the operation.
			if _, err := e.st.GetProject(context.Background(), "boom"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("project after its failed first deploy: %v", err)
			}
			if strings.Contains(strings.Join(e.privd.callList(), ","), "InstallSite") {
				t.Errorf("a vhost was installed after %s failed", c.name)
			}
			// One Python process for the deploy, even when its last
			// command (createsuperuser) fails: the superuser step reports
			// that failure without running it again.
			if n := len(e.privd.manageReqs); n != 1 {
				t.Errorf("%d RunManage calls, want 1", n)
			}
		})
	}
}

// TestSuperuserOnceAndPasswordForgotten: the superuser is created once,
// its password leaves the stored spec without a new generation.
func TestSuperuserOnceAndPasswordForgotten(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	id := e.createSpec(t, "su", store.Spec{Admin: true, Superuser: &store.Superuser{Username: "admin", Email: "a@example.com", Password: "s3cret-pass"}})
	r.Kick("su")
	op0 := e.wait(t, id)
	mustSucceed(t, op0)
	p := e.project(t, "su")
	if p.Spec.Superuser == nil || p.Spec.Superuser.Password != "" || p.Spec.Superuser.Username != "admin" || p.Status.Superuser != "admin" {
		t.Fatalf("after deploy: spec %+v status superuser %q", p.Spec.Superuser, p.Status.Superuser)
	}
	if p.Generation != 1 || p.Status.ObservedGeneration != 1 {
		t.Fatalf("generation %d observed %d, want 1 1", p.Generation, p.Status.ObservedGeneration)
	}
	var created []*privdv1.RunManageRequest
	for _, req := range e.privd.manageReqs {
		if slices.Contains(req.Commands, privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER) {
			created = append(created, req)
		}
	}
	if len(created) != 1 || created[0].SuperuserUsername != "admin" || created[0].SuperuserEmail != "a@example.com" || created[0].SuperuserPassword != "s3cret-pass" {
		t.Fatalf("createsuperuser requests: %v", created)
	}
	// One Python process for the whole deploy: createsuperuser rides in
	// the migrate step's call, after the commands it depends on.
	if want := []privdv1.ManageCommand{privdv1.ManageCommand_MANAGE_COMMAND_CHECK, privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE,
		privdv1.ManageCommand_MANAGE_COMMAND_COLLECTSTATIC, privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER}; len(e.privd.manageReqs) != 1 || !slices.Equal(created[0].Commands, want) {
		t.Errorf("first deploy: %d RunManage calls, createsuperuser call %v; want one call %v", len(e.privd.manageReqs), created[0].Commands, want)
	}
	if msg := stepMessage(op0, "superuser"); msg != "superuser admin created" {
		t.Errorf("first run: superuser step %q", msg)
	}
	id = e.change(t, "su", store.OpAddApp, func(*store.Spec) {})
	r.Kick("su")
	op := e.wait(t, id)
	mustSucceed(t, op)
	if msg := stepMessage(op, "superuser"); msg != "superuser admin exists" {
		t.Errorf("second run: superuser step %q", msg)
	}
	n := 0
	for _, req := range e.privd.manageReqs {
		if slices.Contains(req.Commands, privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("createsuperuser ran %d times", n)
	}
}

// TestCertificates: a self-signed certificate is made once and kept (so a
// redeploy does not reload Apache), renewed when it nears expiry, and
// replaced by the owner's when one is set.
func TestCertificates(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	host := "tls" + testSuffix
	id := e.createSpec(t, "tls", store.Spec{})
	r.Kick("tls")
	mustSucceed(t, e.wait(t, id))
	crtPath, keyPath := certPaths(e.base, "tls")
	first := readFile(t, crtPath)
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kept key: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(TLSDir(e.base)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("tls dir: %v %v", fi.Mode(), err)
	}
	p := e.project(t, "tls")
	if p.Status.Certificate.Kind != CertSelfSigned || p.Status.Certificate.NotAfter.Before(time.Now().Add(300*24*time.Hour)) {
		t.Fatalf("certificate status %+v", p.Status.Certificate)
	}
	if got := string(e.privd.sites["tls"].CertificatePem); got != first {
		t.Fatalf("installed certificate is not the kept one")
	}

	reloads := func() int {
		n := 0
		for _, c := range e.privd.callList() {
			if c == "ReloadApache" {
				n++
			}
		}
		return n
	}
	rerun := func(kind store.OpKind, fn func(*store.Spec)) *store.Operation {
		id := e.change(t, "tls", kind, fn)
		r.Kick("tls")
		op := e.wait(t, id)
		mustSucceed(t, op)
		return op
	}

	// Redeploy: same certificate, vhost unchanged, no graceful restart.
	before := reloads()
	op := rerun(store.OpAddApp, func(*store.Spec) {})
	if readFile(t, crtPath) != first || reloads() != before || !strings.Contains(stepMessage(op, "certificate"), "kept") {
		t.Errorf("redeploy replaced the certificate or reloaded Apache (%d → %d reloads)", before, reloads())
	}

	// Nearing expiry: renewed, and the new vhost makes Apache reload.
	crt, key, err := cert.SelfSigned([]string{host}, time.Now(), 10*24*time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(crtPath, crt, 0o600)
	os.WriteFile(keyPath, key, 0o600)
	before = reloads()
	op = rerun(store.OpAddApp, func(*store.Spec) {})
	if readFile(t, crtPath) == string(crt) || !strings.Contains(stepMessage(op, "certificate"), "renewed") || reloads() != before+1 {
		t.Errorf("expiring certificate: %q, %d → %d reloads", stepMessage(op, "certificate"), before, reloads())
	}

	// The owner's certificate wins.
	ocrt, okey, err := cert.SelfSigned([]string{host}, time.Now(), 90*24*time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	op = rerun(store.OpSetCertificate, func(s *store.Spec) {
		s.Certificate = &store.OwnerCertificate{CertificatePEM: ocrt, KeyPEM: okey}
	})
	if got := e.privd.sites["tls"]; string(got.CertificatePem) != string(ocrt) || string(got.KeyPem) != string(okey) {
		t.Errorf("owner's certificate not installed")
	}
	if p := e.project(t, "tls"); p.Status.Certificate.Kind != CertOwner || !strings.Contains(stepMessage(op, "reload"), "graceful") {
		t.Errorf("status %+v, reload %q", p.Status.Certificate, stepMessage(op, "reload"))
	}

	// An owner's certificate below the host's TLS security level (one
	// recorded before the level was raised) never reaches privd: the
	// step fails and the installed site stays as it was.
	wcrt, wkey, err := certtest.WeakRSA(host)
	if err != nil {
		t.Fatal(err)
	}
	installs := len(e.privd.callList())
	id = e.change(t, "tls", store.OpSetCertificate, func(s *store.Spec) {
		s.Certificate = &store.OwnerCertificate{CertificatePEM: wcrt, KeyPEM: wkey}
	})
	r.Kick("tls")
	if op := e.wait(t, id); op.State != store.OpFailed || !strings.Contains(op.Error, "RSA 1024-bit key") || !strings.Contains(op.Error, "security level 2") {
		t.Errorf("weak owner certificate: op %s %q", op.State, op.Error)
	}
	for _, c := range e.privd.callList()[installs:] {
		if c == "InstallSite" || c == "ReloadApache" {
			t.Errorf("privd was asked to %s with a certificate below the level", c)
		}
	}
	if got := e.privd.sites["tls"]; string(got.CertificatePem) != string(ocrt) {
		t.Errorf("installed certificate changed")
	}

	// Destroy forgets opusd's copy.
	del := e.mutate(t, "tls", store.OpDelete)
	r.Kick("tls")
	mustSucceed(t, e.wait(t, del))
	for _, p := range []string{crtPath, keyPath} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived the teardown: %v", p, err)
		}
	}
}

// TestReloadRolledBack: when privd answers that Apache did not survive
// the graceful restart with a project's new site and put the previous one
// back, that project's change fails saying so and is undone (its previous
// site installed and loaded again), while a project whose site was not
// rolled back is deployed.
func TestReloadRolledBack(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 2)
	for _, name := range []string{"bad", "good"} {
		id := e.createSpec(t, name, store.Spec{})
		r.Kick(name)
		mustSucceed(t, e.wait(t, id))
	}
	e.privd.mu.Lock()
	e.privd.rolledBack = map[string]string{"bad": "Apache could not load this project's site: SSL Library Error: ee key too small"}
	e.privd.onReload = func() {
		// privd put the previous site back: the next reload loads it.
		e.privd.mu.Lock()
		e.privd.rolledBack = nil
		e.privd.mu.Unlock()
	}
	e.privd.mu.Unlock()
	bad := e.change(t, "bad", store.OpUpdateSettings, func(s *store.Spec) { s.Settings.Hosts = []string{"www.bad.test"} })
	r.Kick("bad")
	op := e.wait(t, bad)
	if op.State != store.OpFailed || !strings.Contains(op.Error, "the new site was rolled back, so the project still serves its previous one: Apache could not load this project's site: SSL Library Error: ee key too small") {
		t.Errorf("rolled back project: op %s %q", op.State, op.Error)
	}
	if p := e.project(t, "bad"); p.Status.ReloadPending || p.Status.Phase != store.PhaseReady || len(p.Spec.Settings.Hosts) != 0 || len(e.privd.sites["bad"].GetAliases()) != 0 {
		t.Errorf("after the rolled back change: status %+v, hosts %v, installed aliases %v", p.Status, p.Spec.Settings.Hosts, e.privd.sites["bad"].GetAliases())
	}
	good := e.change(t, "good", store.OpUpdateSettings, func(s *store.Spec) { s.Settings.Hosts = []string{"www.good.test"} })
	r.Kick("good")
	mustSucceed(t, e.wait(t, good))
}

// TestHealth: the check waits for the project's own vhost, fails with
// the last answer and the project's log lines, and starts Apache when
// nothing listens.
func TestHealth(t *testing.T) {
	t.Run("unhealthy", func(t *testing.T) {
		e := newEnv(t)
		e.status.Store(http.StatusInternalServerError)
		e.privd.logLines = []string{"mod_wsgi (pid=1): Exception occurred processing WSGI script", "ImportError: no module named opus_unit"}
		r := e.start(t, 1)
		id := e.createSpec(t, "sick", store.Spec{})
		r.Kick("sick")
		op := e.wait(t, id)
		if op.State != store.OpFailed || !strings.Contains(op.Error, "step health") || !strings.Contains(op.Error, "HTTP 500") ||
			!strings.Contains(op.Error, "ImportError: no module named opus_unit") || !strings.Contains(op.Error, "http://sick"+testSuffix+":8080/") {
			t.Fatalf("op %s %q", op.State, op.Error)
		}
		if _, ok := e.hosts.Load("sick" + testSuffix); !ok {
			t.Errorf("the health check did not ask for the project's host name")
		}
	})
	t.Run("catch-all 404 is not healthy", func(t *testing.T) {
		e := newEnv(t)
		e.tweak = func(o *Options) { o.ServerSuffix = ".elsewhere.test" }
		r := e.start(t, 1)
		id := e.createSpec(t, "lost", store.Spec{})
		r.Kick("lost")
		if op := e.wait(t, id); op.State != store.OpFailed || !strings.Contains(op.Error, "HTTP 404") {
			t.Fatalf("op %s %q", op.State, op.Error)
		}
	})
	t.Run("apache down is started", func(t *testing.T) {
		e := newEnv(t)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close() // nothing listens: "Apache" is down
		var once sync.Once
		e.privd.onReload = func() {
			once.Do(func() {
				l, err := net.Listen("tcp", addr)
				if err != nil {
					t.Errorf("listen: %v", err)
					return
				}
				srv := &http.Server{Handler: http.HandlerFunc(e.serveHTTP)}
				go srv.Serve(l)
				t.Cleanup(func() { srv.Close() })
			})
		}
		e.tweak = func(o *Options) { o.HealthAddr = addr }
		r := e.start(t, 1)
		id := e.createSpec(t, "cold", store.Spec{})
		r.Kick("cold")
		op := e.wait(t, id)
		mustSucceed(t, op)
		if !strings.Contains(stepMessage(op, "health"), "answered 200") {
			t.Errorf("health: %q", stepMessage(op, "health"))
		}
		// Apache up and nothing changed: the next run reloads nothing.
		n := len(e.privd.callList())
		id = e.change(t, "cold", store.OpAddApp, func(*store.Spec) {})
		r.Kick("cold")
		mustSucceed(t, e.wait(t, id))
		for _, c := range e.privd.callList()[n:] {
			if c == "ReloadApache" {
				t.Errorf("Apache reloaded on a redeploy that changed no vhost")
			}
		}
	})
}

func TestTailLines(t *testing.T) {
	cases := []struct {
		name, in string
		n        int
		want     string
	}{
		{"short", "a\nb\n", 30, "a\nb"},
		{"last n", "1\n2\n3\n4\n", 2, "3\n4"},
		{"long line cut", strings.Repeat("x", outputLineMax+10), 5, strings.Repeat("x", outputLineMax) + "…"},
		{"empty", "", 5, ""},
	}
	for _, c := range cases {
		if got := tailLines(c.in, c.n); got != c.want {
			t.Errorf("%s: tailLines = %q, want %q", c.name, got, c.want)
		}
	}
	long := strings.Repeat(strings.Repeat("y", outputLineMax)+"\n", 30)
	if got := tailLines(long, 30); len(got) > outputTotalMax+len("…") {
		t.Errorf("total not bounded: %d bytes", len(got))
	}
}
