package e2e

import (
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDestroyDuringCreateRemovesEverything: a destroy asked for while the
// project's first deploy runs (its manage.py migrate still going) tears the
// project down: its user, files and site go, and the destroy succeeds.
// Before, the deploy's end took the destroy's mark on the record (refreshed
// by a later step) for its own and forgot the project, leaving its user,
// backend, tree and site on the host with no record to remove them by.
func TestDestroyDuringCreateRemovesEverything(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	app := hostileApp(t, "slowmig", `
    if "mod_wsgi" not in sys.modules:
        import time
        (PROJECT_ROOT / "data" / "migrating").write_text("yes")
        time.sleep(6)
`)
	h.mustCtl(t, 0, "create", name, "--app", app, "--no-wait")
	marker := filepath.Join(h.cfg.BaseDir, "projects", name, "data", "migrating")
	deadline := time.Now().Add(2 * time.Minute)
	for !exists(marker) {
		if time.Now().After(deadline) {
			h.dumpLogs(t)
			t.Fatal("the create's manage.py never ran the app's ready()")
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := h.ctl(t, 0, "", "destroy", name, "--yes")
	if r.code != 0 {
		h.dumpLogs(t)
		t.Fatalf("destroy during the create: exit %d: %s", r.code, r.err)
	}
	// The destroy may have ended with the create's run; wait for the record.
	deadline = time.Now().Add(2 * time.Minute)
	for {
		res := h.ctl(t, 0, "", "show", name)
		if res.code != 0 && strings.Contains(res.err, "not found") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("project still recorded after its destroy: %s", res.out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if _, err := user.Lookup(projUser(name)); err == nil {
		t.Errorf("user %s left behind by a destroy during the create", projUser(name))
	}
	if dir := filepath.Join(h.cfg.BaseDir, "projects", name); exists(dir) {
		t.Errorf("tree %s left behind by a destroy during the create", dir)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.ApacheDir, "sites", name+".conf")); err == nil {
		t.Errorf("site of %s left behind", name)
	}
}
