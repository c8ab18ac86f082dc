package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestProjectPage: the console's project page as issue 18 asks, in
// Chromium, for a plain user. Its status header names the phase, the URLs,
// the last change and its result, and the app's running revision with its
// git commit subject (as `opusctl apps revisions` and `show` do); the live
// tail shows an error line the app writes after the page loaded; the
// revisions table rolls the app back to the revision chosen, with its data
// snapshot; the project
// list flags a failed change with a warning while the phase stays ready;
// a wrong name typed to destroy is refused at the top and next to the
// field, keeping what was typed, and changes nothing.
func TestProjectPage(t *testing.T) {
	h := needHost(t)
	user, uid := addUser(t, "pg")
	name := h.newProject(t)
	base := "https://" + h.webAddr

	// Revision 1 is the noisy app at n1; revision 2 its next commit,
	// whose subject has markup and a second line.
	app := noisyApp(t)
	app.git(t, "tag", "n1")
	views, err := os.ReadFile(filepath.Join(app.dir, "views.py"))
	if err != nil {
		t.Fatal(err)
	}
	app.write(t, "views.py", strings.Replace(string(views), `HttpResponse("noisy " + marker)`, `HttpResponse("noisy2 " + marker)`, 1))
	const subject = "Second <b>noisy</b> release"
	app.git(t, "commit", "-q", "-am", subject+"\n\nThe body is not the subject.")
	app.git(t, "tag", "n2")
	n1, n2 := app.git(t, "rev-parse", "n1"), app.git(t, "rev-parse", "n2")
	gitURL := serveGit(t, app)
	h.mustCtl(t, uid, "create", name, "--app", gitURL+"@n1")
	h.mustCtl(t, uid, "apps", "update", name, "noisy", "n2")
	c := webClient()
	mustGet(t, c, h.url(name, "http", "/noisy/?m=x"), "noisy2 x")

	// The CLI shows the same subject, from the same record.
	for _, args := range [][]string{{"apps", "revisions", name, "noisy"}, {"show", name}} {
		if out := h.mustCtl(t, uid, args...); !strings.Contains(out, subject) || strings.Contains(out, "The body") {
			t.Errorf("opusctl %s does not show the subject %q alone:\n%s", strings.Join(args, " "), subject, out)
		}
	}

	ctx := h.browser(t)
	step(t, ctx, "sign in with the link", time.Minute, chromedp.Navigate(h.loginLink(t, uid)), chromedp.WaitVisible(chromedp.CSS("#projects")))
	step(t, ctx, "open the project page", time.Minute, chromedp.Navigate(base+"/projects/"+name), chromedp.WaitVisible(chromedp.CSS("#status")))
	if phase := text(t, ctx, "#status-phase"); !strings.HasPrefix(phase, "ready") {
		t.Errorf("status phase %q, want ready", phase)
	}
	if urls := text(t, ctx, "#urls"); !strings.Contains(urls, h.url(name, "http", "/")) || !strings.Contains(urls, h.url(name, "https", "/")) {
		t.Errorf("status URLs %q", urls)
	}
	if last := text(t, ctx, "#last-change"); !regexp.MustCompile(`^update app, \d{4}-\d\d-\d\d [\d:]+ UTC, by ` + regexp.QuoteMeta(user) + `:\s+succeeded`).MatchString(last) {
		t.Errorf("last change %q, want the update, by the user, succeeded", last)
	}
	if running := text(t, ctx, "#running-noisy"); running != "noisy: revision 2 · "+n2[:12]+" · "+subject {
		t.Errorf("running app %q, want revision 2, its commit and subject", running)
	}
	if nav := text(t, ctx, "#sections"); !strings.Contains(nav, "Apps") || !strings.Contains(nav, "Activity") || !strings.Contains(nav, "Logs") {
		t.Errorf("section links %q", nav)
	}

	// Live tail: a line the app writes now appears without a reload.
	step(t, ctx, "the live tail starts", 30*time.Second, chromedp.WaitVisible(chromedp.CSS("#log-live")), waitText("#log-live", "(live)"))
	mark := fmt.Sprintf("p%08x", rand.Uint32())
	if strings.Contains(text(t, ctx, "#log-lines"), mark) {
		t.Fatal("the mark is in the log before the request")
	}
	mustGet(t, c, h.url(name, "http", "/noisy/?m="+mark), "noisy2 "+mark)
	step(t, ctx, "the new line arrives", 30*time.Second, waitText("#log-lines", "stderr-"+mark))

	// Roll back to revision 1 from its row, with the data snapshot it
	// offers (the one taken while revision 1 ran).
	snap, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS(`#revision-noisy-1 input[name="data_snapshot"]`)))
	if err != nil || snap == "" {
		t.Fatalf("revision 1 offers no data snapshot (%v)", err)
	}
	step(t, ctx, "roll back to revision 1 with its data", time.Minute,
		chromedp.Click(chromedp.CSS("#rollback-noisy-1-data")),
		chromedp.Click(chromedp.CSS("#rollback-noisy-1")), chromedp.WaitVisible(chromedp.CSS("#steps")))
	step(t, ctx, "wait for the rollback to end", 5*time.Minute, chromedp.WaitVisible(chromedp.CSS("#done")))
	if st := text(t, ctx, "#op-state"); st != "succeeded" {
		t.Fatalf("rollback operation %s: %s", st, text(t, ctx, "main"))
	}
	if steps := text(t, ctx, "#steps"); !strings.Contains(steps, "restored data snapshot "+snap) {
		t.Errorf("the rollback did not restore snapshot %s:\n%s", snap, steps)
	}
	mustGet(t, c, h.url(name, "http", "/noisy/?m=y"), "noisy y")
	step(t, ctx, "open the project page after the rollback", time.Minute, chromedp.Navigate(base+"/projects/"+name), chromedp.WaitVisible(chromedp.CSS("#status")))
	if running := text(t, ctx, "#running-noisy"); running != "noisy: revision 3 · "+n1[:12]+" · noisy view" {
		t.Errorf("running app after the rollback %q, want revision 3 at %s", running, n1[:12])
	}
	if row := text(t, ctx, "#revision-noisy-3"); !strings.Contains(row, "rollback to 1") || !strings.Contains(row, "running") {
		t.Errorf("revision 3's row %q", row)
	}
	if last := text(t, ctx, "#last-change"); !strings.HasPrefix(last, "rollback, ") || !strings.Contains(last, "succeeded") {
		t.Errorf("last change after the rollback %q", last)
	}

	// A change that fails: the list warns, the phase stays ready.
	r := h.ctl(t, uid, "", "apps", "add", name, readableBy(t, brokenApp(t, "notanapp")))
	m := opID.FindStringSubmatch(r.err)
	if r.code != 1 || m == nil {
		t.Fatalf("apps add of a broken app: exit %d %s", r.code, r.err)
	}
	step(t, ctx, "open the project list", time.Minute, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#projects")))
	if w := text(t, ctx, "#failed-"+name); w != "last change failed" {
		t.Errorf("list warning %q", w)
	}
	href, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#failed-"+name), "href"))
	if err != nil || href.Value != "/ops/"+m[1] {
		t.Errorf("the warning links %+v (%v), want /ops/%s", href, err, m[1])
	}
	if badge := text(t, ctx, "td:has(#failed-"+name+") .phase"); badge != "ready" {
		t.Errorf("phase badge beside the warning %q, want ready", badge)
	}
	step(t, ctx, "open the project page after the failed change", time.Minute, chromedp.Navigate(base+"/projects/"+name), chromedp.WaitVisible(chromedp.CSS("#status")))
	if last := text(t, ctx, "#last-change"); !strings.HasPrefix(last, "add app, ") || !strings.Contains(last, "failed") ||
		!strings.Contains(last, "nothing of it was applied") || !strings.Contains(last, "opus-e2e-broken-app") {
		t.Errorf("last change after the failed add %q", last)
	}

	// Destroy with a wrong name: refused, said at the top and at the
	// field, which keeps the text; nothing changes.
	state := hostState(t)
	step(t, ctx, "destroy with a wrong name", time.Minute,
		chromedp.SendKeys(chromedp.CSS("#destroy-confirm"), name+"x"),
		chromedp.Click(chromedp.CSS("#destroy-submit")),
		chromedp.WaitVisible(chromedp.CSS("#alert")))
	if alert := text(t, ctx, "#alert"); !strings.HasPrefix(alert, "Nothing was destroyed") {
		t.Errorf("alert %q", alert)
	}
	if fe := text(t, ctx, "label:has(#destroy-confirm) + .field-error"); !strings.Contains(fe, "is not the project's name") {
		t.Errorf("error next to the field %q", fe)
	}
	kept, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#destroy-confirm")))
	if err != nil || kept != name+"x" {
		t.Errorf("the field holds %q (%v), want what was typed", kept, err)
	}
	if hostState(t) != state || h.show(t, name).Phase != "PHASE_READY" {
		t.Error("a refused destroy changed something")
	}
}

// waitText waits until the text of sel contains want.
func waitText(sel, want string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](fmt.Sprintf(`(document.querySelector(%q) || {}).textContent && document.querySelector(%q).textContent.includes(%q)`, sel, sel, want), chromedp.WithPollingInterval(100*time.Millisecond))
}
