package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOpusdStopDrainsStep: SIGTERM lets the real opusd's step in flight
// (manage.py's check and migrate, made to take slowMigrate) finish before opusd exits, within
// its grace: opusd is still running when the step ends, says "opusd
// stopped" without cutting work short, and the deploy, resumed by the
// next opusd, succeeds.
func TestOpusdStopDrainsStep(t *testing.T) {
	const slowMigrate = 8 * time.Second
	h := needHost(t)
	name := h.newProject(t)
	// Registered after the project's: runs before its destroy.
	t.Cleanup(func() {
		if h.opusd == nil {
			if err := h.startOpusd(); err != nil {
				t.Errorf("restarting the harness's opusd: %v", err)
			}
		}
	})
	app := hostileApp(t, "slowmigrate", `
    import time
    data = PROJECT_ROOT / "data"
    # The first manage.py run (check, migrate, collectstatic in one
    # process), not the mod_wsgi daemon.
    if sys.argv and sys.argv[0].endswith("manage.py") and not (data / "slow-started").exists():
        (data / "slow-started").write_text(str(os.getpid()))
        time.sleep(`+strings.TrimSuffix(slowMigrate.String(), "s")+`)
        (data / "slow-finished").write_text(str(os.getpid()))
`)
	data := filepath.Join(h.cfg.BaseDir, "projects", name, "data")
	// --no-wait prints only the operation's id, for op=$(...) (the
	// upload's progress goes to stderr).
	created := strings.Fields(h.mustCtl(t, 0, "create", name, "--app", app, "--no-wait"))
	if len(created) != 1 || !strings.HasPrefix(created[0], "op-") {
		t.Fatalf("create --no-wait printed %q, want only an operation id", created)
	}
	opID := created[0]

	deadline := time.Now().Add(3 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(data, "slow-started")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			h.dumpLogs(t)
			t.Fatal("the slow migrate never started")
		}
		time.Sleep(50 * time.Millisecond)
	}
	logPath := filepath.Join(h.logs, "opusd.log")
	before, err := os.Stat(logPath)
	if err != nil {
		t.Fatal(err)
	}
	pid := h.opusd.Process.Pid
	stopped := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for alive(pid) {
		if time.Since(stopped) > 45*time.Second {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatal("opusd still running 45s after SIGTERM (its graces are 5s for calls and 30s for steps)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	exited := time.Now()
	h.opusd = nil
	t.Logf("opusd exited %v after SIGTERM", exited.Sub(stopped).Round(time.Millisecond))

	fi, err := os.Stat(filepath.Join(data, "slow-finished"))
	if err != nil {
		t.Errorf("the migrate in flight at SIGTERM did not finish: %v", err)
	} else if fi.ModTime().After(exited) {
		t.Errorf("the migrate finished at %v, after opusd exited at %v: the step was not waited for", fi.ModTime(), exited)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	log := string(b[before.Size():])
	if !strings.Contains(log, `msg="opusd stopped"`) || strings.Contains(log, "cut short") || strings.Contains(log, "opusd failed") {
		t.Errorf("opusd's log of the stop:\n%s", log)
	}

	if err := h.startOpusd(); err != nil {
		t.Fatal(err)
	}
	out := h.mustCtl(t, 0, "wait", opID)
	t.Logf("after the restart: %s", out)
	if st := strings.TrimSpace(h.mustCtl(t, 0, "show", name, "-o", "json")); !strings.Contains(st, `"PHASE_READY"`) {
		t.Errorf("project after the drained stop and a restart: %s", st)
	}
}
