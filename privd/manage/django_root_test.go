package manage

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/testrun"
	"github.com/opus-hosting/opus/privd/account"
	"github.com/opus-hosting/opus/privd/confine"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

func TestMain(m *testing.M) {
	// The test binary is the confined child's executable (Runner.Self
	// defaults to /proc/self/exe), as opus-privd is in production.
	confine.MaybeRunChild()
	os.Exit(testrun.Main(m))
}

func randName() string {
	b := make([]byte, 6)
	for i := range b {
		b[i] = byte('a' + rand.IntN(26))
	}
	return "mg" + string(b)
}

type testProject struct {
	name string
	user *user.User
	p    layout.Project
	uid  int
	gid  int
}

// newProject creates a project user (with privd's account package, under
// the run's prefix) and an empty tree under r.Base: root and code owned by
// root and world-traversable (like opus:NAME 0751), data and static owned
// by the project user.
func newProject(t *testing.T, r *Runner) *testProject {
	t.Helper()
	base := r.Base
	name := randName()
	run := testrun.Need(t, "creates project users")
	acc := &account.Accounts{Prefix: r.UserPrefix, BaseDir: base, UIDs: run.UIDs()}
	uid, err := testrun.FreeID(acc.UIDs)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := acc.EnsureUser(context.Background(), name, uid); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := acc.DeleteUser(context.Background(), name); err != nil {
			t.Errorf("delete user of %s: %v", name, err)
		}
	})
	u, err := user.Lookup(acc.User(name))
	if err != nil {
		t.Fatal(err)
	}
	tp := &testProject{name: name, user: u, p: layout.For(base, name)}
	tp.uid, _ = strconv.Atoi(u.Uid)
	tp.gid, _ = strconv.Atoi(u.Gid)
	for _, d := range []string{tp.p.Root, tp.p.Code, filepath.Join(tp.p.Code, layout.PackageName)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{tp.p.Data, tp.p.Static} {
		if err := os.MkdirAll(d, 0o770); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, tp.uid, tp.gid); err != nil {
			t.Fatal(err)
		}
	}
	return tp
}

func (tp *testProject) write(t *testing.T, rel, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(tp.p.Code, rel), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

const djangoManage = `#!/usr/bin/python3
import os, sys
if __name__ == '__main__':
    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'opus_project.settings')
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
`

const djangoSettings = `SECRET_KEY = 'test-only-not-secret'
DEBUG = False
ALLOWED_HOSTS = []
INSTALLED_APPS = ['django.contrib.auth', 'django.contrib.contenttypes', 'django.contrib.staticfiles']
DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': %q}}
ROOT_URLCONF = 'opus_project.urls'
USE_TZ = True
STATIC_URL = '/static/'
STATIC_ROOT = %q
DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'
`

// setup returns a Runner for projects under a directory of the test run,
// whose users are the run's; it skips under -short and when not root.
func setup(t *testing.T, timeout time.Duration) *Runner {
	t.Helper()
	run := testrun.Need(t, "creates project users and runs manage.py as them")
	if err := exec.Command("/usr/bin/python3", "-c", "import django").Run(); err != nil {
		t.Skip("needs python3-django for /usr/bin/python3")
	}
	return &Runner{Base: run.TempDir(t), Python: "/usr/bin/python3", UserPrefix: run.UserPrefix(), Timeout: timeout}
}

func TestDjangoMigrateAndSuperuser(t *testing.T) {
	r := setup(t, 2*time.Minute)
	tp := newProject(t, r)
	db := filepath.Join(tp.p.Data, "db.sqlite3")
	tp.write(t, "manage.py", djangoManage)
	tp.write(t, "opus_project/__init__.py", "")
	tp.write(t, "opus_project/urls.py", "urlpatterns = []\n")
	tp.write(t, "opus_project/settings.py", fmt.Sprintf(djangoSettings, db, tp.p.Static))
	ctx := context.Background()
	const password = "correct-horse-battery-staple"

	req := &privdv1.RunManageRequest{
		Project:           tp.name,
		Commands:          []privdv1.ManageCommand{check, migrate, superuser, static},
		SuperuserUsername: "admin", SuperuserEmail: "admin@example.com", SuperuserPassword: password,
	}
	resp, err := r.Run(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetFailedCommand() != 0 || resp.GetExitCode() != 0 {
		t.Fatalf("failed: %v exit %d:\n%s", resp.GetFailedCommand(), resp.GetExitCode(), resp.GetOutput())
	}
	if !strings.Contains(resp.GetOutput(), "Applying auth.0001_initial") || !strings.Contains(resp.GetOutput(), "Superuser created") {
		t.Errorf("output lacks migrate/createsuperuser lines:\n%s", resp.GetOutput())
	}
	if strings.Contains(resp.GetOutput(), password) {
		t.Error("password in output")
	}
	// The database was made by the project user, not root.
	fi, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != tp.uid {
		t.Errorf("db owned by uid %d, want the project user %d", st.Uid, tp.uid)
	}
	// The superuser exists and the password works.
	q := fmt.Sprintf(`import os, sys
sys.path.insert(0, %q)
os.environ['DJANGO_SETTINGS_MODULE'] = 'opus_project.settings'
import django; django.setup()
from django.contrib.auth.models import User
u = User.objects.get(username='admin')
print(u.is_superuser, u.email, u.check_password(%q))`, tp.p.Code, password)
	out, err := exec.Command("/usr/bin/python3", "-c", q).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "True admin@example.com True" {
		t.Fatalf("superuser check: %v: %s", err, out)
	}

	// Again: an existing superuser is success, not failure.
	resp, err = r.Run(ctx, &privdv1.RunManageRequest{Project: tp.name, Commands: []privdv1.ManageCommand{superuser},
		SuperuserUsername: "admin", SuperuserEmail: "admin@example.com", SuperuserPassword: password})
	if err != nil || resp.GetFailedCommand() != 0 {
		t.Fatalf("second createsuperuser = %v, %v", resp, err)
	}

	// A failing command reports which and its exit code, and stops the run.
	before, _ := os.Stat(db)
	resp, err = r.Run(ctx, &privdv1.RunManageRequest{Project: tp.name,
		Commands: []privdv1.ManageCommand{migrate, static}, MigrateApp: "nosuchapp"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetFailedCommand() != migrate || resp.GetExitCode() != 1 || !strings.Contains(resp.GetOutput(), "nosuchapp") {
		t.Fatalf("migrate nosuchapp = %v", resp)
	}
	if after, _ := os.Stat(db); !after.ModTime().Equal(before.ModTime()) {
		t.Error("db changed by a failed migrate")
	}
}

// probeManage prints what the child sees for "check" and hangs for
// "migrate", standing in for manage.py to test identity, environment and
// timeout.
const probeManage = `import os, sys
if sys.argv[1] == 'migrate':
    import time; time.sleep(60)
print('uid=%d gid=%d groups=%r cwd=%s' % (os.getuid(), os.getgid(), os.getgroups(), os.getcwd()))
for k in sorted(os.environ):
    print('env %s=%s' % (k, os.environ[k]))
sys.stdout.write('x' * 100000)
`

func TestRunIdentityEnvTimeout(t *testing.T) {
	r := setup(t, 2*time.Second)
	tp := newProject(t, r)
	tp.write(t, "manage.py", probeManage)
	t.Setenv("OPUS_LEAK_TEST", "leaked")
	ctx := context.Background()

	resp, err := r.Run(ctx, &privdv1.RunManageRequest{Project: tp.name, Commands: []privdv1.ManageCommand{check}})
	if err != nil || resp.GetFailedCommand() != 0 {
		t.Fatalf("Run = %v, %v", resp, err)
	}
	out := resp.GetOutput()
	if len(out) != MaxOutput {
		t.Errorf("output is %d bytes, want the last %d", len(out), MaxOutput)
	}
	// The bounded output dropped the head; run again without the padding.
	tp.write(t, "manage.py", strings.Replace(probeManage, "sys.stdout.write('x' * 100000)", "", 1))
	resp, err = r.Run(ctx, &privdv1.RunManageRequest{Project: tp.name, Commands: []privdv1.ManageCommand{check}})
	if err != nil {
		t.Fatal(err)
	}
	out = resp.GetOutput()
	wantID := fmt.Sprintf("uid=%d gid=%d groups=[] cwd=%s", tp.uid, tp.gid, tp.p.Code)
	if !strings.Contains(out, wantID) {
		t.Errorf("identity: want %q in:\n%s", wantID, out)
	}
	var env []string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "env "); ok {
			env = append(env, v)
		}
	}
	want := Env(tp.p)
	for _, w := range want {
		if !strings.Contains(out, "env "+w+"\n") {
			t.Errorf("env lacks %q", w)
		}
	}
	// Python itself may add LC_CTYPE under C.UTF-8; nothing else may appear.
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		if k != "LC_CTYPE" && !strings.Contains(strings.Join(want, "\n")+"\n", e+"\n") {
			t.Errorf("unexpected variable in the child: %q", e)
		}
	}

	start := time.Now()
	resp, err = r.Run(ctx, &privdv1.RunManageRequest{Project: tp.name, Commands: []privdv1.ManageCommand{migrate, check}})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("timeout took %v", d)
	}
	if resp.GetFailedCommand() != migrate || resp.GetExitCode() != -1 || !strings.Contains(resp.GetOutput(), "deadline exceeded") {
		t.Errorf("timed-out run = %v", resp)
	}
	if strings.Contains(resp.GetOutput(), "uid=") {
		t.Error("ran the command after the one that timed out")
	}
	if out, err := exec.Command("pgrep", "-u", tp.user.Uid).Output(); err == nil {
		t.Errorf("processes of the project user left after timeout: %s", out)
	}
}

// countingManage stands in for manage.py: it reports the process it runs
// in and fails with exit code 3 on "collectstatic".
const countingManage = `import os, sys
print('ran %s in pid=%d' % (sys.argv[1], os.getpid()))
if sys.argv[1] == 'collectstatic':
    sys.exit(3)
`

// TestRunOneProcess: every command of one request runs in the same Python
// process, in order, and the run stops at the first failure, naming it.
func TestRunOneProcess(t *testing.T) {
	r := setup(t, time.Minute)
	tp := newProject(t, r)
	tp.write(t, "manage.py", countingManage)

	resp, err := r.Run(context.Background(), &privdv1.RunManageRequest{Project: tp.name,
		Commands: []privdv1.ManageCommand{check, migrate, check}})
	if err != nil || resp.GetFailedCommand() != 0 {
		t.Fatalf("Run = %v, %v", resp, err)
	}
	var pids []string
	for _, l := range strings.Split(resp.GetOutput(), "\n") {
		if _, pid, ok := strings.Cut(l, " in pid="); ok {
			pids = append(pids, pid)
		}
	}
	if len(pids) != 3 || pids[0] != pids[1] || pids[1] != pids[2] {
		t.Errorf("want 3 commands in one process, got pids %q in:\n%s", pids, resp.GetOutput())
	}
	if i, j := strings.Index(resp.GetOutput(), "ran migrate"), strings.LastIndex(resp.GetOutput(), "ran check"); i < 0 || j < i {
		t.Errorf("commands out of order:\n%s", resp.GetOutput())
	}

	resp, err = r.Run(context.Background(), &privdv1.RunManageRequest{Project: tp.name,
		Commands: []privdv1.ManageCommand{check, static, migrate}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetFailedCommand() != static || resp.GetExitCode() != 3 {
		t.Errorf("failing collectstatic = %v", resp)
	}
	if strings.Contains(resp.GetOutput(), "ran migrate") {
		t.Errorf("ran the command after the failed one:\n%s", resp.GetOutput())
	}
}
