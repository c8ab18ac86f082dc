package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/procs"
)

// TestUIDNeverReused is issue 14's uid reuse: a tenant leaves a setuid
// copy of python in /tmp and its project is destroyed. Before, the next
// project got the freed uid (useradd --system hands it out again) and with
// it the tenant's file, which then ran as the new project and read its
// secrets. Now every project gets an id of project_uids no project ever
// had, so the file acts for no one, and `opusctl doctor` names it until it
// is removed. An account planted at the next id of the range is skipped
// (privd refuses an id in use) and reported too. (Since issue 15 a
// tenant's /tmp is its own and such a file never reaches the host's:
// TestBackendIsConfined. The test leaves the file itself, as a project of
// an older Opus could have.)
func TestUIDNeverReused(t *testing.T) {
	h := needHost(t)
	evil := filepath.Join("/tmp", "opus-test-suid-"+testRun.ID)
	if err := testRun.NotePath(evil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(evil) })

	a := h.newProject(t)
	h.mustCtl(t, 0, "create", a, "--app", localApp(t, "hello"))
	uidA, _ := projectIDs(t, a)
	if err := exec.Command("cp", "/usr/bin/python3", evil).Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(evil, int(uidA), int(uidA)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(evil, 0o4755); err != nil {
		t.Fatal(err)
	}
	if !testRun.UIDs().Contains(uidA) {
		t.Errorf("%s has uid %d, outside project_uids %s", a, uidA, testRun.UIDs())
	}
	h.mustCtl(t, 0, "destroy", a, "--yes")
	if !hasDrift(h.ourDrift(t), "leftover", evil) {
		t.Errorf("doctor does not report the destroyed project's file %s", evil)
	}

	b := h.newProject(t)
	h.mustCtl(t, 0, "create", b, "--app", localApp(t, "hello"))
	uidB, gidB := projectIDs(t, b)
	if uidB == uidA || gidB == uidA || !testRun.UIDs().Contains(uidB) || uidB != gidB {
		t.Fatalf("%s got uid %d gid %d after %s had %d; want a fresh id of %s for both", b, uidB, gidB, a, uidA, testRun.UIDs())
	}
	if owner := fileOwner(t, evil); owner == uidB {
		t.Fatalf("the tenant's setuid file now runs as %s", b)
	}

	// An account some administrator made at the id that comes next: it is
	// skipped for good and reported.
	planted := testRun.Account("pl")
	if err := testRun.NoteAccount(planted); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--no-log-init", "--shell", "/usr/sbin/nologin",
		"--uid", fmt.Sprint(uidB+1), "--user-group", planted).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v %s", planted, err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", planted).Run() })
	c := h.newProject(t)
	out := h.mustCtl(t, 0, "create", c, "--app", localApp(t, "hello"))
	uidC, _ := projectIDs(t, c)
	if uidC <= uidB+1 || !strings.Contains(out, fmt.Sprintf("skipped uids in use on the host: [%d]", uidB+1)) {
		t.Errorf("%s got uid %d beside the account planted at %d; want a higher one, and the skip said", c, uidC, uidB+1)
	}
	if !hasDrift(h.ourDrift(t), "uid", planted) {
		t.Errorf("doctor does not report the account %s inside project_uids", planted)
	}

	// Once both are gone, doctor is quiet again.
	if err := os.Remove(evil); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("userdel", planted).CombinedOutput(); err != nil {
		t.Fatalf("userdel %s: %v %s", planted, err, out)
	}
	h.doctorClean(t)
	for _, p := range []string{b, c} {
		h.mustCtl(t, 0, "destroy", p, "--yes")
	}
}

func fileOwner(t *testing.T, path string) uint32 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid
}

// hasDrift reports whether a finding of kind mentions s.
func hasDrift(ds []driftJSON, kind, s string) bool {
	for _, d := range ds {
		if d.Kind == kind && strings.Contains(d.Detail, s) {
			return true
		}
	}
	return false
}

// TestDestroyEndsDetachedProcesses: tenant code that detaches processes
// (setsid, double fork) at import cannot keep its project from going:
// destroy ends every process of the project's uid within seconds and
// deletes the user (before, userdel refused for 30 s and the project
// stayed FAILED).
func TestDestroyEndsDetachedProcesses(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	h.mustCtl(t, 0, "create", name, "--app", hostileApp(t, "detach", `
    import subprocess
    for _ in range(3):
        subprocess.Popen(["/usr/bin/setsid", "/bin/sh", "-c", "trap '' TERM HUP; while :; do sleep 1; done"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
`))
	uid, _ := projectIDs(t, name)
	if n := len((procs.Table{}).Of(uid, 0)); n < 3 {
		t.Fatalf("%d processes of uid %d; the detached ones did not start", n, uid)
	}
	start := time.Now()
	h.mustCtl(t, 0, "destroy", name, "--yes")
	took := time.Since(start)
	if left := (procs.Table{}).Of(uid, 0); len(left) > 0 {
		t.Errorf("processes of the destroyed project's uid %d still run: %v", uid, left)
	}
	if passwdLine(t, projUser(name)) != "" {
		t.Errorf("the user of %s is still there", name)
	}
	t.Logf("destroy took %s", took)
}
