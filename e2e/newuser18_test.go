package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestConsoleNewUserTour: what a new user met in the console (issue 18's
// review), in Chromium on the real host. An app running its only
// revision is offered no "previous revision" to roll back to, and its
// card names its upload once, by the short digest. An update whose app
// raises in ready() fails, and its page says nothing of it was applied
// while the app still serves. A finished destroy's page says the project
// is gone and leads back to the list, not to its page (now not found).
func TestConsoleNewUserTour(t *testing.T) {
	h := needHost(t)
	_, uid := addUser(t, "nt")
	name := h.newProject(t)
	base := "https://" + h.webAddr
	ctx := h.browser(t)
	notes := localApp(t, "notes")

	step(t, ctx, "sign in", time.Minute, chromedp.Navigate(h.loginLink(t, uid)), chromedp.WaitVisible(chromedp.CSS("#no-projects")))
	step(t, ctx, "create from the folder", time.Minute, chromedp.Navigate(base+"/new"),
		chromedp.SendKeys(chromedp.CSS("#create-upload-name"), name),
		chromedp.SetUploadFiles(chromedp.CSS("#create-upload-folder"), []string{notes}))
	waitFiles(t, ctx, "create-upload-folder")
	step(t, ctx, "upload and deploy", time.Minute, chromedp.Click(chromedp.CSS("#create-upload-submit")), chromedp.WaitVisible(chromedp.CSS("#steps")))
	waitDone(t, ctx, "create")
	mustGet(t, webClient(), h.url(name, "http", "/notes/"), "notes: 0")

	step(t, ctx, "open the project page", time.Minute, chromedp.Navigate(base+"/projects/"+name), chromedp.WaitVisible(chromedp.CSS("#app-notes")))
	digest, _ := h.appDigest(t, name, "notes")
	card := text(t, ctx, "#app-notes")
	if strings.Contains(card, digest) || !strings.Contains(card, digest[:19]) {
		t.Errorf("the uploaded app's card shows the whole digest %s (want only %s):\n%s", digest, digest[:19], card)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#rollback-notes').length`)); err != nil || n != 0 {
		t.Errorf("notes runs its only revision, yet the page offers to roll it back (%d buttons, %v)", n, err)
	}

	// A second revision: now there is one to go back to, and the
	// revisions table at 1280 px keeps each digest on one line beside
	// the rollback forms.
	v2 := localApp(t, "notes")
	views := filepath.Join(v2, "views.py")
	old, err := os.ReadFile(views)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(views, bytes.Replace(old, []byte(`"notes: %d\n"`), []byte(`"notes v2: %d\n"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "choose the second version", time.Minute, chromedp.SetUploadFiles(chromedp.CSS("#update-notes-folder"), []string{v2}))
	waitFiles(t, ctx, "update-notes-folder")
	step(t, ctx, "upload the second version", time.Minute, chromedp.Click(chromedp.CSS("#update-notes")), chromedp.WaitVisible(chromedp.CSS("#steps")))
	waitDone(t, ctx, "update")
	mustGet(t, webClient(), h.url(name, "http", "/notes/"), "notes v2: 0")
	setWidth(t, ctx, 1280)
	step(t, ctx, "open the project page", time.Minute, chromedp.Navigate(base+"/projects/"+name), chromedp.WaitVisible(chromedp.CSS("#revisions-notes")))
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#rollback-notes').length`)); err != nil || n != 1 {
		t.Errorf("notes has an earlier revision, yet the page offers %d buttons to roll back to it (%v)", n, err)
	}
	wrapped, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#revisions-notes code.resolved')].filter(c => {
  const lh = parseFloat(getComputedStyle(c).lineHeight) || 20; return c.getBoundingClientRect().height > 1.6 * lh }).map(c => c.textContent)`))
	if err != nil || len(wrapped) > 0 {
		t.Errorf("at 1280 px the revisions table breaks digests over lines: %q (%v)", wrapped, err)
	}

	// Break it: an update whose ready() raises is undone, and says so.
	broken := hostileApp(t, "notes", `raise RuntimeError("notes is broken on purpose")`)
	step(t, ctx, "choose the broken folder", time.Minute, chromedp.SetUploadFiles(chromedp.CSS("#update-notes-folder"), []string{broken}))
	waitFiles(t, ctx, "update-notes-folder")
	step(t, ctx, "upload the broken app", time.Minute, chromedp.Click(chromedp.CSS("#update-notes")), chromedp.WaitVisible(chromedp.CSS("#steps")))
	if st := waitFinal(t, ctx, "the broken update"); st != "failed" {
		t.Fatalf("the broken update: %s", st)
	}
	if undone := textOf(t, ctx, "#op-undone"); undone != "Nothing of this change was applied: "+name+" serves what it served before." {
		t.Errorf("the failed update's page says %q", undone)
	}
	if e := textOf(t, ctx, "#op-error"); !strings.Contains(e, "notes is broken on purpose") {
		t.Errorf("the failed update's error: %q", e)
	}
	mustGet(t, webClient(), h.url(name, "http", "/notes/"), "notes v2: 0")

	// Destroy: the finished page leads back to the list.
	step(t, ctx, "destroy", time.Minute, chromedp.Navigate(base+"/projects/"+name),
		chromedp.SendKeys(chromedp.CSS("#destroy-confirm"), name),
		chromedp.Click(chromedp.CSS("#destroy-submit")),
		chromedp.WaitVisible(chromedp.CSS("#steps")))
	if st := waitFinal(t, ctx, "the destroy"); st != "succeeded" {
		t.Fatalf("destroy: %s", st)
	}
	if gone := textOf(t, ctx, "#gone"); gone != name+" is destroyed: its user, files and virtual host are removed. Back to your projects" {
		t.Errorf("the finished destroy says %q", gone)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('a[href="/projects/`+name+`"]').length`)); err != nil || n != 0 {
		t.Errorf("the finished destroy's page links %d times to the project's page, which is gone (%v)", n, err)
	}
	if _, err := user.Lookup(projUser(name)); err == nil {
		t.Errorf("user %s survived the destroy", projUser(name))
	}
	step(t, ctx, "back to the list", time.Minute, chromedp.Click(chromedp.CSS("#gone a[href='/']")), chromedp.WaitVisible(chromedp.CSS("#no-projects")))
}

// waitFinal waits on an operation's page until the console served it
// ended (the page reloads then; the final page loads no script), and
// returns its state.
func waitFinal(t *testing.T, ctx context.Context, what string) string {
	t.Helper()
	const finalJS = `(() => { const s = document.getElementById('op-state');
  const served = !document.querySelector('script[src="/static/console.js"]');
  return s && served && document.readyState === 'complete' && (s.textContent === 'succeeded' || s.textContent === 'failed') ? s.textContent : '' })()`
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		// The page reloads once: an evaluation it interrupts is tried again.
		ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := chromedp.Run(ectx, chromedp.Evaluate[string](finalJS))
		cancel()
		if err == nil && st != "" {
			return st
		}
	}
	t.Fatalf("%s did not end within 5 minutes", what)
	return ""
}

// textOf is the text of the element sel matches, or "" at once if none
// does (chromedp's Text would wait for it).
func textOf(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {}).innerText || ""`, sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// waitFiles waits until the folder input id lists the chosen folder's
// files (Chromium fills it after SetUploadFiles returns).
func waitFiles(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById('`+id+`').files.length > 0 || null`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the folder input %s stays empty: %v", id, err)
	}
}
