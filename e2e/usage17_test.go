package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Issue 17: commands that have nothing to do say so, and do nothing.

// opIDs lists project name's operations, newest first, as 'opusctl ops'
// reports them.
func (h *host) opIDs(t *testing.T, name string) []string {
	t.Helper()
	var res struct {
		Operations []struct {
			ID string `json:"id"`
		} `json:"operations"`
	}
	out := h.mustCtl(t, 0, "ops", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("ops %s: %v\n%s", name, err, out)
	}
	ids := make([]string, 0, len(res.Operations))
	for _, o := range res.Operations {
		ids = append(ids, o.ID)
	}
	return ids
}

// TestSetUnchangedRestartsNothing: set with the settings a live project
// already has records no operation and leaves its mod_wsgi daemon
// running as it was. Before, it redeployed and
// restarted the daemon.
func TestSetUnchangedRestartsNothing(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	h.deploy(t, 0, name, localApp(t, "hello"))
	c := webClient()
	hello := h.url(name, "http", "/hello/")
	h.mustCtl(t, 0, "set", name, "debug=true")
	mustGet(t, c, hello, "Hello from Opus") // the daemon has started
	daemons := wsgiPids(name)
	if len(daemons) == 0 {
		t.Fatalf("no (wsgi:%s) daemon after a request", name)
	}
	before, ops := h.show(t, name), h.opIDs(t, name)

	start := time.Now()
	r := h.ctl(t, 0, "", "set", name, "debug=true")
	t.Logf("set with nothing changed took %v", time.Since(start))
	if want := "Nothing to change: the settings of " + name + " are already as given.\n"; r.code != 0 || r.out != want || r.err != "" {
		t.Fatalf("set debug=true again: exit %d, stdout %q, stderr %q; want exit 0 and %q", r.code, r.out, r.err, want)
	}
	js := h.mustCtl(t, 0, "set", name, "debug=true", "-o", "json")
	var op struct {
		ID        string `json:"id"`
		Unchanged bool   `json:"unchanged"`
	}
	if err := json.Unmarshal([]byte(js), &op); err != nil || !op.Unchanged || op.ID != "" {
		t.Errorf("set -o json with nothing changed: %v %s; want unchanged and no id", err, js)
	}

	mustGet(t, c, hello, "Hello from Opus")
	if after := h.opIDs(t, name); !slices.Equal(after, ops) {
		t.Errorf("operations %v -> %v; want no new one", ops, after)
	}
	if after := h.show(t, name); after.Generation != before.Generation || after.Phase != "PHASE_READY" || !after.Settings.Debug {
		t.Errorf("project after unchanged sets: %+v, was %+v", after, before)
	}
	if got := wsgiPids(name); !slices.Equal(got, daemons) {
		t.Errorf("mod_wsgi daemon pids %v -> %v; an unchanged set restarted the daemon", daemons, got)
	}
}

// TestCreateEmpty: create without an app is refused with nothing made;
// with --empty it makes a deployed project with no apps.
func TestCreateEmpty(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	before, trees := hostState(t), h.projectsOnDisk(t)
	r := h.ctl(t, 0, "", "create", name)
	if r.code != 2 || !strings.Contains(r.err, "--app SRC") || !strings.Contains(r.err, "--empty") {
		t.Errorf("create without an app: exit %d, stderr %q; want exit 2 asking for --app SRC or --empty", r.code, r.err)
	}
	if hostState(t) != before || len(h.projectsOnDisk(t)) != len(trees) || passwdLine(t, projUser(name)) != "" {
		t.Errorf("a refused create changed the host")
	}
	if r := h.ctl(t, 0, "", "show", name); r.code == 0 {
		t.Errorf("a refused create recorded project %s:\n%s", name, r.out)
	}

	h.mustCtl(t, 0, "create", name, "--empty")
	if p := h.show(t, name); p.Phase != "PHASE_READY" || len(p.Apps) != 0 {
		t.Errorf("create --empty: %+v; want READY with no apps", p)
	}
	if passwdLine(t, projUser(name)) == "" {
		t.Errorf("create --empty made no user %s", projUser(name))
	}
	if out := h.mustCtl(t, 0, "apps", "ls", name); !strings.Contains(out, "has no apps") {
		t.Errorf("apps ls of an empty project:\n%s", out)
	}
}

// TestLogsOfANewProject: a just-deployed project's error log holds only
// its backend Apache's notices about itself (start-up), which are not the
// project's errors: opusctl logs says the log is empty so far; a line the
// project's code writes shows.
func TestLogsOfANewProject(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	hello, err := filepath.Abs(filepath.Join("..", "examples", "hello"))
	if err != nil {
		t.Fatal(err)
	}
	h.deploy(t, 0, name, hello)
	mustGet(t, webClient(), h.url(name, "http", "/hello/"), "")
	raw, err := os.ReadFile(filepath.Join(h.cfg.ApacheDir, "logs", name+".error.log"))
	if err != nil || !strings.Contains(string(raw), "AH00489") {
		t.Fatalf("the project's error log holds no start-up notice of its backend (%v):\n%s", err, raw)
	}
	if out := h.mustCtl(t, 0, "logs", name); !strings.Contains(out, "is empty so far") {
		t.Errorf("logs of a new project:\n%s\nwant it said to be empty (the file holds only the backend's notices:\n%s)", out, raw)
	}
	// A line of the project's own (as mod_wsgi writes its stderr) shows.
	f, err := os.OpenFile(filepath.Join(h.cfg.ApacheDir, "logs", name+".error.log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "[Sat Dec 05 05:30:00.000000 2026] [wsgi:error] [pid 1:tid 1] [remote 127.0.0.1:1] opus-test-line-%s\n", name)
	f.Close()
	if out := h.mustCtl(t, 0, "logs", name); !strings.Contains(out, "opus-test-line-"+name) || strings.Contains(out, "AH00489") {
		t.Errorf("logs after the project wrote a line:\n%s\nwant that line and no backend notice", out)
	}
}
