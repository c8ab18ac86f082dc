package main

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/opus-hosting/opus/client"
	"github.com/opus-hosting/opus/internal/cert/certtest"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/reconcile"
	"github.com/opus-hosting/opus/unprivd/service/servicetest"
	"github.com/opus-hosting/opus/unprivd/store"
)

type result struct {
	code           int
	stdout, stderr string
}

// testEnv is an env on buffers whose opusd is at socket (reached through
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

// gitRepo makes a real git work tree on branch main: commit v1 (tagged),
// then v2 (tagged), and a branch feature/x one commit past v2.
func gitRepo(t *testing.T, name string) string {
	t.Helper()
	dir := appDir(t, name)
	git(t, dir, "init", "-q", "-b", "main")
	for _, v := range []string{"v1", "v2"} {
		if err := os.WriteFile(filepath.Join(dir, "version.py"), []byte("VERSION = \""+v+"\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		git(t, dir, "add", ".")
		git(t, dir, "commit", "-qm", v)
		git(t, dir, "tag", v)
	}
	git(t, dir, "checkout", "-qb", "feature/x")
	git(t, dir, "commit", "-q", "--allow-empty", "-m", "x")
	git(t, dir, "checkout", "-q", "main")
	return dir
}

// git runs git in dir and returns its output; without git, the test is
// skipped.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if errors.Is(err, exec.ErrNotFound) {
		t.Skipf("git: %v", err)
	}
	if err != nil {
		t.Fatalf("git %v: %v: %s", args, err, out)
	}
	return string(out)
}

// startOpusd starts the real opusd API over a stub privd, with this
// process as an admin (admins may name git repositories on this host,
// which the tests use instead of a network).
func startOpusd(t *testing.T) *servicetest.Opusd {
	t.Helper()
	return servicetest.Start(t, servicetest.Options{Admin: true})
}

// seeded is what seedProjects made.
type seeded struct {
	// newsURL is talpha's git app news, deployed at tag v1 (commit
	// newsV1); the repository also has v2 (newsV2) and a branch
	// feature/x.
	newsURL, newsV1, newsV2 string
	// pollsDir is talpha's uploaded app polls, as pollsDigest.
	pollsDir, pollsDigest string
}

// seedLastError is the first line of why tbeta's last change failed: its
// migrations failed with traceback's output.
const seedLastError = "step migrate: manage.py migrate failed: ModuleNotFoundError: No module named 'notanapp'"

// traceback is real output of a failed manage.py (Debian 12's Django 3.2,
// INSTALLED_APPS naming a module that does not exist).
func traceback(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../internal/excerpt/testdata/missing.txt")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// seedProjects makes, through the API, talpha (READY at generation 2: made
// with news, then polls added) and tbeta (READY and empty: its last change,
// debug on, failed in its migrations and was undone),
// then forgets the calls it made, so that a test sees only its own.
func seedProjects(t *testing.T, s *servicetest.Opusd) seeded {
	t.Helper()
	repo := gitRepo(t, "news")
	sd := seeded{newsURL: "file://" + repo, newsV1: gitRev(t, repo, "v1"), newsV2: gitRev(t, repo, "v2"), pollsDir: appDir(t, "polls")}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if sd.pollsDigest, err = c.UploadDir(ctx, sd.pollsDir); err != nil {
		t.Fatal(err)
	}
	do := func(op *opusv1.Operation, err error) *opusv1.Operation {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		final, err := c.Wait(ctx, op.GetId(), nil)
		var oe *client.OperationError
		if err != nil && !errors.As(err, &oe) {
			t.Fatal(err)
		}
		return final
	}
	if op := do(c.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "talpha",
		Apps: []*opusv1.AppSpec{{Name: "news", Source: client.GitSource(sd.newsURL, "v1")}}})); !succeeded(op) {
		t.Fatalf("seed talpha: %v", op)
	}
	if op := do(c.AddApp(ctx, "talpha", &opusv1.AppSpec{Name: "polls", Source: client.UploadedSource(sd.pollsDigest, sd.pollsDir)})); !succeeded(op) {
		t.Fatalf("seed talpha's polls: %v", op)
	}
	if op := do(c.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "tbeta"})); !succeeded(op) {
		t.Fatalf("seed tbeta: %v", op)
	}
	s.Privd.Set("RunManage", servicetest.FailMigrateOnce("tbeta", traceback(t)))
	if op := do(c.UpdateSettings(ctx, "tbeta", map[string]string{"debug": "true"}, nil)); op.GetState() != opusv1.OperationState_OPERATION_STATE_FAILED {
		t.Fatalf("seed tbeta's failed change: %v", op)
	}
	s.Privd.Set("RunManage", nil)
	s.ForgetCalls()
	return sd
}

func succeeded(op *opusv1.Operation) bool {
	return op.GetState() == opusv1.OperationState_OPERATION_STATE_SUCCEEDED
}

// gitRev is the commit rev names in the repository at dir.
func gitRev(t *testing.T, dir, rev string) string {
	t.Helper()
	return strings.TrimSpace(git(t, dir, "rev-parse", rev+"^{commit}"))
}

// project reads a project from the store, nil if there is none.
func project(t *testing.T, s *servicetest.Opusd, name string) *store.Project {
	t.Helper()
	p, err := s.Store.GetProject(context.Background(), name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// onlyOp returns the id of project's one operation.
func onlyOp(t *testing.T, s *servicetest.Opusd, project string) string {
	t.Helper()
	ops, err := s.Store.ListOperations(context.Background(), project, 0)
	if err != nil || len(ops) != 1 {
		t.Fatalf("operations of %s: %v, %v; want one", project, ops, err)
	}
	return ops[0].ID
}

func createReq(t *testing.T, s *servicetest.Opusd) *opusv1.CreateProjectRequest {
	t.Helper()
	calls := s.CallsOf("CreateProject")
	if len(calls) != 1 {
		t.Fatalf("%d CreateProject calls, want 1", len(calls))
	}
	return calls[0].Req.(*opusv1.CreateProjectRequest)
}

// unchanged fails t unless seed's project name is still at its
// generation 2 with its two operations: a refused change made nothing.
func unchanged(t *testing.T, s *cliOpusd, name string) {
	t.Helper()
	ops, err := s.Store.ListOperations(context.Background(), name, 0)
	if p := project(t, s.Opusd, name); err != nil || len(ops) != 2 || p.Generation != 2 {
		t.Errorf("%s: generation %d, %d operations (%v); want 2 and 2", name, p.Generation, len(ops), err)
	}
}

// noUsageHint fails t when stderr points to --help: not a usage error.
func noUsageHint(t *testing.T, r result) {
	t.Helper()
	if strings.Contains(r.stderr, "--help") {
		t.Errorf("stderr points to --help:\n%s", r.stderr)
	}
}

func noCalls(t *testing.T, s *servicetest.Opusd, methods ...string) {
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

// cliOpusd is the opusd of one case of TestCommands, with what its setup
// seeded.
type cliOpusd struct {
	*servicetest.Opusd
	seeded
}

func (s *cliOpusd) seed(t *testing.T) { s.seeded = seedProjects(t, s.Opusd) }

func TestCommands(t *testing.T) {
	deploySteps := reconcile.DeploySteps()
	tests := []struct {
		name     string
		stdin    string
		setup    func(t *testing.T, s *cliOpusd) []string // returns the args
		wantCode int
		wantOut  []string
		wantErr  []string
		notOut   []string // in neither stdout nor stderr
		check    func(t *testing.T, s *cliOpusd, r result)
	}{
		{
			name: "create uploads a directory, clones a URL, prints progress and URLs",
			setup: func(t *testing.T, s *cliOpusd) []string {
				repo := gitRepo(t, "news")
				s.newsURL, s.newsV2 = "file://"+repo, gitRev(t, repo, "v2")
				return []string{"create", "tblog", "--app", appDir(t, "polls"), "--app", s.newsURL + "@v2", "--admin"}
			},
			wantOut: []string{"Uploading polls from ", "Creating project tblog (operation op-", "step user: done (", "step migrate: done (", "step reload: done (",
				"Project tblog is ready", "  http://tblog.opus.localhost:8080/\n", "  https://tblog.opus.localhost:8443/\n"},
			notOut: []string{"\x1b["},
			check: func(t *testing.T, s *cliOpusd, r result) {
				req := createReq(t, s.Opusd)
				if len(req.Apps) != 2 || !req.Admin {
					t.Fatalf("request %v", req)
				}
				up := req.Apps[0].GetSource().GetUpload()
				if req.Apps[0].Name != "polls" || up == nil || !s.Uploads.Has(uint32(os.Getuid()), up.Digest) || !strings.HasSuffix(up.Origin, "/polls") {
					t.Errorf("app 0 = %v, want an uploaded polls", req.Apps[0])
				}
				g := req.Apps[1].GetSource().GetGit()
				if req.Apps[1].Name != "news" || g.GetUrl() != s.newsURL || g.GetRef() != "v2" {
					t.Errorf("app 1 = %v, want news from git at v2", req.Apps[1])
				}
				if id := onlyOp(t, s.Opusd, "tblog"); !strings.Contains(r.stdout, "(operation "+id+")") {
					t.Errorf("stdout does not name operation %s:\n%s", id, r.stdout)
				}
				if got := project(t, s.Opusd, "tblog").Status.Apps["news"].ResolvedCommit; got != s.newsV2 {
					t.Errorf("news deployed at %q, want v2 (%s)", got, s.newsV2)
				}
				if strings.Index(r.stdout, "step user:") > strings.Index(r.stdout, "step reload:") {
					t.Errorf("steps out of order:\n%s", r.stdout)
				}
			},
		},
		{
			name: "create with a local git repository asks opusd to clone the path",
			setup: func(t *testing.T, s *cliOpusd) []string {
				return []string{"create", "tgit", "--app", "shop=" + gitRepo(t, "shopsrc") + "@main"}
			},
			check: func(t *testing.T, s *cliOpusd, r result) {
				req := createReq(t, s.Opusd)
				g := req.Apps[0].GetSource().GetGit()
				if req.Apps[0].Name != "shop" || !filepath.IsAbs(g.GetUrl()) || !strings.HasSuffix(g.GetUrl(), "/shopsrc") || g.GetRef() != "main" {
					t.Errorf("app = %v, want shop from the local repository at main", req.Apps[0])
				}
				noCalls(t, s.Opusd, "UploadSource")
				if got, want := project(t, s.Opusd, "tgit").Status.Apps["shop"].ResolvedCommit, gitRev(t, g.GetUrl(), "main"); got != want {
					t.Errorf("shop deployed at %q, want main (%s)", got, want)
				}
			},
		},
		{
			name: "a failed operation exits 1 with the server's reason",
			setup: func(t *testing.T, s *cliOpusd) []string {
				s.Privd.Set("RunManage", servicetest.FailMigrate("tfail", "django.db.utils.OperationalError: no such table"))
				return []string{"create", "tfail", "--empty"}
			},
			wantCode: 1,
			wantOut:  []string{"step user: done (", "step migrate: failed ("},
			wantErr: []string{"(create of tfail) failed: step migrate: manage.py migrate failed: django.db.utils.OperationalError: no such table\n",
				"Nothing of project tfail was kept: correct the cause and run the same command again.\n"},
			// opusd stops at the failed step, then removes what it made.
			notOut: []string{"is ready", "step superuser", "step vhost"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				id, _, _ := strings.Cut(strings.TrimPrefix(r.stderr, "opusctl: operation "), " ")
				op, err := s.Store.GetOperation(context.Background(), id)
				if err != nil || op.Kind != store.OpCreate || op.State != store.OpFailed {
					t.Errorf("stderr does not name the failed create (%q: %+v, %v):\n%s", id, op, err, r.stderr)
				}
				if p := project(t, s.Opusd, "tfail"); p != nil {
					t.Errorf("the failed create left project %+v", p)
				}
			},
		},
		{
			name: "a tenant's output cannot forge opusctl's verdict on a failed operation",
			setup: func(t *testing.T, s *cliOpusd) []string {
				// The app's code raises with a message whose second line
				// is the verdict opusctl gives when the undo worked.
				s.Privd.Set("RunManage", servicetest.FailMigrate("tforge", "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"+
					"RuntimeError: boom\nNothing of project tforge was kept: correct the cause and run the same command again.\nNothing of the change was applied: project tforge serves what it served before."))
				return []string{"create", "tforge", "--empty"}
			},
			wantCode: 1,
			check: func(t *testing.T, s *cliOpusd, r result) {
				// What opusctl says itself is the only line at column 0
				// after the first; everything opusd relays is indented.
				var own []string
				for _, l := range strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")[1:] {
					if !strings.HasPrefix(l, " ") {
						own = append(own, l)
					}
				}
				if want := []string{"Nothing of project tforge was kept: correct the cause and run the same command again."}; !slices.Equal(own, want) {
					t.Errorf("lines at column 0 after the first: %q, want only opusctl's own %q:\n%s", own, want, r.stderr)
				}
				if !strings.Contains(r.stderr, "\n  Nothing of the change was applied: project tforge serves") {
					t.Errorf("the tenant's line is not relayed, indented:\n%s", r.stderr)
				}
			},
		},
		{
			name: "a failed manage.py reads exception first, traceback after, once",
			setup: func(t *testing.T, s *cliOpusd) []string {
				s.Privd.Set("RunManage", servicetest.FailMigrate("tpy", traceback(t)))
				return []string{"create", "tpy", "--empty"}
			},
			wantCode: 1,
			wantErr: []string{"(create of tpy) failed: step migrate: manage.py migrate failed: ModuleNotFoundError: No module named 'notanapp'\n" +
				"  Traceback (most recent call last; 4 lines above left out):\n" +
				"    File \"/usr/lib/python3/dist-packages/django/core/management/__init__.py\", line 419, in execute_from_command_line\n"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				all := r.stdout + r.stderr
				if n := strings.Count(all, "No module named 'notanapp'"); n != 1 {
					t.Errorf("the exception line is shown %d times, want once:\n%s%s", n, r.stdout, r.stderr)
				}
				if !strings.Contains(r.stdout, "step migrate: failed (") {
					t.Errorf("no failed migrate step:\n%s", r.stdout)
				}
				// The traceback keeps its line breaks: each of its lines
				// on a line of its own.
				if !strings.Contains(r.stderr, "\n      import_module(entry)\n") {
					t.Errorf("the traceback's lines are not on lines of their own:\n%s", r.stderr)
				}
			},
		},
		{
			name:  "--no-wait prints only the operation id",
			setup: func(t *testing.T, s *cliOpusd) []string { return []string{"create", "tnowait", "--empty", "--no-wait"} },
			check: func(t *testing.T, s *cliOpusd, r result) {
				id := onlyOp(t, s.Opusd, "tnowait")
				if r.stdout != id+"\n" {
					t.Errorf("stdout %q, want just the id %s", r.stdout, id)
				}
				noCalls(t, s.Opusd, "WatchOperation")
				w := runCLI(t, s.Socket, "", "wait", id)
				if w.code != 0 || !strings.Contains(w.stdout, "step reload: done") || !strings.Contains(w.stdout, "https://tnowait.opus.localhost:8443/") {
					t.Errorf("wait: %+v", w)
				}
			},
		},
		{
			// What 'opusctl wait --help' shows: op=$(opusctl create ... --no-wait).
			name: "--no-wait with an upload prints only the operation id, the upload on stderr",
			setup: func(t *testing.T, s *cliOpusd) []string {
				return []string{"create", "tnowaitup", "--app", appDir(t, "polls"), "--no-wait"}
			},
			wantErr: []string{"Uploading polls from "},
			check: func(t *testing.T, s *cliOpusd, r result) {
				if id := onlyOp(t, s.Opusd, "tnowaitup"); r.stdout != id+"\n" {
					t.Errorf("stdout %q, want just the id %s", r.stdout, id)
				}
				if !strings.HasPrefix(r.stderr, "Uploading polls from ") || strings.Count(r.stderr, "\n") != 1 {
					t.Errorf("stderr %q, want the one upload line", r.stderr)
				}
			},
		},
		{
			name: "create survives broken watch streams",
			setup: func(t *testing.T, s *cliOpusd) []string {
				s.Privd.SlowDeploys(150 * time.Millisecond)
				s.BreakWatches(2)
				return []string{"create", "tbroken", "--empty"}
			},
			wantOut: []string{"step user: done (", "step reload: done (", "Project tbroken is ready"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				if n := len(s.CallsOf("WatchOperation")); n < 3 {
					t.Errorf("%d watches, want at least 3", n)
				}
				for _, step := range deploySteps {
					if n := strings.Count(r.stdout, "step "+step.Name+": done"); n != 1 {
						t.Errorf("step %s reported %d times, want once:\n%s", step.Name, n, r.stdout)
					}
				}
			},
		},
		{
			name: "--timeout stops waiting and says how to go on",
			setup: func(t *testing.T, s *cliOpusd) []string {
				s.Privd.SlowDeploys(100 * time.Millisecond)
				return []string{"create", "tslow", "--empty", "--timeout", "150ms"}
			},
			wantCode: 1,
			wantErr:  []string{"stopped waiting for operation op-", "opusctl wait op-"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				id := onlyOp(t, s.Opusd, "tslow")
				if !strings.Contains(r.stderr, "stopped waiting for operation "+id) || !strings.Contains(r.stderr, "opusctl wait "+id) {
					t.Errorf("stderr does not name operation %s:\n%s", id, r.stderr)
				}
			},
		},
		{
			name:    "create -o json prints the final operation, progress on stderr",
			setup:   func(t *testing.T, s *cliOpusd) []string { return []string{"create", "tjson", "--empty", "-o", "json"} },
			wantErr: []string{"step user: done"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				v := mustJSON(t, r.stdout)
				if v["state"] != "OPERATION_STATE_SUCCEEDED" || v["project"] != "tjson" || v["id"] != onlyOp(t, s.Opusd, "tjson") {
					t.Errorf("JSON %v", v)
				}
			},
		},
		{
			name:    "ls table",
			setup:   func(t *testing.T, s *cliOpusd) []string { s.seed(t); return []string{"ls"} },
			wantOut: []string{"NAME", "OWNER", "PHASE", "APPS", "URL", "talpha", "READY", "news,polls", "https://talpha.opus.localhost:8443/", "tbeta"},
		},
		{
			name:  "ls -o json",
			setup: func(t *testing.T, s *cliOpusd) []string { s.seed(t); return []string{"ls", "-o", "json"} },
			check: func(t *testing.T, s *cliOpusd, r result) {
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
			setup: func(t *testing.T, s *cliOpusd) []string { s.seed(t); return []string{"show", "talpha"} },
			wantOut: []string{"Name:", "talpha", "Phase:", "READY", "Server name:", "talpha.opus.localhost", "System user:", "opus-talpha",
				"Certificate:", "self-signed", "Generation:", "2 (observed 2)", "Last error:", "Apps:", "news", "v1"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				for _, want := range []string{s.newsURL, s.newsV1[:12], "upload " + s.pollsDir, s.pollsDigest[:len("sha256:")+12]} {
					if !strings.Contains(r.stdout, want) {
						t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
					}
				}
				for _, long := range []string{s.newsV1[:13], s.pollsDigest[:len("sha256:")+13]} {
					if strings.Contains(r.stdout, long) {
						t.Errorf("stdout holds %q, not shortened:\n%s", long, r.stdout)
					}
				}
			},
		},
		{
			name:  "show gives the last error",
			setup: func(t *testing.T, s *cliOpusd) []string { s.seed(t); return []string{"show", "tbeta"} },
			wantOut: []string{"Phase:", "READY", "Last change:  failed, nothing of it was applied: " + seedLastError + " ... (operation op-",
				")\n    Traceback (most recent call last; 4 lines above left out):\n" +
					"      File \"/usr/lib/python3/dist-packages/django/core/management/__init__.py\", line 419, in execute_from_command_line\n", "debug   off", "(none)"},
			notOut: []string{"Last error:"},
		},
		{
			name: "show -o json",
			setup: func(t *testing.T, s *cliOpusd) []string {
				s.seed(t)
				return []string{"show", "talpha", "--output=json"}
			},
			check: func(t *testing.T, s *cliOpusd, r result) {
				v := mustJSON(t, r.stdout)
				if v["name"] != "talpha" || v["phase"] != "PHASE_READY" || v["last_error"] != "" {
					t.Errorf("JSON %v", v)
				}
			},
		},
		{
			name: "ops and logs",
			setup: func(t *testing.T, s *cliOpusd) []string {
				if r := runCLI(t, s.Socket, "", "create", "tops", "--empty"); r.code != 0 {
					t.Fatalf("create: %+v", r)
				}
				return []string{"ops", "tops", "-o", "json"}
			},
			check: func(t *testing.T, s *cliOpusd, r result) {
				v := mustJSON(t, r.stdout)
				if ops, _ := v["operations"].([]any); len(ops) != 1 {
					t.Errorf("operations %v", v)
				}
				tab := runCLI(t, s.Socket, "", "ops", "tops")
				if !strings.Contains(tab.stdout, onlyOp(t, s.Opusd, "tops")) || !strings.Contains(tab.stdout, "SUCCEEDED") || !strings.Contains(tab.stdout, "create") {
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
			name: "logs says when the error log is empty; -o json is the empty answer",
			setup: func(t *testing.T, s *cliOpusd) []string {
				s.seed(t)
				s.Privd.Set("TailLog", func(context.Context, string, proto.Message) (proto.Message, error) {
					return &privdv1.TailLogResponse{}, nil
				})
				return []string{"logs", "talpha"}
			},
			wantOut: []string{"The error log of project talpha is empty so far.\n"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				if r.stdout != "The error log of project talpha is empty so far.\n" {
					t.Errorf("stdout %q, want the one line", r.stdout)
				}
				js := runCLI(t, s.Socket, "", "logs", "talpha", "-o", "json")
				if lines, ok := mustJSON(t, js.stdout)["lines"].([]any); js.code != 0 || !ok || len(lines) != 0 {
					t.Errorf("logs -o json: %+v", js)
				}
			},
		},
		{
			name:     "a server error exits 1 with the server's message alone",
			setup:    func(t *testing.T, s *cliOpusd) []string { return []string{"show", "tnone"} },
			wantCode: 1,
			wantErr:  []string{"opusctl: project \"tnone\" not found\n"},
			notOut:   []string{"rpc error", "code ="},
		},
		{
			name: "no daemon exits 1 naming the socket",
			setup: func(t *testing.T, s *cliOpusd) []string {
				return []string{"ls", "--socket", filepath.Join(t.TempDir(), "none.sock")}
			},
			wantCode: 1,
			wantErr:  []string{"opusctl: connect to opusd at ", "none.sock: no such file or directory"},
		},
		{
			name:     "too few arguments exit 2 and show the arguments the command takes",
			setup:    func(t *testing.T, s *cliOpusd) []string { return []string{"apps", "rollback", "talpha"} },
			wantCode: 2,
			wantErr: []string{"opusctl: accepts 2 arg(s), received 1 (usage: opusctl apps rollback NAME APP [--to REVISION] [flags])\n",
				"Run 'opusctl apps rollback --help' for usage."},
		},
		// Exit status: 2 for input opusd refuses as such (InvalidArgument),
		// 1 for a refusal about the state of things.
		{
			name:     "a setting opusd does not know exits 2",
			setup:    func(t *testing.T, s *cliOpusd) []string { s.seed(t); return []string{"set", "talpha", "colour=red"} },
			wantCode: 2,
			wantErr:  []string{"opusctl: set: unknown setting \"colour\"", "Run 'opusctl set --help' for usage."},
			check:    func(t *testing.T, s *cliOpusd, r result) { unchanged(t, s, "talpha") },
		},
		{
			name: "a certificate opusd refuses exits 2",
			setup: func(t *testing.T, s *cliOpusd) []string {
				s.seed(t)
				dir := t.TempDir()
				for _, f := range []string{"c.pem", "k.pem"} {
					if err := os.WriteFile(filepath.Join(dir, f), []byte("not a pem\n"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				return []string{"cert", "set", "talpha", "--cert", filepath.Join(dir, "c.pem"), "--key", filepath.Join(dir, "k.pem")}
			},
			wantCode: 2,
			wantErr:  []string{"opusctl: certificate: "},
			check:    func(t *testing.T, s *cliOpusd, r result) { unchanged(t, s, "talpha") },
		},
		{
			name:     "a project that does not exist exits 1",
			setup:    func(t *testing.T, s *cliOpusd) []string { return []string{"show", "nosuch"} },
			wantCode: 1,
			wantErr:  []string{"opusctl: project \"nosuch\" not found\n"},
			check:    func(t *testing.T, s *cliOpusd, r result) { noUsageHint(t, r) },
		},
		{
			name: "an app the project has exits 1",
			setup: func(t *testing.T, s *cliOpusd) []string {
				s.seed(t)
				return []string{"apps", "add", "talpha", "news=" + s.newsURL}
			},
			wantCode: 1,
			wantErr:  []string{"already has an app \"news\"; use 'opusctl apps update' to change its source"},
			check:    func(t *testing.T, s *cliOpusd, r result) { noUsageHint(t, r) },
		},
		{
			name: "destroy without --yes and without a terminal refuses",
			setup: func(t *testing.T, s *cliOpusd) []string {
				s.seed(t)
				return []string{"destroy", "talpha"}
			},
			stdin:    "talpha\n",
			wantCode: 2,
			wantErr:  []string{"refusing to destroy talpha", "pass --yes"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				noCalls(t, s.Opusd, "DeleteProject")
				if p := project(t, s.Opusd, "talpha"); p == nil || p.Deleting {
					t.Errorf("project is gone or going: %v", p)
				}
			},
		},
		{
			name: "destroy --yes",
			setup: func(t *testing.T, s *cliOpusd) []string {
				s.seed(t)
				return []string{"destroy", "talpha", "--yes"}
			},
			wantOut: []string{"Destroying project talpha", "step reload: done", "Done in "},
			check: func(t *testing.T, s *cliOpusd, r result) {
				if project(t, s.Opusd, "talpha") != nil {
					t.Error("project still exists")
				}
			},
		},
		{
			// opusd keeps a delete operation after it forgot the project,
			// so a client that lost its watch finds out how it ended.
			name: "destroy survives a broken watch stream",
			setup: func(t *testing.T, s *cliOpusd) []string {
				s.seed(t)
				s.Privd.Set("RemoveTree", servicetest.Delay(200*time.Millisecond))
				s.BreakWatches(1)
				return []string{"destroy", "talpha", "--yes"}
			},
			wantOut: []string{"Destroying project talpha", "step forget: done", "Done in "},
			check: func(t *testing.T, s *cliOpusd, r result) {
				if project(t, s.Opusd, "talpha") != nil {
					t.Error("project still exists")
				}
				if n := len(s.CallsOf("GetOperation")); n < 1 {
					t.Errorf("%d GetOperation calls after the broken watch, want at least 1", n)
				}
			},
		},
		{
			name: "a password flag does not exist",
			setup: func(t *testing.T, s *cliOpusd) []string {
				return []string{"create", "tpw", "--empty", "--superuser", "admin", "--superuser-password", "hunter2"}
			},
			wantCode: 2,
			wantErr:  []string{"unknown flag: --superuser-password"},
			check:    func(t *testing.T, s *cliOpusd, r result) { noCalls(t, s.Opusd, "CreateProject") },
		},
		{
			name: "a password as an argument is refused",
			setup: func(t *testing.T, s *cliOpusd) []string {
				return []string{"create", "tpw", "--empty", "hunter2", "--superuser", "admin"}
			},
			wantCode: 2,
			check:    func(t *testing.T, s *cliOpusd, r result) { noCalls(t, s.Opusd, "CreateProject") },
		},
		{
			name: "a superuser without a terminal needs --superuser-password-stdin",
			setup: func(t *testing.T, s *cliOpusd) []string {
				return []string{"create", "tpw", "--empty", "--superuser", "admin", "--superuser-email", "a@example.com"}
			},
			stdin:    "hunter2\n",
			wantCode: 2,
			wantErr:  []string{"--superuser-password-stdin"},
			check:    func(t *testing.T, s *cliOpusd, r result) { noCalls(t, s.Opusd, "CreateProject") },
		},
		{
			// Django's createsuperuser --noinput refuses an empty e-mail,
			// but only after the migrations: refused before anything.
			name: "a superuser without an e-mail is a usage error",
			setup: func(t *testing.T, s *cliOpusd) []string {
				return []string{"create", "tnomail", "--app", appDir(t, "polls"), "--admin", "--superuser", "admin", "--superuser-password-stdin"}
			},
			stdin:    "hunter2\n",
			wantCode: 2,
			wantErr:  []string{"--superuser-email", "needs an e-mail address"},
			check:    func(t *testing.T, s *cliOpusd, r result) { noCalls(t, s.Opusd, "CreateProject", "UploadSource") },
		},
		{
			name: "a superuser e-mail Django refuses is a usage error",
			setup: func(t *testing.T, s *cliOpusd) []string {
				return []string{"create", "tbadmail", "--empty", "--superuser", "admin", "--superuser-email", "admin@b", "--superuser-password-stdin"}
			},
			stdin:    "hunter2\n",
			wantCode: 2,
			wantErr:  []string{"--superuser-email", `"admin@b" is not an e-mail address Django accepts`},
			check:    func(t *testing.T, s *cliOpusd, r result) { noCalls(t, s.Opusd, "CreateProject", "UploadSource") },
		},
		{
			name: "the password comes from stdin",
			setup: func(t *testing.T, s *cliOpusd) []string {
				return []string{"create", "tpw", "--empty", "--superuser", "admin", "--superuser-email", "a@example.com", "--superuser-password-stdin"}
			},
			stdin:  "hunter2\n",
			notOut: []string{"hunter2"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				su := createReq(t, s.Opusd).GetSuperuser()
				if su.GetUsername() != "admin" || su.GetEmail() != "a@example.com" || su.GetPassword() != "hunter2" {
					t.Errorf("superuser %v", su)
				}
				if got := project(t, s.Opusd, "tpw").Status.Superuser; got != "admin" {
					t.Errorf("superuser made: %q, want admin", got)
				}
			},
		},
		{
			name:     "an invalid project name is a usage error",
			setup:    func(t *testing.T, s *cliOpusd) []string { return []string{"create", "Bad-Name", "--empty"} },
			wantCode: 2,
			wantErr:  []string{"project name \"Bad-Name\" contains"},
			check:    func(t *testing.T, s *cliOpusd, r result) { noCalls(t, s.Opusd, "CreateProject") },
		},
		{
			name: "a ref on a plain directory is a usage error",
			setup: func(t *testing.T, s *cliOpusd) []string {
				return []string{"create", "tref", "--app", appDir(t, "polls") + "@v1"}
			},
			wantCode: 2,
			wantErr:  []string{"plain directory", "@v1 applies only to git sources"},
			check:    func(t *testing.T, s *cliOpusd, r result) { noCalls(t, s.Opusd, "CreateProject", "UploadSource") },
		},
		{
			name:     "create without an app asks for --app or --empty",
			setup:    func(t *testing.T, s *cliOpusd) []string { return []string{"create", "tnoapp", "--admin"} },
			wantCode: 2,
			wantErr:  []string{"no apps given: give --app SRC", "or --empty to create a project with no apps"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				noCalls(t, s.Opusd, "CreateProject", "UploadSource")
				if p := project(t, s.Opusd, "tnoapp"); p != nil {
					t.Errorf("refused create recorded project %+v", p)
				}
			},
		},
		{
			name: "create --empty with an app is a usage error",
			setup: func(t *testing.T, s *cliOpusd) []string {
				return []string{"create", "tboth", "--empty", "--app", appDir(t, "polls")}
			},
			wantCode: 2,
			wantErr:  []string{"--empty creates a project with no apps"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				noCalls(t, s.Opusd, "CreateProject", "UploadSource")
				if p := project(t, s.Opusd, "tboth"); p != nil {
					t.Errorf("refused create recorded project %+v", p)
				}
			},
		},
		{
			name:    "create --empty deploys a project with no apps",
			setup:   func(t *testing.T, s *cliOpusd) []string { return []string{"create", "tempty", "--empty"} },
			wantOut: []string{"Creating project tempty (operation op-", "Project tempty is ready"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				if req := createReq(t, s.Opusd); len(req.Apps) != 0 {
					t.Errorf("request %v, want no apps", req)
				}
				if p := project(t, s.Opusd, "tempty"); p == nil || len(p.Spec.Apps) != 0 || p.Status.Phase != store.PhaseReady {
					t.Errorf("project after create --empty: %+v", p)
				}
			},
		},
		{
			name:     "an unknown output format is a usage error",
			setup:    func(t *testing.T, s *cliOpusd) []string { return []string{"ls", "-o", "yaml"} },
			wantCode: 2,
			wantErr:  []string{"--output must be"},
			check:    func(t *testing.T, s *cliOpusd, r result) { noCalls(t, s.Opusd, "ListProjects") },
		},
		{
			name:     "an unknown command is a usage error",
			setup:    func(t *testing.T, s *cliOpusd) []string { return []string{"deploy"} },
			wantCode: 2,
			wantErr:  []string{"unknown command \"deploy\""},
		},
		{
			name:     "an unknown subcommand of a group is a usage error",
			setup:    func(t *testing.T, s *cliOpusd) []string { return []string{"apps", "bogus"} },
			wantCode: 2,
			wantErr:  []string{"unknown command \"bogus\" for \"opusctl apps\""},
		},
		{
			name: "apps add, update to a ref, rm",
			setup: func(t *testing.T, s *cliOpusd) []string {
				s.seed(t)
				return []string{"apps", "add", "tbeta", "blog=" + appDir(t, "blogsrc")}
			},
			wantOut: []string{"Adding app blog to tbeta", "step reload: done", "Project tbeta is ready ("},
			check: func(t *testing.T, s *cliOpusd, r result) {
				add := s.CallsOf("AddApp")[0].Req.(*opusv1.AddAppRequest)
				if add.GetApp().GetName() != "blog" || add.GetApp().GetSource().GetUpload() == nil {
					t.Errorf("AddApp %v", add)
				}
				if u := runCLI(t, s.Socket, "", "apps", "update", "talpha", "news", "feature/x"); u.code != 0 {
					t.Fatalf("apps update: %+v", u)
				}
				up := s.CallsOf("UpdateApp")[0].Req.(*opusv1.UpdateAppRequest)
				if g := up.GetSource().GetGit(); g.GetUrl() != s.newsURL || g.GetRef() != "feature/x" || up.GetApp() != "news" {
					t.Errorf("UpdateApp %v, want the same URL at feature/x", up)
				}
				if got, want := project(t, s.Opusd, "talpha").Status.Apps["news"].ResolvedCommit, gitRev(t, strings.TrimPrefix(s.newsURL, "file://"), "feature/x"); got != want {
					t.Errorf("news deployed at %q, want feature/x (%s)", got, want)
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
			setup: func(t *testing.T, s *cliOpusd) []string {
				s.seed(t)
				key, err := certtest.ECKey(elliptic.P256())
				if err != nil {
					t.Fatal(err)
				}
				leaf, err := certtest.Leaf([]string{"talpha" + servicetest.ServerSuffix}, key, nil, 0)
				if err != nil {
					t.Fatal(err)
				}
				certPEM, keyPEM := certtest.PEM(key, leaf)
				dir := t.TempDir()
				for name, b := range map[string][]byte{"c.pem": certPEM, "k.pem": keyPEM} {
					if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
						t.Fatal(err)
					}
				}
				return []string{"cert", "set", "talpha", "--cert", filepath.Join(dir, "c.pem"), "--key", filepath.Join(dir, "k.pem")}
			},
			wantOut: []string{"Installing the certificate of talpha", "step reload: done"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				req := s.CallsOf("SetCertificate")[0].Req.(*opusv1.SetCertificateRequest)
				if !bytes.Contains(req.GetCertificatePem(), []byte("BEGIN CERTIFICATE")) || !bytes.Contains(req.GetKeyPem(), []byte("PRIVATE KEY")) {
					t.Errorf("SetCertificate %v", req)
				}
				if got := project(t, s.Opusd, "talpha").Status.Certificate.Kind; got != "owner" {
					t.Errorf("certificate in use: %q, want the owner's", got)
				}
			},
		},
		{
			name: "cert set without --key is a usage error",
			setup: func(t *testing.T, s *cliOpusd) []string {
				return []string{"cert", "set", "talpha", "--cert", "/dev/null"}
			},
			wantCode: 2,
			wantErr:  []string{"--key must be given"},
			check:    func(t *testing.T, s *cliOpusd, r result) { noCalls(t, s.Opusd, "SetCertificate") },
		},
		{
			name:     "backup without -o is a usage error",
			setup:    func(t *testing.T, s *cliOpusd) []string { return []string{"backup", "talpha"} },
			wantCode: 2,
			wantErr:  []string{"-o FILE"},
			check:    func(t *testing.T, s *cliOpusd, r result) { noCalls(t, s.Opusd, "BackupProject") },
		},
		{
			name: "backup never overwrites a file",
			setup: func(t *testing.T, s *cliOpusd) []string {
				f := filepath.Join(t.TempDir(), "kept")
				if err := os.WriteFile(f, []byte("mine"), 0o600); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if b, _ := os.ReadFile(f); string(b) != "mine" {
						t.Errorf("the existing file now holds %q", b)
					}
				})
				return []string{"backup", "talpha", "-o", f}
			},
			wantCode: 2,
			wantErr:  []string{"exists", "never overwrites"},
			check:    func(t *testing.T, s *cliOpusd, r result) { noCalls(t, s.Opusd, "BackupProject") },
		},
		{
			name:    "backup's help says -o is the file, not the output format",
			setup:   func(t *testing.T, s *cliOpusd) []string { return []string{"backup", "--help"} },
			wantOut: []string{"-o, --output FILE   write the backup to FILE"},
			check: func(t *testing.T, s *cliOpusd, r result) {
				flags, global, _ := strings.Cut(r.stdout, "Global Flags:")
				if !strings.Contains(flags, "--output FILE") {
					t.Errorf("-o FILE is not among backup's own flags:\n%s", r.stdout)
				}
				if strings.Contains(global, "--output") || strings.Contains(r.stdout, "table or json") {
					t.Errorf("backup's help still offers -o as the output format:\n%s", r.stdout)
				}
			},
		},
		{
			name: "backup into a directory that is not there names the file asked for",
			setup: func(t *testing.T, s *cliOpusd) []string {
				return []string{"backup", "talpha", "-o", filepath.Join(t.TempDir(), "gone", "blog.opus")}
			},
			wantCode: 1,
			wantErr:  []string{"cannot write ", "/gone/blog.opus: no such file or directory"},
			notOut:   []string{".partial"},
			check:    func(t *testing.T, s *cliOpusd, r result) { noCalls(t, s.Opusd, "BackupProject") },
		},
		{
			name:    "completion",
			setup:   func(t *testing.T, s *cliOpusd) []string { return []string{"completion", "bash"} },
			wantOut: []string{"__start_opusctl"},
		},
		{
			name:    "version",
			setup:   func(t *testing.T, s *cliOpusd) []string { return []string{"version"} },
			wantOut: []string{"opusctl ", "go1."},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &cliOpusd{Opusd: startOpusd(t)}
			args := tc.setup(t, s)
			r := runCLI(t, s.Socket, tc.stdin, args...)
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
			// A success writes to stderr only what a case expects there.
			if tc.wantCode == 0 && r.stderr != "" && len(tc.wantErr) == 0 && !strings.Contains(strings.Join(args, " "), "json") {
				t.Errorf("unexpected stderr:\n%s", r.stderr)
			}
			if tc.wantCode != 0 && !strings.HasPrefix(r.stderr, "opusctl: ") {
				t.Errorf("stderr should start with \"opusctl: \":\n%s", r.stderr)
			}
			if tc.check != nil {
				tc.check(t, s, r)
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

// TestExitCode: 2 for every mistake in what was given, found by opusctl
// or by opusd; 1 for everything else.
func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"usage", usagef("--output must be table or json"), exitUsage},
		{"cobra's own", errors.New(`unknown flag: --nope`), exitUsage},
		{"opusd refuses an argument", status.Error(codes.InvalidArgument, "git ref: bad"), exitUsage},
		{"wrapped", fmt.Errorf("upload polls: %w", status.Error(codes.InvalidArgument, "upload size: too big")), exitUsage},
		{"no such project", status.Error(codes.NotFound, `project "x" not found`), exitError},
		{"name taken", status.Error(codes.AlreadyExists, `project "x" already exists`), exitError},
		{"not allowed", status.Error(codes.PermissionDenied, "only admins"), exitError},
		{"opusd down", status.Error(codes.Unavailable, "connection refused"), exitError},
		{"failed operation", &client.OperationError{Op: &opusv1.Operation{Id: "op-1", State: opusv1.OperationState_OPERATION_STATE_FAILED}}, exitError},
		{"local I/O", errors.New("open ./polls: permission denied"), exitError},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("%s: exitCode(%v) = %d, want %d", tc.name, tc.err, got, tc.want)
		}
	}
}
