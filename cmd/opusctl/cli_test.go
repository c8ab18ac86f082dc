package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opus-hosting/opus/client"
	"github.com/opus-hosting/opus/client/fakeopus"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

type result struct {
	code           int
	stdout, stderr string
}

// testEnv is an env on buffers whose opusd is fake (reached through
// $OPUS_SOCKET, so the default socket path logic is exercised too).
func testEnv(socket, stdin string) (env, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return env{
		stdin:  strings.NewReader(stdin),
		stdout: &out,
		stderr: &errb,
		getenv: func(k string) string {
			if k == client.SocketEnv {
				return socket
			}
			return ""
		},
		dial: func(ctx context.Context, s string) (*client.Client, error) { return client.Dial(ctx, s) },
	}, &out, &errb
}

func runCLI(t *testing.T, socket, stdin string, args ...string) result {
	t.Helper()
	e, out, errb := testEnv(socket, stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, args, e)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// appDir makes a directory that looks like `startapp` output.
func appDir(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(filepath.Join(dir, "migrations"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"__init__.py", "migrations/__init__.py", "views.py"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("# "+f+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// gitRepo makes a real git work tree with one commit.
func gitRepo(t *testing.T, name string) string {
	t.Helper()
	dir := appDir(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "app"}} {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("git %v: %v: %s", args, err, out)
		}
	}
	return dir
}

func seedProjects(s *fakeopus.Server) {
	now := timestamppb.Now()
	uid := uint32(os.Getuid())
	s.AddProject(&opusv1.Project{
		Name: "talpha", OwnerUid: uid, Phase: opusv1.Phase_PHASE_READY, Generation: 2, ObservedGeneration: 2,
		Urls:       []string{"http://talpha.opus.localhost:8080/", "https://talpha.opus.localhost:8443/"},
		ServerName: "talpha.opus.localhost", SystemUser: "opus-talpha", Certificate: "self-signed", CreateTime: now, UpdateTime: now,
		Apps: []*opusv1.App{
			{Name: "news", Source: client.GitSource("https://example.com/news.git", "v1"), RequestedRef: "v1", ResolvedCommit: "0123456789abcdef0123456789abcdef01234567"},
			{Name: "polls", Source: client.UploadedSource("sha256:"+strings.Repeat("ab", 32), "/home/u/polls"), RequestedRef: "sha256:" + strings.Repeat("ab", 32), ResolvedCommit: "sha256:" + strings.Repeat("ab", 32)},
		},
	})
	s.AddProject(&opusv1.Project{Name: "tbeta", OwnerUid: uid, Phase: opusv1.Phase_PHASE_FAILED, LastError: "step migrate: boom", Generation: 1})
}

func createReq(t *testing.T, s *fakeopus.Server) *opusv1.CreateProjectRequest {
	t.Helper()
	calls := s.CallsOf("CreateProject")
	if len(calls) != 1 {
		t.Fatalf("%d CreateProject calls, want 1", len(calls))
	}
	return calls[0].Req.(*opusv1.CreateProjectRequest)
}

func noCalls(t *testing.T, s *fakeopus.Server, methods ...string) {
	t.Helper()
	for _, m := range methods {
		if n := len(s.CallsOf(m)); n != 0 {
			t.Errorf("%d %s calls reached opusd, want none", n, m)
		}
	}
}

func mustJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, s)
	}
	return v
}

func TestCommands(t *testing.T) {
	tests := []struct {
		name     string
		stdin    string
		setup    func(t *testing.T, s *fakeopus.Server) []string // returns the args
		wantCode int
		wantOut  []string
		wantErr  []string
		notOut   []string // in neither stdout nor stderr
		check    func(t *testing.T, s *fakeopus.Server, r result)
	}{
		{
			name: "create uploads a directory, clones a URL, prints progress and URLs",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				return []string{"create", "tblog", "--app", appDir(t, "polls"), "--app", "https://example.com/news.git@v2.1", "--admin"}
			},
			wantOut: []string{"Uploading polls from ", "Creating project tblog (operation op-1)", "step user: done (", "step migrate: done (", "step reload: done (",
				"Project tblog is ready", "  http://tblog.opus.localhost:8080/\n", "  https://tblog.opus.localhost:8443/\n"},
			notOut: []string{"\x1b["},
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				req := createReq(t, s)
				if len(req.Apps) != 2 || !req.Admin {
					t.Fatalf("request %v", req)
				}
				up := req.Apps[0].GetSource().GetUpload()
				if req.Apps[0].Name != "polls" || up == nil || s.Upload(up.Digest) == nil || !strings.HasSuffix(up.Origin, "/polls") {
					t.Errorf("app 0 = %v, want an uploaded polls", req.Apps[0])
				}
				g := req.Apps[1].GetSource().GetGit()
				if req.Apps[1].Name != "news" || g.GetUrl() != "https://example.com/news.git" || g.GetRef() != "v2.1" {
					t.Errorf("app 1 = %v, want news from git at v2.1", req.Apps[1])
				}
				if strings.Index(r.stdout, "step user:") > strings.Index(r.stdout, "step reload:") {
					t.Errorf("steps out of order:\n%s", r.stdout)
				}
			},
		},
		{
			name: "create with a local git repository asks opusd to clone the path",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				return []string{"create", "tgit", "--app", "shop=" + gitRepo(t, "shopsrc") + "@main"}
			},
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				req := createReq(t, s)
				g := req.Apps[0].GetSource().GetGit()
				if req.Apps[0].Name != "shop" || !filepath.IsAbs(g.GetUrl()) || !strings.HasSuffix(g.GetUrl(), "/shopsrc") || g.GetRef() != "main" {
					t.Errorf("app = %v, want shop from the local repository at main", req.Apps[0])
				}
				noCalls(t, s, "UploadSource")
			},
		},
		{
			name: "a failed operation exits 1 with the server's reason",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				s.FailAt("tfail", "migrate")
				return []string{"create", "tfail"}
			},
			wantCode: 1,
			wantOut:  []string{"step user: done (", "step migrate: failed (", "exit status 1", "step vhost: skipped"},
			wantErr:  []string{"opusctl: operation op-1 (create of tfail) failed: step migrate: exit status 1: django.db.utils.OperationalError"},
			notOut:   []string{"is ready"},
		},
		{
			name:    "--no-wait prints only the operation id",
			setup:   func(t *testing.T, s *fakeopus.Server) []string { return []string{"create", "tnowait", "--no-wait"} },
			wantOut: []string{"op-1\n"},
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				if r.stdout != "op-1\n" {
					t.Errorf("stdout %q, want just the id", r.stdout)
				}
				noCalls(t, s, "WatchOperation")
				w := runCLI(t, s.Socket, "", "wait", "op-1")
				if w.code != 0 || !strings.Contains(w.stdout, "step reload: done") || !strings.Contains(w.stdout, "https://tnowait.opus.localhost:8443/") {
					t.Errorf("wait: %+v", w)
				}
			},
		},
		{
			name: "create survives broken watch streams",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				s.StepDelay = 100 * time.Millisecond
				s.BreakWatches(2)
				return []string{"create", "tbroken"}
			},
			wantOut: []string{"step user: done (", "step reload: done (", "Project tbroken is ready"},
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				if n := len(s.CallsOf("WatchOperation")); n < 3 {
					t.Errorf("%d watches, want at least 3", n)
				}
				for _, step := range fakeopus.DefaultSteps {
					if n := strings.Count(r.stdout, "step "+step+": done"); n != 1 {
						t.Errorf("step %s reported %d times, want once:\n%s", step, n, r.stdout)
					}
				}
			},
		},
		{
			name: "--timeout stops waiting and says how to go on",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				s.StepDelay = 100 * time.Millisecond
				return []string{"create", "tslow", "--timeout", "150ms"}
			},
			wantCode: 1,
			wantErr:  []string{"stopped waiting for operation op-1", "opusctl wait op-1"},
		},
		{
			name:    "create -o json prints the final operation, progress on stderr",
			setup:   func(t *testing.T, s *fakeopus.Server) []string { return []string{"create", "tjson", "-o", "json"} },
			wantErr: []string{"step user: done"},
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				v := mustJSON(t, r.stdout)
				if v["state"] != "OPERATION_STATE_SUCCEEDED" || v["project"] != "tjson" {
					t.Errorf("JSON %v", v)
				}
			},
		},
		{
			name:    "ls table",
			setup:   func(t *testing.T, s *fakeopus.Server) []string { seedProjects(s); return []string{"ls"} },
			wantOut: []string{"NAME", "OWNER", "PHASE", "APPS", "URL", "talpha", "READY", "news,polls", "https://talpha.opus.localhost:8443/", "tbeta", "FAILED"},
		},
		{
			name:  "ls -o json",
			setup: func(t *testing.T, s *fakeopus.Server) []string { seedProjects(s); return []string{"ls", "-o", "json"} },
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				v := mustJSON(t, r.stdout)
				ps, _ := v["projects"].([]any)
				if len(ps) != 2 || ps[0].(map[string]any)["name"] != "talpha" {
					t.Errorf("projects %v", ps)
				}
				if !strings.Contains(r.stdout, "\n  \"projects\": [\n") {
					t.Errorf("not indented with two spaces:\n%s", r.stdout)
				}
				again := runCLI(t, s.Socket, "", "ls", "-o", "json")
				if again.stdout != r.stdout {
					t.Errorf("JSON output is not stable:\n%s\n---\n%s", r.stdout, again.stdout)
				}
			},
		},
		{
			name:  "show table has every field and the apps",
			setup: func(t *testing.T, s *fakeopus.Server) []string { seedProjects(s); return []string{"show", "talpha"} },
			wantOut: []string{"Name:", "talpha", "Phase:", "READY", "Server name:", "talpha.opus.localhost", "System user:", "opus-talpha",
				"Certificate:", "self-signed", "Generation:", "2 (observed 2)", "Last error:", "Apps:", "news", "https://example.com/news.git", "v1", "0123456789ab",
				"upload /home/u/polls", "sha256:abababababab"},
			notOut: []string{"0123456789abc"},
		},
		{
			name:    "show gives the last error",
			setup:   func(t *testing.T, s *fakeopus.Server) []string { seedProjects(s); return []string{"show", "tbeta"} },
			wantOut: []string{"step migrate: boom", "(none)"},
		},
		{
			name: "show -o json",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				seedProjects(s)
				return []string{"show", "talpha", "--output=json"}
			},
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				v := mustJSON(t, r.stdout)
				if v["name"] != "talpha" || v["phase"] != "PHASE_READY" || v["last_error"] != "" {
					t.Errorf("JSON %v", v)
				}
			},
		},
		{
			name: "ops and logs",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				if r := runCLI(t, s.Socket, "", "create", "tops"); r.code != 0 {
					t.Fatalf("create: %+v", r)
				}
				return []string{"ops", "tops", "-o", "json"}
			},
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				v := mustJSON(t, r.stdout)
				if ops, _ := v["operations"].([]any); len(ops) != 1 {
					t.Errorf("operations %v", v)
				}
				tab := runCLI(t, s.Socket, "", "ops", "tops")
				if !strings.Contains(tab.stdout, "op-1") || !strings.Contains(tab.stdout, "SUCCEEDED") || !strings.Contains(tab.stdout, "create") {
					t.Errorf("ops table:\n%s", tab.stdout)
				}
				logs := runCLI(t, s.Socket, "", "logs", "tops", "-n", "2")
				if logs.code != 0 || strings.Count(logs.stdout, "\n") != 2 || !strings.Contains(logs.stdout, "[wsgi:error]") {
					t.Errorf("logs: %+v", logs)
				}
				if got := s.CallsOf("GetLogs")[0].Req.(*opusv1.GetLogsRequest).GetLines(); got != 2 {
					t.Errorf("GetLogs asked for %d lines, want 2", got)
				}
			},
		},
		{
			name:     "a server error exits 1 with the server's message alone",
			setup:    func(t *testing.T, s *fakeopus.Server) []string { return []string{"show", "tnone"} },
			wantCode: 1,
			wantErr:  []string{"opusctl: project \"tnone\" not found\n"},
			notOut:   []string{"rpc error", "code ="},
		},
		{
			name: "no daemon exits 1 naming the socket",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				return []string{"ls", "--socket", filepath.Join(t.TempDir(), "none.sock")}
			},
			wantCode: 1,
			wantErr:  []string{"opusctl: connect to opusd at ", "none.sock: no such file or directory"},
		},
		{
			name: "destroy without --yes and without a terminal refuses",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				seedProjects(s)
				return []string{"destroy", "talpha"}
			},
			stdin:    "talpha\n",
			wantCode: 2,
			wantErr:  []string{"refusing to destroy talpha", "pass --yes"},
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				noCalls(t, s, "DeleteProject")
				if s.Project("talpha") == nil {
					t.Error("project is gone")
				}
			},
		},
		{
			name: "destroy --yes",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				seedProjects(s)
				return []string{"destroy", "talpha", "--yes"}
			},
			wantOut: []string{"Destroying project talpha", "step reload: done", "Done in "},
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				if s.Project("talpha") != nil {
					t.Error("project still exists")
				}
			},
		},
		{
			name: "destroy succeeds when opusd forgets the operation with the project",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				seedProjects(s)
				s.StepDelay = 50 * time.Millisecond
				s.ForgetDeletes = true
				s.BreakWatches(1) // the resume finds the operation gone
				return []string{"destroy", "talpha", "--yes"}
			},
			wantOut: []string{"Project talpha is destroyed."},
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				if s.Project("talpha") != nil {
					t.Error("project still exists")
				}
			},
		},
		{
			name: "a password flag does not exist",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				return []string{"create", "tpw", "--superuser", "admin", "--superuser-password", "hunter2"}
			},
			wantCode: 2,
			wantErr:  []string{"unknown flag: --superuser-password"},
			check:    func(t *testing.T, s *fakeopus.Server, r result) { noCalls(t, s, "CreateProject") },
		},
		{
			name: "a password as an argument is refused",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				return []string{"create", "tpw", "hunter2", "--superuser", "admin"}
			},
			wantCode: 2,
			check:    func(t *testing.T, s *fakeopus.Server, r result) { noCalls(t, s, "CreateProject") },
		},
		{
			name: "a superuser without a terminal needs --superuser-password-stdin",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				return []string{"create", "tpw", "--superuser", "admin"}
			},
			stdin:    "hunter2\n",
			wantCode: 2,
			wantErr:  []string{"--superuser-password-stdin"},
			check:    func(t *testing.T, s *fakeopus.Server, r result) { noCalls(t, s, "CreateProject") },
		},
		{
			name: "the password comes from stdin",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				return []string{"create", "tpw", "--superuser", "admin", "--superuser-email", "a@example.com", "--superuser-password-stdin"}
			},
			stdin:  "hunter2\n",
			notOut: []string{"hunter2"},
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				su := createReq(t, s).GetSuperuser()
				if su.GetUsername() != "admin" || su.GetEmail() != "a@example.com" || su.GetPassword() != "hunter2" {
					t.Errorf("superuser %v", su)
				}
			},
		},
		{
			name:     "an invalid project name is a usage error",
			setup:    func(t *testing.T, s *fakeopus.Server) []string { return []string{"create", "Bad-Name"} },
			wantCode: 2,
			wantErr:  []string{"project name \"Bad-Name\" contains"},
			check:    func(t *testing.T, s *fakeopus.Server, r result) { noCalls(t, s, "CreateProject") },
		},
		{
			name: "a ref on a plain directory is a usage error",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				return []string{"create", "tref", "--app", appDir(t, "polls") + "@v1"}
			},
			wantCode: 2,
			wantErr:  []string{"plain directory", "@v1 applies only to git sources"},
			check:    func(t *testing.T, s *fakeopus.Server, r result) { noCalls(t, s, "CreateProject", "UploadSource") },
		},
		{
			name:     "an unknown output format is a usage error",
			setup:    func(t *testing.T, s *fakeopus.Server) []string { return []string{"ls", "-o", "yaml"} },
			wantCode: 2,
			wantErr:  []string{"--output must be"},
			check:    func(t *testing.T, s *fakeopus.Server, r result) { noCalls(t, s, "ListProjects") },
		},
		{
			name:     "an unknown command is a usage error",
			setup:    func(t *testing.T, s *fakeopus.Server) []string { return []string{"deploy"} },
			wantCode: 2,
			wantErr:  []string{"unknown command \"deploy\""},
		},
		{
			name:     "an unknown subcommand of a group is a usage error",
			setup:    func(t *testing.T, s *fakeopus.Server) []string { return []string{"apps", "bogus"} },
			wantCode: 2,
			wantErr:  []string{"unknown command \"bogus\" for \"opusctl apps\""},
		},
		{
			name: "apps add, update to a ref, rm",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				seedProjects(s)
				return []string{"apps", "add", "tbeta", "blog=" + appDir(t, "blogsrc")}
			},
			wantOut: []string{"Adding app blog to tbeta", "step reload: done", "Project tbeta is ready ("},
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				add := s.CallsOf("AddApp")[0].Req.(*opusv1.AddAppRequest)
				if add.GetApp().GetName() != "blog" || add.GetApp().GetSource().GetUpload() == nil {
					t.Errorf("AddApp %v", add)
				}
				if u := runCLI(t, s.Socket, "", "apps", "update", "talpha", "news", "feature/x"); u.code != 0 {
					t.Fatalf("apps update: %+v", u)
				}
				up := s.CallsOf("UpdateApp")[0].Req.(*opusv1.UpdateAppRequest)
				if g := up.GetSource().GetGit(); g.GetUrl() != "https://example.com/news.git" || g.GetRef() != "feature/x" || up.GetApp() != "news" {
					t.Errorf("UpdateApp %v, want the same URL at feature/x", up)
				}
				bad := runCLI(t, s.Socket, "", "apps", "update", "talpha", "polls", "v2")
				if bad.code != 2 || !strings.Contains(bad.stderr, "was uploaded") || len(s.CallsOf("UpdateApp")) != 1 {
					t.Errorf("update of an uploaded app to a ref: %+v", bad)
				}
				if rm := runCLI(t, s.Socket, "", "apps", "rm", "talpha", "polls", "--drop-data"); rm.code != 0 {
					t.Fatalf("apps rm: %+v", rm)
				}
				if rm := s.CallsOf("RemoveApp")[0].Req.(*opusv1.RemoveAppRequest); rm.GetApp() != "polls" || !rm.GetDropData() {
					t.Errorf("RemoveApp %v", rm)
				}
				ls := runCLI(t, s.Socket, "", "apps", "ls", "talpha")
				if !strings.Contains(ls.stdout, "news") || strings.Contains(ls.stdout, "polls") {
					t.Errorf("apps ls:\n%s", ls.stdout)
				}
			},
		},
		{
			name: "cert set sends the files it reads",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				seedProjects(s)
				dir := t.TempDir()
				os.WriteFile(filepath.Join(dir, "c.pem"), []byte("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"), 0o600)
				os.WriteFile(filepath.Join(dir, "k.pem"), []byte("-----BEGIN PRIVATE KEY-----\ny\n-----END PRIVATE KEY-----\n"), 0o600)
				return []string{"cert", "set", "talpha", "--cert", filepath.Join(dir, "c.pem"), "--key", filepath.Join(dir, "k.pem")}
			},
			wantOut: []string{"Installing the certificate of talpha", "step reload: done"},
			check: func(t *testing.T, s *fakeopus.Server, r result) {
				req := s.CallsOf("SetCertificate")[0].Req.(*opusv1.SetCertificateRequest)
				if !bytes.Contains(req.GetCertificatePem(), []byte("BEGIN CERTIFICATE")) || !bytes.Contains(req.GetKeyPem(), []byte("PRIVATE KEY")) {
					t.Errorf("SetCertificate %v", req)
				}
			},
		},
		{
			name: "cert set without --key is a usage error",
			setup: func(t *testing.T, s *fakeopus.Server) []string {
				return []string{"cert", "set", "talpha", "--cert", "/dev/null"}
			},
			wantCode: 2,
			wantErr:  []string{"--key must be given"},
			check:    func(t *testing.T, s *fakeopus.Server, r result) { noCalls(t, s, "SetCertificate") },
		},
		{
			name:    "completion",
			setup:   func(t *testing.T, s *fakeopus.Server) []string { return []string{"completion", "bash"} },
			wantOut: []string{"__start_opusctl"},
		},
		{
			name:    "version",
			setup:   func(t *testing.T, s *fakeopus.Server) []string { return []string{"version"} },
			wantOut: []string{"opusctl ", "go1."},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := fakeopus.Start(t)
			args := tc.setup(t, fake)
			r := runCLI(t, fake.Socket, tc.stdin, args...)
			if r.code != tc.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tc.wantCode, r.stdout, r.stderr)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, r.stdout)
				}
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			for _, n := range tc.notOut {
				if strings.Contains(r.stdout, n) || strings.Contains(r.stderr, n) {
					t.Errorf("output holds %q:\nstdout:\n%s\nstderr:\n%s", n, r.stdout, r.stderr)
				}
			}
			if tc.wantCode == 0 && r.stderr != "" && !strings.Contains(strings.Join(args, " "), "json") {
				t.Errorf("unexpected stderr:\n%s", r.stderr)
			}
			if tc.wantCode != 0 && !strings.HasPrefix(r.stderr, "opusctl: ") {
				t.Errorf("stderr should start with \"opusctl: \":\n%s", r.stderr)
			}
			if tc.check != nil {
				tc.check(t, fake, r)
			}
		})
	}
}

// Every command and flag must explain itself.
func TestHelpIsComplete(t *testing.T) {
	e, _, _ := testEnv("/nonexistent", "")
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() != "help" {
			if c.Short == "" || c.Long == "" || c.Example == "" {
				t.Errorf("%q: Short, Long and Example must all be set", c.CommandPath())
			}
			c.LocalFlags().VisitAll(func(f *pflag.Flag) {
				if f.Usage == "" {
					t.Errorf("%s --%s has no description", c.CommandPath(), f.Name)
				}
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	root := newRootCommand(e)
	root.InitDefaultHelpCmd()
	walk(root)
}
