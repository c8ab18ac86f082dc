package e2e

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Live-project tests (issue 5): updates, rollbacks, app removal, settings.

// liveProject is the part of 'opusctl show -o json' these tests read.
type liveProject struct {
	Phase              string `json:"phase"`
	Host               string `json:"host"`
	LastError          string `json:"last_error"`
	LastFailedOp       string `json:"last_failed_operation"`
	Generation         string `json:"generation"`
	ObservedGeneration string `json:"observed_generation"`
	Apps               []struct {
		Name           string `json:"name"`
		RequestedRef   string `json:"requested_ref"`
		ResolvedCommit string `json:"resolved_commit"`
		Revisions      []struct {
			RequestedRef string `json:"requested_ref"`
			Resolved     string `json:"resolved"`
		} `json:"revisions"`
	} `json:"apps"`
	Settings struct {
		Debug bool              `json:"debug"`
		Admin bool              `json:"admin"`
		Hosts []string          `json:"hosts"`
		Env   map[string]string `json:"env"`
	} `json:"settings"`
}

func (h *host) show(t *testing.T, name string) liveProject {
	t.Helper()
	var p liveProject
	out := h.mustCtl(t, 0, "show", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("show %s: %v\n%s", name, err, out)
	}
	return p
}

// gracefulRestarts counts the graceful restarts (AH00493) in the managed
// Apache's main error log.
func (h *host) gracefulRestarts(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.cfg.ApacheDir, "logs", "error.log"))
	if err != nil {
		t.Fatalf("apache error log: %v", err)
	}
	return strings.Count(string(data), "AH00493")
}

// tables lists the tables of a project's SQLite database, read as root
// with Debian's Python (read-only, so a live project is not disturbed).
func (h *host) tables(t *testing.T, project string) []string {
	t.Helper()
	db := filepath.Join(h.cfg.BaseDir, "projects", project, "data", "db.sqlite3")
	cmd := exec.Command("/usr/bin/python3", "-c", `import sqlite3, sys
c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
for (n,) in c.execute("select name from sqlite_master where type='table' order by name"):
    print(n)`, db)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tables of %s: %v\n%s", db, err, out)
	}
	return strings.Fields(string(out))
}

// opusJSON reads a project's rendered opus.json as root.
func (h *host) opusJSON(t *testing.T, project string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.cfg.BaseDir, "projects", project, "code", "opus_project", "opus.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func listHas(v any, s string) bool {
	l, _ := v.([]any)
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

const (
	shopModels  = "from django.db import models\n\n\nclass Item(models.Model):\n    name = models.CharField(max_length=50)\n"
	shopInitial = `from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=50)),
            ],
        ),
    ]
`
	shopBoom = `from django.db import migrations


def boom(apps, schema_editor):
    raise RuntimeError("opus-test-migration-boom")


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]
    operations = [migrations.RunPython(boom)]
`
)

// TestLiveUpdatesAndRollback updates, rolls back, adds and removes apps of
// a live project A while project B answers 200 all along, and checks that
// none of it made Apache restart (no vhost changed).
func TestLiveUpdatesAndRollback(t *testing.T) {
	h := needHost(t)
	shop := newGitApp(t, "shop", "shop version one")
	v1 := shop.git(t, "rev-parse", "HEAD")
	shop.write(t, "models.py", shopModels)
	shop.write(t, "migrations/__init__.py", "")
	shop.write(t, "migrations/0001_initial.py", shopInitial)
	v2 := shop.addVersion(t, "v2", "shop version two")
	shop.write(t, "migrations/0002_boom.py", shopBoom)
	shop.addVersion(t, "v3", "shop version three")
	hello, notes := localApp(t, "hello"), localApp(t, "notes")
	a, b := h.newProject(t), h.newProject(t)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); h.deploy(t, 0, a, shop.dir+"@v1") }()
	go func() { defer wg.Done(); h.deploy(t, 0, b, hello) }()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	c := webClient()
	shopURL := h.url(a, "http", "/shop/")
	mustGet(t, c, shopURL, "shop version one")

	pb := probe(t, h.url(b, "http", "/hello/"), "Hello from Opus")
	pid0, graceful0 := h.apachePid(t), h.gracefulRestarts(t)

	// v1 → v2: new content, and v2's migration applied.
	out := h.mustCtl(t, 0, "apps", "update", a, "shop", "v2")
	if !strings.Contains(out, "migrate") {
		t.Errorf("update showed no migrate step:\n%s", out)
	}
	mustGet(t, c, shopURL, "shop version two")
	if tabs := h.tables(t, a); !slices.Contains(tabs, "shop_item") {
		t.Errorf("v2's migration was not applied: tables %v", tabs)
	}

	// Rollback brings v1 back; show lists the revisions with commits.
	h.mustCtl(t, 0, "apps", "rollback", a, "shop")
	mustGet(t, c, shopURL, "shop version one")
	p := h.show(t, a)
	var revs []string
	for _, app := range p.Apps {
		if app.Name == "shop" {
			if app.ResolvedCommit != v1 {
				t.Errorf("after rollback shop is at %s, want %s", app.ResolvedCommit, v1)
			}
			for _, r := range app.Revisions {
				revs = append(revs, r.Resolved)
			}
		}
	}
	if want := []string{v1, v2, v1}; !slices.Equal(revs, want) {
		t.Errorf("shop revisions %v, want %v", revs, want)
	}
	if text := h.mustCtl(t, 0, "show", a); !strings.Contains(text, "Revisions:") || !strings.Contains(text, v2[:12]) {
		t.Errorf("show does not list the revisions:\n%s", text)
	}

	// Add an app with a model.
	h.mustCtl(t, 0, "apps", "add", a, notes)
	mustGet(t, c, h.url(a, "http", "/notes/"), "notes: 0")
	if tabs := h.tables(t, a); !slices.Contains(tabs, "notes_note") {
		t.Errorf("notes' migration was not applied: tables %v", tabs)
	}
	// A directory app moves to a newly uploaded version.
	views := filepath.Join(notes, "views.py")
	src, err := os.ReadFile(views)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(views, []byte(strings.Replace(string(src), `"notes: %d\n"`, `"notes v2: %d\n"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	h.mustCtl(t, 0, "apps", "update", a, "notes", notes)
	mustGet(t, c, h.url(a, "http", "/notes/"), "notes v2: 0")

	// A failing migration: the update fails with the Python error, and v1
	// keeps serving throughout.
	pa := probe(t, shopURL, "shop version one")
	r := h.ctl(t, 0, "", "apps", "update", a, "shop", "v3")
	pa.end(t, "project "+a+" during a failing update")
	if r.code == 0 || !strings.Contains(r.out+r.err, "opus-test-migration-boom") {
		t.Errorf("update to v3: exit %d, want a failure naming the Python error:\n%s%s", r.code, r.out, r.err)
	}
	mustGet(t, c, shopURL, "shop version one")
	// The update is undone whole: shop asks for what runs again.
	p = h.show(t, a)
	if p.Phase != "PHASE_READY" || p.LastFailedOp == "" || !strings.Contains(p.LastError, "opus-test-migration-boom") {
		t.Errorf("after the failed update: phase %s, failed operation %q, last error %.300q", p.Phase, p.LastFailedOp, p.LastError)
	}
	for _, app := range p.Apps {
		if app.Name == "shop" && (app.ResolvedCommit != v1 || app.RequestedRef == "v3") {
			t.Errorf("after the failed update shop asks for %q at %s, want v1's commit %s", app.RequestedRef, app.ResolvedCommit, v1)
		}
	}
	if _, err := os.Stat(filepath.Join(h.cfg.BaseDir, "projects", a, "code", "shop", "migrations", "0002_boom.py")); err == nil {
		t.Errorf("v3's code stayed on disk after its update failed")
	}

	pb.end(t, "project "+b+" while "+a+" was updated")
	if pid := h.apachePid(t); pid != pid0 {
		t.Errorf("Apache's master pid changed from %d to %d", pid0, pid)
	}
	if n := h.gracefulRestarts(t); n != graceful0 {
		t.Errorf("Apache did %d graceful restarts while no vhost changed", n-graceful0)
	}

	// Removing an app: 404, out of opus.json and off the disk, tables kept.
	h.mustCtl(t, 0, "apps", "rm", a, "notes")
	if code, _ := get(t, c, h.url(a, "http", "/notes/")); code != http.StatusNotFound {
		t.Errorf("removed app answers %d, want 404", code)
	}
	j := h.opusJSON(t, a)
	if listHas(j["installed_apps"], "notes") || listHas(j["url_apps"], "notes") {
		t.Errorf("removed app still in opus.json: %v", j)
	}
	if exists(filepath.Join(h.cfg.BaseDir, "projects", a, "code", "notes")) {
		t.Errorf("removed app's code is still on disk")
	}
	if tabs := h.tables(t, a); !slices.Contains(tabs, "notes_note") {
		t.Errorf("removing without --drop-data dropped the tables: %v", tabs)
	}
	for _, app := range h.show(t, a).Apps {
		if app.Name == "notes" {
			t.Errorf("show still lists the removed app")
		}
	}

	// Added back it finds its data; removed with --drop-data the tables go.
	h.mustCtl(t, 0, "apps", "add", a, notes)
	mustGet(t, c, h.url(a, "http", "/notes/"), "notes v2: 0")
	out = h.mustCtl(t, 0, "apps", "rm", a, "notes", "--drop-data")
	if tabs := h.tables(t, a); slices.Contains(tabs, "notes_note") || !slices.Contains(tabs, "shop_item") {
		t.Errorf("after rm --drop-data: tables %v, want notes_note gone and shop_item kept\n%s", tabs, out)
	}
	if code, _ := get(t, c, h.url(a, "http", "/notes/")); code != http.StatusNotFound {
		t.Errorf("removed app answers %d, want 404", code)
	}
	mustGet(t, c, shopURL, "shop version one")
}

// TestLiveSettings changes owner-level settings of a live project and
// refuses values that could inject Python or Apache directives, leaving
// the project as it was.
func TestLiveSettings(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	h.deploy(t, 0, name, localApp(t, "hello"))
	c := webClient()
	before := h.show(t, name)
	vhost := filepath.Join(h.cfg.ApacheDir, "sites", name+".conf")
	vhostBefore, err := os.ReadFile(vhost)
	if err != nil {
		t.Fatal(err)
	}

	for _, bad := range []struct{ arg, want string }{
		{"hosts=a.example\nInclude /etc/shadow", "hosts"},
		{"hosts=Include /etc/shadow", "hosts"},
		{"hosts=x.example\"", "hosts"},
		{"hosts=" + name + "2" + h.cfg.ServerSuffix, "belongs to an Opus project"},
		{"debug=yes\nInclude x", "debug"},
		{"admin=1 #", "admin"},
		{"env.PYTHONPATH=/tmp", "PYTHONPATH"},
		{"env.bad-name=x", "bad-name"},
		{"nosuch=1", "unknown setting"},
	} {
		r := h.ctl(t, 0, "", "set", name, bad.arg)
		if r.code == 0 || !strings.Contains(r.err, bad.want) {
			t.Errorf("set %q: exit %d, stderr %q; want a refusal mentioning %q", bad.arg, r.code, r.err, bad.want)
		}
	}
	after := h.show(t, name)
	if after.Generation != before.Generation || !slices.Equal(after.Settings.Hosts, before.Settings.Hosts) || after.Settings.Debug || len(after.Settings.Env) != 0 {
		t.Errorf("refused settings changed the project: %+v → %+v", before, after)
	}
	if data, _ := os.ReadFile(vhost); string(data) != string(vhostBefore) {
		t.Errorf("refused settings changed the vhost")
	}

	// Values that are only data are stored inertly and the project deploys.
	graceful0 := h.gracefulRestarts(t)
	inert := `"; import os #` + "\n" + `Include /etc/shadow`
	out := h.mustCtl(t, 0, "set", name, "env.GREETING="+inert, "debug=true")
	if !strings.Contains(out, "env.GREETING") {
		t.Errorf("set did not show the result:\n%s", out)
	}
	mustGet(t, c, h.url(name, "http", "/hello/"), "Hello from Opus")
	if env, _ := h.opusJSON(t, name)["env"].(map[string]any); env["GREETING"] != inert {
		t.Errorf("opus.json env = %v, want GREETING stored as given", env)
	}
	if p := h.show(t, name); !p.Settings.Debug || p.Settings.Env["GREETING"] != inert {
		t.Errorf("show settings = %+v", p.Settings)
	}
	// DEBUG on: Django's technical 404 page.
	if code, body := get(t, c, h.url(name, "http", "/no-such-page/")); code != 404 || !strings.Contains(body, "URLconf") {
		t.Errorf("with debug on, a missing page answers %d %.200q; want Django's debug 404", code, body)
	}
	if n := h.gracefulRestarts(t); n != graceful0 {
		t.Errorf("a settings change without host names made %d graceful restarts", n-graceful0)
	}

	// An extra host name: ServerAlias, ALLOWED_HOSTS and the certificate.
	alias := "www." + name + ".example"
	h.mustCtl(t, 0, "set", name, "hosts="+alias, "admin=false", "--unset", "debug")
	vh, _ := os.ReadFile(vhost)
	if !strings.Contains(string(vh), "ServerAlias "+alias) || strings.Contains(string(vh), "Include") {
		t.Errorf("vhost lacks ServerAlias %s or has an Include:\n%s", alias, vh)
	}
	req, _ := http.NewRequest("GET", h.url(name, "http", "/hello/"), nil)
	req.Host = alias
	if resp, err := c.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("GET /hello/ as %s: %v %v", alias, resp, err)
	} else {
		resp.Body.Close()
	}
	if names := certNames(t, filepath.Join(h.cfg.ApacheDir, "tls", name+".crt")); !slices.Contains(names, alias) || !slices.Contains(names, name+h.cfg.ServerSuffix) {
		t.Errorf("certificate names %v, want %s and %s", names, name+h.cfg.ServerSuffix, alias)
	}
	if code, _ := get(t, c, h.url(name, "http", "/admin/login/")); code != 404 {
		t.Errorf("admin=false: /admin/login/ answers %d, want 404", code)
	}

	// Unset: the alias goes again.
	h.mustCtl(t, 0, "set", name, "--unset", "hosts", "--unset", "env.GREETING")
	vh, _ = os.ReadFile(vhost)
	if strings.Contains(string(vh), alias) {
		t.Errorf("unset hosts left the alias in the vhost")
	}
	if p := h.show(t, name); len(p.Settings.Hosts) != 0 || len(p.Settings.Env) != 0 || p.Phase != "PHASE_READY" {
		t.Errorf("after unset: %+v", p)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		if err == nil && resp.StatusCode != 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("the removed alias %s still answers 200", alias)
		}
	}
}

// certNames returns the DNS names of a PEM certificate file (read as root).
func certNames(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	crt, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return crt.DNSNames
}
