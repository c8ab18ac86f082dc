package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/names"
)

// TestDoctorReportsDrift: on a clean host opusctl doctor reports nothing
// and exits 0; with a marked project user no project owns and a stray
// project directory planted, it names both and exits 1 (also in JSON);
// a user who is no admin is refused; once the plants are gone it is clean
// again.
func TestDoctorReportsDrift(t *testing.T) {
	h := needHost(t)
	h.doctorClean(t)
	if t.Failed() {
		t.FailNow()
	}

	// The planted user has the test prefix and the marker, so a killed
	// run's leftover is removed by the harness's stale cleanup.
	orphan, stray := h.newProject(t), h.newProject(t)
	user := projUser(orphan)
	if err := run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", "--comment", names.Marker(orphan), user); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if passwdLine(t, user) != "" {
			run("userdel", user)
		}
	})
	// The projects directory is opusd's: make it as opusd would when no
	// project made it yet, so that later deploys can still write there.
	projects := filepath.Join(h.cfg.BaseDir, "projects")
	if !exists(projects) {
		if err := os.Mkdir(projects, 0o751); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(projects, int(h.opusUID), int(h.opusGID)); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(projects, stray)
	if err := os.MkdirAll(filepath.Join(dir, "code"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	r := h.ctl(t, 0, "", "doctor")
	if r.code != 1 {
		t.Errorf("doctor with drift: exit %d, want 1", r.code)
	}
	for _, want := range []string{"user", orphan, "directory", stray, "differences"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, r.out)
		}
	}
	drift := h.ourDrift(t)
	got := map[string]string{}
	for _, d := range drift {
		got[d.Project] = d.Kind
	}
	if got[orphan] != "user" || got[stray] != "directory" || len(drift) != 2 {
		t.Errorf("doctor JSON drift %+v; want exactly user %s and directory %s", drift, orphan, stray)
	}

	if r := h.ctl(t, h.otherID, "", "doctor"); r.code != 1 || !strings.Contains(r.err, "admin") || strings.Contains(r.out, orphan) {
		t.Errorf("doctor as a user who is no admin: exit %d %q %q; want a refusal", r.code, r.out, r.err)
	}

	if err := run("userdel", user); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(dir)
	h.doctorClean(t)
}
