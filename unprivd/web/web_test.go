package web

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/pack"
	"github.com/opus-hosting/opus/internal/peercred"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/credential"
	"github.com/opus-hosting/opus/unprivd/service"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Two ordinary uids and an admin (root), as the service's table sees them.
const (
	uidA = 61001
	uidB = 61002
)

type admins map[uint32]bool

func (a admins) IsAdmin(uid uint32) bool { return a[uid] }

type noKick struct{}

func (noKick) Kick(string) {}

// privd answers TailLog only; the console's pages call nothing else of it.
// Each project's log starts with one line; tests append more (logs.add).
type privd struct {
	privdv1.PrivdClient
	logs *fakeLogs
}

// fakeLogs are the projects' error logs; a position is a line number.
type fakeLogs struct {
	mu    sync.Mutex
	lines map[string][]string
}

func (l *fakeLogs) of(project string) []string {
	if l.lines[project] == nil {
		l.lines[project] = []string{"[wsgi:error] " + project + " said hello"}
	}
	return l.lines[project]
}

// add appends lines to project's log.
func (l *fakeLogs) add(project string, lines ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines[project] = append(l.of(project), lines...)
}

func (p privd) TailLog(_ context.Context, in *privdv1.TailLogRequest, _ ...grpc.CallOption) (*privdv1.TailLogResponse, error) {
	p.logs.mu.Lock()
	defer p.logs.mu.Unlock()
	all := p.logs.of(in.Project)
	n := int(in.GetLines())
	if n == 0 {
		n = 100
	}
	var out []string
	if in.After == nil {
		out = all[max(0, len(all)-n):]
	} else {
		from := min(int(in.After.GetOffset()), len(all))
		out = all[from:min(len(all), from+n)]
	}
	next := len(all)
	if in.After != nil {
		next = int(in.After.GetOffset()) + len(out)
	}
	return &privdv1.TailLogResponse{Lines: slices.Clone(out), Next: &privdv1.LogPosition{Offset: int64(next)}, More: next < len(all)}, nil
}

// users is the rig's user database: uid → login name, changed by tests
// (userdel, a uid given to a new user).
type users struct {
	mu    sync.Mutex
	names map[uint32]string
}

func (u *users) name(uid uint32) (string, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if n, ok := u.names[uid]; ok {
		return n, nil
	}
	return "", fmt.Errorf("uid %d: %w", uid, store.ErrNoUser)
}

// set gives uid the login name name ("" deletes the user).
func (u *users) set(uid uint32, name string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if name == "" {
		delete(u.names, uid)
	} else {
		u.names[uid] = name
	}
}

// rig is a real service on a real gRPC server behind the console, over
// the in-process listener, with the console on a TLS test server.
type rig struct {
	logs    *fakeLogs
	st      *store.Store
	uploads *source.Store
	srv     *httptest.Server
	lis     *peercred.InProcess
	users   *users
	console *Console
}

func newRig(t *testing.T) *rig {
	t.Helper()
	u := &users{names: map[uint32]string{0: "root", uidA: "alice", uidB: "bob"}}
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "opusd.db"), store.Options{UserName: u.name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(testLog{t}, nil))
	r := &rig{st: st, lis: peercred.NewInProcess(), users: u, logs: &fakeLogs{lines: map[string][]string{}}}
	if r.uploads, err = source.NewStore(filepath.Join(t.TempDir(), "sources"), source.StoreOptions{Limits: testUploadLimits, Quota: testQuota}); err != nil {
		t.Fatal(err)
	}
	// The console keeps to the store's limits, as opusd wires it.
	c, err := New(Config{Listener: r.lis, Logger: log, Uploads: UploadLimits{MaxUpload: testUploadLimits.MaxCompressed,
		Tree: pack.Limits{MaxEntries: testUploadLimits.MaxEntries, MaxBytes: testUploadLimits.MaxUnpacked, MaxFile: testUploadLimits.MaxFile}}})
	if err != nil {
		t.Fatal(err)
	}
	r.console = c
	r.srv = httptest.NewTLSServer(c)
	t.Cleanup(r.srv.Close)
	t.Cleanup(func() { c.Close() })
	svc, err := service.New(service.Config{Store: st, Privd: privd{logs: r.logs}, Reconciler: noKick{}, Admins: admins{0: true},
		Uploads: r.uploads, MaxUpload: testUploadLimits.MaxCompressed,
		ServerSuffix: ".opus.test", HTTPPort: 8080, HTTPSPort: 8443, ConsoleURL: r.srv.URL, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(append(svc.ServerOptions(), grpc.Creds(peercred.Server()))...)
	svc.Register(g)
	go g.Serve(r.lis)
	t.Cleanup(g.Stop)
	return r
}

// as is an Opus client acting as uid, the way opusctl is on the socket.
func (r *rig) as(t *testing.T, uid uint32) opusv1.OpusClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///test",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return r.lis.DialAs(ctx, peercred.Cred{UID: uid})
		}), grpc.WithTransportCredentials(peercred.Client()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return opusv1.NewOpusClient(cc)
}

// browser is a cookie-keeping client that does not follow redirects.
func (r *rig) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	// srv.Client() is one shared client: copy it, each browser has its jar.
	c := *r.srv.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

type answer struct {
	code     int
	body     string
	location string
	header   http.Header
}

func do(t *testing.T, c *http.Client, method, u string, form url.Values) answer {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{code: res.StatusCode, body: string(b), location: res.Header.Get("Location"), header: res.Header}
}

// signIn gets a login link as uid and follows it in a new browser.
func (r *rig) signIn(t *testing.T, uid uint32) (*http.Client, string) {
	t.Helper()
	link, err := r.as(t, uid).CreateLoginLink(context.Background(), &opusv1.CreateLoginLinkRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link.GetUrl(), r.srv.URL+credential.LoginLinkPath+"?t=") {
		t.Fatalf("link %q does not point at the console %s", link.GetUrl(), r.srv.URL)
	}
	b := r.browser()
	a := do(t, b, "GET", link.GetUrl(), nil)
	if a.code != http.StatusSeeOther || a.location != "/" {
		t.Fatalf("login link: %d to %q: %.300s", a.code, a.location, a.body)
	}
	ck := a.header.Get("Set-Cookie")
	for _, want := range []string{sessionCookie + "=", "HttpOnly", "Secure", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(ck, want) {
			t.Errorf("session cookie %q lacks %s", ck, want)
		}
	}
	return b, link.GetUrl()
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token in %.300s", body)
	}
	return m[1]
}

func projectNames(t *testing.T, st *store.Store) []string {
	t.Helper()
	ps, err := st.ListProjects(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func TestConsoleFlow(t *testing.T) {
	r := newRig(t)
	a, link := r.signIn(t, uidA)

	// The link works once.
	if ans := do(t, r.browser(), "GET", link, nil); ans.code != http.StatusUnauthorized || ans.header.Get("Set-Cookie") == "" || strings.Contains(ans.header.Get("Set-Cookie"), sessionCookie) {
		t.Fatalf("used link again: %d, cookies %q", ans.code, ans.header.Get("Set-Cookie"))
	}

	home := do(t, a, "GET", r.srv.URL+"/", nil)
	if home.code != 200 || !strings.Contains(home.body, `id="no-projects"`) {
		t.Fatalf("home: %d %.300s", home.code, home.body)
	}
	// Every page: a CSP without inline script, and no inline script.
	if csp := home.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP %q", csp)
	}
	if home.header.Get("Referrer-Policy") != "same-origin" {
		t.Errorf("Referrer-Policy %q", home.header.Get("Referrer-Policy"))
	}
	csrf := csrfOf(t, home.body)

	// A form without (or with a wrong) CSRF token is refused; nothing made.
	for _, tok := range []string{"", "forged"} {
		ans := do(t, a, "POST", r.srv.URL+"/new", url.Values{"csrf": {tok}, "name": {"blog"}, "url0": {"https://example.com/blog.git"}})
		if ans.code != http.StatusForbidden {
			t.Fatalf("POST without CSRF token %q: %d", tok, ans.code)
		}
	}
	if ps := projectNames(t, r.st); len(ps) != 0 {
		t.Fatalf("refused forms created %v", ps)
	}

	// The API's error, next to the field it concerns; nothing made.
	bad := do(t, a, "POST", r.srv.URL+"/new", url.Values{"csrf": {csrf}, "name": {"Bad Name"}, "url0": {"https://example.com/blog.git"}})
	if bad.code != http.StatusUnprocessableEntity || !regexp.MustCompile(`id="name"[^>]*>\s*<span class="error field-error" id="error-name">project name `).MatchString(bad.body) {
		t.Fatalf("bad name: %d %.2000s", bad.code, bad.body)
	}
	badURL := do(t, a, "POST", r.srv.URL+"/new", url.Values{"csrf": {csrf}, "name": {"blog"}, "url1": {"ext::sh -c x"}, "app1": {"ext"}})
	if badURL.code != http.StatusUnprocessableEntity || !strings.Contains(badURL.body, "remote transport helper") {
		t.Fatalf("bad url: %d %.2000s", badURL.code, badURL.body)
	}
	if ps := projectNames(t, r.st); len(ps) != 0 {
		t.Fatalf("invalid forms created %v", ps)
	}

	// No apps must be asked for, as with opusctl create --empty.
	for _, form := range []url.Values{
		{"csrf": {csrf}, "name": {"bare"}},
		{"csrf": {csrf}, "name": {"bare"}, "url0": {" "}},
		{"csrf": {csrf}, "name": {"bare"}, "url0": {"https://example.com/me/shop.git"}, "empty": {"on"}},
	} {
		ans := do(t, a, "POST", r.srv.URL+"/new", form)
		if ans.code != http.StatusUnprocessableEntity || !regexp.MustCompile(`name="empty"[^>]*> No apps yet[^<]*</label>\s*<span class="error field-error" id="error-apps">[^<]*No apps yet`).MatchString(ans.body) {
			t.Fatalf("create form %v: %d %.3000s", form, ans.code, ans.body)
		}
	}
	if ps := projectNames(t, r.st); len(ps) != 0 {
		t.Fatalf("create forms without a choice about apps created %v", ps)
	}
	if ans := do(t, a, "POST", r.srv.URL+"/new", url.Values{"csrf": {csrf}, "name": {"bare"}, "empty": {"on"}}); ans.code != http.StatusSeeOther || !strings.HasPrefix(ans.location, "/ops/op-") {
		t.Fatalf("create with no apps yet: %d %q %.500s", ans.code, ans.location, ans.body)
	}
	if p, err := r.st.GetProject(context.Background(), "bare"); err != nil || len(p.Spec.Apps) != 0 {
		t.Fatalf("project made with no apps yet: %+v %v", p, err)
	}

	// Create through the form: owned by the signed-in uid.
	ans := do(t, a, "POST", r.srv.URL+"/new", url.Values{"csrf": {csrf}, "name": {"blog"}, "url0": {"https://example.com/me/shop.git"}, "ref0": {"v1"}, "admin": {"on"}})
	if ans.code != http.StatusSeeOther || !strings.HasPrefix(ans.location, "/ops/op-") {
		t.Fatalf("create: %d %q %.500s", ans.code, ans.location, ans.body)
	}
	p, err := r.st.GetProject(context.Background(), "blog")
	if err != nil || p.OwnerUID != uidA || !p.Spec.Admin || len(p.Spec.Apps) != 1 || p.Spec.Apps[0].Name != "shop" || p.Spec.Apps[0].Git.Ref != "v1" {
		t.Fatalf("created project %+v %v", p, err)
	}
	opPage := do(t, a, "GET", r.srv.URL+ans.location, nil)
	if opPage.code != 200 || !strings.Contains(opPage.body, `src="/static/console.js"`) || !strings.Contains(opPage.body, `<noscript><meta http-equiv="refresh"`) {
		t.Fatalf("operation page: %d %.1000s", opPage.code, opPage.body)
	}
	if regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]`).MatchString(opPage.body) {
		t.Fatal("inline script on the operation page")
	}

	// Live progress: the event stream sends the operation as it changes
	// and ends when it is final.
	opID := strings.TrimPrefix(ans.location, "/ops/")
	go func() {
		time.Sleep(200 * time.Millisecond)
		r.st.UpdateOperation(context.Background(), opID, func(op *store.Operation) error {
			op.State = store.OpSucceeded
			op.Steps = []store.Step{{Name: "user", State: store.StepDone}}
			return nil
		})
	}()
	ev := do(t, a, "GET", r.srv.URL+ans.location+"/events", nil)
	if ev.code != 200 || ev.header.Get("Content-Type") != "text/event-stream" || strings.Count(ev.body, "data: ") < 2 || !strings.Contains(ev.body, `"OPERATION_STATE_SUCCEEDED"`) {
		t.Fatalf("events: %d %q", ev.code, ev.body)
	}
	done := do(t, a, "GET", r.srv.URL+ans.location, nil)
	if !strings.Contains(done.body, `id="done"`) || !strings.Contains(done.body, "https://blog.opus.test:8443/") || strings.Contains(done.body, "console.js") {
		t.Fatalf("final operation page: %.2000s", done.body)
	}

	// A failed operation's error, a traceback under its exception line,
	// shows once (not again as the failed step's note) with its line
	// breaks, which the console's style keeps (pre-wrap).
	const exc = "ModuleNotFoundError: No module named 'notanapp'"
	failure := "manage.py check failed: " + exc + "\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    import notanapp"
	r.st.UpdateOperation(context.Background(), opID, func(op *store.Operation) error {
		op.State, op.Error = store.OpFailed, "step migrate: "+failure
		op.Steps = []store.Step{{Name: "user", State: store.StepDone, Message: "user exists"}, {Name: "migrate", State: store.StepFailed, Message: failure}}
		return nil
	})
	failed := do(t, a, "GET", r.srv.URL+ans.location, nil)
	if n := strings.Count(failed.body, "No module named"); n != 1 || !strings.Contains(failed.body, `<p class="error" id="op-error">step migrate: manage.py check failed: `+html.EscapeString(exc)+"\nTraceback") ||
		!strings.Contains(failed.body, "user exists") {
		t.Fatalf("failed operation page: the exception %d times, want once, in the error with its line breaks: %.3000s", n, failed.body)
	}
	if css := do(t, a, "GET", r.srv.URL+"/static/console.css", nil); !regexp.MustCompile(`\.error \{[^}]*white-space: pre-wrap`).MatchString(css.body) {
		t.Fatalf("console.css does not keep an error's line breaks: %.2000s", css.body)
	}

	// The project page: apps, logs, forms with the token.
	pp := do(t, a, "GET", r.srv.URL+"/projects/blog", nil)
	for _, want := range []string{"https://example.com/me/shop.git", "blog said hello", `action="/projects/blog/destroy"`, `name="csrf" value="` + csrf} {
		if pp.code != 200 || !strings.Contains(pp.body, want) {
			t.Fatalf("project page lacks %q: %d %.3000s", want, pp.code, pp.body)
		}
	}
	// Destroy needs the name typed; a wrong one changes nothing.
	wrong := do(t, a, "POST", r.srv.URL+"/projects/blog/destroy", url.Values{"csrf": {csrf}, "confirm": {"blo"}})
	if wrong.code != http.StatusUnprocessableEntity || !regexp.MustCompile(`</h1>\s*<div id="messages" aria-live="polite">\s*<p class="error" id="alert" role="alert">Nothing was destroyed: see the error next to the name to type\. <a href="#destroy-confirm" autofocus>`).MatchString(wrong.body) ||
		!regexp.MustCompile(`<input name="confirm" id="destroy-confirm" autocomplete="off" aria-invalid="true" aria-describedby="error-destroy-confirm" value="blo"></label><span class="error field-error" id="error-destroy-confirm">&#34;blo&#34; is not the project&#39;s name: type &#34;blog&#34; to confirm</span>`).MatchString(wrong.body) {
		t.Fatalf("destroy unconfirmed: %d %.300s", wrong.code, wrong.body)
	}
	if p, _ := r.st.GetProject(context.Background(), "blog"); p.Deleting {
		t.Fatal("unconfirmed destroy marked the project")
	}
	// Update the app's ref through the form.
	up := do(t, a, "POST", r.srv.URL+"/projects/blog/apps/shop/update", url.Values{"csrf": {csrf}, "url": {"https://example.com/me/shop.git"}, "ref": {"v2"}})
	if up.code != http.StatusSeeOther {
		t.Fatalf("update: %d %.500s", up.code, up.body)
	}
	if p, _ := r.st.GetProject(context.Background(), "blog"); p.Spec.Apps[0].Git.Ref != "v2" {
		t.Fatalf("update did not change the ref: %+v", p.Spec.Apps[0])
	}

	// Roll back with no earlier revision: the API's refusal is shown at
	// the top of the page, under the title, and nothing changes.
	rb := do(t, a, "POST", r.srv.URL+"/projects/blog/apps/shop/rollback", url.Values{"csrf": {csrf}})
	if rb.code < 400 || !regexp.MustCompile(`</h1>\s*<div id="messages" aria-live="polite">\s*<p class="error" id="alert" role="alert">[^<]*no deployed revision`).MatchString(rb.body) {
		t.Fatalf("rollback without history: %d %.4000s", rb.code, rb.body)
	}
	if p, _ := r.st.GetProject(context.Background(), "blog"); p.Spec.Apps[0].Git.Ref != "v2" {
		t.Fatalf("refused rollback changed the app: %+v", p.Spec.Apps[0])
	}

	// Settings: applied through UpdateSettings; its refusals land next
	// to the field they concern, and change nothing.
	set := do(t, a, "POST", r.srv.URL+"/projects/blog/settings", url.Values{"csrf": {csrf}, "debug": {"on"}, "hosts": {"www.example.org"}, "env": {"GREETING=hi"}})
	if set.code != http.StatusSeeOther {
		t.Fatalf("settings: %d %.3000s", set.code, set.body)
	}
	got, err := r.as(t, uidA).GetProject(context.Background(), &opusv1.GetProjectRequest{Name: "blog"})
	if err != nil || !got.GetSettings().GetDebug() || got.GetSettings().GetEnv()["GREETING"] != "hi" || len(got.GetSettings().GetHosts()) != 1 {
		t.Fatalf("settings after the form: %v %v", got.GetSettings(), err)
	}
	badEnv := do(t, a, "POST", r.srv.URL+"/projects/blog/settings", url.Values{"csrf": {csrf}, "env": {"lower=x"}})
	if badEnv.code != http.StatusUnprocessableEntity || !regexp.MustCompile(`</textarea></label><span class="error field-error" id="error-settings-env">[^<]*environment variable`).MatchString(badEnv.body) {
		t.Fatalf("bad env: %d %.4000s", badEnv.code, badEnv.body)
	}
	if again, _ := r.as(t, uidA).GetProject(context.Background(), &opusv1.GetProjectRequest{Name: "blog"}); !again.GetSettings().GetDebug() || again.GetGeneration() != got.GetGeneration() {
		t.Fatalf("a refused settings form changed the project: %v", again.GetSettings())
	}

	// The same settings again, once deployed: no operation, back to the
	// project page with a notice.
	if _, err := r.st.UpdateProject(context.Background(), "blog", func(p *store.Project) error {
		p.Status.Phase, p.Status.ObservedGeneration = store.PhaseReady, p.Generation
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	opsBefore, _ := r.st.ListOperations(context.Background(), "blog", 0)
	same := do(t, a, "POST", r.srv.URL+"/projects/blog/settings", url.Values{"csrf": {csrf}, "debug": {"on"}, "hosts": {"www.example.org"}, "env": {"GREETING=hi"}})
	if same.code != http.StatusSeeOther || same.location != "/projects/blog?notice=unchanged" {
		t.Fatalf("unchanged settings: %d %q %.2000s", same.code, same.location, same.body)
	}
	opsAfter, _ := r.st.ListOperations(context.Background(), "blog", 0)
	if again, _ := r.st.GetProject(context.Background(), "blog"); again.Generation != got.GetGeneration() || len(opsAfter) != len(opsBefore) {
		t.Fatalf("unchanged settings: generation %d -> %d, operations %d -> %d", got.GetGeneration(), again.Generation, len(opsBefore), len(opsAfter))
	}
	if np := do(t, a, "GET", r.srv.URL+same.location, nil); np.code != 200 || !strings.Contains(np.body, `<p class="notice" id="notice">Nothing to change`) {
		t.Fatalf("project page after unchanged settings: %d %.3000s", np.code, np.body)
	}
	if np := do(t, a, "GET", r.srv.URL+"/projects/blog?notice=%3Cscript%3E", nil); strings.Contains(np.body, `id="notice"`) {
		t.Fatal("an unknown notice word was shown")
	}

	// A change that failed and was undone: the page says so, names the
	// operation (linked) and shows the error, escaped.
	if _, err := r.st.UpdateProject(context.Background(), "blog", func(p *store.Project) error {
		p.Status.LastFailure = &store.Failure{Operation: "op-0123abcd", Error: "step migrate: <RuntimeError> boom"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if np := do(t, a, "GET", r.srv.URL+"/projects/blog", nil); np.code != 200 ||
		!strings.Contains(np.body, `Last change failed, nothing of it was applied: step migrate: &lt;RuntimeError&gt; boom (operation <a href="/ops/op-0123abcd">op-0123abcd</a>)`) {
		t.Fatalf("project page after a failed change: %d %.3000s", np.code, np.body)
	}

	// An app's revisions are counted in words: "1 revision", "2 revisions".
	for n, want := range map[int]string{1: "<caption>1 revision, newest first</caption>", 2: "<caption>2 revisions, newest first</caption>"} {
		if _, err := r.st.UpdateProject(context.Background(), "blog", func(p *store.Project) error {
			st := p.Status.Apps["shop"]
			st.Revisions = nil
			for i := range n {
				st.Revisions = append(st.Revisions, store.Revision{URL: "https://example.com/me/shop.git", Resolved: fmt.Sprintf("%040x", i+1), Number: i + 1, ByUID: uidA})
			}
			if p.Status.Apps == nil { // never deployed: the stub privd runs nothing
				p.Status.Apps = map[string]store.AppStatus{}
			}
			p.Status.Apps["shop"] = st
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if np := do(t, a, "GET", r.srv.URL+"/projects/blog", nil); np.code != 200 || !strings.Contains(np.body, want) {
			t.Fatalf("project page with %d revision(s) lacks %q: %d %.3000s", n, want, np.code, np.body)
		}
	}

	// B sees none of A's projects, and A's project is not found for B.
	b, _ := r.signIn(t, uidB)
	bl := do(t, b, "GET", r.srv.URL+"/", nil)
	if bl.code != 200 || strings.Contains(bl.body, "blog") {
		t.Fatalf("B's list: %d %.500s", bl.code, bl.body)
	}
	bp := do(t, b, "GET", r.srv.URL+"/projects/blog", nil)
	if bp.code != http.StatusNotFound || !strings.Contains(bp.body, `project &#34;blog&#34; not found`) {
		t.Fatalf("B on A's project: %d %.500s", bp.code, bp.body)
	}
	bcsrf := csrfOf(t, bl.body)
	bd := do(t, b, "POST", r.srv.URL+"/projects/blog/destroy", url.Values{"csrf": {bcsrf}, "confirm": {"blog"}})
	if bd.code != http.StatusNotFound {
		t.Fatalf("B destroying A's project: %d", bd.code)
	}
	if bo := do(t, b, "GET", r.srv.URL+ans.location, nil); bo.code != http.StatusNotFound {
		t.Fatalf("B on A's operation: %d", bo.code)
	}
	if p, _ := r.st.GetProject(context.Background(), "blog"); p.Deleting {
		t.Fatal("B's destroy marked A's project")
	}
	// An admin sees every project, with its owner, by the name recorded
	// with it (61001 has no user on the host running the test).
	adm, _ := r.signIn(t, 0)
	if al := do(t, adm, "GET", r.srv.URL+"/", nil); al.code != 200 || !strings.Contains(al.body, `href="/projects/blog"`) || !strings.Contains(al.body, "<td>alice</td>") {
		t.Fatalf("admin's list: %d %.2000s", al.code, al.body)
	}

	// A's token is not B's.
	if x := do(t, b, "POST", r.srv.URL+"/new", url.Values{"csrf": {csrf}, "name": {"bproj"}}); x.code != http.StatusForbidden {
		t.Fatalf("B with A's CSRF token: %d", x.code)
	}

	// Sign-out ends the session on the server: the browser drops its
	// cookie, and the cookie kept and sent again opens nothing.
	u, _ := url.Parse(r.srv.URL)
	var kept *http.Cookie
	for _, ck := range a.Jar.Cookies(u) {
		if ck.Name == sessionCookie {
			kept = ck
		}
	}
	if kept == nil {
		t.Fatal("no session cookie before sign-out")
	}
	out := do(t, a, "POST", r.srv.URL+"/logout", url.Values{"csrf": {csrf}})
	if out.code != http.StatusSeeOther {
		t.Fatalf("logout: %d", out.code)
	}
	if x := do(t, a, "GET", r.srv.URL+"/", nil); x.code != http.StatusSeeOther || x.location != "/login" {
		t.Fatalf("after logout: %d %q", x.code, x.location)
	}
	replay := r.browser()
	replay.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: kept.Value}})
	if x := do(t, replay, "GET", r.srv.URL+"/", nil); x.code != http.StatusSeeOther || x.location != "/login" {
		t.Fatalf("the signed-out session's cookie sent again: %d %q", x.code, x.location)
	}
}

// messagesOf is the project page's message area, right under its title;
// it fails the test when the page has none there.
func messagesOf(t *testing.T, body string) string {
	t.Helper()
	m := regexp.MustCompile(`</h1>\s*<div id="messages" aria-live="polite">((?s).*?)</div>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no message area under the title: %.3000s", body)
	}
	return m[1]
}

// Test data of formsRig's project "blog".
const (
	commit1 = "1111111111111111111111111111111111111111"
	commit2 = "2222222222222222222222222222222222222222"
	digest  = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// formsRig is a rig with A signed in (the client and its CSRF token) and
// A's project "blog" deployed: app shop from git at v1 then v2, app polls
// uploaded with opusctl.
func formsRig(t *testing.T) (*rig, *http.Client, string) {
	r := newRig(t)
	ctx := context.Background()
	a, _ := r.signIn(t, uidA)
	csrf := csrfOf(t, do(t, a, "GET", r.srv.URL+"/", nil).body)
	if ans := do(t, a, "POST", r.srv.URL+"/new", url.Values{"csrf": {csrf}, "name": {"blog"}, "url0": {"https://example.com/me/shop.git"}, "ref0": {"v1"}}); ans.code != http.StatusSeeOther {
		t.Fatalf("create: %d %.2000s", ans.code, ans.body)
	}
	if _, err := r.st.UpdateProject(ctx, "blog", func(p *store.Project) error {
		p.Spec.Apps[0].Git.Ref = "v2"
		uploader := uint32(uidA)
		p.Spec.Apps = append(p.Spec.Apps, store.AppSpec{Name: "polls", ByUID: uidA, Upload: &store.UploadSource{Digest: digest, Origin: "/home/alice/polls", UploaderUID: &uploader}})
		p.Status.Apps = map[string]store.AppStatus{
			"shop": {RequestedRef: "v2", ResolvedCommit: commit2, Revisions: []store.Revision{
				{URL: "https://example.com/me/shop.git", RequestedRef: "v1", Resolved: commit1, Number: 1, ByUID: uidA},
				{URL: "https://example.com/me/shop.git", RequestedRef: "v2", Resolved: commit2, Number: 2, ByUID: uidA}}},
			"polls": {RequestedRef: digest, ResolvedCommit: digest, Revisions: []store.Revision{{Resolved: digest, Number: 1, ByUID: uidA, UploaderUID: &uploader, Origin: "/home/alice/polls"}}},
		}
		p.Status.Phase, p.Status.ObservedGeneration = store.PhaseReady, p.Generation
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return r, a, csrf
}

// TestUploadedAppShowsHowToUpdate: an uploaded app shows what it runs
// and how to update it, not an empty Git URL box whose Update cannot work.
func TestUploadedAppShowsHowToUpdate(t *testing.T) {
	r, a, _ := formsRig(t)
	pp := do(t, a, "GET", r.srv.URL+"/projects/blog", nil)
	if pp.code != 200 || !regexp.MustCompile(`<p class="upload" id="upload-polls">Runs an upload from <code>/home/alice/polls</code> \(<code>sha256:0123456789ab</code>\)[^<]*<code>opusctl apps update blog polls DIR</code>`).MatchString(pp.body) {
		t.Fatalf("uploaded app: %d %.4000s", pp.code, pp.body)
	}
	if strings.Contains(pp.body, `action="/projects/blog/apps/polls/update"`) || !strings.Contains(pp.body, `action="/projects/blog/apps/shop/update"`) {
		t.Fatalf("update forms: want shop's (git) alone: %.4000s", pp.body)
	}
	// And it is updated by an upload, here.
	if !strings.Contains(pp.body, `<form method="post" action="/projects/blog/apps/polls/upload" enctype="multipart/form-data"`) || strings.Contains(pp.body, "the console cannot upload") {
		t.Fatalf("no upload form to update polls: %.4000s", pp.body)
	}
}

// TestRemoveAppConfirmed: the project page's Remove opens a confirmation
// page naming the app and what is lost; only the app's name typed there
// removes it, and a wrong one says so at the top of the page.
func TestRemoveAppConfirmed(t *testing.T) {
	r, a, csrf := formsRig(t)
	ctx := context.Background()
	opsOf := func() int {
		t.Helper()
		ops, err := r.st.ListOperations(ctx, "blog", 0)
		if err != nil {
			t.Fatal(err)
		}
		return len(ops)
	}
	appNames := func() []string {
		t.Helper()
		p, err := r.st.GetProject(ctx, "blog")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range p.Spec.Apps {
			out = append(out, a.Name)
		}
		return out
	}

	before := opsOf()
	// The old one-click form (no name typed), or a wrong name: nothing
	// removed, and the page says so at its top.
	for _, confirm := range []string{"", "shp", "polls"} {
		x := do(t, a, "POST", r.srv.URL+"/projects/blog/apps/shop/remove", url.Values{"csrf": {csrf}, "drop_data": {"on"}, "confirm": {confirm}})
		if x.code != http.StatusUnprocessableEntity || !strings.Contains(messagesOf(t, x.body), `<p class="error" id="alert" role="alert">Nothing was removed: type the app&#39;s name, &#34;shop&#34;, to confirm.`) ||
			!strings.Contains(x.body, `id="drop_data" checked`) {
			t.Fatalf("remove confirmed with %q: %d %.3000s", confirm, x.code, x.body)
		}
	}
	if got := appNames(); len(got) != 2 || opsOf() != before {
		t.Fatalf("unconfirmed removes changed the project: apps %v, operations %d -> %d", got, before, opsOf())
	}
	// Remove asks first: a GET, which changes nothing.
	pp := do(t, a, "GET", r.srv.URL+"/projects/blog", nil)
	if !strings.Contains(pp.body, `<form method="get" action="/projects/blog/apps/shop/remove"`) {
		t.Fatalf("the project page's Remove does not ask first: %.4000s", pp.body)
	}
	cp := do(t, a, "GET", r.srv.URL+"/projects/blog/apps/shop/remove?drop_data=on", nil)
	for _, want := range []string{"<h1>Remove app shop from", "2 recorded revisions", "lost for good", `name="csrf" value="` + csrf, `id="drop_data" checked`, `name="confirm"`, `id="remove-confirm">Remove shop</button>`} {
		if cp.code != 200 || !strings.Contains(cp.body, want) {
			t.Fatalf("remove confirmation page lacks %q: %d %.3000s", want, cp.code, cp.body)
		}
	}
	// Another user: not found, confirmed or not; an unknown app too.
	b, _ := r.signIn(t, uidB)
	bcsrf := csrfOf(t, do(t, b, "GET", r.srv.URL+"/", nil).body)
	if x := do(t, b, "GET", r.srv.URL+"/projects/blog/apps/shop/remove", nil); x.code != http.StatusNotFound || strings.Contains(x.body, "shop") {
		t.Fatalf("B's remove page of A's app: %d %.1000s", x.code, x.body)
	}
	if x := do(t, b, "POST", r.srv.URL+"/projects/blog/apps/shop/remove", url.Values{"csrf": {bcsrf}, "confirm": {"shop"}}); x.code != http.StatusNotFound {
		t.Fatalf("B's confirmed remove of A's app: %d %.1000s", x.code, x.body)
	}
	if x := do(t, a, "GET", r.srv.URL+"/projects/blog/apps/nope/remove", nil); x.code != http.StatusNotFound {
		t.Fatalf("remove page of an unknown app: %d", x.code)
	}
	if got := appNames(); len(got) != 2 || opsOf() != before {
		t.Fatalf("refused removes changed the project: apps %v", got)
	}
	// Confirmed: removed, with its tables, and on to the operation.
	ok := do(t, a, "POST", r.srv.URL+"/projects/blog/apps/shop/remove", url.Values{"csrf": {csrf}, "drop_data": {"on"}, "confirm": {"shop"}})
	if ok.code != http.StatusSeeOther || !strings.HasPrefix(ok.location, "/ops/op-") {
		t.Fatalf("confirmed remove: %d %q %.2000s", ok.code, ok.location, ok.body)
	}
	if p, _ := r.st.GetProject(ctx, "blog"); len(p.Spec.Apps) != 1 || p.Spec.Apps[0].Name != "polls" || len(p.Spec.DropAppData) != 1 || p.Spec.DropAppData[0] != "shop" {
		t.Fatalf("after the confirmed remove: apps %v, drop %v", appNames(), p.Spec.DropAppData)
	}
}

// TestSettingsFormKeepsInput: a refused settings form shows what was
// typed, the error next to its field, and at the top a line that points
// there; nothing changes.
func TestSettingsFormKeepsInput(t *testing.T) {
	r, a, csrf := formsRig(t)
	ctx := context.Background()

	gen := func() int64 {
		p, err := r.st.GetProject(ctx, "blog")
		if err != nil {
			t.Fatal(err)
		}
		return p.Generation
	}
	g0 := gen()
	for _, tc := range []struct {
		env, hosts, field string
	}{
		{"GREETING=hi\nlower=x", "www.example.org", "env"},
		{"GREETING=hi\nnovalue", "www.example.org", "env"},
		{"GREETING=hi", "www.example.org bad_host!", "hosts"},
		// The API's rule, as opusctl's hosts=: names are comma-separated.
		{"GREETING=hi", "www.example.org www.example.net", "hosts"},
		{"GREETING=hi\nBAD-NAME=1", "www.example.org", "env"},
	} {
		x := do(t, a, "POST", r.srv.URL+"/projects/blog/settings", url.Values{"csrf": {csrf}, "debug": {"on"}, "hosts": {tc.hosts}, "env": {tc.env}})
		if x.code != http.StatusUnprocessableEntity {
			t.Fatalf("settings %+v: %d %.3000s", tc, x.code, x.body)
		}
		for _, want := range []string{`id="settings-debug" checked`, `id="settings-admin" >`, `id="settings-hosts" value="` + html.EscapeString(tc.hosts) + `"`,
			`id="settings-env" rows="3" cols="50">` + html.EscapeString(tc.env) + `</textarea>`} {
			if !strings.Contains(x.body, want) {
				t.Fatalf("settings %+v: the form lost what was typed, no %q: %.5000s", tc, want, x.body)
			}
		}
		next := map[string]string{"env": `</textarea></label><span class="error field-error" id="error-settings-env">`, "hosts": `id="settings-hosts" value="[^"]*" size="50"></label><span class="error field-error" id="error-settings-hosts">`}[tc.field]
		if !regexp.MustCompile(next).MatchString(x.body) || !strings.Contains(messagesOf(t, x.body), `<a href="#settings-`+tc.field+`" autofocus>`) {
			t.Fatalf("settings %+v: the error is not next to %s with a pointer at the top: %.5000s", tc, tc.field, x.body)
		}
		if strings.Count(x.body, `class="error field-error"`) != 1 {
			t.Fatalf("settings %+v: want one field error: %.5000s", tc, x.body)
		}
	}
	if gen() != g0 {
		t.Fatal("refused settings changed the project")
	}
	// The project page after no refused form shows the project's values.
	if pp := do(t, a, "GET", r.srv.URL+"/projects/blog", nil); !strings.Contains(pp.body, `id="settings-hosts" value=""`) || strings.Contains(pp.body, `id="alert"`) {
		t.Fatalf("project page: %.4000s", pp.body)
	}
	// The list as opusctl's hosts= takes it, spaces after commas allowed.
	ok := do(t, a, "POST", r.srv.URL+"/projects/blog/settings", url.Values{"csrf": {csrf}, "hosts": {"www.example.org, WWW.example.net"}})
	if p, err := r.st.GetProject(ctx, "blog"); ok.code != http.StatusSeeOther || err != nil || strings.Join(p.Spec.Settings.Hosts, " ") != "www.example.org www.example.net" {
		t.Fatalf("hosts a, b: %d %.2000s", ok.code, ok.body)
	}

}

// TestMessagesAtTop: a refused form's error shows next to its field
// and at the top of the page, under the title, with a link to it; a
// notice shows there too.
func TestMessagesAtTop(t *testing.T) {
	r, a, csrf := formsRig(t)
	// Adding an app refused: the error next to the URL, a pointer at the
	// top, the typed values kept in the add form (not in another form).
	x := do(t, a, "POST", r.srv.URL+"/projects/blog/apps", url.Values{"csrf": {csrf}, "url": {"ext::sh -c x"}, "ref": {"main"}, "app": {"news"}})
	if x.code != http.StatusUnprocessableEntity || !regexp.MustCompile(`id="add-url" value="ext::sh -c x"[^>]*></label><span class="error field-error" id="error-add-url">[^<]*remote transport helper`).MatchString(x.body) ||
		!strings.Contains(messagesOf(t, x.body), `Adding the app was not applied`) || !strings.Contains(x.body, `id="add-ref" value="main"`) ||
		!strings.Contains(x.body, `id="update-shop-url" value="https://example.com/me/shop.git"`) {
		t.Fatalf("add refused: %d %.5000s", x.code, x.body)
	}

	if x.code == http.StatusUnprocessableEntity && !strings.Contains(messagesOf(t, x.body), `<a href="#add-url" autofocus>`) {
		t.Fatalf("add refused: no link to the field at the top: %.3000s", x.body)
	}
	same := do(t, a, "POST", r.srv.URL+"/projects/blog/settings", url.Values{"csrf": {csrf}})
	if same.code != http.StatusSeeOther || same.location != "/projects/blog?notice=unchanged" {
		t.Fatalf("unchanged settings: %d %q", same.code, same.location)
	}
	if np := do(t, a, "GET", r.srv.URL+same.location, nil); !strings.Contains(messagesOf(t, np.body), `<p class="notice" id="notice">Nothing to change`) {
		t.Fatalf("the notice is not at the top: %.3000s", np.body)
	}
}

// TestRefAfterRollback: after a rollback through the form, once
// deployed, the Ref box holds what the revision rolled back to was asked
// as (v1), not the commit the rollback asked for.
func TestRefAfterRollback(t *testing.T) {
	r, a, csrf := formsRig(t)
	ctx := context.Background()
	// Roll back through the form, then deployed as the reconciler records
	// it: the Ref box holds v1 (what revision 1 was asked as), not the
	// commit the rollback asked for.
	refBox := func(want string) bool {
		pp := do(t, a, "GET", r.srv.URL+"/projects/blog", nil)
		return regexp.MustCompile(`action="/projects/blog/apps/shop/update"(?s:.{0,400}?)<input name="ref" id="[^"]+" value="` + want + `"`).MatchString(pp.body)
	}
	if !refBox("v2") {
		t.Fatal("Ref box before the rollback is not v2")
	}
	if rb := do(t, a, "POST", r.srv.URL+"/projects/blog/apps/shop/rollback", url.Values{"csrf": {csrf}}); rb.code != http.StatusSeeOther {
		t.Fatalf("rollback: %d %.3000s", rb.code, rb.body)
	}
	if _, err := r.st.UpdateProject(ctx, "blog", func(p *store.Project) error {
		if p.Spec.Apps[0].Git.Ref != commit1 || p.Spec.Apps[0].RollbackTo != 1 {
			return fmt.Errorf("rollback asked for %+v", p.Spec.Apps[0])
		}
		st := p.Status.Apps["shop"]
		st.RequestedRef, st.ResolvedCommit = commit1, commit1
		st.Revisions = append(st.Revisions, store.Revision{URL: "https://example.com/me/shop.git", RequestedRef: commit1, Resolved: commit1, Number: 3, RollbackOf: 1, ByUID: uidA})
		p.Status.Apps["shop"] = st
		p.Status.ObservedGeneration = p.Generation
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !refBox("v1") {
		t.Fatalf("Ref box after the rollback is not v1: %.4000s", do(t, a, "GET", r.srv.URL+"/projects/blog", nil).body)
	}

}

func TestSessionCookieRefused(t *testing.T) {
	r := newRig(t)
	a, _ := r.signIn(t, uidA)
	u, _ := url.Parse(r.srv.URL)
	var real string
	for _, ck := range a.Jar.Cookies(u) {
		if ck.Name == sessionCookie {
			real = ck.Value
		}
	}
	if real == "" {
		t.Fatal("no session cookie kept")
	}
	// Expire A's session in the store.
	if err := r.st.Update(context.Background(), func(tx *store.Tx) error {
		s, err := tx.ConsoleSession(credential.TokenKey(real))
		if err != nil {
			return err
		}
		s.ExpireTime = tx.Now().Add(-time.Second)
		return tx.PutConsoleSession(credential.TokenKey(real), *s)
	}); err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]string{"expired": real, "garbage": "garbage", "long": strings.Repeat("x", 5000)} {
		t.Run(name, func(t *testing.T) {
			c := r.browser()
			c.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: value}})
			if x := do(t, c, "GET", r.srv.URL+"/", nil); x.code != http.StatusSeeOther || x.location != "/login" || strings.Contains(x.body, "projects") {
				t.Fatalf("GET /: %d %q", x.code, x.location)
			}
			if x := do(t, c, "GET", r.srv.URL+"/ops/op-00000000000000000000000000000000/events", nil); x.code != http.StatusUnauthorized {
				t.Fatalf("events: %d", x.code)
			}
			if x := do(t, c, "POST", r.srv.URL+"/new", url.Values{"csrf": {"x"}, "name": {"zz"}}); x.code != http.StatusUnauthorized {
				t.Fatalf("POST: %d", x.code)
			}
		})
	}
	if ps := projectNames(t, r.st); len(ps) != 0 {
		t.Fatalf("refused sessions created %v", ps)
	}
}

func TestPasswordSignInAndRateLimit(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if _, err := r.as(t, 0).SetConsolePassword(ctx, &opusv1.SetConsolePasswordRequest{Password: "root console password"}); err != nil {
		t.Fatal(err)
	}
	try := func(c *http.Client, user, pw string, withToken bool) answer {
		t.Helper()
		pg := do(t, c, "GET", r.srv.URL+"/login", nil)
		tok := csrfOf(t, pg.body)
		if !withToken {
			tok = ""
		}
		return do(t, c, "POST", r.srv.URL+"/login", url.Values{"csrf": {tok}, "user": {user}, "password": {pw}})
	}
	c := r.browser()
	if x := try(c, "root", "root console password", false); x.code != http.StatusForbidden {
		t.Fatalf("sign-in without the form's token: %d", x.code)
	}
	if x := try(c, "root", "root console password", true); x.code != http.StatusSeeOther || x.location != "/" {
		t.Fatalf("sign-in: %d %.300s", x.code, x.body)
	}
	if x := do(t, c, "GET", r.srv.URL+"/", nil); x.code != 200 {
		t.Fatalf("after sign-in: %d", x.code)
	}
	// Unknown users and wrong passwords fail alike; five failures for a
	// name lock it for a while, even with the right password.
	c2 := r.browser()
	if x := try(c2, "no-such-user-here", "whatever password", true); x.code != http.StatusUnauthorized {
		t.Fatalf("unknown user: %d", x.code)
	}
	for i := range 5 {
		if x := try(c2, "root", "wrong password", true); x.code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d", i, x.code)
		}
	}
	if x := try(c2, "root", "root console password", true); x.code != http.StatusTooManyRequests {
		t.Fatalf("right password after 5 failures: %d", x.code)
	}
	// A disabled account cannot sign in, and its open session ends.
	if _, err := r.as(t, 0).DisableConsoleAccount(ctx, &opusv1.DisableConsoleAccountRequest{Uid: 0}); err != nil {
		t.Fatal(err)
	}
	if x := do(t, c, "GET", r.srv.URL+"/", nil); x.code != http.StatusSeeOther {
		t.Fatalf("disabled account's session: %d", x.code)
	}
}

// apiError is the service's InvalidArgument about field (its path in a
// BadRequest detail), or without a detail when field is "".
func apiError(t testing.TB, field, msg string) error {
	st := status.New(codes.InvalidArgument, msg)
	if field != "" {
		var err error
		st, err = st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: msg}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return st.Err()
}

func TestFieldOf(t *testing.T) {
	m := map[string]string{"name": "name", "apps[0]": "app2", "app": "url", "app.source.git.ref": "ref"}
	for _, tc := range []struct {
		err   error
		field string
	}{
		{apiError(t, "name", "project name: too long"), "name"},
		{apiError(t, "apps[0].source.git.url", "git url: bad"), "app2"},
		{apiError(t, "apps[1].name", "app name: bad"), ""},
		{apiError(t, "app.source.git.ref", "git ref: bad"), "ref"},
		{apiError(t, "app.name", "app name: bad"), "url"},
		// The message alone names no form field.
		{apiError(t, "", "app.name: bad"), ""},
		{status.Error(codes.AlreadyExists, `project "x" already exists`), ""},
		{errors.New("plain"), ""},
	} {
		if f, msg := fieldOf(tc.err, m); f != tc.field || msg == "" {
			t.Errorf("fieldOf(%v) = %q, %q; want %q", tc.err, f, msg, tc.field)
		}
	}
}

func FuzzFieldOf(f *testing.F) {
	f.Add("name")
	f.Add("apps[12].source.git.url")
	f.Add(": : :")
	m := map[string]string{"name": "name", "apps[0]": "app0", "": "all"}
	f.Fuzz(func(t *testing.T, path string) {
		field, _ := fieldOf(apiError(t, path, "x"), m)
		if _, ok := m[field]; !ok && field != "" && field != "all" {
			t.Fatalf("field %q not from the map", field)
		}
	})
}

func TestGitAppSpec(t *testing.T) {
	for _, tc := range []struct{ url, name, want string }{
		{"https://example.com/me/shop.git", "", "shop"},
		{"https://example.com/me/shop/", "", "shop"},
		{" https://example.com/me/shop.git ", "store", "store"},
		{"git@example.com:me/blog.git", "", "blog"},
		{"git@example.com:blog.git", "", "blog"},
		{"ssh://git@example.com:2222/blog.git", "", "blog"},
	} {
		if got := gitAppSpec(tc.url, "v1", tc.name); got.GetName() != tc.want || got.GetSource().GetGit().GetUrl() != strings.TrimSpace(tc.url) {
			t.Errorf("gitAppSpec(%q, %q) = %v", tc.url, tc.name, got)
		}
	}
}

// testLog sends the console's and service's log to the test's log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestListenMakesAndKeepsCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "web")
	now := time.Now()
	l, base, err := Listen("127.0.0.1:0", dir, now)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, port, _ := net.SplitHostPort(l.Addr().String()); base != "https://127.0.0.1:"+port {
		t.Fatalf("base URL %q", base)
	}
	fi, err := os.Stat(filepath.Join(dir, "key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	first, _ := os.ReadFile(filepath.Join(dir, "cert.pem"))
	l, _, err = Listen("127.0.0.1:0", dir, now)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	again, _ := os.ReadFile(filepath.Join(dir, "cert.pem"))
	if string(first) != string(again) {
		t.Fatal("a valid certificate was replaced")
	}
	// Near expiry: made again.
	l, _, err = Listen("127.0.0.1:0", dir, now.Add(certValidity-certRenew/2))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if renewed, _ := os.ReadFile(filepath.Join(dir, "cert.pem")); string(renewed) == string(first) {
		t.Fatal("a certificate near expiry was kept")
	}
	for _, bad := range []string{"127.0.0.1", "nonsense"} {
		if _, _, err := Listen(bad, dir, now); err == nil {
			t.Errorf("Listen(%q) worked", bad)
		}
	}
}

// TestConnsBounded: one connection per uid, reused, and the least
// recently used one closed beyond maxConns.
func TestConnsBounded(t *testing.T) {
	r := newRig(t)
	c := newConns(r.lis)
	defer c.closeAll()
	for uid := uint32(1); uid <= maxConns; uid++ {
		if _, err := c.client(uid); err != nil {
			t.Fatal(err)
		}
	}
	first := c.m[1].cc
	time.Sleep(time.Millisecond)
	if _, err := c.client(1); err != nil || c.m[1].cc != first {
		t.Fatalf("uid 1's connection not reused: %v", err)
	}
	if _, err := c.client(maxConns + 1); err != nil {
		t.Fatal(err)
	}
	if len(c.m) != maxConns || c.m[2] != nil || c.m[1] == nil {
		t.Fatalf("%d connections kept; uid 2 (least recent) kept: %v; uid 1 kept: %v", len(c.m), c.m[2] != nil, c.m[1] != nil)
	}
	// A new connection works through the real server.
	cl, _ := c.client(maxConns + 1)
	if _, err := cl.ListProjects(context.Background(), &opusv1.ListProjectsRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestRunningRef(t *testing.T) {
	rev := func(n, of int64, ref string) *opusv1.Revision {
		return &opusv1.Revision{Number: n, RollbackOf: of, RequestedRef: ref}
	}
	for _, tc := range []struct {
		name string
		app  *opusv1.App
		want string
	}{
		{"never deployed", &opusv1.App{RequestedRef: "main"}, "main"},
		{"running", &opusv1.App{RequestedRef: "v3", RunningRevision: 2, Revisions: []*opusv1.Revision{rev(1, 0, "v1"), rev(2, 0, "v2")}}, "v2"},
		{"rolled back", &opusv1.App{RequestedRef: commit1, RunningRevision: 3, Revisions: []*opusv1.Revision{rev(1, 0, "v1"), rev(2, 0, "v2"), rev(3, 1, commit1)}}, "v1"},
		{"rolled back twice", &opusv1.App{RunningRevision: 4, Revisions: []*opusv1.Revision{rev(1, 0, "v1"), rev(2, 0, "v2"), rev(3, 1, commit1), rev(4, 3, commit1)}}, "v1"},
		{"target forgotten", &opusv1.App{RunningRevision: 9, Revisions: []*opusv1.Revision{rev(8, 0, "v8"), rev(9, 2, commit2)}}, commit2},
		{"a record pointing forward", &opusv1.App{RunningRevision: 2, Revisions: []*opusv1.Revision{rev(2, 3, "x"), rev(3, 2, "y")}}, "x"},
	} {
		if got := runningRef(tc.app); got != tc.want {
			t.Errorf("%s: runningRef = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestOwnerShownByRecordedName: the console names a project's owner by
// the name recorded with it, which holds on every host sharing the
// state; its uid, one of the host it was made through, has no user here.
func TestOwnerShownByRecordedName(t *testing.T) {
	r := newRig(t)
	const elsewhere = 4000000000 // no user has it, here or in the rig
	err := r.st.Update(context.Background(), func(tx *store.Tx) error {
		return tx.CreateProject(&store.Project{Name: "blog", OwnerUID: elsewhere, OwnerName: "carol", Generation: 1,
			Status: store.Status{Phase: store.PhaseReady}})
	})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := r.signIn(t, 0)
	for page, want := range map[string]string{"/": "<td>carol</td>", "/projects/blog": "Owner carol "} {
		a := do(t, root, "GET", r.srv.URL+page, nil)
		if a.code != 200 || !strings.Contains(a.body, want) || strings.Contains(a.body, "4000000000") {
			t.Errorf("%s: %d, want %q and no uid: %.2000s", page, a.code, want, a.body)
		}
	}
}
