package web

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/pack"
	"github.com/opus-hosting/opus/internal/pack/packtest"
	"github.com/opus-hosting/opus/unprivd/source"
)

// The rig's upload limits (the store's and so the console's) and quota:
// small, so that the tests can pass them.
var testUploadLimits = source.Limits{MaxCompressed: 256 << 10, MaxUnpacked: 1 << 20, MaxEntries: 40, MaxFile: 512 << 10}

// testQuota is above one archive's limit, as on a real host: a single
// upload too large is refused for its size, not for the quota.
const testQuota = 400 << 10

// part is one part of a multipart form: a text field when filename is ""
// and the part is no file.
type part struct {
	field, filename, body string
	file                  bool
	mode                  fs.FileMode
}

func field(name, value string) part { return part{field: name, body: value} }

// folderFile is a file of a folder input, named by its path in the folder
// as Chromium sends it (webkitRelativePath).
func folderFile(rel, body string) part {
	return part{field: folderField, filename: rel, body: body, file: true}
}

func archiveFile(name string, body []byte) part {
	return part{field: archiveField, filename: name, body: string(body), file: true}
}

// multipartForm encodes parts as a browser does.
func multipartForm(t testing.TB, parts ...part) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w io.Writer
		var err error
		if p.file {
			w, err = mw.CreateFormFile(p.field, p.filename)
		} else {
			w, err = mw.CreateFormField(p.field)
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, p.body)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), mw.FormDataContentType()
}

// postForm posts a multipart form; chunked sends it without a length.
func postForm(t *testing.T, c *http.Client, u string, chunked bool, parts ...part) answer {
	t.Helper()
	body, ct := multipartForm(t, parts...)
	var rd io.Reader = bytes.NewReader(body)
	if chunked {
		rd = io.MultiReader(rd) // not a type NewRequest can measure
	}
	req, err := http.NewRequest("POST", u, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ct)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{code: res.StatusCode, body: string(b), location: res.Header.Get("Location"), header: res.Header}
}

// packed is what opusctl sends for a directory of files: the digest the
// console's upload of the same files must have.
func packed(t *testing.T, files map[string]string) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := pack.Pack(context.Background(), dir, &buf); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return pack.DigestPrefix + hex.EncodeToString(sum[:]), buf.Bytes()
}

var pollsFiles = map[string]string{"__init__.py": "", "models.py": "from django.db import models\n", "migrations/__init__.py": "", "templates/polls/index.html": "<p>polls</p>"}

// TestCreateFromFolderUpload: a folder sent as Chromium sends it (each
// file named "polls/…") makes the project's app "polls", owned and
// uploaded by the signed-in user, as the same archive opusctl sends for
// that directory (so the two deduplicate).
func TestCreateFromFolderUpload(t *testing.T) {
	r := newRig(t)
	a, _ := r.signIn(t, uidA)
	csrf := csrfOf(t, do(t, a, "GET", r.srv.URL+"/new", nil).body)
	want, _ := packed(t, pollsFiles)
	parts := []part{field("csrf", csrf), field("name", "blog"), field("app", ""), field("admin", "on")}
	for name, body := range pollsFiles {
		parts = append(parts, folderFile("polls/"+name, body))
	}
	parts = append(parts, folderFile("polls/__pycache__/models.cpython-311.pyc", "junk"), folderFile("polls/.git/HEAD", "ref"),
		part{field: archiveField, file: true}) // the archive input left empty
	ans := postForm(t, a, r.srv.URL+"/new/upload", false, parts...)
	if ans.code != http.StatusSeeOther || !strings.HasPrefix(ans.location, "/ops/op-") {
		t.Fatalf("create from a folder: %d %q %.3000s", ans.code, ans.location, ans.body)
	}
	p, err := r.st.GetProject(context.Background(), "blog")
	if err != nil || p.OwnerUID != uidA || !p.Spec.Admin || len(p.Spec.Apps) != 1 {
		t.Fatalf("project %+v %v", p, err)
	}
	app := p.Spec.Apps[0]
	if app.Name != "polls" || app.Upload == nil || app.Upload.Digest != want || *app.Upload.UploaderUID != uidA || app.Upload.Origin != "polls/ (a folder, from the web console)" {
		t.Fatalf("app %+v (upload %+v), want polls from upload %s by uid %d", app, app.Upload, want, uidA)
	}
	if !r.uploads.Has(uidA, want) || r.uploads.Has(uidB, want) {
		t.Fatalf("the upload is not uid %d's alone", uidA)
	}
}

// TestAddAndUpdateByUpload: a zip of a folder adds an app named after
// the folder; a .tar.gz, sent as it is, updates it; the app name typed
// wins.
func TestAddAndUpdateByUpload(t *testing.T) {
	r, a, csrf := formsRig(t)
	news := map[string]string{"__init__.py": "", "views.py": "v = 1\n"}
	wantZip, _ := packed(t, news)
	var ents []packtest.ZipEntry
	for n, b := range news {
		ents = append(ents, packtest.ZipEntry{Name: "news/" + n, Body: b})
	}
	ans := postForm(t, a, r.srv.URL+"/projects/blog/apps/upload", false, field("csrf", csrf), field("app", ""), archiveFile("news.zip", packtest.Zip(t, ents...)))
	if ans.code != http.StatusSeeOther || !strings.HasPrefix(ans.location, "/ops/op-") {
		t.Fatalf("add from a zip: %d %q %.3000s", ans.code, ans.location, ans.body)
	}
	// The same zip under another name typed in the form.
	ans = postForm(t, a, r.srv.URL+"/projects/blog/apps/upload", true, field("csrf", csrf), field("app", "extra"), archiveFile("news.zip", packtest.Zip(t, ents...)))
	if ans.code != http.StatusSeeOther {
		t.Fatalf("add from a zip, named: %d %.3000s", ans.code, ans.body)
	}
	wantTar, tgz := packed(t, map[string]string{"__init__.py": "", "views.py": "v = 2\n"})
	ans = postForm(t, a, r.srv.URL+"/projects/blog/apps/news/upload", true, field("csrf", csrf), archiveFile("news-2.tar.gz", tgz))
	if ans.code != http.StatusSeeOther || !strings.HasPrefix(ans.location, "/ops/op-") {
		t.Fatalf("update from a tar.gz: %d %q %.3000s", ans.code, ans.location, ans.body)
	}
	p, err := r.st.GetProject(context.Background(), "blog")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, app := range p.Spec.Apps {
		if app.Upload != nil {
			got[app.Name] = app.Upload.Digest + " " + app.Upload.Origin
		}
	}
	if got["news"] != wantTar+" news-2.tar.gz (from the web console)" || got["extra"] != wantZip+" news.zip (from the web console)" {
		t.Fatalf("uploaded apps %q, want news at %s, extra at %s", got, wantTar, wantZip)
	}
	// The project page offers an update by upload for an uploaded app.
	pp := do(t, a, "GET", r.srv.URL+"/projects/blog", nil)
	for _, want := range []string{`action="/projects/blog/apps/news/upload" enctype="multipart/form-data"`, `id="update-news-folder" webkitdirectory`, `action="/projects/blog/apps/upload"`} {
		if !strings.Contains(pp.body, want) {
			t.Errorf("project page lacks %s", want)
		}
	}
}

// TestUploadRefused: each refusal says why, at the top of the page and
// next to the file inputs, keeps what was typed, and changes nothing:
// no app, nothing stored.
func TestUploadRefused(t *testing.T) {
	random := func(n int) string {
		b := make([]byte, n)
		rand.Read(b)
		return string(b)
	}
	var many []part
	for i := range 41 {
		many = append(many, folderFile(fmt.Sprintf("news/f%02d.py", i), ""))
	}
	bomb := packtest.Zip(t, packtest.ZipEntry{Name: "__init__.py"}, packtest.ZipEntry{Name: "big.txt", Body: strings.Repeat("0", 520<<10)}, packtest.ZipEntry{Name: "big2.txt", Body: strings.Repeat("0", 520<<10)})
	for _, tc := range []struct {
		name    string
		chunked bool
		files   []part
		code    int
		want    string
		// stored is what uid A keeps stored before the form.
		stored int
	}{
		{"zip with a symlink", false, []part{archiveFile("news.zip", packtest.Zip(t, packtest.ZipEntry{Name: "news/__init__.py"}, packtest.ZipEntry{Name: "news/settings.py", Body: "/etc/passwd", Mode: fs.ModeSymlink}))},
			422, "The archive news.zip was not uploaded: news/settings.py is a symbolic link; app sources may not contain links", 0},
		{"folder too big", false, []part{folderFile("news/__init__.py", ""), folderFile("news/blob.bin", random(300<<10))}, 413, "larger than 256 KiB, the most this host takes", 0},
		{"folder too big, no length", true, []part{folderFile("news/__init__.py", ""), folderFile("news/blob.bin", random(300<<10))}, 413, "larger than 256 KiB", 0},
		{"tar too big", true, []part{archiveFile("news.tar.gz", []byte(random(300<<10)))}, 413, "larger than 256 KiB", 0},
		{"zip bomb", false, []part{archiveFile("news.zip", bomb)}, 422, "more than 1048576 bytes unpacked", 0},
		{"quota", false, []part{folderFile("news/__init__.py", ""), folderFile("news/blob.bin", random(220<<10))}, 413, "past your upload quota of 409600 bytes", 220 << 10},
		{"dot dot", false, []part{folderFile("news/__init__.py", ""), folderFile("news/../../etc/x", "x")}, 422, `".." components are not allowed`, 0},
		{"absolute", false, []part{folderFile("/etc/x", "x")}, 422, "absolute paths are not allowed", 0},
		{"backslash", false, []part{folderFile(`news\x.py`, "x")}, 422, "backslashes", 0},
		{"duplicate", false, []part{folderFile("news/__init__.py", ""), folderFile("news/__init__.py", "")}, 422, "news/__init__.py appears twice", 0},
		{"two folders", false, []part{folderFile("news/__init__.py", ""), folderFile("other/x.py", "")}, 422, "do not all sit in one folder", 0},
		{"too many files", false, many, 413, "more than 40 files", 0},
		{"path too long", false, []part{folderFile("news/"+strings.Repeat("x", 1100), "")}, 400, "longer than 1024 bytes", 0},
		{"too deep", false, []part{folderFile("news/"+strings.Repeat("d/", 40)+"x.py", "")}, 422, "folders deep", 0},
		{"folder and archive", false, []part{folderFile("news/__init__.py", ""), archiveFile("news.zip", packtest.Zip(t, packtest.ZipEntry{Name: "__init__.py"}))}, 422, "not both", 0},
		{"not an archive", false, []part{archiveFile("notes.txt", []byte("hello"))}, 422, "notes.txt is not a .zip, .tar.gz, .tgz or .tar archive", 0},
		{"not a tar", false, []part{archiveFile("news.tar.gz", []byte("hello"))}, 422, "The archive news.tar.gz was not uploaded: archive refused: not a valid tar archive", 0},
		{"not a zip", false, []part{archiveFile("news.zip", []byte("hello"))}, 422, "The archive news.zip was not uploaded: not a zip archive", 0},
		{"nothing chosen", false, []part{{field: folderField, file: true}, {field: archiveField, file: true}}, 422, "Choose the app's folder", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, a, csrf := formsRig(t)
			if tc.stored > 0 {
				_, tgz := packed(t, map[string]string{"__init__.py": "", "blob.bin": random(tc.stored)})
				if _, _, err := r.uploads.Put(context.Background(), uidA, bytes.NewReader(tgz)); err != nil {
					t.Fatal(err)
				}
			}
			usage, _ := r.uploads.Usage(uidA)
			before, _ := r.st.GetProject(context.Background(), "blog")
			parts := append([]part{field("csrf", csrf), field("app", "typed")}, tc.files...)
			ans := postForm(t, a, r.srv.URL+"/projects/blog/apps/upload", tc.chunked, parts...)
			top := html.UnescapeString(messagesOf(t, ans.body))
			if ans.code != tc.code || !strings.Contains(top, tc.want) {
				t.Fatalf("%d, want %d; at the top %q, want %q: %.3000s", ans.code, tc.code, top, tc.want, ans.body)
			}
			next := regexp.MustCompile(`(?s)<fieldset class="upload-file" id="upload-add-file">.*?<span class="error field-error"[^>]*>([^<]*)</span>\s*</fieldset>`).FindStringSubmatch(ans.body)
			if next == nil || !strings.Contains(html.UnescapeString(next[1]), tc.want) {
				t.Fatalf("no error next to the file inputs: %.5000s", ans.body)
			}
			if !strings.Contains(ans.body, `id="upload-add-app" value="typed"`) {
				t.Errorf("the app name typed is not kept")
			}
			after, _ := r.st.GetProject(context.Background(), "blog")
			if after.Generation != before.Generation || len(after.Spec.Apps) != len(before.Spec.Apps) {
				t.Errorf("the project changed: generation %d → %d, %d → %d apps", before.Generation, after.Generation, len(before.Spec.Apps), len(after.Spec.Apps))
			}
			if n, err := r.uploads.Usage(uidA); err != nil || n != usage {
				t.Errorf("uid %d keeps %d bytes of uploads (%v), want %d as before", uidA, n, err, usage)
			}
		})
	}
}

// TestCreateFromUploadRefused: the new-project page shows a refusal at
// the top and next to its field, keeps the name typed, and makes
// nothing; a bad name is refused before anything is uploaded.
func TestCreateFromUploadRefused(t *testing.T) {
	r := newRig(t)
	a, _ := r.signIn(t, uidA)
	csrf := csrfOf(t, do(t, a, "GET", r.srv.URL+"/new", nil).body)
	evil := packtest.Zip(t, packtest.ZipEntry{Name: "__init__.py"}, packtest.ZipEntry{Name: "passwd", Body: "/etc/passwd", Mode: fs.ModeSymlink})
	_, good := packed(t, pollsFiles)
	for _, tc := range []struct {
		name, project, file string
		body                []byte
		want, next          string
	}{
		{"symlink", "blog", "app.zip", evil, "passwd is a symbolic link", `(?s)<fieldset class="upload-file" id="create-upload-file">.*?<span class="error field-error"[^>]*>[^<]*`},
		// A sound upload with a bad name is not even stored (a tar.gz
		// would be sent as it arrives).
		{"bad name", "Bad Name", "app.tar.gz", good, "project name", `id="create-upload-name" value="Bad Name"[^>]*>\s*<span class="error field-error"[^>]*>[^<]*`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ans := postForm(t, a, r.srv.URL+"/new/upload", false, field("csrf", csrf), field("name", tc.project), archiveFile(tc.file, tc.body))
			top := regexp.MustCompile(`<main id="main" tabindex="-1">\s*<p class="error" id="form-error"[^>]*>([^<]*)</p>`).FindStringSubmatch(ans.body)
			if ans.code != http.StatusUnprocessableEntity || top == nil || !strings.Contains(top[1], tc.want) {
				t.Fatalf("%d, want 422 and %q at the top: %.3000s", ans.code, tc.want, ans.body)
			}
			if !regexp.MustCompile(tc.next + regexp.QuoteMeta(tc.want)).MatchString(ans.body) {
				t.Errorf("no error next to %s: %.5000s", tc.next, ans.body)
			}
			if !strings.Contains(ans.body, `id="create-upload-name" value="`+tc.project+`"`) {
				t.Errorf("the name typed is not kept")
			}
			if ps := projectNames(t, r.st); len(ps) != 0 {
				t.Fatalf("refused upload made %v", ps)
			}
			if n, _ := r.uploads.Usage(uidA); n != 0 {
				t.Fatalf("refused upload stored %d bytes", n)
			}
		})
	}
}

// TestUploadCSRF: an upload form's CSRF token must be its first field;
// without it nothing of the form is read and nothing is stored.
func TestUploadCSRF(t *testing.T) {
	r, a, csrf := formsRig(t)
	_, tgz := packed(t, pollsFiles)
	for _, tc := range []struct {
		name  string
		parts []part
		code  int
	}{
		{"no token", []part{archiveFile("polls.tar.gz", tgz)}, http.StatusForbidden},
		{"forged token", []part{field("csrf", "forged"), archiveFile("polls.tar.gz", tgz)}, http.StatusForbidden},
		{"token after the file", []part{archiveFile("polls.tar.gz", tgz), field("csrf", csrf)}, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ans := postForm(t, a, r.srv.URL+"/projects/blog/apps/polls/upload", false, tc.parts...)
			if ans.code != tc.code || !strings.Contains(ans.body, "CSRF token") {
				t.Fatalf("%d %.300s", ans.code, ans.body)
			}
			if n, _ := r.uploads.Usage(uidA); n != 0 {
				t.Fatalf("stored %d bytes", n)
			}
		})
	}
	// Not a file form at all.
	if ans := do(t, a, "POST", r.srv.URL+"/projects/blog/apps/polls/upload", url.Values{"csrf": {csrf}}); ans.code != http.StatusBadRequest || !strings.Contains(ans.body, "multipart/form-data") {
		t.Fatalf("urlencoded upload form: %d %.300s", ans.code, ans.body)
	}
	// Another user's project: the API refuses, as for opusctl; B's
	// upload is B's.
	b, _ := r.signIn(t, uidB)
	csrfB := csrfOf(t, do(t, b, "GET", r.srv.URL+"/", nil).body)
	ans := postForm(t, b, r.srv.URL+"/projects/blog/apps/polls/upload", false, field("csrf", csrfB), archiveFile("polls.tar.gz", tgz))
	if ans.code != http.StatusNotFound {
		t.Fatalf("B updates A's app: %d %.1000s", ans.code, ans.body)
	}
	if n, _ := r.uploads.Usage(uidA); n != 0 {
		t.Fatalf("B's upload counted as A's: %d bytes", n)
	}
}

// TestUploadsAtOnce: past uploadsAtOnce forms at once, an upload is
// refused at once, saying to come back, and nothing is stored.
func TestUploadsAtOnce(t *testing.T) {
	r, a, csrf := formsRig(t)
	for range uploadsAtOnce {
		r.console.uploadSlots <- struct{}{}
	}
	_, tgz := packed(t, pollsFiles)
	ans := postForm(t, a, r.srv.URL+"/projects/blog/apps/upload", false, field("csrf", csrf), archiveFile("polls.tar.gz", tgz))
	if ans.code != http.StatusServiceUnavailable || !strings.Contains(messagesOf(t, ans.body), "receiving 4 uploads already; try again in a minute") {
		t.Fatalf("%d %.3000s", ans.code, ans.body)
	}
	if n, _ := r.uploads.Usage(uidA); n != 0 {
		t.Fatalf("stored %d bytes", n)
	}
	// A slot free again: the same form goes through.
	<-r.console.uploadSlots
	if ans := postForm(t, a, r.srv.URL+"/projects/blog/apps/upload", false, field("csrf", csrf), archiveFile("polls2.tar.gz", tgz)); ans.code != http.StatusSeeOther {
		t.Fatalf("with a slot free: %d %.3000s", ans.code, ans.body)
	}
}
