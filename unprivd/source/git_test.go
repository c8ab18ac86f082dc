package source

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/gitsrc/gitsrctest"
	"github.com/opus-hosting/opus/internal/pack"
)

// gitRun runs the real git CLI in dir with a fixed identity.
func gitRun(t *testing.T, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// testRepo makes a repository: v1 (tag, annotated) and v2 (lightweight tag)
// on main, and a branch "feature" with its own file.
func testRepo(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs the git CLI to build test repositories")
	}
	dir := filepath.Join(t.TempDir(), "repo")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	gitRun(t, dir, "init", "-q", "-b", "main")
	writeFiles(t, dir, map[string]string{"__init__.py": "", "views.py": "VERSION = 1\n"})
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "one")
	gitRun(t, dir, "tag", "-a", "v1", "-m", "release 1")
	writeFiles(t, dir, map[string]string{"views.py": "VERSION = 2\n", "templates/x/index.html": "two"})
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "two")
	gitRun(t, dir, "tag", "v2")
	gitRun(t, dir, "checkout", "-q", "-b", "feature")
	writeFiles(t, dir, map[string]string{"feature.py": "F = True\n"})
	gitRun(t, dir, "add", ".")
	gitRun(t, dir, "commit", "-q", "-m", "feature")
	gitRun(t, dir, "checkout", "-q", "main")
	return dir
}

func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range listTree(t, dir) {
		if k, v, ok := strings.Cut(e, "="); ok {
			out[k] = v
		}
	}
	return out
}

func TestGitFetch(t *testing.T) {
	repo := testRepo(t)
	v1 := gitRun(t, repo, "rev-parse", "v1^{commit}")
	v2 := gitRun(t, repo, "rev-parse", "v2")
	feature := gitRun(t, repo, "rev-parse", "feature")
	g := &Git{CacheDir: filepath.Join(t.TempDir(), "cache"), Timeout: time.Minute, MaxBytes: 10 << 20}
	for _, tc := range []struct {
		url, ref, commit, views string
		extra                   string
	}{
		{repo, "", v2, "VERSION = 2\n", "templates/x/index.html"},
		{repo, "main", v2, "VERSION = 2\n", ""},
		{repo, "v1", v1, "VERSION = 1\n", ""},
		{repo, "v2", v2, "VERSION = 2\n", ""},
		{repo, "feature", feature, "VERSION = 2\n", "feature.py"},
		{repo, "refs/tags/v1", v1, "VERSION = 1\n", ""},
		{repo, v1, v1, "VERSION = 1\n", ""},
		{repo, v1[:8], v1, "VERSION = 1\n", ""},
		{"file://" + repo, "v1", v1, "VERSION = 1\n", ""},
		{repo, v1, v1, "VERSION = 1\n", ""}, // again: from the cache
	} {
		dest := filepath.Join(t.TempDir(), "app")
		commit, err := g.Fetch(context.Background(), tc.url, tc.ref, true, dest)
		if err != nil {
			t.Fatalf("Fetch(%q): %v", tc.ref, err)
		}
		if commit.Hash != tc.commit {
			t.Errorf("Fetch(%q) = %s, want %s (git rev-parse)", tc.ref, commit.Hash, tc.commit)
		}
		if want := gitRun(t, repo, "log", "-1", "--format=%s", tc.commit); commit.Subject != want {
			t.Errorf("Fetch(%q) subject %q, want %q (git log)", tc.ref, commit.Subject, want)
		}
		files := readTree(t, dest)
		if files["views.py"] != tc.views {
			t.Errorf("Fetch(%q): views.py = %q, want %q", tc.ref, files["views.py"], tc.views)
		}
		if _, ok := files[tc.extra]; tc.extra != "" && !ok {
			t.Errorf("Fetch(%q): %s missing; tree %v", tc.ref, tc.extra, files)
		}
		if _, err := os.Stat(filepath.Join(dest, ".git")); err == nil {
			t.Errorf("dest has a .git")
		}
		if err := ValidateApp(dest, "blog"); err != nil {
			t.Errorf("fetched tree is not an app: %v", err)
		}
	}
	// A commit fetch must stay fast once cached: remove the source repo.
	moved := repo + ".gone"
	if err := os.Rename(repo, moved); err != nil {
		t.Fatal(err)
	}
	defer os.Rename(moved, repo)
	if c, err := g.Fetch(context.Background(), repo, v2, true, filepath.Join(t.TempDir(), "app")); err != nil || c.Hash != v2 {
		t.Errorf("cached commit fetch without the remote: %s, %v", c, err)
	}
}

func TestGitRefuses(t *testing.T) {
	repo := testRepo(t)
	// A repository whose tree holds a symlink pointing out of it.
	evil := testRepo(t)
	if err := os.Symlink("/etc/shadow", filepath.Join(evil, "shadow")); err != nil {
		t.Fatal(err)
	}
	gitRun(t, evil, "add", "shadow")
	gitRun(t, evil, "commit", "-q", "-m", "link")
	// And one with a submodule entry (gitlink).
	sub := testRepo(t)
	gitRun(t, sub, "update-index", "--add", "--cacheinfo", "160000,"+gitRun(t, sub, "rev-parse", "v1^{commit}")+",vendor")
	gitRun(t, sub, "commit", "-q", "-m", "submodule")

	// Where the ext:: transport's command would leave its mark: the test's
	// own, not a name in /tmp anything else may create.
	pwned := filepath.Join(t.TempDir(), "pwned")
	for _, tc := range []struct {
		name, url, ref string
		local          bool
		max            int64
		want           string
	}{
		{"symlink leaving the tree", evil, "main", true, 0, "shadow is a symbolic link"},
		{"submodule", sub, "main", true, 0, "vendor is a submodule"},
		{"ext transport", "ext::sh -c touch% " + pwned, "", true, 0, "transport helper \"ext::\", which is not allowed"},
		{"fd transport", "fd::0", "", true, 0, "not allowed"},
		{"local path for non-admin", repo, "main", false, 0, "only administrators may fetch local repositories"},
		{"file url for non-admin", "file://" + repo, "main", false, 0, "only administrators"},
		{"plain http", "http://example.com/x.git", "", false, 0, "use https://"},
		{"relative path", "repo", "", true, 0, "neither a URL"},
		{"unknown ref", repo, "nope", true, 0, `ref "nope" is not a branch, tag or commit hash of the repository (it has: feature, main, v1, v2)`},
		{"unknown commit", repo, "deadbeef", true, 0, "no commit starting with deadbeef"},
		{"option-like ref", repo, "--upload-pack=x", true, 0, "is not a branch, tag or commit name"},
		{"size limit", repo, "main", true, 100, "fetch size limit reached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &Git{CacheDir: filepath.Join(t.TempDir(), "cache"), Timeout: time.Minute, MaxBytes: tc.max}
			parent := t.TempDir()
			_, err := g.Fetch(context.Background(), tc.url, tc.ref, tc.local, filepath.Join(parent, "app"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Fetch = %v, want %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Errorf("refused fetch left %v", ents)
			}
		})
	}
	if _, err := os.Stat(pwned); !errors.Is(err, os.ErrNotExist) {
		t.Error("ext:: command ran")
	}
}

func TestGitUnreachableIsBounded(t *testing.T) {
	g := &Git{CacheDir: t.TempDir(), Timeout: 5 * time.Second}
	start := time.Now()
	_, err := g.Fetch(context.Background(), "https://127.0.0.1:1/x.git", "", false, filepath.Join(t.TempDir(), "app"))
	if err == nil {
		t.Fatal("fetch from a closed port succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	// A host that accepts but never answers: the timeout must cut it.
	g.Timeout = 2 * time.Second
	start = time.Now()
	_, err = g.Fetch(context.Background(), "https://10.255.255.1/x.git", "", false, filepath.Join(t.TempDir(), "app"))
	if err == nil {
		t.Fatal("fetch from a black hole succeeded")
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("black hole took %v, timeout 2s", d)
	}
}

// The path a local app takes: pack, upload, extract, validate.
func TestPackStoreRoundTrip(t *testing.T) {
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"__init__.py": "", "urls.py": "u", "templates/blog/a.html": "a"})
	var buf bytes.Buffer
	if err := pack.Pack(context.Background(), src, &buf); err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(t.TempDir(), StoreOptions{Limits: DefaultLimits})
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := s.Put(context.Background(), 1000, &buf)
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "blog")
	if err := s.Extract(context.Background(), 1000, d, dest); err != nil {
		t.Fatal(err)
	}
	if err := ValidateApp(dest, "blog"); err != nil || !HasURLs(dest) {
		t.Fatalf("ValidateApp = %v, HasURLs = %v", err, HasURLs(dest))
	}
	if got := readTree(t, dest)["templates/blog/a.html"]; got != "a" {
		t.Errorf("content %q", got)
	}
}

// A cache broken by a crash is rebuilt, not fatal.
func TestGitBrokenCacheRecovers(t *testing.T) {
	repo := testRepo(t)
	v2 := gitRun(t, repo, "rev-parse", "v2")
	g := &Git{CacheDir: t.TempDir(), Timeout: time.Minute}
	if _, err := g.Fetch(context.Background(), repo, "main", true, filepath.Join(t.TempDir(), "a")); err != nil {
		t.Fatal(err)
	}
	caches, _ := filepath.Glob(filepath.Join(g.CacheDir, "*", "shallow"))
	if len(caches) != 1 {
		t.Fatalf("cache dirs %v", caches)
	}
	if err := os.RemoveAll(filepath.Join(caches[0], "objects")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(caches[0], "config"), []byte("[[[garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := g.Fetch(context.Background(), repo, "main", true, filepath.Join(t.TempDir(), "b"))
	if err != nil || c.Hash != v2 {
		t.Fatalf("Fetch over a broken cache = %s, %v", c, err)
	}
}

// TestGitLocalWithoutGitBinary: local repositories (bare or with a work
// tree) are read in-process. go-git's default runs git-upload-pack, which
// refuses repositories of another owner (safe.directory) — every admin's
// repository, seen from opusd.
func TestGitLocalWithoutGitBinary(t *testing.T) {
	repo := testRepo(t)
	v2 := gitRun(t, repo, "rev-parse", "v2")
	bare := filepath.Join(t.TempDir(), "bare.git")
	gitRun(t, repo, "clone", "-q", "--bare", repo, bare)
	t.Setenv("PATH", "/nonexistent")
	for _, url := range []string{repo, "file://" + repo, bare} {
		g := &Git{CacheDir: filepath.Join(t.TempDir(), "cache"), Timeout: time.Minute, MaxBytes: 10 << 20}
		commit, err := g.Fetch(context.Background(), url, "main", true, filepath.Join(t.TempDir(), "app"))
		if err != nil || commit.Hash != v2 {
			t.Errorf("Fetch(%s) without git on PATH = %s, %v; want %s", url, commit.Hash, err, v2)
		}
	}
	g := &Git{CacheDir: filepath.Join(t.TempDir(), "cache"), Timeout: time.Minute}
	if _, err := g.Fetch(context.Background(), t.TempDir(), "main", true, filepath.Join(t.TempDir(), "app")); err == nil {
		t.Errorf("Fetch of a directory that is no repository succeeded")
	}
}

// TestGitSizeLimitLeavesNothing: a fetch cut by the size limit says which
// limit and which configuration key, and leaves no partial pack in the
// cache: none at all when the fetch created the cache, and only the
// earlier, complete data when the cache already existed.
func TestGitSizeLimitLeavesNothing(t *testing.T) {
	repo := testRepo(t)
	gitRun(t, repo, "checkout", "-q", "-b", "big")
	big := make([]byte, 3<<20)
	if _, err := rand.Read(big); err != nil { // incompressible
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	gitRun(t, repo, "add", ".")
	gitRun(t, repo, "commit", "-q", "-m", "big")
	gitRun(t, repo, "checkout", "-q", "main")

	leftovers := func(cache string) []string {
		var found []string
		filepath.Walk(cache, func(p string, fi os.FileInfo, err error) error {
			if err == nil && (strings.HasPrefix(fi.Name(), "tmp_") || strings.HasPrefix(fi.Name(), "._packed-refs")) {
				found = append(found, p)
			}
			return nil
		})
		return found
	}
	const want = "the repository needs more than 2 MiB, the most one fetch may write (git_max_bytes 2097152 in opusd's configuration"
	for _, warm := range []bool{false, true} {
		cache := filepath.Join(t.TempDir(), "cache")
		g := &Git{CacheDir: cache, Timeout: time.Minute, MaxBytes: 2 << 20}
		if warm {
			if _, err := g.Fetch(context.Background(), repo, "main", true, filepath.Join(t.TempDir(), "app")); err != nil {
				t.Fatal(err)
			}
		}
		for _, ref := range []string{"big", gitRun(t, repo, "rev-parse", "big")[:10]} {
			dest := filepath.Join(t.TempDir(), "app")
			_, err := g.Fetch(context.Background(), repo, ref, true, dest)
			if !errors.Is(err, errBudget) || !strings.Contains(err.Error(), want) {
				t.Fatalf("warm=%v fetch %s = %v, want the size limit: %q", warm, ref, err, want)
			}
			if _, err := os.Stat(dest); err == nil {
				t.Errorf("warm=%v: %s written", warm, dest)
			}
			if l := leftovers(cache); len(l) != 0 {
				t.Errorf("warm=%v fetch %s left partial data: %v", warm, ref, l)
			}
			ents, _ := os.ReadDir(cache)
			if !warm && len(ents) != 0 {
				t.Errorf("a refused first fetch left a cache: %v", ents)
			}
		}
		if warm {
			// The complete earlier data still serves, and still fits.
			if _, err := g.Fetch(context.Background(), repo, "main", true, filepath.Join(t.TempDir(), "app")); err != nil {
				t.Errorf("main after a refused fetch: %v", err)
			}
		}
	}
}

// TestGitRulesAgree: the fetcher takes exactly the git URLs of the one
// table every caller of package gitsrc is tested against (the API is, in
// unprivd/service): a local repository only when allowed (admins).
func TestGitRulesAgree(t *testing.T) {
	for _, c := range gitsrctest.URLs {
		if err := CheckGitURL(c.URL, true); (err == nil) != c.OK {
			t.Errorf("an admin's git url %.60q: %v, want ok=%v", c.URL, err, c.OK)
		}
		if err := CheckGitURL(c.URL, false); (err == nil) != (c.OK && !c.Local) {
			t.Errorf("an owner's git url %.60q: %v, want ok=%v", c.URL, err, c.OK && !c.Local)
		}
	}
}
