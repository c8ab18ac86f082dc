package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/service/servicetest"
)

func TestSetCommand(t *testing.T) {
	s := startOpusd(t)
	seedProjects(t, s)
	r := runCLI(t, s.Socket, "", "set", "talpha", "debug=true", "env.GREETING=\"; import os #", "hosts=a.example,b.example", "--unset", "env.OLD")
	if r.code != 0 {
		t.Fatalf("set: %+v", r)
	}
	flat := strings.Join(strings.Fields(r.stdout), " ")
	for _, want := range []string{"Changing the settings of talpha (operation", "step reload: done", "debug on", "hosts a.example,b.example", `env.GREETING "\"; import os #"`} {
		if !strings.Contains(flat, want) {
			t.Errorf("set output lacks %q:\n%s", want, r.stdout)
		}
	}
	calls := s.CallsOf("UpdateSettings")
	if len(calls) != 1 {
		t.Fatalf("UpdateSettings calls: %v", calls)
	}
	req := calls[0].Req.(*opusv1.UpdateSettingsRequest)
	if req.GetProject() != "talpha" || req.GetSet()["env.GREETING"] != `"; import os #` || req.GetSet()["debug"] != "true" ||
		len(req.GetUnset()) != 1 || req.GetUnset()[0] != "env.OLD" {
		t.Errorf("request %v", req)
	}
	if set := project(t, s, "talpha").Spec.Settings; !set.Debug || set.Env["GREETING"] != `"; import os #` || strings.Join(set.Hosts, ",") != "a.example,b.example" {
		t.Errorf("settings opusd keeps: %+v", set)
	}
	// show lists the settings.
	if r := runCLI(t, s.Socket, "", "show", "talpha"); !strings.Contains(r.stdout, "Settings:") || !strings.Contains(r.stdout, "env.GREETING") {
		t.Errorf("show:\n%s", r.stdout)
	}

	for _, bad := range [][]string{
		{"set", "talpha"},
		{"set", "talpha", "debug"},
		{"set", "talpha", "=x"},
		{"set", "talpha", "debug=true", "debug=false"},
		{"set"},
	} {
		if r := runCLI(t, s.Socket, "", bad...); r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d: %s", bad, r.code, exitUsage, r.stderr)
		}
	}
	if r := runCLI(t, s.Socket, "", "set", "talpha", "nosuch=1"); r.code != exitUsage || !strings.Contains(r.stderr, "unknown setting") {
		t.Errorf("unknown key: %+v", r)
	}
	if n := len(s.CallsOf("UpdateSettings")); n != 2 {
		t.Errorf("usage errors reached opusd: %d calls", n)
	}
}

// TestSetUnchanged: set with the settings a deployed project already
// has says so, exits 0 and leaves the project as it was (no operation,
// same generation, no reconcile).
func TestSetUnchanged(t *testing.T) {
	s := startOpusd(t)
	seedProjects(t, s)
	if r := runCLI(t, s.Socket, "", "set", "talpha", "debug=true", "env.A=b"); r.code != 0 {
		t.Fatalf("first set: %+v", r)
	}
	before := project(t, s, "talpha")
	opsBefore, err := s.Store.ListOperations(context.Background(), "talpha", 0)
	if err != nil {
		t.Fatal(err)
	}
	s.ForgetCalls()
	privdBefore := len(s.Privd.Calls())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"set", "talpha", "debug=true", "env.A=b"}, "Nothing to change: the settings of talpha are already as given.\n"},
		{[]string{"set", "talpha", "debug=on", "--unset", "hosts", "--no-wait"}, "Nothing to change: the settings of talpha are already as given.\n"},
		{[]string{"set", "talpha", "env.A=b", "-o", "json"}, ""},
	} {
		r := runCLI(t, s.Socket, "", tc.args...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("%v: %+v", tc.args, r)
		}
		if tc.want != "" && r.stdout != tc.want {
			t.Errorf("%v: stdout %q, want %q", tc.args, r.stdout, tc.want)
		}
		if tc.want == "" {
			if v := mustJSON(t, r.stdout); v["unchanged"] != true || v["project"] != "talpha" || v["id"] != "" || v["kind"] != "OPERATION_KIND_UPDATE_SETTINGS" {
				t.Errorf("%v: JSON %v, want unchanged, project talpha, no id", tc.args, v)
			}
		}
	}
	after := project(t, s, "talpha")
	opsAfter, err := s.Store.ListOperations(context.Background(), "talpha", 0)
	if err != nil {
		t.Fatal(err)
	}
	if after.Generation != before.Generation || len(opsAfter) != len(opsBefore) {
		t.Errorf("unchanged sets moved talpha: generation %d -> %d, operations %d -> %d", before.Generation, after.Generation, len(opsBefore), len(opsAfter))
	}
	noCalls(t, s, "WatchOperation", "GetOperation")
	if calls := s.Privd.Calls(); len(calls) != privdBefore {
		t.Errorf("unchanged sets reached privd: %v", calls[privdBefore:])
	}
}

// updateNews moves talpha's news to v2, so that it has a revision to go
// back to, and forgets the calls that made.
func updateNews(t *testing.T, s *servicetest.Opusd) {
	t.Helper()
	if r := runCLI(t, s.Socket, "", "apps", "update", "talpha", "news", "v2"); r.code != 0 {
		t.Fatalf("apps update: %+v", r)
	}
	s.ForgetCalls()
}

// TestAppsRollbackCommand: rollback goes to the previous revision or to
// the one --to names (number or commit prefix), as an operation of kind
// rollback; apps ls, apps revisions and show then describe the revision
// that runs; the running revision is nothing to do, and a --to naming no
// revision is a usage error (exit 2) that changes nothing.
func TestAppsRollbackCommand(t *testing.T) {
	s := startOpusd(t)
	sd := seedProjects(t, s)
	want := fmt.Sprintf("opusctl: app \"news\" of \"talpha\" has only one revision (%s); there is nothing before it to roll back to\n", sd.newsV1)
	if r := runCLI(t, s.Socket, "", "apps", "rollback", "talpha", "news"); r.code != exitError || r.stderr != want {
		t.Errorf("rollback without a previous revision: %+v, want stderr %q", r, want)
	}
	updateNews(t, s)
	r := runCLI(t, s.Socket, "", "apps", "rollback", "talpha", "news")
	if r.code != 0 || !strings.Contains(r.stdout, "Rolling back app news of talpha") || !strings.Contains(r.stdout, "step sources: done") {
		t.Fatalf("rollback: %+v", r)
	}
	calls := s.CallsOf("RollbackApp")
	if len(calls) != 1 {
		t.Fatalf("RollbackApp calls: %v", calls)
	}
	if req := calls[0].Req.(*opusv1.RollbackAppRequest); req.GetProject() != "talpha" || req.GetApp() != "news" || req.GetTo() != "" {
		t.Errorf("request %v", req)
	}
	if got := project(t, s, "talpha").Status.Apps["news"].ResolvedCommit; got != sd.newsV1 {
		t.Errorf("news after the rollback at %q, want v1 (%s)", got, sd.newsV1)
	}
	if r := runCLI(t, s.Socket, "", "apps", "rollback", "talpha"); r.code != exitUsage {
		t.Errorf("rollback without APP: %+v", r)
	}

	// Revisions 1 (v1), 2 (v2), 3 (rollback to 1), 4 (feature/x).
	feature := gitRev(t, strings.TrimPrefix(sd.newsURL, "file://"), "feature/x")
	if r := runCLI(t, s.Socket, "", "apps", "update", "talpha", "news", "feature/x"); r.code != 0 {
		t.Fatalf("update: %+v", r)
	}
	r = runCLI(t, s.Socket, "", "apps", "rollback", "talpha", "news", "--to", sd.newsV2[:8])
	if r.code != 0 || !strings.Contains(r.stdout, "Rolling back app news of talpha to "+sd.newsV2[:8]) {
		t.Fatalf("rollback --to %s: %+v", sd.newsV2[:8], r)
	}
	if got := project(t, s, "talpha").Status.Apps["news"].ResolvedCommit; got != sd.newsV2 {
		t.Errorf("news after rollback --to v2's commit at %q, want %s", got, sd.newsV2)
	}
	r = runCLI(t, s.Socket, "", "apps", "rollback", "talpha", "news", "--to", "1")
	if r.code != 0 {
		t.Fatalf("rollback --to 1: %+v", r)
	}
	if got := project(t, s, "talpha").Status.Apps["news"].ResolvedCommit; got != sd.newsV1 {
		t.Errorf("news after rollback --to 1 at %q, want %s", got, sd.newsV1)
	}
	if r := runCLI(t, s.Socket, "", "ops", "talpha"); r.code != 0 || !strings.Contains(strings.SplitN(r.stdout, "\n", 3)[1], "rollback") {
		t.Errorf("the newest operation is not a rollback:\n%s", r.stdout)
	}
	// apps ls: revision 6 runs, v1's commit, a rollback to 1 (v1).
	r = runCLI(t, s.Socket, "", "apps", "ls", "talpha")
	if f := fieldsOf(r.stdout, "news"); r.code != 0 || strings.Join(f[:5], " ") != "news 6 "+sd.newsV1[:12]+" v1 (rollback" {
		t.Errorf("apps ls after rollback --to 1:\n%s", r.stdout)
	}
	r = runCLI(t, s.Socket, "", "apps", "revisions", "talpha", "news")
	// The revisions table, then (after a blank line) the data snapshots.
	rows := strings.Split(strings.TrimSpace(strings.SplitN(r.stdout, "\n\n", 2)[0]), "\n")
	if r.code != 0 || len(rows) != 7 || !strings.HasPrefix(strings.Join(strings.Fields(rows[1]), " "), "6 "+sd.newsV1[:12]+" (running) v1 (rollback to 1)") ||
		!strings.HasPrefix(strings.Join(strings.Fields(rows[3]), " "), "4 "+feature[:12]+" feature/x") || !strings.HasPrefix(rows[6], "1 ") {
		t.Errorf("apps revisions after rollback --to 1:\n%s", r.stdout)
	}

	// Nothing to do, and refusals: nothing recorded.
	before := project(t, s, "talpha")
	opsBefore, _ := s.Store.ListOperations(context.Background(), "talpha", 0)
	for _, to := range []string{"6", "1", sd.newsV1[:7]} {
		// 1 is v1's commit too: it runs already.
		r := runCLI(t, s.Socket, "", "apps", "rollback", "talpha", "news", "--to", to)
		if r.code != 0 || !strings.Contains(r.stdout, "Nothing to change") {
			t.Errorf("rollback --to %s (running): %+v", to, r)
		}
	}
	for _, tc := range []struct{ to, want string }{
		{"9", "there is no revision 9; the app's revisions are 1 to 6"},
		{"main", "give a revision number"},
		{"0", "numbered from 1"},
		{"abcdef0123", "no revision's commit or digest starts with abcdef0123"},
	} {
		r := runCLI(t, s.Socket, "", "apps", "rollback", "talpha", "news", "--to", tc.to)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("rollback --to %s: %+v, want exit %d and %q", tc.to, r, exitUsage, tc.want)
		}
	}
	after := project(t, s, "talpha")
	opsAfter, _ := s.Store.ListOperations(context.Background(), "talpha", 0)
	if after.Generation != before.Generation || len(opsAfter) != len(opsBefore) || after.Spec.App("news").Git.Ref != before.Spec.App("news").Git.Ref {
		t.Errorf("refused or unchanged rollbacks moved talpha: generation %d -> %d, operations %d -> %d", before.Generation, after.Generation, len(opsBefore), len(opsAfter))
	}
}

// fieldsOf is the fields of the first line of out whose first field is
// first (nil if none).
func fieldsOf(out, first string) []string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == first {
			return f
		}
	}
	return make([]string, 8)
}

func TestShowRevisions(t *testing.T) {
	s := startOpusd(t)
	sd := seedProjects(t, s)
	updateNews(t, s)
	r := runCLI(t, s.Socket, "", "show", "talpha")
	i1, i2 := strings.Index(r.stdout, sd.newsV1[:12]), strings.Index(r.stdout, sd.newsV2[:12]+" (running)")
	if r.code != 0 || !strings.Contains(r.stdout, "Revisions:") || i1 < 0 || i2 < 0 || i2 > i1 {
		t.Errorf("show does not list the revisions newest first:\n%s", r.stdout)
	}
}

func TestParseDatabase(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want string // "user@host:port/name", or "" for a usage error
	}{
		{"postgresql://blog@db.example.com:5433/blogdb", "blog@db.example.com:5433/blogdb"},
		{"postgres://blog@127.0.0.1/blog", "blog@127.0.0.1:0/blog"},
		{"postgresql://blog:secret@db/blog", ""},
		{"mysql://blog@db/blog", ""},
		{"postgresql://db/blog", ""},
		{"postgresql://blog@db/", ""},
		{"postgresql://blog@db:99999/blog", ""},
		{"postgresql://blog@db/blog?sslmode=disable", ""},
	} {
		db, err := parseDatabase(tc.raw)
		if tc.want == "" {
			if err == nil || !isUsage(err) {
				t.Errorf("parseDatabase(%q) = %v, %v; want a usage error", tc.raw, db, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseDatabase(%q): %v", tc.raw, err)
			continue
		}
		if got := fmt.Sprintf("%s@%s:%d/%s", db.GetUser(), db.GetHost(), db.GetPort(), db.GetName()); got != tc.want || db.GetEngine() != "postgresql" {
			t.Errorf("parseDatabase(%q) = %s (%s), want %s", tc.raw, got, db.GetEngine(), tc.want)
		}
	}
}

func TestCreateWithDatabase(t *testing.T) {
	s := startOpusd(t)
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret-db\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, s.Socket, "", "create", "tpg", "--empty", "--database", "postgresql://tpg@127.0.0.1:5432/tpg", "--database-password-file", pwFile)
	if r.code != 0 || strings.Contains(r.stdout+r.stderr, "s3cret") {
		t.Fatalf("create: %+v", r)
	}
	req := s.CallsOf("CreateProject")[0].Req.(*opusv1.CreateProjectRequest)
	if db := req.GetDatabase(); db.GetName() != "tpg" || db.GetPassword() != "s3cret-db" || db.GetPort() != 5432 {
		t.Errorf("database %v", db)
	}
	if r := runCLI(t, s.Socket, "", "create", "tpg2", "--empty", "--database-password-file", pwFile); r.code != exitUsage {
		t.Errorf("password file without --database: %+v", r)
	}
}
