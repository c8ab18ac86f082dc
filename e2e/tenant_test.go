package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Tenant code is hostile (DESIGN.md, threat model): a project's own Python
// runs at import, during manage.py and in its daemon, as the project user.
// The tests of each rule against it deploy an app whose AppConfig.ready()
// performs the attack, so it runs in every manage.py call (migrate,
// collectstatic) and again in the mod_wsgi daemon, exactly where a real
// tenant's code would.

// hostileApp writes a local, startapp-shaped app called name whose
// AppConfig.ready() runs attack (Python, indented by the caller as a
// function body: four spaces) and returns its directory, for `opusctl
// create NAME --app DIR` (packed and uploaded by opusctl).
//
// Inside attack, these are defined: os, sys, pathlib.Path, and
// PROJECT_ROOT (the project's root directory: code/, secrets/, data/ and
// static/ beside each other). An exception in attack fails the deploy, so
// catch what may fail.
func hostileApp(t *testing.T, name, attack string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"__init__.py": "",
		"apps.py": fmt.Sprintf(`import os
import sys
from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


class HostileConfig(AppConfig):
    name = %q
    default = True

    def ready(self):
        PROJECT_ROOT = Path(settings.PROJECT_ROOT)
%s
`, name, indent(attack, "        ")),
		"urls.py":  "from django.urls import path\n\nfrom . import views\n\nurlpatterns = [path(\"\", views.index)]\n",
		"views.py": "from django.http import HttpResponse\n\n\ndef index(request):\n    return HttpResponse(\"hostile " + name + "\")\n",
	}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// indent puts prefix before every non-empty line of code (given as a
// function body at four spaces).
func indent(code, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(code, "\n"), "\n") {
		l = strings.TrimPrefix(l, "    ")
		if strings.TrimSpace(l) != "" {
			b.WriteString(prefix + l)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestHostileAppRuns: the attack harness itself works: an app whose ready()
// writes a file into the project's data directory (which the project user
// may write) deploys, and its write happened as the project's user.
func TestHostileAppRuns(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	app := hostileApp(t, "probe", `
    (PROJECT_ROOT / "data" / "ready-ran").write_text(str(os.getuid()))
`)
	h.mustCtl(t, 0, "create", name, "--app", app)
	uid, _ := projectIDs(t, name)
	data, err := os.ReadFile(filepath.Join(h.cfg.BaseDir, "projects", name, "data", "ready-ran"))
	if err != nil || strings.TrimSpace(string(data)) != fmt.Sprint(uid) {
		t.Fatalf("ready() did not run as the project user %d: %q %v", uid, data, err)
	}
	mustGet(t, webClient(), h.url(name, "http", "/probe/"), "hostile probe")
	h.mustCtl(t, 0, "destroy", name, "--yes")
}

// TestManageIsConfined: the project's code, as manage.py runs it (migrate,
// collectstatic), runs in a mount namespace of its own: what it writes to
// /tmp, /var/tmp or /dev/shm never reaches the host's, it has no new
// privileges (a setuid file cannot raise it) and runs under limits
// (package privd/confine). Before, it wrote into the host's /tmp with
// NoNewPrivs 0 and no limits. (The mod_wsgi daemon's confinement is issue
// 15's per-project backends.)
func TestManageIsConfined(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	marks := []string{"/tmp/opus-test-confine-" + testRun.ID, "/var/tmp/opus-test-confine-" + testRun.ID, "/dev/shm/opus-test-confine-" + testRun.ID}
	for _, m := range marks {
		if err := testRun.NotePath(m); err != nil {
			t.Fatal(err)
		}
	}
	h.mustCtl(t, 0, "create", name, "--app", hostileApp(t, "conf", fmt.Sprintf(`
    import json, resource
    if "mod_wsgi" not in sys.modules:
        for m in %s:
            with open(m, "w") as f:
                f.write("left by the tenant")
        status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
        (PROJECT_ROOT / "data" / "confine.json").write_text(json.dumps({
            "no_new_privs": status["NoNewPrivs"].strip(),
            "mnt": os.readlink("/proc/self/ns/mnt"),
            "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
            "fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
            "groups": os.getgroups(),
        }))
`, mustJSON(t, marks))))
	for _, m := range marks {
		if exists(m) {
			t.Errorf("manage.py's %s reached the host's", m)
		}
	}
	data, err := os.ReadFile(filepath.Join(h.cfg.BaseDir, "projects", name, "data", "confine.json"))
	if err != nil {
		t.Fatalf("the app did not report: %v", err)
	}
	var got struct {
		NoNewPrivs string `json:"no_new_privs"`
		Mnt        string
		NProc      int64
		FSize      int64
		Groups     []int
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	hostMnt, _ := os.Readlink("/proc/self/ns/mnt")
	if got.NoNewPrivs != "1" || got.Mnt == "" || got.Mnt == hostMnt || got.NProc <= 0 || got.FSize <= 0 || len(got.Groups) != 0 {
		t.Errorf("manage.py ran with %s; want NoNewPrivs 1, a mount namespace of its own (host's %s), task and file size limits, no supplementary groups", data, hostMnt)
	}
	h.mustCtl(t, 0, "destroy", name, "--yes")
}

// mustJSON is v as JSON text (a Python literal too, for lists of strings).
func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
