package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/opus-hosting/opus/internal/pack"
	"github.com/opus-hosting/opus/internal/pack/packtest"
)

// watchProgressJS records, in sessionStorage (which outlives the page's
// navigation to the operation), every state the upload form's progress
// bar and its text go through: the test reads them on the next page.
const watchProgressJS = `(() => {
  const p = document.getElementById(%[1]q), t = document.getElementById(%[1]q + '-text');
  const seen = [];
  const note = () => { seen.push({hidden: p.hidden, value: p.value, max: p.max, text: t.textContent});
    sessionStorage.setItem('opus-e2e-progress', JSON.stringify(seen.slice(-20))); };
  new MutationObserver(note).observe(p, {attributes: true});
  new MutationObserver(note).observe(t, {childList: true, characterData: true, subtree: true});
  return true;
})()`

type progressState struct {
	Hidden bool    `json:"hidden"`
	Value  float64 `json:"value"`
	Max    float64 `json:"max"`
	Text   string  `json:"text"`
}

// progressSeen reads what watchProgressJS recorded.
func progressSeen(t *testing.T, ctx context.Context) []progressState {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem('opus-e2e-progress') || '[]'`))
	if err != nil {
		t.Fatal(err)
	}
	var seen []progressState
	if err := json.Unmarshal([]byte(s), &seen); err != nil {
		t.Fatalf("progress record %q: %v", s, err)
	}
	return seen
}

// checkProgress: the bar was shown, said "N of M kB" (or MB), and reached
// its end.
func checkProgress(t *testing.T, ctx context.Context) {
	t.Helper()
	seen := progressSeen(t, ctx)
	t.Logf("the progress bar went through %+v", seen)
	var counted, full bool
	for _, s := range seen {
		if regexp.MustCompile(`^\d+\.\d of \d+\.\d [kM]B`).MatchString(s.Text) {
			counted = true
		}
		if !s.Hidden && s.Max > 0 && s.Value == s.Max {
			full = true
		}
	}
	if !counted || !full {
		t.Fatalf("the upload's progress bar went through %+v; want it shown, counting MB, and at its end", seen)
	}
}

// packedDigest is the digest opusctl's upload of dir has.
func packedDigest(t *testing.T, dir string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := pack.Pack(context.Background(), dir, &buf); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return pack.DigestPrefix + hex.EncodeToString(sum[:])
}

// appDigest is the upload an app of a project runs, as opusctl shows it.
func (h *host) appDigest(t *testing.T, name, app string) (string, string) {
	t.Helper()
	p := h.showProject(t, name)
	for _, a := range p.Apps {
		if a.Name == app {
			return a.Source.Upload.Digest, p.Generation
		}
	}
	return "", p.Generation
}

// shownProject is what the tests read of opusctl show -o json.
type shownProject struct {
	Owner      uint32 `json:"owner_uid"`
	Generation string `json:"generation"`
	Apps       []struct {
		Name   string `json:"name"`
		Source struct {
			Upload struct {
				Digest string `json:"digest"`
			} `json:"upload"`
		} `json:"source"`
		Revisions []struct {
			By uint32 `json:"by_uid"`
		} `json:"revisions"`
	} `json:"apps"`
}

func (h *host) showProject(t *testing.T, name string) shownProject {
	t.Helper()
	out := h.mustCtl(t, 0, "show", name, "-o", "json")
	var p shownProject
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("show %s: %v: %s", name, err, out)
	}
	return p
}

// waitDone waits on an operation's page for the operation to succeed.
func waitDone(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	step(t, ctx, "wait for the "+what+" to end", 5*time.Minute, chromedp.WaitVisible(chromedp.CSS("#done")))
	if st := text(t, ctx, "#op-state"); st != "succeeded" {
		t.Fatalf("%s: operation %s: %s", what, st, text(t, ctx, "main"))
	}
}

// TestConsoleUpload: a user who is not an admin creates a project in
// Chromium by uploading the sample app's folder (deployed exactly as
// opusctl's upload of that directory: the same archive), watches the
// progress bar reach its end and the deploy succeed, then updates the app
// with a .tar.gz made by tar and sees the new content served. An upload
// too large and a zip with a symbolic link are refused with the reason at
// the top of the page and next to the file inputs, and change nothing.
func TestConsoleUpload(t *testing.T) {
	h := needHost(t)
	_, uid := addUser(t, "up")
	name := h.newProject(t)
	base := "https://" + h.webAddr
	ctx := h.browser(t)
	notes := localApp(t, "notes")

	step(t, ctx, "sign in with the link", time.Minute, chromedp.Navigate(h.loginLink(t, uid)), chromedp.WaitVisible(chromedp.CSS("#no-projects")))

	// Create from the folder.
	step(t, ctx, "open the create form", time.Minute, chromedp.Navigate(base+"/new"), chromedp.WaitVisible(chromedp.CSS("#create-upload")))
	step(t, ctx, "choose the folder", time.Minute,
		chromedp.SendKeys(chromedp.CSS("#create-upload-name"), name),
		chromedp.SetUploadFiles(chromedp.CSS("#create-upload-folder"), []string{notes}))
	// Chromium lists a chosen folder's files after the call returns.
	files, err := chromedp.Run(ctx, chromedp.Poll[[]string](`(() => { const f = [...document.getElementById('create-upload-folder').files].map(f => f.webkitRelativePath); return f.length ? f : null })()`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil || len(files) < 4 || !strings.HasPrefix(files[0], "notes/") {
		t.Fatalf("the folder input holds %q (%v), want the files of notes/ by their paths", files, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(watchProgressJS, "create-upload-progress"))); err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "upload and create", time.Minute, chromedp.Click(chromedp.CSS("#create-upload-submit")), chromedp.WaitVisible(chromedp.CSS("#steps")))
	checkProgress(t, ctx)
	waitDone(t, ctx, "create")
	mustGet(t, webClient(), h.url(name, "http", "/notes/"), "notes: 0")
	digest, _ := h.appDigest(t, name, "notes")
	if want := packedDigest(t, notes); digest != want {
		t.Fatalf("the console's upload of notes/ is %s; opusctl's of the same directory is %s", digest, want)
	}
	// The user's: their project, their change, their upload (their quota).
	if p := h.showProject(t, name); p.Owner != uid || len(p.Apps) != 1 || len(p.Apps[0].Revisions) != 1 || p.Apps[0].Revisions[0].By != uid {
		t.Fatalf("project %+v: want uid %d's, changed by them", p, uid)
	}
	stored := filepath.Join(h.cfg.BaseDir, "sources", strconv.FormatUint(uint64(uid), 10), "sha256", strings.TrimPrefix(digest, pack.DigestPrefix)+".tar.gz")
	if _, err := os.Stat(stored); err != nil {
		t.Fatalf("the upload is not stored as uid %d's: %v", uid, err)
	}

	// Update with a .tar.gz of a changed copy, as tar makes it.
	views := filepath.Join(notes, "views.py")
	old, _ := os.ReadFile(views)
	if err := os.WriteFile(views, bytes.Replace(old, []byte(`"notes: %d\n"`), []byte(`"notes v2: %d\n"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	tgz := filepath.Join(t.TempDir(), "notes-2.tar.gz")
	if out, err := exec.Command("tar", "czf", tgz, "-C", notes, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	step(t, ctx, "open the project page", time.Minute, chromedp.Navigate(base+"/projects/"+name), chromedp.WaitVisible(chromedp.CSS("#update-notes-upload")))
	step(t, ctx, "choose the archive", time.Minute, chromedp.SetUploadFiles(chromedp.CSS("#update-notes-archive"), []string{tgz}))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(watchProgressJS, "update-notes-progress"))); err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "upload and update", time.Minute, chromedp.Click(chromedp.CSS("#update-notes")), chromedp.WaitVisible(chromedp.CSS("#steps")))
	checkProgress(t, ctx)
	waitDone(t, ctx, "update")
	mustGet(t, webClient(), h.url(name, "http", "/notes/"), "notes v2: 0")

	// Refusals change nothing.
	before := hostState(t)
	digest, gen := h.appDigest(t, name, "notes")
	unchanged := func(what string) {
		t.Helper()
		if hostState(t) != before {
			t.Errorf("%s changed the host's accounts", what)
		}
		if d, g := h.appDigest(t, name, "notes"); d != digest || g != gen {
			t.Errorf("%s changed the project: notes at %s (was %s), generation %s (was %s)", what, d, digest, g, gen)
		}
		mustGet(t, webClient(), h.url(name, "http", "/notes/"), "notes v2: 0")
	}
	refusedAt := func(what, form, want string) {
		t.Helper()
		step(t, ctx, "wait for the refusal of "+what, time.Minute, chromedp.WaitVisible(chromedp.CSS("#alert")))
		if top := text(t, ctx, "#messages"); !strings.Contains(top, want) {
			t.Fatalf("%s: at the top %q, want %q", what, top, want)
		}
		if next := text(t, ctx, "#"+form+"-file"); !strings.Contains(next, want) {
			t.Fatalf("%s: next to the file inputs %q, want %q", what, next, want)
		}
	}

	// Too large: a (sparse) file past the host's limit; the page says so
	// before sending anything.
	big := filepath.Join(t.TempDir(), "big.tar.gz")
	if f, err := os.Create(big); err != nil {
		t.Fatal(err)
	} else {
		f.Truncate(65 << 20)
		f.Close()
	}
	step(t, ctx, "open the project page", time.Minute, chromedp.Navigate(base+"/projects/"+name), chromedp.WaitVisible(chromedp.CSS("#upload-add")))
	step(t, ctx, "choose a file too large", time.Minute, chromedp.SetUploadFiles(chromedp.CSS("#upload-add-archive"), []string{big}), chromedp.Click(chromedp.CSS("#upload-add-submit")))
	refusedAt("a file too large", "upload-add", "is larger than 64 MiB, the most this host takes")
	unchanged("a file too large")

	// The console's own check, for a browser without script: the same
	// limit, before it reads the form.
	c := consoleClient()
	if a := consoleDo(t, c, "GET", h.loginLink(t, uid), nil); a.code != http.StatusSeeOther {
		t.Fatalf("sign in: %d", a.code)
	}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(consoleDo(t, c, "GET", base+"/projects/"+name, nil).body)
	if csrf == nil {
		t.Fatal("no CSRF token on the project page")
	}
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	mw.WriteField("csrf", csrf[1])
	fw, _ := mw.CreateFormFile("archive", "big.tar.gz")
	io.CopyN(fw, zeros{}, 65<<20)
	mw.Close()
	req, _ := http.NewRequest("POST", base+"/projects/"+name+"/apps/upload", &form)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("a form too large: %v", err)
	}
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "larger than 64 MiB, the most this host takes") {
		t.Fatalf("a form too large: %d %.2000s", res.StatusCode, body)
	}
	unchanged("a form too large")

	// A zip with a symbolic link: refused by the console, which says where.
	evil := filepath.Join(t.TempDir(), "evil.zip")
	z := packtest.Zip(t, packtest.ZipEntry{Name: "evil/__init__.py"}, packtest.ZipEntry{Name: "evil/secrets.py", Body: "/etc/shadow", Mode: fs.ModeSymlink | 0o777})
	if err := os.WriteFile(evil, z, 0o644); err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "open the project page", time.Minute, chromedp.Navigate(base+"/projects/"+name), chromedp.WaitVisible(chromedp.CSS("#upload-add")))
	step(t, ctx, "upload a zip with a link", time.Minute, chromedp.SetUploadFiles(chromedp.CSS("#upload-add-archive"), []string{evil}), chromedp.Click(chromedp.CSS("#upload-add-submit")))
	refusedAt("a zip with a link", "upload-add", "The archive evil.zip was not uploaded: evil/secrets.py is a symbolic link")
	unchanged("a zip with a link")
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
