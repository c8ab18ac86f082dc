package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// Issue 17: a rollback goes to any recorded revision, is recorded as one,
// and show and apps ls describe the revision that runs.

// rollbackView is the part of 'opusctl show -o json' this test reads.
type rollbackView struct {
	Generation string `json:"generation"`
	Apps       []struct {
		Name            string `json:"name"`
		ResolvedCommit  string `json:"resolved_commit"`
		RunningRevision string `json:"running_revision"`
		Pending         bool   `json:"pending"`
		Revisions       []struct {
			Number     string `json:"number"`
			Resolved   string `json:"resolved"`
			RollbackOf string `json:"rollback_of"`
		} `json:"revisions"`
	} `json:"apps"`
}

// TestRollbackToAnyRevision: an app deployed at v1 and updated to v2 and
// v3 goes back to revision 1 with 'apps rollback --to 1': the page serves
// v1 again, the operation is a rollback, show and apps ls name revision
// 1's commit as running; asking for the running revision again records
// nothing; a --to that names no revision exits 2 and changes nothing; a
// commit prefix names a revision too.
func TestRollbackToAnyRevision(t *testing.T) {
	h := needHost(t)
	g := newGitApp(t, "shelf", "shelf version one")
	v1 := g.git(t, "rev-parse", "HEAD")
	v2 := g.addVersion(t, "v2", "shelf version two")
	v3 := g.addVersion(t, "v3", "shelf version three")
	name := h.newProject(t)
	h.deploy(t, 0, name, g.dir+"@v1")
	c, page := webClient(), h.url(name, "http", "/shelf/")
	mustGet(t, c, page, "shelf version one")
	h.mustCtl(t, 0, "apps", "update", name, "shelf", "v2")
	mustGet(t, c, page, "shelf version two")
	h.mustCtl(t, 0, "apps", "update", name, "shelf", "v3")
	mustGet(t, c, page, "shelf version three")

	revs := h.mustCtl(t, 0, "apps", "revisions", name, "shelf")
	if rows := tableRows(revs); len(rows) != 4 || !strings.HasPrefix(rows[1], "3 "+v3[:12]+" (running) v3 ") || !strings.HasPrefix(rows[3], "1 "+v1[:12]+" v1 ") {
		t.Fatalf("apps revisions before the rollback:\n%s", revs)
	}

	out := h.mustCtl(t, 0, "apps", "rollback", name, "shelf", "--to", "1")
	if !strings.Contains(out, "Rolling back app shelf of "+name+" to 1") {
		t.Errorf("rollback --to 1 printed:\n%s", out)
	}
	mustGet(t, c, page, "shelf version one")
	if kind := h.newestOpKind(t, name); kind != "OPERATION_KIND_ROLLBACK" {
		t.Errorf("the rollback was recorded as %s", kind)
	}
	p := h.rollbackView(t, name)
	if a := p.Apps[0]; a.ResolvedCommit != v1 || a.RunningRevision != "4" || a.Pending || len(a.Revisions) != 4 || a.Revisions[3].RollbackOf != "1" || a.Revisions[3].Resolved != v1 {
		t.Errorf("after rollback --to 1: %+v", a)
	}
	wantRow := "shelf 4 " + v1[:12] + " v1 (rollback to 1)"
	if ls := h.mustCtl(t, 0, "apps", "ls", name); !strings.HasPrefix(rowOf(ls, "shelf"), wantRow) {
		t.Errorf("apps ls after the rollback, want a row %q:\n%s", wantRow, ls)
	}
	if show := h.mustCtl(t, 0, "show", name); !strings.HasPrefix(rowOf(show, "shelf"), wantRow) || !strings.Contains(show, v1[:12]+" (running)") {
		t.Errorf("show after the rollback, want a row %q:\n%s", wantRow, show)
	}

	// Nothing to do: the running revision, by number or by commit.
	ops := h.opIDs(t, name)
	for _, to := range []string{"4", "1", v1[:7]} {
		r := h.ctl(t, 0, "", "apps", "rollback", name, "shelf", "--to", to)
		if want := "Nothing to change: app shelf of " + name + " already runs that revision.\n"; r.code != 0 || r.out != want {
			t.Errorf("rollback --to %s (running): exit %d, stdout %q, stderr %q; want %q", to, r.code, r.out, r.err, want)
		}
	}
	// Refused: exit 2, the revisions there are, nothing changed.
	state := hostState(t)
	for _, tc := range []struct{ to, want string }{
		{"9", "there is no revision 9; the app's revisions are 1 to 4"},
		{"0", "revisions are numbered from 1"},
		{"main", "give a revision number"},
		{"deadbeef", "no revision's commit or digest starts with deadbeef"},
	} {
		r := h.ctl(t, 0, "", "apps", "rollback", name, "shelf", "--to", tc.to)
		if r.code != 2 || !strings.Contains(r.err, tc.want) {
			t.Errorf("rollback --to %s: exit %d, stderr %q; want exit 2 and %q", tc.to, r.code, r.err, tc.want)
		}
	}
	if after := h.rollbackView(t, name); after.Generation != p.Generation || after.Apps[0].ResolvedCommit != v1 {
		t.Errorf("refused rollbacks moved the project: generation %s -> %s, at %s", p.Generation, after.Generation, after.Apps[0].ResolvedCommit)
	}
	if now := h.opIDs(t, name); strings.Join(now, ",") != strings.Join(ops, ",") {
		t.Errorf("refused or unchanged rollbacks recorded operations: %v, before %v", now, ops)
	}
	if hostState(t) != state {
		t.Errorf("refused rollbacks changed the host's accounts")
	}
	mustGet(t, c, page, "shelf version one")

	// A commit prefix names a revision; without --to, the one before.
	h.mustCtl(t, 0, "apps", "rollback", name, "shelf", "--to", v2[:8])
	mustGet(t, c, page, "shelf version two")
	h.mustCtl(t, 0, "apps", "rollback", name, "shelf")
	mustGet(t, c, page, "shelf version one")
	if a := h.rollbackView(t, name).Apps[0]; a.RunningRevision != "6" || a.Revisions[4].RollbackOf != "2" || a.Revisions[5].RollbackOf != "4" {
		t.Errorf("after rolling back to v2 and back: %+v", a)
	}
}

// rollbackView reads project name as 'opusctl show -o json' reports it.
func (h *host) rollbackView(t *testing.T, name string) rollbackView {
	t.Helper()
	var p rollbackView
	out := h.mustCtl(t, 0, "show", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &p); err != nil || len(p.Apps) != 1 {
		t.Fatalf("show %s: %v\n%s", name, err, out)
	}
	return p
}

// newestOpKind is the kind of project name's newest operation.
func (h *host) newestOpKind(t *testing.T, name string) string {
	t.Helper()
	var res struct {
		Operations []struct {
			Kind string `json:"kind"`
		} `json:"operations"`
	}
	out := h.mustCtl(t, 0, "ops", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Operations) == 0 {
		t.Fatalf("ops %s: %v\n%s", name, err, out)
	}
	return res.Operations[0].Kind
}

// tableRows is the lines of out's first table with their fields joined by
// one space.
func tableRows(out string) []string {
	var rows []string
	// The first table only: apps revisions lists data snapshots below.
	out, _, _ = strings.Cut(strings.TrimSpace(out), "\n\n")
	for _, l := range strings.Split(out, "\n") {
		rows = append(rows, strings.Join(strings.Fields(l), " "))
	}
	return rows
}

// rowOf is the first row of out (fields joined by one space) whose first
// field is first, "" if none.
func rowOf(out, first string) string {
	for _, r := range tableRows(out) {
		if strings.HasPrefix(r, first+" ") {
			return r
		}
	}
	return ""
}
