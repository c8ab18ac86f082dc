package service

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

func TestParseRevisionRef(t *testing.T) {
	hex40 := strings.Repeat("ab", 20)
	tests := []struct {
		in   string
		want revisionRef
		ok   bool
	}{
		{"", revisionRef{}, true},
		{"1", revisionRef{number: 1}, true},
		{"42", revisionRef{number: 42}, true},
		{"007", revisionRef{number: 7}, true},
		{"999999", revisionRef{number: 999999}, true},
		{"1234567", revisionRef{prefix: "1234567"}, true}, // 7 digits: a prefix
		{"abc1234", revisionRef{prefix: "abc1234"}, true},
		{"ABC1234", revisionRef{prefix: "abc1234"}, true},
		{"sha256:abc1234", revisionRef{prefix: "abc1234"}, true},
		{hex40, revisionRef{prefix: hex40}, true},
		{strings.Repeat("a", 64), revisionRef{prefix: strings.Repeat("a", 64)}, true},
		{"0", revisionRef{}, false},
		{"000", revisionRef{}, false},
		{"-1", revisionRef{}, false},
		{"+1", revisionRef{}, false},
		{"abc", revisionRef{}, false},       // too short for a prefix
		{"abc123", revisionRef{}, false},    // 6 hex digits
		{"sha256:12", revisionRef{}, false}, // a number is not a digest
		{"main", revisionRef{}, false},
		{"v1.0", revisionRef{}, false},
		{"abc1234g", revisionRef{}, false},
		{strings.Repeat("a", 65), revisionRef{}, false},
		{"sha256:", revisionRef{}, false},
		{" 1", revisionRef{}, false},
		{"１", revisionRef{}, false}, // a full-width digit
	}
	for _, tc := range tests {
		got, err := parseRevisionRef(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseRevisionRef(%q) = %+v, %v; want %+v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil {
			if code(err) != codes.InvalidArgument || !strings.HasPrefix(err.Error(), "rpc error: code = InvalidArgument desc = revision: ") || !strings.Contains(err.Error(), "revision number") {
				t.Errorf("parseRevisionRef(%q) error %v: want InvalidArgument naming the field and what is allowed", tc.in, err)
			}
		}
	}
}

func FuzzParseRevisionRef(f *testing.F) {
	for _, s := range []string{"", "1", "abc1234", "sha256:abc1234", "0", "-1", "main"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := parseRevisionRef(s)
		if err != nil {
			return
		}
		switch {
		case s == "":
			if ref != (revisionRef{}) {
				t.Fatalf("%q: %+v", s, ref)
			}
		case ref.number > 0:
			if ref.prefix != "" || len(s) >= minRevisionPrefix {
				t.Fatalf("%q: %+v", s, ref)
			}
		default:
			if len(ref.prefix) < minRevisionPrefix || len(ref.prefix) > 64 || strings.Trim(ref.prefix, "0123456789abcdef") != "" {
				t.Fatalf("%q: prefix %q", s, ref.prefix)
			}
		}
	})
}

func TestFindRevision(t *testing.T) {
	c := func(s string) string { return s + strings.Repeat("0", 40-len(s)) }
	d := func(s string) string { return "sha256:" + s + strings.Repeat("0", 64-len(s)) }
	// Numbered as the reconciler records them: 3 to 6, the older ones
	// dropped; 6 is a rollback to 3 (its commit again).
	numbered := store.AppStatus{Revisions: []store.Revision{
		{Resolved: c("aaaa111"), Number: 3},
		{Resolved: c("aaaa222"), Number: 4},
		{Resolved: c("bbbb333"), Number: 5},
		{Resolved: c("aaaa111"), Number: 6, RollbackOf: 3},
	}}
	// Recorded before revisions had numbers: numbered by position.
	legacy := store.AppStatus{Revisions: []store.Revision{{Resolved: d("cafe111")}, {Resolved: d("cafe222")}}}
	tests := []struct {
		name    string
		st      store.AppStatus
		ref     revisionRef
		want    int
		wantErr []string
	}{
		{"number", numbered, revisionRef{number: 4}, 1, nil},
		{"last number", numbered, revisionRef{number: 6}, 3, nil},
		{"dropped number", numbered, revisionRef{number: 2}, 0, []string{"no revision 2", "3 to 6"}},
		{"future number", numbered, revisionRef{number: 7}, 0, []string{"no revision 7", "3 to 6"}},
		{"unique prefix", numbered, revisionRef{prefix: "bbbb333"}, 2, nil},
		{"prefix of a commit rolled back to: the first", numbered, revisionRef{prefix: "aaaa111"}, 0, nil},
		{"full commit", numbered, revisionRef{prefix: c("aaaa222")}, 1, nil},
		{"prefix of none", numbered, revisionRef{prefix: "aaaa000"}, 0, []string{"no revision's commit", "3 to 6"}},
		{"ambiguous", numbered, revisionRef{prefix: "aaaa"}, 0, []string{"several", "3 (aaaa111", "4 (aaaa222", "more digits"}},
		{"no match", numbered, revisionRef{prefix: "1234567"}, 0, []string{"starts with 1234567", "3 to 6"}},
		{"legacy number", legacy, revisionRef{number: 2}, 1, nil},
		{"legacy missing", legacy, revisionRef{number: 3}, 0, []string{"no revision 3", "1 to 2"}},
		{"digest prefix", legacy, revisionRef{prefix: "cafe111"}, 0, nil},
		{"no revisions", store.AppStatus{}, revisionRef{number: 1}, 0, []string{"no deployed revision"}},
		{"one revision", store.AppStatus{Revisions: legacy.Revisions[:1]}, revisionRef{number: 2}, 0, []string{"only revision is 1"}},
	}
	for _, tc := range tests {
		got, err := findRevision(tc.st, tc.ref)
		if tc.wantErr == nil {
			if err != nil || got != tc.want {
				t.Errorf("%s: findRevision = %d, %v; want %d", tc.name, got, err, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: findRevision = %d, want an error", tc.name, got)
			continue
		}
		for _, w := range tc.wantErr {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, w)
			}
		}
	}
}

// TestRollbackApp: RollbackApp goes to the revision named by number or
// commit prefix, records an operation of kind ROLLBACK with the target's
// number in the spec, answers Unchanged for the running revision, and
// refuses a target that names nothing with the revisions there are,
// recording nothing.
func TestRollbackApp(t *testing.T) {
	s, ctx := rollServer(t, "roll")
	c1, c2, c3 := commit(1), commit(2), commit(3)
	// As the reconciler records three deploys: v1, v2, then main.
	deployedAt := func(ref string) {
		t.Helper()
		_, err := s.st.UpdateProject(ctx, "roll", func(p *store.Project) error {
			p.Spec.App("blog").Git.Ref = ref
			st := store.AppStatus{}
			for i, r := range []struct{ ref, commit string }{{"v1", c1}, {"v2", c2}, {"main", c3}} {
				st.AddRevision(store.Revision{URL: rollRepo, RequestedRef: r.ref, Resolved: r.commit, Time: time.Unix(int64(i), 0)}, 0)
			}
			st.RequestedRef, st.ResolvedCommit = "main", c3
			p.Status.Apps = map[string]store.AppStatus{"blog": st}
			p.Status.Phase, p.Status.ObservedGeneration = store.PhaseReady, p.Generation
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	deployedAt("main")
	state := func() (int64, int) {
		p, err := s.st.GetProject(ctx, "roll")
		if err != nil {
			t.Fatal(err)
		}
		ops, _ := s.st.ListOperations(ctx, "roll", 0)
		return p.Generation, len(ops)
	}
	rollback := func(to string) (*opusv1.Operation, error) {
		return s.client.RollbackApp(ctx, &opusv1.RollbackAppRequest{Project: "roll", App: "blog", To: to})
	}

	// Refusals record nothing.
	gen, nops := state()
	for _, tc := range []struct {
		to   string
		code codes.Code
		msg  []string
	}{
		{"4", codes.InvalidArgument, []string{"desc = revision: ", "no revision 4", "revisions are 1 to 3"}},
		{"0", codes.InvalidArgument, []string{"desc = revision: ", "numbered from 1"}},
		{"main", codes.InvalidArgument, []string{"desc = revision: ", "revision number", "hex digits"}},
		{"4444444", codes.InvalidArgument, []string{"desc = revision: ", "starts with 4444444", "revisions are 1 to 3"}},
	} {
		op, err := rollback(tc.to)
		if code(err) != tc.code {
			t.Errorf("--to %s: %v, %v; want %v", tc.to, op, err, tc.code)
			continue
		}
		for _, m := range tc.msg {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("--to %s: %q lacks %q", tc.to, err, m)
			}
		}
		for _, leak := range []string{"RollbackApp", "opus.v1", "revisionRef"} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("--to %s: %q names %s", tc.to, err, leak)
			}
		}
	}
	if _, err := s.client.RollbackApp(ctx, &opusv1.RollbackAppRequest{Project: "roll", App: "nope", To: "1"}); code(err) != codes.NotFound {
		t.Errorf("rollback of an unknown app: %v", err)
	}
	// The running revision, asked for by number or commit: nothing to do.
	for _, to := range []string{"3", c3[:7], "3333333333"} {
		op, err := rollback(to)
		if err != nil || !op.GetUnchanged() || op.GetId() != "" || op.GetKind() != opusv1.OperationKind_OPERATION_KIND_ROLLBACK {
			t.Errorf("rollback --to %s (running): %v, %v; want unchanged", to, op, err)
		}
	}
	if g, n := state(); g != gen || n != nops {
		t.Fatalf("refused or unchanged rollbacks moved the project: generation %d -> %d, operations %d -> %d", gen, g, nops, n)
	}

	// To revision 1 by number, then to revision 2 by commit prefix.
	for _, tc := range []struct {
		to     string
		commit string
		number int
	}{{"1", c1, 1}, {c2[:8], c2, 2}, {"", c2, 2}} {
		deployedAt("main")
		gen, nops := state()
		op, err := rollback(tc.to)
		if err != nil || op.GetId() == "" || op.GetKind() != opusv1.OperationKind_OPERATION_KIND_ROLLBACK {
			t.Fatalf("rollback --to %q: %v, %v", tc.to, op, err)
		}
		p, _ := s.st.GetProject(ctx, "roll")
		a := p.Spec.App("blog")
		if a.Git.URL != rollRepo || a.Git.Ref != tc.commit || a.RollbackTo != tc.number {
			t.Errorf("rollback --to %q: spec %+v %+v, want %s (revision %d)", tc.to, a, a.Git, tc.commit, tc.number)
		}
		if g, n := state(); g != gen+1 || n != nops+1 {
			t.Errorf("rollback --to %q: generation %d -> %d, operations %d -> %d", tc.to, gen, g, nops, n)
		}
		ops, _ := s.st.ListOperations(ctx, "roll", 1)
		if len(ops) != 1 || ops[0].Kind != store.OpRollback {
			t.Errorf("rollback --to %q recorded %+v, want kind ROLLBACK", tc.to, ops)
		}
	}
	// The older request form also records a rollback.
	deployedAt("main")
	if op, err := s.client.UpdateApp(ctx, &opusv1.UpdateAppRequest{Project: "roll", App: "blog", Rollback: true}); err != nil || op.GetKind() != opusv1.OperationKind_OPERATION_KIND_ROLLBACK {
		t.Errorf("rollback by UpdateAppRequest.rollback: %v, %v", op, err)
	}
}

// TestRunningRevision: a project's apps say which revision runs and
// whether their source asks for something else.
func TestRunningRevision(t *testing.T) {
	s, ctx := rollServer(t, "run")
	c1, c2 := commit(1), commit(2)
	get := func() *opusv1.App {
		p, err := s.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "run"})
		if err != nil || len(p.GetApps()) != 1 {
			t.Fatalf("get: %v, %v", p, err)
		}
		return p.GetApps()[0]
	}
	if a := get(); a.GetRunningRevision() != 0 || !a.GetPending() {
		t.Errorf("before its first deploy: running %d, pending %v", a.GetRunningRevision(), a.GetPending())
	}
	_, err := s.st.UpdateProject(ctx, "run", func(p *store.Project) error {
		p.Spec.App("blog").Git.Ref = c1
		p.Spec.App("blog").RollbackTo = 1
		st := store.AppStatus{RequestedRef: c1, ResolvedCommit: c1}
		st.AddRevision(store.Revision{URL: rollRepo, RequestedRef: "v1", Resolved: c1}, 0)
		st.AddRevision(store.Revision{URL: rollRepo, RequestedRef: "v2", Resolved: c2}, 0)
		st.AddRevision(store.Revision{URL: rollRepo, RequestedRef: c1, Resolved: c1, RollbackOf: 1}, 0)
		p.Status.Apps = map[string]store.AppStatus{"blog": st}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	a := get()
	revs := a.GetRevisions()
	if a.GetRunningRevision() != 3 || a.GetPending() || len(revs) != 3 || revs[2].GetNumber() != 3 || revs[2].GetRollbackOf() != 1 || revs[0].GetUrl() != rollRepo {
		t.Errorf("after a rollback to 1: running %d, pending %v, revisions %v", a.GetRunningRevision(), a.GetPending(), revs)
	}
	_, err = s.st.UpdateProject(ctx, "run", func(p *store.Project) error {
		p.Spec.App("blog").Git.Ref = "v3"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if a := get(); a.GetRunningRevision() != 3 || !a.GetPending() {
		t.Errorf("asking for v3: running %d, pending %v", a.GetRunningRevision(), a.GetPending())
	}
}

// TestRollbackWithData: a rollback with data names the newest snapshot
// taken while the app ran the target revision; validate_only answers it
// and changes nothing; a confirmed id that is no longer the one, or no
// snapshot at all, is refused with nothing recorded.
func TestRollbackWithData(t *testing.T) {
	s, ctx := rollServer(t, "roll")
	c1, c2, c3 := commit(1), commit(2), commit(3)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	_, err := s.st.UpdateProject(ctx, "roll", func(p *store.Project) error {
		p.Spec.App("blog").Git.Ref = "main"
		st := store.AppStatus{}
		for i, r := range []struct{ ref, commit string }{{"v1", c1}, {"v2", c2}, {"main", c3}} {
			st.AddRevision(store.Revision{URL: rollRepo, RequestedRef: r.ref, Resolved: r.commit, Time: time.Unix(int64(i), 0)}, 0)
		}
		st.RequestedRef, st.ResolvedCommit = "main", c3
		p.Status.Apps = map[string]store.AppStatus{"blog": st}
		p.Status.Phase, p.Status.ObservedGeneration = store.PhaseReady, p.Generation
		p.Snapshots = []store.Snapshot{
			{ID: "s-before-v2", Time: t0, Size: 10, Engine: "sqlite", Revisions: map[string]int{"blog": 1}},
			{ID: "s-before-main", Time: t0.Add(time.Hour), Size: 20, Engine: "sqlite", Revisions: map[string]int{"blog": 2}},
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	state := func() (int64, int, string) {
		p, err := s.st.GetProject(ctx, "roll")
		if err != nil {
			t.Fatal(err)
		}
		ops, _ := s.st.ListOperations(ctx, "roll", 0)
		return p.Generation, len(ops), p.Spec.RestoreSnapshot
	}
	gen, nops, _ := state()

	op, err := s.client.RollbackApp(ctx, &opusv1.RollbackAppRequest{Project: "roll", App: "blog", To: "1", WithData: true, ValidateOnly: true})
	if err != nil || op.GetId() != "" || op.GetDataSnapshot().GetId() != "s-before-v2" {
		t.Fatalf("validate_only to 1 = %v, %v; want snapshot s-before-v2 and no operation", op, err)
	}
	if g, n, _ := state(); g != gen || n != nops {
		t.Fatalf("validate_only changed the project: generation %d→%d, operations %d→%d", gen, g, nops, n)
	}
	for _, tc := range []struct {
		name string
		req  *opusv1.RollbackAppRequest
		code codes.Code
		msg  string
	}{
		{"no snapshot of revision 3", &opusv1.RollbackAppRequest{To: "3", WithData: true}, codes.FailedPrecondition, "no data snapshot"},
		{"confirmed another", &opusv1.RollbackAppRequest{To: "1", WithData: true, DataSnapshot: "s-before-main"}, codes.FailedPrecondition, "not s-before-main as confirmed"},
		{"snapshot without data", &opusv1.RollbackAppRequest{To: "1", DataSnapshot: "s-before-v2"}, codes.InvalidArgument, "with_data"},
	} {
		tc.req.Project, tc.req.App = "roll", "blog"
		_, err := s.client.RollbackApp(ctx, tc.req)
		if code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%s: %v, want %v with %q", tc.name, err, tc.code, tc.msg)
		}
		if g, n, r := state(); g != gen || n != nops || r != "" {
			t.Errorf("%s changed the project", tc.name)
		}
	}

	// Default target (revision 2): the snapshot taken while blog ran 2.
	op, err = s.client.RollbackApp(ctx, &opusv1.RollbackAppRequest{Project: "roll", App: "blog", WithData: true, DataSnapshot: "s-before-main"})
	if err != nil || op.GetId() == "" || op.GetDataSnapshot().GetId() != "s-before-main" {
		t.Fatalf("rollback with data = %v, %v", op, err)
	}
	if g, _, r := state(); g != gen+1 || r != "s-before-main" {
		t.Errorf("after the rollback: generation %d, restore %q", g, r)
	}
	p, err := s.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "roll"})
	if err != nil || len(p.GetDataSnapshots()) != 2 || p.GetDataSnapshots()[0].GetRevisions()[0].GetNumber() != 1 {
		t.Errorf("GetProject's data snapshots: %v, %v", p.GetDataSnapshots(), err)
	}
	// Each revision names the snapshot a rollback to it with its data
	// restores (the console offers it): the same the rollback picks.
	var named []string
	for _, r := range p.GetApps()[0].GetRevisions() {
		named = append(named, r.GetDataSnapshot())
	}
	if want := []string{"s-before-v2", "s-before-main", ""}; !slices.Equal(named, want) {
		t.Errorf("revisions name the snapshots %q, want %q", named, want)
	}
}

// TestRollbackWithDataToTheRunningCommit: revision 4 rolled back to 2 (the
// same commit runs); a rollback to 2 with data restores the snapshot taken
// while revision 2 ran, not one of revision 4.
func TestRollbackWithDataToTheRunningCommit(t *testing.T) {
	s, ctx := rollServer(t, "roll")
	c1, c2, c3 := commit(1), commit(2), commit(3)
	_, err := s.st.UpdateProject(ctx, "roll", func(p *store.Project) error {
		st := store.AppStatus{}
		for i, r := range []struct{ ref, commit string }{{"v1", c1}, {"v2", c2}, {"main", c3}, {c2, c2}} {
			st.AddRevision(store.Revision{URL: rollRepo, RequestedRef: r.ref, Resolved: r.commit, Time: time.Unix(int64(i), 0)}, 0)
		}
		st.RequestedRef, st.ResolvedCommit = c2, c2
		p.Status.Apps = map[string]store.AppStatus{"blog": st}
		p.Spec.App("blog").Git.Ref = c2
		p.Status.Phase, p.Status.ObservedGeneration = store.PhaseReady, p.Generation
		p.Snapshots = []store.Snapshot{{ID: "s-of-2", Time: time.Unix(10, 0), Size: 20, Engine: "sqlite", Revisions: map[string]int{"blog": 2}}}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	op, err := s.client.RollbackApp(ctx, &opusv1.RollbackAppRequest{Project: "roll", App: "blog", To: "2", WithData: true, ValidateOnly: true})
	if err != nil || op.GetDataSnapshot().GetId() != "s-of-2" {
		t.Fatalf("rollback with data to 2 while 4 (= 2's commit) runs: %v, %v; want snapshot s-of-2", op, err)
	}
}

// rollRepo is the repository of the app blog in the rollback tests.
const rollRepo = "https://example.com/blog.git"

// rollServer starts a service with project name, whose one app blog comes
// from rollRepo; the tests then record its revisions as the reconciler
// would.
func rollServer(t *testing.T, name string) (*server, context.Context) {
	t.Helper()
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: name, Apps: []*opusv1.AppSpec{gitApp("blog", rollRepo)}}); err != nil {
		t.Fatal(err)
	}
	return s, ctx
}

// commit is a made-up commit hash, n repeated.
func commit(n int) string { return strings.Repeat(strconv.Itoa(n), 40) }
