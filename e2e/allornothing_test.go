package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// All-or-nothing tests (issue 17): a failed change leaves the project at
// its last good state, READY and serving it, with the failure in the
// operation; a failed create leaves no project; the corrected command
// works next time.

// brokenApp is an app whose import fails (its AppConfig.ready() raises),
// so that manage.py check fails before any migration.
func brokenApp(t *testing.T, name string) string {
	t.Helper()
	return hostileApp(t, name, "raise RuntimeError('opus-e2e-broken-app')")
}

// helloApp is the sample app's directory.
func helloApp(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "examples", "hello"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

var opID = regexp.MustCompile(`operation (op-[0-9a-f]+) `)

// TestFailedAppAddIsUndone: `apps add P ./notanapp` fails; the project
// stays READY with only its good app, serving it; show says the last
// change failed naming the operation; every later change works at once
// (no "apps rm" needed), and a later change that succeeds clears it.
func TestFailedAppAddIsUndone(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	h.deploy(t, 0, name, helloApp(t))
	mustGet(t, webClient(), h.url(name, "http", "/hello/"), "Hello")
	before := h.show(t, name)

	r := h.ctl(t, 0, "", "apps", "add", name, brokenApp(t, "notanapp"))
	if r.code != 1 || !strings.Contains(r.err, "opus-e2e-broken-app") || !strings.Contains(r.err, "Nothing of the change was applied: project "+name+" serves what it served before.") {
		t.Fatalf("apps add of a broken app: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.out, r.err)
	}
	m := opID.FindStringSubmatch(r.err)
	if m == nil {
		t.Fatalf("the failure names no operation:\n%s", r.err)
	}
	p := h.show(t, name)
	if p.Phase != "PHASE_READY" || p.LastFailedOp != m[1] || !strings.Contains(p.LastError, "opus-e2e-broken-app") || p.Generation != p.ObservedGeneration {
		t.Errorf("after the failed add: %+v, want READY at its generation with the failure of %s", p, m[1])
	}
	if len(p.Apps) != 1 || p.Apps[0].Name != "hello" || p.Apps[0].ResolvedCommit != before.Apps[0].ResolvedCommit {
		t.Errorf("apps after the failed add: %+v, want hello alone as before", p.Apps)
	}
	if _, err := os.Lstat(filepath.Join(h.cfg.BaseDir, "projects", name, "code", "notanapp")); !os.IsNotExist(err) {
		t.Errorf("the failed app's code is on disk (%v)", err)
	}
	mustGet(t, webClient(), h.url(name, "http", "/hello/"), "Hello")
	out := h.mustCtl(t, 0, "show", name)
	if !strings.Contains(out, "Last change:") || !strings.Contains(out, "failed, nothing of it was applied:") || !strings.Contains(out, "(operation "+m[1]+")") {
		t.Errorf("show after the failed add:\n%s", out)
	}
	if op := h.mustCtl(t, 0, "ops", name, "-o", "json"); !strings.Contains(op, m[1]) || !strings.Contains(op, "OPERATION_STATE_FAILED") {
		t.Errorf("the failed operation is not listed as failed:\n%s", op)
	}

	// The next change needs no repair: it just works, and clears the
	// failure.
	h.mustCtl(t, 0, "set", name, "debug=true")
	p = h.show(t, name)
	if p.Phase != "PHASE_READY" || !p.Settings.Debug || p.LastFailedOp != "" || p.LastError != "" || len(p.Apps) != 1 {
		t.Errorf("after set debug=true: %+v", p)
	}
	// The corrected add works.
	h.mustCtl(t, 0, "apps", "add", name, hostileApp(t, "goodapp", "pass"))
	mustGet(t, webClient(), h.url(name, "http", "/goodapp/"), "hostile goodapp")
}

// TestFailedCreateLeavesNothing: a create whose first deploy fails leaves
// no project, user, tree or site behind, says so, and the same command
// with the cause fixed works.
func TestFailedCreateLeavesNothing(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	before, trees := hostState(t), h.projectsOnDisk(t)
	site := filepath.Join(h.cfg.ApacheDir, "sites", name+".conf")

	r := h.ctl(t, 0, "", "create", name, "--app", brokenApp(t, "shop"))
	if r.code != 1 || !strings.Contains(r.err, "opus-e2e-broken-app") || !strings.Contains(r.err, "Nothing of project "+name+" was kept: correct the cause and run the same command again.") {
		t.Fatalf("create with a broken app: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.out, r.err)
	}
	if r := h.ctl(t, 0, "", "show", name); r.code == 0 || !strings.Contains(r.err, "not found") {
		t.Errorf("show after the failed create: exit %d %s%s", r.code, r.out, r.err)
	}
	if passwdLine(t, projUser(name)) != "" {
		t.Errorf("the failed create left user %s", projUser(name))
	}
	if now := h.projectsOnDisk(t); slices.Contains(now, name) || len(now) != len(trees) {
		t.Errorf("the failed create left a tree: %v (before %v)", now, trees)
	}
	if _, err := os.Lstat(site); !os.IsNotExist(err) {
		t.Errorf("the failed create left its site %s (%v)", site, err)
	}
	if hostState(t) != before {
		t.Errorf("the failed create changed the run's accounts")
	}
	if m := opID.FindStringSubmatch(r.err); m == nil {
		t.Errorf("the failure names no operation:\n%s", r.err)
	} else if w := h.ctl(t, 0, "", "wait", m[1], "-o", "json"); w.code != 1 || !strings.Contains(w.out, "opus-e2e-broken-app") || !strings.Contains(w.out, "OPERATION_STATE_FAILED") {
		t.Errorf("the failed create's operation (exit %d) lost its error:\n%s%s", w.code, w.out, w.err)
	}

	// The corrected command works.
	h.mustCtl(t, 0, "create", name, "--app", helloApp(t))
	mustGet(t, webClient(), h.url(name, "http", "/hello/"), "Hello")
}
