package account

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/testrun"
)

func TestMain(m *testing.M) { os.Exit(testrun.Main(m)) }

// decoyGECOS is the comment of hand-made users that are not Opus's.
const decoyGECOS = "Opus test decoy"

func randomProject(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'a' + b[i]%26
	}
	return prefix + string(b)
}

// runAccounts returns Accounts whose project users are the test run's
// ("t"+ID+"-NAME", removed with the run even if it is killed); it skips
// the test under -short and when not root.
func runAccounts(t *testing.T) (*testrun.Run, *Accounts) {
	t.Helper()
	run := testrun.Need(t, "creates and deletes system users")
	return run, &Accounts{Prefix: run.UserPrefix(), BaseDir: run.TempDir(t), UIDs: run.UIDs()}
}

func passwdLine(t *testing.T, user string) string {
	t.Helper()
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, user+":") {
			return line
		}
	}
	return ""
}

func groupLine(t *testing.T, group string) string {
	t.Helper()
	data, err := os.ReadFile("/etc/group")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, group+":") {
			return line
		}
	}
	return ""
}

func TestEnsureDeleteRealUser(t *testing.T) {
	_, a := runAccounts(t)
	ctx := context.Background()
	project := randomProject(t, "p")
	name := a.User(project)
	t.Cleanup(func() { a.DeleteUser(context.Background(), project) })

	uid := testrun.MustFreeID(t, a.UIDs)
	u, created, err := a.EnsureUser(ctx, project, uid)
	if err != nil || !created {
		t.Fatalf("EnsureUser = %+v, %v, %v; want created", u, created, err)
	}
	line := passwdLine(t, name)
	want := []string{name, "x", "", "", names.Marker(project), layout.For(a.BaseDir, project).Root, "/usr/sbin/nologin"}
	f := strings.Split(line, ":")
	if len(f) != 7 || f[0] != want[0] || f[4] != want[4] || f[5] != want[5] || f[6] != want[6] {
		t.Errorf("/etc/passwd line %q, want name %s GECOS %q home %s shell %s", line, want[0], want[4], want[5], want[6])
	}
	if u.UID != uid || u.GID != uid {
		t.Errorf("uid %d gid %d, want the %d asked for", u.UID, u.GID, uid)
	}
	if g := groupLine(t, name); !strings.HasPrefix(g, name+":x:") {
		t.Errorf("group %s missing: %q", name, g)
	}
	if _, err := os.Stat(layout.For(a.BaseDir, project).Root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("useradd created a home directory: %v", err)
	}

	u2, created, err := a.EnsureUser(ctx, project, testrun.MustFreeID(t, a.UIDs))
	if err != nil || created || u2 != u {
		t.Errorf("second EnsureUser = %+v, %v, %v; want %+v, not created", u2, created, err, u)
	}

	deleted, err := a.DeleteUser(ctx, project)
	if err != nil || !deleted {
		t.Fatalf("DeleteUser = %v, %v; want deleted", deleted, err)
	}
	if l := passwdLine(t, name); l != "" {
		t.Errorf("user still there: %q", l)
	}
	if g := groupLine(t, name); g != "" {
		t.Errorf("group still there: %q", g)
	}
	deleted, err = a.DeleteUser(ctx, project)
	if err != nil || deleted {
		t.Errorf("DeleteUser of absent user = %v, %v; want false, nil", deleted, err)
	}
}

// TestRefuseUnmarkedUser makes a project user by hand, without the marker:
// DeleteUser and EnsureUser must refuse it and leave it exactly as it was.
func TestRefuseUnmarkedUser(t *testing.T) {
	run, a := runAccounts(t)
	ctx := context.Background()
	project := randomProject(t, "x")
	name := a.User(project)
	// Written down first, so the run removes it even if it dies here.
	if err := run.NoteAccount(name); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(useradd, "--system", "--no-create-home", "--shell", shell,
		"--comment", decoyGECOS, "--user-group", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd decoy: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command(userdel, name).Run() })
	before, groupBefore := passwdLine(t, name), groupLine(t, name)

	if deleted, err := a.DeleteUser(ctx, project); !errors.Is(err, ErrNotOurs) || deleted {
		t.Errorf("DeleteUser(decoy) = %v, %v; want ErrNotOurs", deleted, err)
	}
	if _, _, err := a.EnsureUser(ctx, project, testrun.MustFreeID(t, a.UIDs)); !errors.Is(err, ErrNotOurs) {
		t.Errorf("EnsureUser(decoy) = %v; want ErrNotOurs", err)
	}
	if _, err := a.LookupUser(project); !errors.Is(err, ErrNotOurs) {
		t.Errorf("LookupUser(decoy) = %v; want ErrNotOurs", err)
	}
	if after := passwdLine(t, name); after != before || after == "" {
		t.Errorf("decoy changed: %q -> %q", before, after)
	}
	if after := groupLine(t, name); after != groupBefore || after == "" {
		t.Errorf("decoy group changed: %q -> %q", groupBefore, after)
	}
}

func TestInvalidProjectNames(t *testing.T) {
	a := &Accounts{BaseDir: "/var/lib/opus-test", PasswdPath: "/nonexistent"}
	bad := []string{"", "../x", "Root", "a b", strings.Repeat("a", 40), "root", "x:y"}
	before := map[string]string{}
	for _, p := range bad {
		before[p] = passwdLine(t, names.User(names.DefaultUserPrefix, p))
	}
	for _, p := range bad {
		if _, _, err := a.EnsureUser(context.Background(), p, 70000); err == nil {
			t.Errorf("EnsureUser(%q) accepted", p)
		}
		if _, err := a.DeleteUser(context.Background(), p); err == nil {
			t.Errorf("DeleteUser(%q) accepted", p)
		}
	}
	for _, p := range bad {
		if after := passwdLine(t, names.User(names.DefaultUserPrefix, p)); after != before[p] {
			t.Errorf("user %s changed: %q -> %q", names.User(names.DefaultUserPrefix, p), before[p], after)
		}
	}
}

func TestLookupUserParsing(t *testing.T) {
	passwd := strings.Join([]string{
		"root:x:0:0:root:/root:/bin/bash",
		"# comment",
		"opus-blog:x:990:990:Opus project blog:/var/lib/opus/projects/blog:/usr/sbin/nologin",
		"opus-evil:x:0:0:Opus project evil:/:/bin/sh",
		"opus-other:x:991:991:Opus project blog:/:/usr/sbin/nologin",
		"opus-short:x:992:992",
		"opus-bad:x:abc:992:Opus project bad:/:/usr/sbin/nologin",
		"opus-human:x:1000:1000:Human,,,:/home/h:/bin/bash",
	}, "\n")
	path := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(path, []byte(passwd), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &Accounts{PasswdPath: path}
	tests := []struct {
		project string
		wantUID uint32
		wantErr error
	}{
		{"blog", 990, nil},
		{"evil", 0, ErrNotOurs},
		{"other", 0, ErrNotOurs},
		{"short", 0, ErrNoUser},
		{"bad", 0, ErrNoUser},
		{"human", 0, ErrNotOurs},
		{"absent", 0, ErrNoUser},
	}
	for _, tc := range tests {
		u, err := a.LookupUser(tc.project)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && (err != nil || u.UID != tc.wantUID)) {
			t.Errorf("LookupUser(%s) = %+v, %v; want uid %d err %v", tc.project, u, err, tc.wantUID, tc.wantErr)
		}
	}
}

func TestRunReportsStderr(t *testing.T) {
	err := run(context.Background(), "/bin/sh", "-c", "echo boom >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("run error %v does not carry stderr", err)
	}
}

// FuzzLookupPasswd feeds arbitrary passwd files to the parser: it must not
// panic, and it may only return a user that carries the exact marker and a
// non-zero uid.
func FuzzLookupPasswd(f *testing.F) {
	f.Add("opus-blog:x:990:990:Opus project blog:/x:/usr/sbin/nologin\n")
	f.Add("opus-blog:x:0:0:Opus project blog:/x:/bin/sh\n")
	f.Add("opus-blog:x:990:990:Opus project blog,room:/x:/sbin/nologin\n")
	f.Add("::::::\n#\n\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, content string) {
		path := filepath.Join(dir, "passwd")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		a := &Accounts{PasswdPath: path}
		u, err := a.LookupUser("blog")
		if err == nil && (u.GECOS != names.Marker("blog") || u.UID == 0 || u.Name != "opus-blog") {
			t.Errorf("accepted %+v", u)
		}
	})
}
