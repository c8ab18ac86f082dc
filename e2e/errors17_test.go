package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFailedManagePyReadsExceptionFirst (issue 17, "Errors"): adding a
// local app that fails to import (its models import a module that is not
// installed) fails the change with exit status 1, and opusctl shows the
// Python exception line once, before the traceback's last lines, each of
// them on a line of its own; the list of operations shows the exception on
// the failed operation's line.
func TestFailedManagePyReadsExceptionFirst(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	h.mustCtl(t, 0, "create", name, "--empty")

	dir := filepath.Join(t.TempDir(), "notanapp")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, content := range map[string]string{
		"__init__.py": "",
		"models.py":   "from django.db import models\n\nimport opus_e2e_not_installed  # noqa\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const exception = "ModuleNotFoundError: No module named 'opus_e2e_not_installed'"

	r := h.ctl(t, 0, "", "apps", "add", name, dir)
	if r.code != 1 {
		t.Fatalf("apps add of an app that fails to import: exit %d, want 1", r.code)
	}
	all := r.out + r.err
	if n := strings.Count(all, exception); n != 1 {
		t.Errorf("the exception line is shown %d times, want once:\n%s", n, all)
	}
	ex := strings.Index(all, exception)
	tb := strings.Index(all, "Traceback (most recent call last")
	frame := strings.Index(all, `notanapp/models.py", line 3, in <module>`)
	if ex < 0 || tb < ex || frame < tb {
		t.Errorf("want the exception (at %d) before the traceback (at %d) and its last frame (at %d):\n%s", ex, tb, frame, all)
	}
	// The exception is on the error's first line, which names the step;
	// the traceback's lines follow, each on a line of its own.
	first, rest, _ := strings.Cut(r.err, "\n")
	if !strings.HasPrefix(first, "opusctl: operation ") || !strings.Contains(first, "manage.py check failed: "+exception) {
		t.Errorf("the error's first line does not end with the exception:\n%s", r.err)
	}
	lines := strings.Split(rest, "\n")
	if !slicesContainsTrimmed(lines, "import opus_e2e_not_installed  # noqa") {
		t.Errorf("the failing line of models.py is not on a line of its own:\n%s", r.err)
	}

	ops := h.mustCtl(t, 0, "ops", name)
	for _, l := range strings.Split(ops, "\n") {
		if strings.Contains(l, "add_app") || strings.Contains(l, "ADD_APP") || strings.Contains(l, "FAILED") || strings.Contains(l, "failed") {
			if !strings.Contains(l, exception) {
				t.Errorf("ops: the failed operation's line lacks the exception:\n%s", ops)
			}
		}
	}
}

// slicesContainsTrimmed reports whether a line of lines is want, leading
// and trailing space aside.
func slicesContainsTrimmed(lines []string, want string) bool {
	for _, l := range lines {
		if strings.TrimSpace(l) == want {
			return true
		}
	}
	return false
}
