package e2e

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Uploads (issue 14, item 10): an uploaded app archive belongs to whoever
// sent it, counts against their upload_quota, and is pruned once no
// project needs it.

// sharedApp writes a startapp-shaped app called name, with filler random
// (incompressible) bytes in one file, where every user may read it:
// opusctl packs a directory with its caller's own rights.
func sharedApp(t *testing.T, name string, filler int) string {
	t.Helper()
	dir, err := os.MkdirTemp(root, "app-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	app := filepath.Join(dir, name)
	for _, d := range []string{dir, app} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data := make([]byte, filler)
	rand.Read(data)
	files := map[string]string{
		"__init__.py": "",
		"urls.py":     "from django.urls import path\n\nfrom . import views\n\nurlpatterns = [path(\"\", views.index)]\n",
		"views.py":    "from django.http import HttpResponse\n\n\ndef index(request):\n    return HttpResponse(\"uploaded " + name + "\")\n",
		"filler.bin":  string(data),
	}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(app, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return app
}

// uploadedDigest is the upload digest project's only app was deployed from.
func (h *host) uploadedDigest(t *testing.T, project string) string {
	t.Helper()
	p := h.show(t, project)
	if len(p.Apps) != 1 || !strings.HasPrefix(p.Apps[0].ResolvedCommit, "sha256:") {
		t.Fatalf("project %s: apps %+v, want one deployed upload", project, p.Apps)
	}
	return p.Apps[0].ResolvedCommit
}

// uploadFile is where uid's upload of digest is stored, "" if nowhere.
func (h *host) uploadFile(t *testing.T, uid uint32, digest string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(h.cfg.BaseDir, "sources", fmt.Sprint(uid), "sha256", strings.TrimPrefix(digest, "sha256:")+".tar*"))
	if len(m) > 1 {
		t.Fatalf("upload %s of %d stored twice: %v", digest, uid, m)
	}
	if len(m) == 0 {
		return ""
	}
	return m[0]
}

// storedUploads lists every file of the upload store, temporary ones
// included, relative to it.
func (h *host) storedUploads(t *testing.T) []string {
	t.Helper()
	dir := filepath.Join(h.cfg.BaseDir, "sources")
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	slices.Sort(out)
	return out
}

// createFromUpload asks opusd, as uid, to create project from the upload
// digest: a call opusctl cannot make (it always uploads a directory).
func (h *host) createFromUpload(t *testing.T, uid uint32, project, digest string) privdAnswer {
	t.Helper()
	return asUID(t, uid, uid, privdCall{Socket: h.cfg.OpusdSocket(), Method: "opus.CreateProjectFromUpload", Project: project, Digest: digest})
}

// TestUploadsBelongToTheirUploader: user B cannot create a project from
// the digest of an archive user A uploaded: the answer is word for word
// the one for a digest nobody uploaded (so it does not even reveal that
// someone did), and nothing is made on the host. A's own project from it
// serves, and B cannot read A's archive on disk either.
func TestUploadsBelongToTheirUploader(t *testing.T) {
	h := needHost(t)
	_, uidA := addUser(t, "ua")
	name := h.newProject(t)
	h.mustCtl(t, uidA, "create", name, "--app", sharedApp(t, "owned", 100))
	mustGet(t, webClient(), h.url(name, "http", "/owned/"), "uploaded owned")
	digest := h.uploadedDigest(t, name)
	stored := h.uploadFile(t, uidA, digest)
	if stored == "" {
		t.Fatalf("A's upload %s is not in A's part of the store: %v", digest, h.storedUploads(t))
	}
	if canRead(h.otherID, h.otherGID, stored) {
		t.Errorf("B can read A's upload %s", stored)
	}

	before, files := hostState(t), h.storedUploads(t)
	stolen := h.newProject(t)
	theirs := h.createFromUpload(t, h.otherID, stolen, digest)
	unknown := "sha256:" + strings.Repeat("0f", 32)
	nobodys := h.createFromUpload(t, h.otherID, stolen, unknown)
	if theirs.DialError != "" || theirs.Code != "InvalidArgument" || !strings.Contains(theirs.Message, "send it first") {
		t.Errorf("B creating from A's upload: %s %q %s, want InvalidArgument", theirs.Code, theirs.Message, theirs.DialError)
	}
	if got := strings.ReplaceAll(theirs.Message, digest, unknown); got != nobodys.Message || theirs.Code != nobodys.Code {
		t.Errorf("A's digest and an unknown one are answered differently:\n %s %s\n %s %s", theirs.Code, got, nobodys.Code, nobodys.Message)
	}
	if hostState(t) != before {
		t.Error("the refused create changed the host's accounts")
	}
	if exists(filepath.Join(h.cfg.BaseDir, "projects", stolen)) {
		t.Error("the refused create made a project tree")
	}
	if r := h.ctl(t, 0, "", "show", stolen); r.code == 0 {
		t.Errorf("the refused create was recorded:\n%s", r.out)
	}
	if got := h.storedUploads(t); !slices.Equal(got, files) {
		t.Errorf("the upload store changed: %v, was %v", got, files)
	}
	h.mustCtl(t, uidA, "destroy", name, "--yes")
}

// smallUploadsOpusd runs opusd, until the test ends, with a 1 MiB
// upload_quota and a 2 s upload_grace (so it prunes every second), and
// returns the grace. Call it before newProject: the harness's own opusd
// comes back after the projects' cleanups.
func (h *host) smallUploadsOpusd(t *testing.T) time.Duration {
	t.Helper()
	h.opusdWith(t, "uploads", "upload_quota 1048576\nupload_grace 2s\n")
	return 2 * time.Second
}

// TestUploadQuotaAndPrune: with a 1 MiB upload_quota, the upload that
// would take a user past it is refused with a message saying usage, quota
// and what to do, and stores nothing; an upload a project uses is never
// pruned, however old; once its project is destroyed it is pruned after
// the grace period, and the refused upload then fits.
func TestUploadQuotaAndPrune(t *testing.T) {
	h := needHost(t)
	grace := h.smallUploadsOpusd(t)
	_, uid := addUser(t, "uq")
	first, second := sharedApp(t, "first", 600<<10), sharedApp(t, "second", 600<<10)
	name := h.newProject(t)
	h.mustCtl(t, uid, "create", name, "--app", first)
	digest := h.uploadedDigest(t, name)
	stored := h.uploadFile(t, uid, digest)
	if stored == "" {
		t.Fatalf("the upload %s is not stored as the user's: %v", digest, h.storedUploads(t))
	}

	// 600 KiB more would pass 1 MiB: refused, nothing stored or changed.
	files, accounts := h.storedUploads(t), hostState(t)
	r := h.ctl(t, uid, "", "apps", "add", name, second)
	if r.code == 0 {
		t.Fatal("an upload past the quota was accepted")
	}
	for _, want := range []string{"your stored uploads take", "past your upload quota of 1 MiB", "destroy projects"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("refusal %q lacks %q", r.err, want)
		}
	}
	if got := h.storedUploads(t); !slices.Equal(got, files) {
		t.Errorf("the refused upload changed the store: %v, was %v", got, files)
	}
	if p := h.show(t, name); len(p.Apps) != 1 {
		t.Errorf("the refused upload's app reached the project: %+v", p.Apps)
	}
	if hostState(t) != accounts {
		t.Error("the refused upload changed the host's accounts")
	}

	// Long past the grace period, an upload in use stays.
	time.Sleep(3 * grace)
	if !exists(stored) {
		t.Fatal("an upload a project uses was pruned")
	}
	mustGet(t, webClient(), h.url(name, "http", "/first/"), "uploaded first")

	// Its project destroyed, it goes at the next prune past the grace.
	h.mustCtl(t, uid, "destroy", name, "--yes")
	deadline := time.Now().Add(5*grace + 10*time.Second)
	for exists(stored) {
		if time.Now().After(deadline) {
			h.dumpLogs(t)
			t.Fatalf("the upload %s of a destroyed project is still stored", stored)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// And the upload refused before now fits.
	again := h.newProject(t)
	h.mustCtl(t, uid, "create", again, "--app", second)
	mustGet(t, webClient(), h.url(again, "http", "/second/"), "uploaded second")
	h.mustCtl(t, uid, "destroy", again, "--yes")
}

// setVersion makes the app in dir answer "uploaded NAME VERSION".
func setVersion(t *testing.T, dir, version string) {
	t.Helper()
	name := filepath.Base(dir)
	view := "from django.http import HttpResponse\n\n\ndef index(request):\n    return HttpResponse(\"uploaded " + name + " " + version + "\")\n"
	if err := os.WriteFile(filepath.Join(dir, "views.py"), []byte(view), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestUploadRevisionsKeptForRollback: the uploads of an app's kept
// revisions (revisions_keep, 2 here; one data snapshot kept, so it pins
// no older one) stay stored past the grace period, so a rollback to an
// uploaded version works; an upload only a dropped revision named is
// pruned.
func TestUploadRevisionsKeptForRollback(t *testing.T) {
	h := needHost(t)
	h.opusdWith(t, "uploads", "upload_quota 1048576\nupload_grace 2s\nrevisions_keep 2\nsnapshot_keep 1\n")
	grace := 2 * time.Second
	_, uid := addUser(t, "ur")
	app := sharedApp(t, "versioned", 10)
	name := h.newProject(t)
	url := h.url(name, "http", "/versioned/")
	c := webClient()
	deploy := func(version string, args ...string) string {
		t.Helper()
		setVersion(t, app, version)
		h.mustCtl(t, uid, args...)
		mustGet(t, c, url, "uploaded versioned "+version)
		return h.uploadedDigest(t, name)
	}
	v1 := deploy("v1", "create", name, "--app", app)
	v2 := deploy("v2", "apps", "update", name, "versioned", app)
	time.Sleep(3 * grace)
	for v, d := range map[string]string{"v1 (previous)": v1, "v2 (deployed)": v2} {
		if h.uploadFile(t, uid, d) == "" {
			t.Fatalf("the upload of %s was pruned", v)
		}
	}
	h.mustCtl(t, uid, "apps", "rollback", name, "versioned")
	mustGet(t, c, url, "uploaded versioned v1")
	// Revisions v1 v2 v1 v3, the last 2 kept: v2 was only a dropped
	// revision's.
	v3 := deploy("v3", "apps", "update", name, "versioned", app)
	deadline := time.Now().Add(5*grace + 10*time.Second)
	for h.uploadFile(t, uid, v2) != "" {
		if time.Now().After(deadline) {
			h.dumpLogs(t)
			t.Fatalf("v2's upload, named only by an older revision, is still stored: %v", h.storedUploads(t))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if h.uploadFile(t, uid, v1) == "" || h.uploadFile(t, uid, v3) == "" {
		t.Fatalf("the uploads a rollback can reach were pruned: %v", h.storedUploads(t))
	}
	h.mustCtl(t, uid, "apps", "rollback", name, "versioned")
	mustGet(t, c, url, "uploaded versioned v1")
	h.mustCtl(t, uid, "destroy", name, "--yes")
}
