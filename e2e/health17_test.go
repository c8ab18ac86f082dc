package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 17: the health check requests every app's mount point, so an app
// whose view raises fails the change instead of deploying as READY and
// then answering 500.

// raisingApp is a local app, mounted at /NAME/ by its urls.py, whose index
// view raises: Django answers 500 there (and logs the traceback), while
// the project's "/" answers 200. It is hostileApp with nothing in ready()
// and that view.
func raisingApp(t *testing.T, name string) string {
	t.Helper()
	dir := hostileApp(t, name, "pass")
	view := "def index(request):\n    raise RuntimeError(\"opus-health17: the view of " + name + " raised\")\n"
	if err := os.WriteFile(filepath.Join(dir, "views.py"), []byte(view), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// healthBound is how long a change whose app answers a steady 500 may
// take: the whole deploy, with the health check failing within seconds of
// "/" answering, well before its 90 s timeout.
const healthBound = 60 * time.Second

// checkMountFailure asserts that a failed operation's error, as opusctl
// printed it, names the app's URL and the 500, the reason from the
// project's error log, and where to read more.
func checkMountFailure(t *testing.T, h *host, r result, name, app string, took time.Duration) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("the change with app %s, whose view raises, succeeded:\n%s", app, r.out)
	}
	for _, want := range []string{
		h.url(name, "http", "/"+app+"/") + " answered HTTP 500",
		"RuntimeError: opus-health17: the view of " + app + " raised",
		"opusctl logs " + name,
	} {
		if !strings.Contains(r.err, want) {
			t.Errorf("the failure does not say %q:\n%s", want, r.err)
		}
	}
	if took > healthBound {
		t.Errorf("the failing change took %s; a steady 500 must fail well within the health timeout (want < %s)", took, healthBound)
	}
}

// TestCreateWithRaisingViewFails: create with an app whose index view
// raises fails, saying which URL answered 500 and why.
func TestCreateWithRaisingViewFails(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	boom := raisingApp(t, "boom")
	start := time.Now()
	r := h.ctl(t, 0, "", "create", name, "--app", boom)
	checkMountFailure(t, h, r, name, "boom", time.Since(start))
}

// TestAddRaisingAppFails: on a deployed project, apps add of an app whose
// index view raises fails, saying which URL answered 500 and why; the
// project's good app still answers.
func TestAddRaisingAppFails(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	h.deploy(t, 0, name, localApp(t, "hello"))
	c := webClient()
	hello := h.url(name, "http", "/hello/")
	mustGet(t, c, hello, "Hello from Opus")

	boom := raisingApp(t, "boom")
	start := time.Now()
	r := h.ctl(t, 0, "", "apps", "add", name, boom)
	checkMountFailure(t, h, r, name, "boom", time.Since(start))
	mustGet(t, c, hello, "Hello from Opus")
}
