package tree

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/opus-hosting/opus/internal/layout"
)

// Ids the tests assign; no user needs to exist for fchown.
var testOwners = Owners{OpusUID: 40001, OpusGID: 40011, ProjectUID: 40002, ProjectGID: 40012}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: changes file ownership")
	}
}

// fileState is what a test compares before and after to prove nothing
// changed.
type fileState struct {
	uid, gid uint32
	mode     uint32
	ino      uint64
	nlink    uint64
}

func lstate(t *testing.T, p string) fileState {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return fileState{st.Uid, st.Gid, st.Mode, st.Ino, uint64(st.Nlink)}
}

func mustWrite(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("x"), mode); err != nil {
		t.Fatal(err)
	}
}

func TestSecureTreePolicy(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	lay := layout.For(base, "blog")
	// code exists with content, secrets/data/static are missing and must
	// be created. A setuid bit must not survive.
	mustWrite(t, filepath.Join(lay.Code, "wsgi.py"), 0o4777)
	mustWrite(t, filepath.Join(lay.Code, "app", "views.py"), 0o600)
	if err := os.MkdirAll(filepath.Join(lay.Code, "app", "empty"), 0o777); err != nil {
		t.Fatal(err)
	}
	res, err := SecureTree(context.Background(), base, "blog", testOwners)
	if err != nil {
		t.Fatalf("SecureTree: %v", err)
	}
	if len(res.Refusals) != 0 {
		t.Errorf("refusals = %v, want none", res.Refusals)
	}
	o := testOwners
	tests := []struct {
		rel      string
		uid, gid uint32
		mode     uint32
	}{
		{".", o.OpusUID, o.ProjectGID, unix.S_IFDIR | 0o751},
		{"code", o.OpusUID, o.ProjectGID, unix.S_IFDIR | 0o751},
		{"code/wsgi.py", o.OpusUID, o.ProjectGID, unix.S_IFREG | 0o640},
		{"code/app", o.OpusUID, o.ProjectGID, unix.S_IFDIR | 0o750},
		{"code/app/views.py", o.OpusUID, o.ProjectGID, unix.S_IFREG | 0o640},
		{"code/app/empty", o.OpusUID, o.ProjectGID, unix.S_IFDIR | 0o750},
		{"secrets", o.ProjectUID, o.OpusGID, unix.S_IFDIR | 0o770},
		{"data", o.ProjectUID, o.OpusGID, unix.S_IFDIR | 0o770},
		{"static", o.OpusUID, o.ProjectGID, unix.S_IFDIR | 0o775},
	}
	for _, tc := range tests {
		got := lstate(t, filepath.Join(lay.Root, tc.rel))
		if got.uid != tc.uid || got.gid != tc.gid || got.mode != tc.mode {
			t.Errorf("%s: uid %d gid %d mode %#o, want %d %d %#o", tc.rel, got.uid, got.gid, got.mode, tc.uid, tc.gid, tc.mode)
		}
	}
	if res.Secured != int64(len(tests)) {
		t.Errorf("Secured = %d, want %d", res.Secured, len(tests))
	}

	// Files written later into each directory get that directory's
	// policy; a second run is idempotent.
	mustWrite(t, filepath.Join(lay.Secrets, "secret_key"), 0o666)
	mustWrite(t, filepath.Join(lay.Data, "db", "db.sqlite3"), 0o600)
	mustWrite(t, filepath.Join(lay.Static, "css", "a.css"), 0o600)
	if _, err := SecureTree(context.Background(), base, "blog", testOwners); err != nil {
		t.Fatalf("SecureTree again: %v", err)
	}
	later := []struct {
		rel      string
		uid, gid uint32
		mode     uint32
	}{
		{"secrets/secret_key", o.ProjectUID, o.OpusGID, unix.S_IFREG | 0o640},
		{"data/db", o.ProjectUID, o.OpusGID, unix.S_IFDIR | 0o770},
		{"data/db/db.sqlite3", o.ProjectUID, o.OpusGID, unix.S_IFREG | 0o660},
		{"static/css", o.OpusUID, o.ProjectGID, unix.S_IFDIR | 0o775},
		{"static/css/a.css", o.OpusUID, o.ProjectGID, unix.S_IFREG | 0o644},
	}
	for _, tc := range later {
		got := lstate(t, filepath.Join(lay.Root, tc.rel))
		if got.uid != tc.uid || got.gid != tc.gid || got.mode != tc.mode {
			t.Errorf("%s: uid %d gid %d mode %#o, want %d %d %#o", tc.rel, got.uid, got.gid, got.mode, tc.uid, tc.gid, tc.mode)
		}
	}
}

// TestSecureTreeRefusals plants what an attacker would: a symlink to
// /etc/shadow, a hard link to a file outside the tree, a FIFO, a socket, a
// device node, a symlinked top-level directory and a stray root entry.
func TestSecureTreeRefusals(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	lay := layout.For(base, "blog")
	for _, d := range []string{lay.Code, lay.Data, lay.Static} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	outside := filepath.Join(base, "outside")
	mustWrite(t, outside, 0o600)
	outsideDir := filepath.Join(base, "outsidedir")
	if err := os.Mkdir(outsideDir, 0o700); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("/etc/shadow", filepath.Join(lay.Data, "shadow")))
	must(os.Link(outside, filepath.Join(lay.Code, "hard")))
	must(unix.Mkfifo(filepath.Join(lay.Static, "fifo"), 0o600))
	must(unix.Mknod(filepath.Join(lay.Data, "null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
	must(os.Symlink(outsideDir, lay.Secrets))
	mustWrite(t, filepath.Join(lay.Root, "stray"), 0o600)
	sockPath := filepath.Join(lay.Data, "sock")
	sfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	must(err)
	defer unix.Close(sfd)
	must(unix.Bind(sfd, &unix.SockaddrUnix{Name: sockPath}))

	watched := []string{outside, outsideDir,
		filepath.Join(lay.Data, "shadow"), filepath.Join(lay.Static, "fifo"),
		filepath.Join(lay.Data, "null"), sockPath, filepath.Join(lay.Root, "stray"), lay.Secrets}
	// /etc/shadow is compared by owner and mode: other tests on this host
	// may add users (a new inode) meanwhile.
	shadowState := func() [3]uint32 { s := lstate(t, "/etc/shadow"); return [3]uint32{s.uid, s.gid, s.mode} }
	shadowBefore := shadowState()
	before := map[string]fileState{}
	for _, p := range watched {
		before[p] = lstate(t, p)
	}

	res, err := SecureTree(context.Background(), base, "blog", testOwners)
	if err != nil {
		t.Fatalf("SecureTree: %v", err)
	}
	want := map[string]string{
		"data/shadow": "symbolic link",
		"code/hard":   "hard-linked regular file (2 links)",
		"static/fifo": "FIFO",
		"data/null":   "character device",
		"data/sock":   "socket",
		"secrets":     "symbolic link",
		"stray":       "not part of the project layout",
	}
	got := map[string]string{}
	for _, r := range res.Refusals {
		got[r.Path] = r.Reason
	}
	for p, reason := range want {
		if got[p] != reason {
			t.Errorf("refusal of %s = %q, want %q", p, got[p], reason)
		}
	}
	if len(got) != len(want) {
		t.Errorf("refusals = %v, want exactly %v", res.Refusals, want)
	}
	for _, p := range watched {
		if after := lstate(t, p); after != before[p] {
			t.Errorf("%s changed: %+v -> %+v", p, before[p], after)
		}
	}
	if shadowState() != shadowBefore {
		t.Errorf("/etc/shadow changed owner or mode")
	}
	// The legitimate part of the tree was still secured.
	if st := lstate(t, lay.Data); st.uid != testOwners.ProjectUID || st.mode&0o7777 != 0o770 {
		t.Errorf("data not secured: %+v", st)
	}
}

func TestSecureTreeRefusesLinkedBase(t *testing.T) {
	needRoot(t)
	tmp := t.TempDir()
	real := filepath.Join(tmp, "real")
	if err := os.MkdirAll(filepath.Join(real, "projects", "blog"), 0o700); err != nil {
		t.Fatal(err)
	}
	linkedProjects := filepath.Join(tmp, "b2")
	if err := os.Mkdir(linkedProjects, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(real, "projects"), filepath.Join(linkedProjects, "projects")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(tmp, "link")); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(real, "projects", "blog")
	before := lstate(t, target)
	for _, base := range []string{filepath.Join(tmp, "link"), linkedProjects} {
		if _, err := SecureTree(context.Background(), base, "blog", testOwners); err == nil {
			t.Errorf("SecureTree(%s) succeeded through a symlink", base)
		}
		if _, err := RemoveTree(context.Background(), base, "blog"); err == nil {
			t.Errorf("RemoveTree(%s) succeeded through a symlink", base)
		}
	}
	if after := lstate(t, target); after != before {
		t.Errorf("target changed: %+v -> %+v", before, after)
	}
	if _, err := os.Stat(filepath.Join(target, "code")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("code was created through a symlink: %v", err)
	}
}

func TestInvalidNames(t *testing.T) {
	base := t.TempDir()
	for _, name := range []string{"", "../x", "Root", "a b", strings.Repeat("a", 40), "root", ".", "a/b"} {
		if _, err := SecureTree(context.Background(), base, name, testOwners); err == nil {
			t.Errorf("SecureTree(%q) accepted", name)
		}
		if _, err := RemoveTree(context.Background(), base, name); err == nil {
			t.Errorf("RemoveTree(%q) accepted", name)
		}
	}
	entries, err := os.ReadDir(base)
	if err != nil || len(entries) != 0 {
		t.Errorf("base holds %v (%v), want nothing", entries, err)
	}
}

func TestSecureTreeLimits(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	lay := layout.For(base, "blog")
	deep := filepath.Join(lay.Data, "a", "b", "c", "d")
	mustWrite(t, filepath.Join(deep, "f"), 0o600)
	res, err := secureTree(context.Background(), base, "blog", testOwners, Limits{MaxDepth: 3, MaxEntries: 100})
	if err != nil {
		t.Fatalf("secureTree: %v", err)
	}
	if len(res.Refusals) != 1 || res.Refusals[0].Path != "data/a/b/c" {
		t.Errorf("refusals = %v, want data/a/b/c too deep", res.Refusals)
	}
	if st := lstate(t, filepath.Join(deep, "f")); st.uid != 0 || st.mode&0o7777 != 0o600 {
		t.Errorf("file below the depth limit was changed: %+v", st)
	}
	_, err = secureTree(context.Background(), base, "blog", testOwners, Limits{MaxDepth: 64, MaxEntries: 3})
	if !errors.Is(err, ErrLimit) {
		t.Errorf("entry limit: err = %v, want ErrLimit", err)
	}
}

// TestRemoveTree removes a tree holding a symlink to /etc, a symlink in
// place of a top-level directory, project-owned files and directories
// nested deeper than the depth limit; /etc is untouched.
func TestRemoveTree(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	lay := layout.For(base, "blog")
	mustWrite(t, filepath.Join(lay.Code, "wsgi.py"), 0o640)
	for i := 0; i < 20; i++ {
		p := filepath.Join(lay.Data, "uploads", "f"+string(rune('a'+i)))
		mustWrite(t, p, 0o600)
		if err := os.Chown(p, int(testOwners.ProjectUID), int(testOwners.ProjectGID)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(lay.Data, "uploads"), 0o500); err != nil { // read-only dir: root removes anyway
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(lay.Data, "etc")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", lay.Static); err != nil {
		t.Fatal(err)
	}
	deep := lay.Secrets
	for i := 0; i < 12; i++ {
		deep = filepath.Join(deep, "d")
	}
	mustWrite(t, filepath.Join(deep, "f"), 0o600)
	if err := unix.Mkfifo(filepath.Join(lay.Data, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A victim directory outside the tree, reached through a link: it and
	// its files must survive. /etc is checked by owner and mode only, as
	// other tests on this host may add users meanwhile.
	victim := filepath.Join(base, "victim")
	mustWrite(t, filepath.Join(victim, "keep"), 0o600)
	if err := os.Symlink(victim, filepath.Join(lay.Code, "victim")); err != nil {
		t.Fatal(err)
	}
	victimBefore, keepBefore := lstate(t, victim), lstate(t, filepath.Join(victim, "keep"))
	ownerMode := func(p string) [3]uint32 { s := lstate(t, p); return [3]uint32{s.uid, s.gid, s.mode} }
	etcBefore, passwdBefore := ownerMode("/etc"), ownerMode("/etc/passwd")

	n, err := removeTree(context.Background(), base, "blog", Limits{MaxDepth: 4, MaxEntries: 10_000})
	if err != nil {
		t.Fatalf("RemoveTree: %v", err)
	}
	if _, err := os.Lstat(lay.Root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("root still there: %v", err)
	}
	// root + code + wsgi.py + victim link + data + uploads + 20 files +
	// etc link + fifo + static link + secrets + 12 dirs + f
	if want := int64(1 + 3 + 2 + 20 + 2 + 1 + 1 + 12 + 1); n != want {
		t.Errorf("removed = %d, want %d", n, want)
	}
	if ownerMode("/etc") != etcBefore || ownerMode("/etc/passwd") != passwdBefore {
		t.Errorf("/etc or /etc/passwd changed owner or mode")
	}
	if lstate(t, victim) != victimBefore || lstate(t, filepath.Join(victim, "keep")) != keepBefore {
		t.Errorf("directory behind a link was changed")
	}
	// Absent tree, and absent projects directory, are fine.
	if n, err := RemoveTree(context.Background(), base, "blog"); err != nil || n != 0 {
		t.Errorf("RemoveTree of absent tree = %d, %v; want 0, nil", n, err)
	}
	if n, err := RemoveTree(context.Background(), filepath.Join(base, "nothere"), "blog"); err != nil || n != 0 {
		t.Errorf("RemoveTree with absent base = %d, %v; want 0, nil", n, err)
	}
}

func TestRemoveTreeLinkedRoot(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	victim := filepath.Join(base, "victim")
	mustWrite(t, filepath.Join(victim, "keep"), 0o600)
	if err := os.MkdirAll(layout.ProjectsDir(base), 0o755); err != nil {
		t.Fatal(err)
	}
	root := layout.For(base, "blog").Root
	if err := os.Symlink(victim, root); err != nil {
		t.Fatal(err)
	}
	n, err := RemoveTree(context.Background(), base, "blog")
	if err != nil || n != 1 {
		t.Errorf("RemoveTree = %d, %v; want 1, nil", n, err)
	}
	if _, err := os.Stat(filepath.Join(victim, "keep")); err != nil {
		t.Errorf("link target was touched: %v", err)
	}
	if _, err := os.Lstat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("symlinked root still there: %v", err)
	}
}

func TestRemoveTreeEntryLimitContinues(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	lay := layout.For(base, "blog")
	for i := 0; i < 10; i++ {
		mustWrite(t, filepath.Join(lay.Data, string(rune('a'+i))), 0o600)
	}
	lim := Limits{MaxDepth: 64, MaxEntries: 4}
	for i := 0; ; i++ {
		_, err := removeTree(context.Background(), base, "blog", lim)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrLimit) || i > 10 {
			t.Fatalf("pass %d: %v", i, err)
		}
	}
	if _, err := os.Lstat(lay.Root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("root still there: %v", err)
	}
}

func TestRefusalReason(t *testing.T) {
	tests := []struct {
		mode  uint32
		nlink uint64
		dev   uint64
		want  string
	}{
		{unix.S_IFREG | 0o644, 1, 7, ""},
		{unix.S_IFDIR | 0o755, 3, 7, ""},
		{unix.S_IFREG | 0o644, 2, 7, "hard-linked regular file (2 links)"},
		{unix.S_IFLNK | 0o777, 1, 7, "symbolic link"},
		{unix.S_IFCHR, 1, 7, "character device"},
		{unix.S_IFBLK, 1, 7, "block device"},
		{unix.S_IFIFO, 1, 7, "FIFO"},
		{unix.S_IFSOCK, 1, 7, "socket"},
		{unix.S_IFDIR | 0o755, 2, 8, "on another filesystem"},
	}
	for _, tc := range tests {
		st := unix.Stat_t{Mode: tc.mode, Dev: tc.dev}
		st.Nlink = tc.nlink
		if got := refusal(&st, 7); got != tc.want {
			t.Errorf("refusal(mode %#o nlink %d dev %d) = %q, want %q", tc.mode, tc.nlink, tc.dev, got, tc.want)
		}
	}
}
