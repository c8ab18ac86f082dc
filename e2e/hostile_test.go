package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// projectsOnDisk lists the project trees under the base directory.
func (h *host) projectsOnDisk(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(h.cfg.BaseDir, "projects"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestHostileNames: names that are no valid project name are refused by the
// CLI with the rule they break, and nothing appears on the host.
func TestHostileNames(t *testing.T) {
	h := needHost(t)
	taken := h.newProject(t)
	h.mustCtl(t, 0, "create", taken, "--empty")
	tests := []struct{ name, want string }{
		{"Blog", "lowercase"},
		{"my-blog", "contains '-'"},
		{"2blog", "starts with a digit"},
		{"class", "Python keyword"},
		{"django", "reserved"},
		{"os", "reserved"},
		{"site", "reserved"},
		{"test", "reserved"},
		{strings.Repeat("a", 40), "at most"},
		{"blög", "only lowercase"},
		{"a\nb", "contains '\\n'"},
		{"../x", "contains '.'"},
		{"", "empty"},
		{taken, "exists"},
	}
	before, trees := hostState(t), h.projectsOnDisk(t)
	for _, tt := range tests {
		r := h.ctl(t, 0, "", "create", tt.name, "--empty")
		if r.code == 0 || !strings.Contains(r.err, tt.want) {
			t.Errorf("create %q: exit %d, stderr %q; want a refusal containing %q", tt.name, r.code, r.err, tt.want)
		}
	}
	if hostState(t) != before || len(h.projectsOnDisk(t)) != len(trees) {
		t.Errorf("the host changed after refused names")
	}
}

// tarball builds a gzipped tar from headers (with bodies for regular files).
type entry struct {
	hdr  tar.Header
	body string
}

func tarball(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gz.Close()
	return buf.Bytes()
}

// bomb is a small gzip that unpacks to more than opusd's unpacked cap.
func bomb(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	zeros := make([]byte, 1<<20)
	for i := 0; i < 6; i++ {
		hdr := tar.Header{Name: "big" + string(rune('a'+i)), Typeflag: tar.TypeReg, Mode: 0o644, Size: 60 << 20}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < 60; n++ {
			tw.Write(zeros)
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// TestHostileArchives: archives that would write outside the app, link
// anywhere, create devices or exhaust the disk are refused at upload with
// InvalidArgument, and nothing is stored.
func TestHostileArchives(t *testing.T) {
	h := needHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, h.cfg.OpusdSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reg := func(name, body string) entry {
		return entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: body}
	}
	init := reg("__init__.py", "")
	tests := []struct {
		name, want string
		data       []byte
	}{
		{"dot-dot entry", "..", tarball(t, init, reg("../evil.py", "x"))},
		{"absolute path", "absolute", tarball(t, init, reg("/etc/evil.py", "x"))},
		{"symlink to /etc/shadow", "link", tarball(t, init, entry{hdr: tar.Header{Name: "shadow", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}})},
		{"hard link", "link", tarball(t, init, reg("a.py", "x"), entry{hdr: tar.Header{Name: "b.py", Typeflag: tar.TypeLink, Linkname: "a.py"}})},
		{"device node", "device", tarball(t, init, entry{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}})},
		{"file where a directory is expected", "", tarball(t, init, reg("views", "x"), reg("views/a.py", "y"))},
		{"decompression bomb", "exceeds", bomb(t)},
	}
	sources := filepath.Join(h.cfg.BaseDir, "sources")
	countFiles := func() int {
		n := 0
		filepath.Walk(sources, func(_ string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				n++
			}
			return nil
		})
		return n
	}
	before := countFiles()
	for _, tt := range tests {
		_, err := c.UploadArchive(ctx, tt.name, bytes.NewReader(tt.data), int64(len(tt.data)))
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.want) {
			t.Errorf("upload %s: %v %q; want InvalidArgument mentioning %q", tt.name, st.Code(), st.Message(), tt.want)
		}
	}
	if n := countFiles(); n != before {
		t.Errorf("source store holds %d files after refused uploads, had %d", n, before)
	}
}

// TestHostileSources: transports other than git's own, and a local
// repository named by a non-admin, are refused at once with nothing
// changed on the host; a repository with a link leaving the tree, an app
// that is not a package, an unreachable host and plain http fail the
// operation with a clear message, in bounded time, and nothing outside the
// project is touched. (Path-traversal entries: TestHostileGitTrees; a
// repository past the size limit: TestHostileGitSize.)
func TestHostileSources(t *testing.T) {
	h := needHost(t)
	local := newGitApp(t, "mine", "never")
	for _, tt := range []struct {
		uid       uint32
		src, want string
	}{
		{0, "ext::sh -c touch% " + pwnedPath(), "transport"},
		{0, "fd::17", "transport"},
		{0, "ftp://127.0.0.1:1/x.git", `"ftp" is not one of`},
		{0, "http://127.0.0.1:1/x.git", "plain http"},
		// Another user's files are no source for a non-admin: opusd
		// would read them with its own rights.
		{h.otherID, local.dir + "@main", "only admins"},
		{h.otherID, "file://" + local.dir + "@main", "only admins"},
	} {
		name := h.newProject(t)
		before := hostState(t)
		r := h.ctl(t, tt.uid, "", "create", name, "--app", "evil="+tt.src)
		if r.code == 0 || !strings.Contains(strings.ToLower(r.err), strings.ToLower(tt.want)) {
			t.Errorf("create with %q: exit %d %q, want a refusal mentioning %q", tt.src, r.code, r.err, tt.want)
		}
		if exists(pwnedPath()) || passwdLine(t, projUser(name)) != "" || hostState(t) != before ||
			exists(filepath.Join(h.cfg.BaseDir, "projects", name)) {
			t.Errorf("a refused source %q changed the host", tt.src)
		}
	}

	link := newGitApp(t, "linky", "never")
	if err := os.Symlink("/etc/shadow", filepath.Join(link.dir, "shadow")); err != nil {
		t.Fatal(err)
	}
	link.git(t, "add", "-A")
	link.git(t, "commit", "-q", "-m", "link")
	nopkg := newGitApp(t, "nopkg", "never")
	nopkg.git(t, "rm", "-q", "__init__.py")
	nopkg.git(t, "commit", "-q", "-m", "not a package")
	for _, tt := range []struct{ src, want string }{
		{link.dir + "@main", "symbolic link"},
		{nopkg.dir + "@main", "__init__.py"},
		{"shop=https://127.0.0.1:1/shop.git@main", "127.0.0.1:1"},
	} {
		name := h.newProject(t)
		shadow := stateOf(t, "/etc/shadow")
		start := time.Now()
		r := h.ctl(t, 0, "", "create", name, "--app", tt.src)
		if r.code == 0 || !strings.Contains(r.err+r.out, tt.want) {
			t.Errorf("create with %s: exit %d, want a failure mentioning %q:\n%s%s", tt.src, r.code, tt.want, r.out, r.err)
		}
		if d := time.Since(start); d > 3*time.Minute {
			t.Errorf("create with %s took %v", tt.src, d)
		}
		// useradd rewrites /etc/shadow's content; owner and mode must stay.
		if got := stateOf(t, "/etc/shadow"); got.uid != shadow.uid || got.gid != shadow.gid || got.mode != shadow.mode {
			t.Errorf("/etc/shadow changed: %+v, was %+v", got, shadow)
		}
		h.mustBeGone(t, name)
	}
}

// mustBeGone asserts that nothing of project name is left: a create that
// failed is undone whole (no record, user, tree or site).
func (h *host) mustBeGone(t *testing.T, name string) {
	t.Helper()
	if r := h.ctl(t, 0, "", "show", name); r.code == 0 {
		t.Errorf("the failed create left project %s", name)
	}
	if passwdLine(t, projUser(name)) != "" {
		t.Errorf("the failed create left user %s", projUser(name))
	}
	for _, p := range []string{filepath.Join(h.cfg.BaseDir, "projects", name), filepath.Join(h.cfg.ApacheDir, "sites", name+".conf")} {
		if exists(p) {
			t.Errorf("the failed create left %s", p)
		}
	}
}

// hugeRepo makes a git app repository whose main holds an incompressible
// blob of size bytes, so that its pack is at least that big.
func hugeRepo(t *testing.T, name string, size int) *gitApp {
	t.Helper()
	g := newGitApp(t, name, "never")
	blob := make([]byte, size)
	if _, err := crand.Read(blob); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g.dir, "big.bin"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	g.git(t, "add", "-A")
	g.git(t, "commit", "-q", "-m", "huge")
	return g
}

// gitCacheLeftovers lists what a fetch of url left in opusd's git cache:
// the URL's cache directory (none is made for a refused first fetch) and
// any temporary file of an interrupted transfer anywhere in the cache.
func (h *host) gitCacheLeftovers(t *testing.T, url string) []string {
	t.Helper()
	cache := filepath.Join(h.cfg.BaseDir, "git")
	sum := sha256.Sum256([]byte(url))
	var found []string
	if key := filepath.Join(cache, hex.EncodeToString(sum[:])); exists(key) {
		found = append(found, key)
	}
	filepath.Walk(cache, func(p string, fi os.FileInfo, err error) error {
		if err == nil && (strings.HasPrefix(fi.Name(), "tmp_") || strings.HasPrefix(fi.Name(), "._packed-refs")) {
			found = append(found, p)
		}
		return nil
	})
	return found
}

// TestHostileGitSize: a repository past git_max_bytes (8 MiB in the e2e
// configuration), whether in a new project or added to a live one, fails
// the operation with a message naming the app, the limit and the key to
// raise; no byte of it is left in the git cache or the project tree, the
// vhost is not touched and a live project keeps serving what it had.
func TestHostileGitSize(t *testing.T) {
	h := needHost(t)
	if h.cfg.GitMaxBytes != 8<<20 {
		t.Fatalf("the e2e configuration sets git_max_bytes %d, this test needs 8 MiB", h.cfg.GitMaxBytes)
	}
	huge := hugeRepo(t, "huge", 9<<20)
	wantMsg := []string{
		"app huge:",
		"the repository needs more than 8 MiB",
		"git_max_bytes 8388608 in opusd's configuration",
	}
	for _, live := range []bool{false, true} {
		name := h.newProject(t)
		tiny := newGitApp(t, "tiny", "tiny still serves")
		if live {
			h.mustCtl(t, 0, "create", name, "--app", tiny.dir+"@main")
		}
		vhost := filepath.Join(h.cfg.ApacheDir, "sites", name+".conf")
		var vhostBefore fileState
		if live {
			vhostBefore = stateOf(t, vhost)
		}
		users := hostState(t)
		start := time.Now()
		var r result
		if live {
			r = h.ctl(t, 0, "", "apps", "add", name, huge.dir+"@main")
		} else {
			r = h.ctl(t, 0, "", "create", name, "--app", huge.dir+"@main")
		}
		if r.code == 0 {
			t.Errorf("live=%v: a repository past the size limit was deployed", live)
		}
		for _, w := range wantMsg {
			if !strings.Contains(r.err+r.out, w) {
				t.Errorf("live=%v: the failure does not say %q:\n%s%s", live, w, r.out, r.err)
			}
		}
		if d := time.Since(start); d > 2*time.Minute {
			t.Errorf("live=%v: the refusal took %v", live, d)
		}
		if l := h.gitCacheLeftovers(t, huge.dir); len(l) != 0 {
			t.Errorf("live=%v: the refused fetch left data in the git cache: %v", live, l)
		}
		proj := filepath.Join(h.cfg.BaseDir, "projects", name)
		filepath.Walk(proj, func(p string, fi os.FileInfo, err error) error {
			if err == nil && (fi.Name() == "big.bin" || strings.HasPrefix(fi.Name(), ".huge")) {
				t.Errorf("live=%v: the refused app left %s", live, p)
			}
			return nil
		})
		if exists(filepath.Join(proj, "code", "huge")) {
			t.Errorf("live=%v: the refused app's directory exists", live)
		}
		if live {
			// A live project: nothing on the host moved and it still serves.
			if hostState(t) != users {
				t.Errorf("users changed after a refused app")
			}
			if stateOf(t, vhost) != vhostBefore {
				t.Errorf("the vhost changed after a refused app")
			}
			mustGet(t, webClient(), h.url(name, "http", "/tiny/"), "tiny still serves")
			out := h.mustCtl(t, 0, "show", name)
			if !strings.Contains(out, "git_max_bytes") {
				t.Errorf("show does not give the last error:\n%s", out)
			}
			h.mustCtl(t, 0, "destroy", name, "--yes")
			if passwdLine(t, projUser(name)) != "" || exists(proj) {
				t.Errorf("live=%v: destroy left the user or the tree", live)
			}
		} else {
			// A new project whose only app was refused is undone whole.
			h.mustBeGone(t, name)
		}
	}
}

// TestHostileApps: app names that are no Python package name, clash with
// another app or with the project's own package are refused before anything
// happens.
func TestHostileApps(t *testing.T) {
	h := needHost(t)
	hello := localApp(t, "hello")
	before := hostState(t)
	for _, tt := range []struct {
		apps []string
		want string
	}{
		{[]string{"my-app=" + hello}, "my-app"},
		{[]string{"class=" + hello}, "keyword"},
		{[]string{"opus_project=" + hello}, "opus_project"},
		{[]string{"hello=" + hello, "hello=" + hello}, "hello"},
	} {
		name := h.newProject(t)
		args := []string{"create", name}
		for _, a := range tt.apps {
			args = append(args, "--app", a)
		}
		r := h.ctl(t, 0, "", args...)
		if r.code == 0 || !strings.Contains(r.err, tt.want) {
			t.Errorf("create %v: exit %d %q, want a refusal mentioning %q", tt.apps, r.code, r.err, tt.want)
		}
		if passwdLine(t, projUser(name)) != "" {
			t.Errorf("refused create %v made a user", tt.apps)
		}
	}
	if hostState(t) != before {
		t.Errorf("users changed after refused apps")
	}
}

// craftTree commits, on top of g's main, a tree that git itself would
// never write: g's files plus one raw entry (mode, kind, name) whose object
// is a tree holding evil.py (kind "tree") or a blob (kind "blob").
func (g *gitApp) craftTree(t *testing.T, mode, kind, name string) {
	t.Helper()
	hashObject := func(stdin string) string {
		cmd := exec.Command("git", "hash-object", "-w", "--stdin")
		cmd.Dir, cmd.Stdin = g.dir, strings.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("git hash-object: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	mktree := func(entries string) string {
		cmd := exec.Command("git", "mktree")
		cmd.Dir, cmd.Stdin = g.dir, strings.NewReader(entries)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git mktree: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	blob := hashObject("open('" + pwnedPath() + "', 'w')\n")
	obj := blob
	if kind == "tree" {
		obj = mktree("100644 blob " + blob + "\tevil.py\n")
	}
	tree := mktree(g.git(t, "ls-tree", "HEAD") + "\n" + mode + " " + kind + " " + obj + "\t" + name + "\n")
	commit := g.git(t, "commit-tree", tree, "-p", "HEAD", "-m", "crafted "+name)
	g.git(t, "update-ref", "refs/heads/main", commit)
}

// TestHostileGitTrees: repositories crafted with git's plumbing to hold
// entries that would write outside the app (".."), into a git directory
// (".git") or onto the app itself (".") fail the operation with the
// offending path named, and no file of theirs lands anywhere.
func TestHostileGitTrees(t *testing.T) {
	h := needHost(t)
	for _, tt := range []struct {
		mode, kind, name, want string
	}{
		{"040000", "tree", "..", `".."`},
		{"100644", "blob", "..", `".."`},
		{"040000", "tree", ".git", ".git"},
		{"040000", "tree", ".", `"."`},
	} {
		g := newGitApp(t, "crafted", "never")
		g.craftTree(t, tt.mode, tt.kind, tt.name)
		name := h.newProject(t)
		r := h.ctl(t, 0, "", "create", name, "--app", g.dir+"@main")
		if r.code == 0 || !strings.Contains(r.err+r.out, tt.want) {
			t.Errorf("create with a %s entry %q: exit %d, want a failure naming %s:\n%s%s", tt.kind, tt.name, r.code, tt.want, r.out, r.err)
		}
		filepath.Walk(h.cfg.BaseDir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Name() == "evil.py" {
				t.Errorf("a crafted entry %q was written: %s", tt.name, p)
			}
			return nil
		})
		if exists(pwnedPath()) {
			t.Errorf("crafted code ran")
		}
		h.mustBeGone(t, name)
	}
}

// TestHostileSettings: settings that would inject Apache directives, reach
// the dynamic loader or Python's start-up, or are no setting at all are
// refused with InvalidArgument naming the problem, and neither the
// project's spec nor its vhost changes; another user's project is
// NotFound to them.
func TestHostileSettings(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	h.mustCtl(t, 0, "create", name, "--empty")
	c := h.rootClient(t)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vhost := filepath.Join(h.cfg.ApacheDir, "sites", name+".conf")
	before := stateOf(t, vhost)
	p0, err := c.GetProject(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		set  map[string]string
		want string
	}{
		{map[string]string{"hosts": "a b.example.com"}, "contains"},
		{map[string]string{"hosts": "ok.example.com\nInclude /etc/shadow"}, "contains"},
		{map[string]string{"hosts": `x.example.com" evil`}, "contains"},
		{map[string]string{"hosts": "someone" + h.cfg.ServerSuffix}, "belongs to an Opus project"},
		{map[string]string{"hosts": "-x.example.com"}, "'-'"},
		{map[string]string{"hosts": "a..example.com"}, "empty label"},
		{map[string]string{"env.LD_PRELOAD": "/tmp/evil.so"}, "LD_PRELOAD"},
		{map[string]string{"env.PYTHONPATH": "/tmp"}, "PYTHONPATH"},
		{map[string]string{"env.DJANGO_SETTINGS_MODULE": "evil"}, "DJANGO_SETTINGS_MODULE"},
		{map[string]string{"env.lower": "x"}, "lower"},
		{map[string]string{"env.A B": "x"}, "A B"},
		{map[string]string{"debug": "maybe"}, "debug"},
		{map[string]string{"wsgi.user": "root"}, "wsgi.user"},
	} {
		_, err := c.RPC().UpdateSettings(ctx, &opusv1.UpdateSettingsRequest{Project: name, Set: tt.set})
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.want) {
			t.Errorf("settings %q: %v %q; want InvalidArgument mentioning %q", tt.set, st.Code(), st.Message(), tt.want)
		}
	}
	// Someone else's project does not exist for them.
	ans := h.ctl(t, h.otherID, "", "show", name)
	if ans.code == 0 || !strings.Contains(ans.err, "not found") {
		t.Errorf("show of root's project as another user: exit %d %q", ans.code, ans.err)
	}
	p1, err := c.GetProject(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if p1.GetGeneration() != p0.GetGeneration() {
		t.Errorf("refused settings moved the generation from %d to %d", p0.GetGeneration(), p1.GetGeneration())
	}
	if stateOf(t, vhost) != before {
		t.Errorf("the vhost changed after refused settings")
	}
	h.mustCtl(t, 0, "destroy", name, "--yes")
}
