package service

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/names/namestest"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

const testServer, testSfx = "blog.opus.test", ".opus.test"

func TestApplySettings(t *testing.T) {
	base := store.Settings{Hosts: []string{"old.example.com"}, Env: map[string]string{"KEEP": "1"}}
	for _, tc := range []struct {
		name  string
		set   map[string]string
		unset []string
		want  store.Settings
		admin bool
		// opusAdmin: the caller is an Opus admin (not the project's
		// Django admin, which admin is).
		opusAdmin bool
		denied    bool   // refused as PermissionDenied, not InvalidArgument
		err       string // substring of the refusal; "" means accepted
	}{
		{name: "memory by an admin", set: map[string]string{"memory": "512M"}, opusAdmin: true,
			want: store.Settings{Hosts: base.Hosts, Env: base.Env, MemoryBytes: 512 << 20}},
		{name: "tasks and cpu by an admin", set: map[string]string{"tasks": "256", "cpu": "50"}, opusAdmin: true,
			want: store.Settings{Hosts: base.Hosts, Env: base.Env, Tasks: 256, CPUPercent: 50}},
		{name: "memory by the owner", set: map[string]string{"memory": "8G"}, denied: true, err: "only an admin"},
		{name: "unset cpu by the owner", unset: []string{"cpu"}, denied: true, err: "only an admin"},
		{name: "memory too small", set: map[string]string{"memory": "1M"}, opusAdmin: true, err: "memory"},
		{name: "memory word", set: map[string]string{"memory": "lots"}, opusAdmin: true, err: "not a size"},
		{name: "tasks too few", set: map[string]string{"tasks": "3"}, opusAdmin: true, err: "tasks"},
		{name: "cpu negative", set: map[string]string{"cpu": "-5"}, opusAdmin: true, err: "cpu: -5; give a percent of one CPU from 5 to 100000"},
		{name: "tasks negative", set: map[string]string{"tasks": "-1"}, opusAdmin: true, err: "tasks: -1; give 32 to"},
		{name: "cpu word", set: map[string]string{"cpu": "50%"}, opusAdmin: true, err: `cpu: "50%" is not a whole number`},
		{name: "memory zero", set: map[string]string{"memory": "0"}, opusAdmin: true, err: "--unset memory"},
		{name: "debug on", set: map[string]string{"debug": "true"}, want: store.Settings{Debug: true, Hosts: base.Hosts, Env: base.Env}},
		{name: "admin on", set: map[string]string{"admin": "yes"}, want: base, admin: true},
		{name: "hosts replace and normalize", set: map[string]string{"hosts": "A.example.com, b.example.com,a.example.com"},
			want: store.Settings{Hosts: []string{"a.example.com", "b.example.com"}, Env: base.Env}},
		{name: "hosts cleared", set: map[string]string{"hosts": ""}, want: store.Settings{Env: base.Env}},
		{name: "env python-looking value is data", set: map[string]string{"env.GREETING": `"; import os #`},
			want: store.Settings{Hosts: base.Hosts, Env: map[string]string{"KEEP": "1", "GREETING": `"; import os #`}}},
		{name: "env newline value is data", set: map[string]string{"env.X": "a\nInclude /etc/shadow"},
			want: store.Settings{Hosts: base.Hosts, Env: map[string]string{"KEEP": "1", "X": "a\nInclude /etc/shadow"}}},
		{name: "unset", unset: []string{"hosts", "env.KEEP", "debug"}, want: store.Settings{}},
		{name: "nothing", err: "nothing to change"},
		{name: "debug with directive", set: map[string]string{"debug": "yes\nInclude x"}, err: "debug"},
		{name: "debug word", set: map[string]string{"debug": "maybe"}, err: "not true or false"},
		{name: "admin spaces", set: map[string]string{"admin": " true"}, err: "admin"},
		{name: "hosts newline", set: map[string]string{"hosts": "a.example\nInclude /etc/shadow"}, err: "only lowercase"},
		{name: "hosts directive", set: map[string]string{"hosts": "Include /etc/shadow"}, err: "hosts"},
		{name: "hosts quote", set: map[string]string{"hosts": `a.example"`}, err: "hosts"},
		{name: "hosts wildcard", set: map[string]string{"hosts": "*.example.com"}, err: "hosts"},
		{name: "hosts empty label", set: map[string]string{"hosts": "a..example"}, err: "empty label"},
		{name: "hosts dash", set: map[string]string{"hosts": "-a.example"}, err: "'-'"},
		{name: "hosts own name", set: map[string]string{"hosts": testServer}, err: "own name"},
		{name: "hosts other project", set: map[string]string{"hosts": "shop" + testSfx}, err: "belongs to an Opus project"},
		{name: "hosts too many", set: map[string]string{"hosts": strings.Repeat("x.example,", 20) + strings.Join(manyHosts(21), ",")}, err: "at most"},
		{name: "hosts long label", set: map[string]string{"hosts": strings.Repeat("a", 64) + ".example"}, err: "longer than 63"},
		{name: "env lowercase", set: map[string]string{"env.path": "x"}, err: "not allowed"},
		{name: "env python", set: map[string]string{"env.PYTHONPATH": "/tmp"}, err: "PYTHONPATH"},
		{name: "env loader", set: map[string]string{"env.LD_PRELOAD": "/tmp/x.so"}, err: "LD_PRELOAD"},
		{name: "env django settings", set: map[string]string{"env.DJANGO_SETTINGS_MODULE": "evil"}, err: "DJANGO_SETTINGS_MODULE"},
		{name: "env nul", set: map[string]string{"env.X": "a\x00b"}, err: "NUL"},
		{name: "env bad utf8", set: map[string]string{"env.X": "\xff"}, err: "UTF-8"},
		{name: "env too long", set: map[string]string{"env.X": strings.Repeat("x", maxEnvValue+1)}, err: "longer than"},
		{name: "unknown key", set: map[string]string{"secret_key": "x"}, err: "unknown setting"},
		{name: "unknown unset", unset: []string{"database"}, err: "unknown setting"},
		{name: "set and unset", set: map[string]string{"debug": "true"}, unset: []string{"debug"}, err: "both set and unset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &store.Project{Name: "blog", Spec: store.Spec{Settings: store.Settings{Hosts: slices.Clone(base.Hosts), Env: maps.Clone(base.Env)}}}
			err := applySettings(p, tc.set, tc.unset, testServer, testSfx, tc.opusAdmin)
			if tc.err != "" {
				code := codes.InvalidArgument
				if tc.denied {
					code = codes.PermissionDenied
				}
				if err == nil || status.Code(err) != code || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %v with %q", err, code, tc.err)
				}
				if p.Spec.Settings.MemoryBytes != 0 || p.Spec.Settings.Tasks != 0 || p.Spec.Settings.CPUPercent != 0 {
					t.Fatalf("a refused change changed the limits: %+v", p.Spec.Settings)
				}
				if p.Spec.Admin || p.Spec.Settings.Debug || !slices.Equal(p.Spec.Settings.Hosts, base.Hosts) || !maps.Equal(p.Spec.Settings.Env, base.Env) {
					t.Fatalf("a refused change changed the settings: %+v", p.Spec)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := p.Spec.Settings
			if got.Debug != tc.want.Debug || !slices.Equal(got.Hosts, tc.want.Hosts) || !maps.Equal(got.Env, tc.want.Env) || p.Spec.Admin != tc.admin {
				t.Fatalf("settings = %+v admin %v, want %+v admin %v", got, p.Spec.Admin, tc.want, tc.admin)
			}
		})
	}
}

func manyHosts(n int) []string {
	var hs []string
	for i := range n {
		hs = append(hs, "h"+strings.Repeat("x", i+1)+".example")
	}
	return hs
}

// FuzzApplySettings: whatever is accepted is only data: host names of
// a-z, 0-9, '-' and '.', exact on/off words, env names of the allowed
// shape with the value stored exactly as given.
func FuzzApplySettings(f *testing.F) {
	for _, s := range [][2]string{{"hosts", "a.example.com"}, {"hosts", "a.example\nInclude /etc/shadow"}, {"debug", "yes\nInclude x"},
		{"env.GREETING", `"; import os #`}, {"env.X", "\x00"}, {"admin", "true"}, {"hosts", "A.B,c"}, {"env.PYTHONPATH", "x"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		p := &store.Project{Name: "blog"}
		if err := applySettings(p, map[string]string{key: value}, nil, testServer, testSfx, true); err != nil {
			if p.Spec.Settings.Debug || p.Spec.Admin || len(p.Spec.Settings.Hosts) != 0 || len(p.Spec.Settings.Env) != 0 {
				t.Fatalf("refused %q=%q changed the settings", key, value)
			}
			return
		}
		for _, h := range p.Spec.Settings.Hosts {
			if strings.Trim(h, "abcdefghijklmnopqrstuvwxyz0123456789-.") != "" || h == "" || strings.HasSuffix(h, testSfx) {
				t.Fatalf("host %q accepted", h)
			}
		}
		switch {
		case key == "debug" || key == "admin":
			if !slices.Contains([]string{"true", "false", "on", "off", "yes", "no", "1", "0"}, value) {
				t.Fatalf("%s=%q accepted", key, value)
			}
		case strings.HasPrefix(key, "env."):
			name := strings.TrimPrefix(key, "env.")
			if validateEnvName(name) != nil || p.Spec.Settings.Env[name] != value || strings.ContainsRune(value, 0) {
				t.Fatalf("env %q=%q stored as %q", name, value, p.Spec.Settings.Env[name])
			}
		case key != "hosts":
			t.Fatalf("unknown key %q accepted", key)
		}
	})
}

func TestUpdateSettingsRPC(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	for _, n := range []string{"blog", "shop"} {
		if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	op, err := s.client.UpdateSettings(ctx, &opusv1.UpdateSettingsRequest{Project: "blog",
		Set: map[string]string{"debug": "true", "hosts": "www.blog.example", "env.API": "https://x", "admin": "on"}})
	if err != nil || op.Generation != 2 || op.Kind != opusv1.OperationKind_OPERATION_KIND_UPDATE_SETTINGS {
		t.Fatalf("UpdateSettings = %v, %v; want an UPDATE_SETTINGS operation at generation 2", op, err)
	}
	p, err := s.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "blog"})
	if err != nil {
		t.Fatal(err)
	}
	if st := p.GetSettings(); !st.GetDebug() || !st.GetAdmin() || !p.GetAdmin() || !slices.Equal(st.GetHosts(), []string{"www.blog.example"}) || st.GetEnv()["API"] != "https://x" {
		t.Fatalf("settings = %v", st)
	}
	kicks := len(s.kicker.list())
	for _, tc := range []struct {
		project string
		set     map[string]string
		unset   []string
		code    codes.Code
	}{
		{"blog", map[string]string{"hosts": "a\nInclude /etc/shadow"}, nil, codes.InvalidArgument},
		{"blog", map[string]string{"debug": "yes\nInclude x"}, nil, codes.InvalidArgument},
		{"blog", nil, nil, codes.InvalidArgument},
		{"shop", map[string]string{"hosts": "www.blog.example"}, nil, codes.AlreadyExists},
		{"nope", map[string]string{"debug": "true"}, nil, codes.NotFound},
		{"Bad", map[string]string{"debug": "true"}, nil, codes.InvalidArgument},
	} {
		if _, err := s.client.UpdateSettings(ctx, &opusv1.UpdateSettingsRequest{Project: tc.project, Set: tc.set, Unset: tc.unset}); code(err) != tc.code {
			t.Errorf("UpdateSettings(%s, %q) = %v, want %v", tc.project, tc.set, err, tc.code)
		}
	}
	if got := len(s.kicker.list()); got != kicks {
		t.Errorf("refused changes kicked the reconciler")
	}
	for n, gen := range map[string]int64{"blog": 2, "shop": 1} {
		if rec, _ := s.st.GetProject(ctx, n); rec.Generation != gen || (n == "shop" && len(rec.Spec.Settings.Hosts) != 0) {
			t.Errorf("%s after refusals: gen %d, settings %+v", n, rec.Generation, rec.Spec.Settings)
		}
	}
	// Initial settings of CreateProject are checked the same way.
	if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "news", Settings: &opusv1.Settings{Hosts: []string{"x\nInclude y"}}}); code(err) != codes.InvalidArgument {
		t.Errorf("create with a bad host = %v", err)
	}
	if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "news", Database: &opusv1.Database{Engine: "postgresql", Provision: true}}); code(err) != codes.FailedPrecondition {
		t.Errorf("create with a provisioned postgresql on a host without postgres_admin = %v", err)
	}
	if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "news", Settings: &opusv1.Settings{Debug: true, Env: map[string]string{"A": "b"}, Admin: true}}); err != nil {
		t.Fatal(err)
	}
	if rec, _ := s.st.GetProject(ctx, "news"); !rec.Spec.Settings.Debug || rec.Spec.Settings.Env["A"] != "b" || !rec.Spec.Admin {
		t.Errorf("create settings stored as %+v admin %v", rec.Spec.Settings, rec.Spec.Admin)
	}
}

func TestSameSettings(t *testing.T) {
	base := store.Settings{Debug: true, Hosts: []string{"a.example", "b.example"}, Env: map[string]string{"A": "b"}, MemoryBytes: 1 << 30}
	for _, tc := range []struct {
		name string
		a, b store.Settings
		same bool
	}{
		{"equal", base, base.Clone(), true},
		{"empty is none", store.Settings{Hosts: []string{}, Env: map[string]string{}}, store.Settings{}, true},
		{"debug", base, func() store.Settings { s := base.Clone(); s.Debug = false; return s }(), false},
		{"host order", base, func() store.Settings { s := base.Clone(); s.Hosts = []string{"b.example", "a.example"}; return s }(), false},
		{"env value", base, func() store.Settings { s := base.Clone(); s.Env["A"] = "c"; return s }(), false},
		{"memory", base, func() store.Settings { s := base.Clone(); s.MemoryBytes = 0; return s }(), false},
		{"cpu", base, func() store.Settings { s := base.Clone(); s.CPUPercent = 50; return s }(), false},
	} {
		if got := sameSettings(tc.a, tc.b); got != tc.same {
			t.Errorf("%s: sameSettings = %v, want %v", tc.name, got, tc.same)
		}
	}
}

// TestUpdateSettingsUnchanged: asking a deployed project for the
// settings it has records no operation, keeps its generation and kicks
// nothing; a project not at its spec gets its operation (a retry).
func TestUpdateSettingsUnchanged(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		phase     store.Phase
		behind    bool // the reconciler has not reached the spec
		set       map[string]string
		unset     []string
		unchanged bool
	}{
		{"same", store.PhaseReady, false, map[string]string{"debug": "on", "hosts": "www.same.example", "env.A": "b", "admin": "false"}, nil, true},
		{"unsetabsent", store.PhaseReady, false, nil, []string{"env.NOPE"}, true},
		{"spelled", store.PhaseReady, false, map[string]string{"debug": "1", "hosts": " WWW.spelled.example "}, nil, true},
		{"debugoff", store.PhaseReady, false, map[string]string{"debug": "false"}, nil, false},
		{"envchanged", store.PhaseReady, false, map[string]string{"env.A": "c"}, nil, false},
		{"envunset", store.PhaseReady, false, nil, []string{"env.A"}, false},
		{"adminon", store.PhaseReady, false, map[string]string{"admin": "true"}, nil, false},
		{"failed", store.PhaseFailed, false, map[string]string{"debug": "true"}, nil, false},
		{"pending", store.PhaseReady, true, map[string]string{"debug": "true"}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: tc.name,
				Settings: &opusv1.Settings{Debug: true, Hosts: []string{"www." + tc.name + ".example"}, Env: map[string]string{"A": "b"}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.st.UpdateProject(ctx, tc.name, func(p *store.Project) error {
				p.Status.Phase, p.Status.ObservedGeneration = tc.phase, p.Generation
				if tc.behind {
					p.Status.ObservedGeneration--
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			before, _ := s.st.GetProject(ctx, tc.name)
			opsBefore, _ := s.st.ListOperations(ctx, tc.name, 0)
			kicks := len(s.kicker.list())
			op, err := s.client.UpdateSettings(ctx, &opusv1.UpdateSettingsRequest{Project: tc.name, Set: tc.set, Unset: tc.unset})
			if err != nil {
				t.Fatal(err)
			}
			after, _ := s.st.GetProject(ctx, tc.name)
			opsAfter, _ := s.st.ListOperations(ctx, tc.name, 0)
			kicked := len(s.kicker.list()) != kicks
			if tc.unchanged {
				if !op.GetUnchanged() || op.GetId() != "" || op.GetProject() != tc.name || op.GetKind() != opusv1.OperationKind_OPERATION_KIND_UPDATE_SETTINGS || op.GetGeneration() != before.Generation {
					t.Errorf("answer = %v; want unchanged, no id, generation %d", op, before.Generation)
				}
				if after.Generation != before.Generation || len(opsAfter) != len(opsBefore) || kicked {
					t.Errorf("unchanged request: generation %d -> %d, operations %d -> %d, kicked %v", before.Generation, after.Generation, len(opsBefore), len(opsAfter), kicked)
				}
				return
			}
			if op.GetUnchanged() || op.GetId() == "" || after.Generation != before.Generation+1 || len(opsAfter) != len(opsBefore)+1 || !kicked {
				t.Errorf("change: answer %v, generation %d -> %d, operations %d -> %d, kicked %v", op, before.Generation, after.Generation, len(opsBefore), len(opsAfter), kicked)
			}
		})
	}
}

func TestRollback(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	const repo = "https://example.com/blog.git"
	c1, c2 := strings.Repeat("1", 40), strings.Repeat("2", 40)
	if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "roll", Apps: []*opusv1.AppSpec{gitApp("blog", repo)}}); err != nil {
		t.Fatal(err)
	}
	rollback := func() error {
		_, err := s.client.UpdateApp(ctx, &opusv1.UpdateAppRequest{Project: "roll", App: "blog", Rollback: true})
		return err
	}
	if err := rollback(); code(err) != codes.FailedPrecondition {
		t.Fatalf("rollback without revisions = %v", err)
	}
	// As the reconciler records them: v1 then main deployed.
	setStatus := func(ref string, revs ...store.Revision) {
		_, err := s.st.UpdateProject(ctx, "roll", func(p *store.Project) error {
			p.Spec.App("blog").Git.Ref = ref
			p.Status.Apps = map[string]store.AppStatus{"blog": {RequestedRef: revs[len(revs)-1].RequestedRef, ResolvedCommit: revs[len(revs)-1].Resolved, Revisions: revs}}
			p.Status.ObservedGeneration = p.Generation
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	r1 := store.Revision{URL: repo, RequestedRef: "v1", Resolved: c1, Time: time.Now()}
	r2 := store.Revision{URL: repo, RequestedRef: "main", Resolved: c2, Time: time.Now()}
	setStatus("v1", r1)
	if err := rollback(); code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "only one revision") {
		t.Fatalf("rollback with one revision = %v", err)
	}
	setStatus("main", r1, r2)
	if _, err := s.client.UpdateApp(ctx, &opusv1.UpdateAppRequest{Project: "roll", App: "blog", Rollback: true, Source: gitApp("", repo).Source}); code(err) != codes.InvalidArgument {
		t.Fatalf("rollback with a source = %v", err)
	}
	if err := rollback(); err != nil {
		t.Fatal(err)
	}
	rec, _ := s.st.GetProject(ctx, "roll")
	if g := rec.Spec.App("blog").Git; g.URL != repo || g.Ref != c1 {
		t.Fatalf("after rollback the spec asks for %+v, want %s at %s", g, repo, c1)
	}
	// An update that failed (spec ahead of the deployed revision): the
	// rollback goes back to what is deployed.
	setStatus("v3", r1, r2)
	if err := rollback(); err != nil {
		t.Fatal(err)
	}
	rec, _ = s.st.GetProject(ctx, "roll")
	if g := rec.Spec.App("blog").Git; g.Ref != c2 {
		t.Fatalf("rollback of a failed update asks for %s, want the deployed %s", g.Ref, c2)
	}
	// A local repository in the history stays an admin's privilege.
	setStatus("main", store.Revision{URL: "/srv/git/blog", RequestedRef: "v1", Resolved: c1}, r2)
	if err := rollback(); code(err) != codes.PermissionDenied {
		t.Fatalf("rollback to a local repository as a non-admin = %v", err)
	}
}

// TestHostNamesAgree: the API's hosts setting takes exactly the host
// names of the one table every caller of names.ValidateHostName is
// tested against (privd's check and renderer are, in their packages).
func TestHostNamesAgree(t *testing.T) {
	for _, c := range namestest.Hosts {
		p := &store.Project{Name: "blog"}
		err := applySettings(p, map[string]string{"hosts": c.Name}, nil, testServer, testSfx, false)
		// The setting trims spaces and lowercases: the table's names are
		// taken as given only where that changes nothing.
		if c.Name != strings.ToLower(strings.Trim(c.Name, " ")) || c.Name == "" {
			continue
		}
		if (err == nil) != c.OK {
			t.Errorf("hosts=%.40q: %v, want ok=%v", c.Name, err, c.OK)
		}
	}
}

// TestSettingRefusalNamesSetting: a refused setting's detail names the
// setting (set.hosts, set.env.NAME, unset.env.NAME), so a form puts the
// message next to that setting; the message still names it in words.
func TestSettingRefusalNamesSetting(t *testing.T) {
	for _, tc := range []struct {
		set       map[string]string
		unset     []string
		field, in string
	}{
		{set: map[string]string{"hosts": "a.example b.example"}, field: "set.hosts", in: "set: hosts: "},
		{set: map[string]string{"debug": "maybe"}, field: "set.debug", in: "set: debug: "},
		{set: map[string]string{"env.lower": "x"}, field: "set.env.NAME", in: "set: environment variable"},
		{set: map[string]string{"env.OK": "a\x00b"}, field: "set.env.NAME", in: "set: environment variable OK"},
		{unset: []string{"env.bad-name"}, field: "unset.env.NAME", in: "unset: environment variable"},
		{set: map[string]string{"colour": "red"}, field: "set", in: `set: unknown setting "colour"`},
		{unset: []string{"colour"}, field: "unset", in: `unset: unknown setting "colour"`},
	} {
		p := &store.Project{}
		err := applySettings(p, tc.set, tc.unset, testServer, testSfx, false)
		st := status.Convert(err)
		var got string
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
				got = br.GetFieldViolations()[0].GetField()
			}
		}
		if st.Code() != codes.InvalidArgument || got != tc.field || !strings.HasPrefix(st.Message(), tc.in) {
			t.Errorf("set %q unset %q: %v %q, field %q; want InvalidArgument %q…, field %q", tc.set, tc.unset, st.Code(), st.Message(), got, tc.in, tc.field)
		}
	}
}
