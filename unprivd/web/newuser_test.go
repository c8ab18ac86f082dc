package web

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/unprivd/store"
)

// TestDestroyedOperationPage: once a destroy has finished, its page says
// the project is gone and leads back to the list, instead of linking to
// the project's page, which answers "not found" now.
func TestDestroyedOperationPage(t *testing.T) {
	r, a, csrf := formsRig(t)
	ctx := context.Background()
	d := do(t, a, "POST", r.srv.URL+"/projects/blog/destroy", url.Values{"csrf": {csrf}, "confirm": {"blog"}})
	if d.code != http.StatusSeeOther || !strings.HasPrefix(d.location, "/ops/") {
		t.Fatalf("destroy: %d %q %.2000s", d.code, d.location, d.body)
	}
	id := strings.TrimPrefix(d.location, "/ops/")
	// While it runs, the title links to the project.
	if running := do(t, a, "GET", r.srv.URL+d.location, nil); running.code != 200 || !strings.Contains(running.body, `of <a href="/projects/blog">blog</a></h1>`) {
		t.Fatalf("the running destroy's page: %d %.2000s", running.code, running.body)
	}
	if _, err := r.st.UpdateOperation(ctx, id, func(op *store.Operation) error {
		op.State = store.OpSucceeded
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.st.Update(ctx, func(tx *store.Tx) error { return tx.DeleteProject("blog", id) }); err != nil {
		t.Fatal(err)
	}
	if gone := do(t, a, "GET", r.srv.URL+"/projects/blog", nil); gone.code != http.StatusNotFound {
		t.Fatalf("the destroyed project's page answers %d, want 404", gone.code)
	}
	done := do(t, a, "GET", r.srv.URL+d.location, nil)
	if done.code != 200 || strings.Contains(done.body, `href="/projects/blog"`) ||
		!regexp.MustCompile(`<p id="gone">blog is destroyed: its user, files and virtual host are removed\. <a href="/">Back to your projects</a></p>`).MatchString(done.body) {
		t.Fatalf("the finished destroy's page: %d %.3000s", done.code, done.body)
	}
}

// TestFailedOperationSaysUndone: the page of a change that failed and was
// undone says, above its error, that nothing of it was applied and the
// project serves what it did before; a failure that is not the project's
// last undone one is not described so.
func TestFailedOperationSaysUndone(t *testing.T) {
	r, a, csrf := formsRig(t)
	ctx := context.Background()
	up := do(t, a, "POST", r.srv.URL+"/projects/blog/apps/shop/update", url.Values{"csrf": {csrf}, "url": {"https://example.com/me/shop.git"}, "ref": {"v3"}})
	if up.code != http.StatusSeeOther || !strings.HasPrefix(up.location, "/ops/") {
		t.Fatalf("update: %d %q %.2000s", up.code, up.location, up.body)
	}
	id := strings.TrimPrefix(up.location, "/ops/")
	if _, err := r.st.UpdateOperation(ctx, id, func(op *store.Operation) error {
		op.State, op.Error = store.OpFailed, "step migrate: manage.py check failed: RuntimeError: boom"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	const undone = `<p class="notice" id="op-undone">Nothing of this change was applied: blog serves what it served before.</p>`
	if page := do(t, a, "GET", r.srv.URL+up.location, nil); page.code != 200 || strings.Contains(page.body, "op-undone") {
		t.Fatalf("a failure not recorded as undone: %d, says undone: %v", page.code, strings.Contains(page.body, "op-undone"))
	}
	if _, err := r.st.UpdateProject(ctx, "blog", func(p *store.Project) error {
		p.Status.LastFailure = &store.Failure{Operation: id, Error: "step migrate: manage.py check failed: RuntimeError: boom"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	page := do(t, a, "GET", r.srv.URL+up.location, nil)
	if page.code != 200 || !regexp.MustCompile(`role="status">failed</span>\s*</p>\s*`+regexp.QuoteMeta(undone)+`\s*<p class="error" id="op-error">`).MatchString(page.body) {
		t.Fatalf("the undone failure's page: %d %.3000s", page.code, page.body)
	}
}

// TestRollbackPreviousOnlyWhenThereIsOne: "Roll back to the previous
// revision" is offered for an app with an earlier revision, not for one
// whose only revision runs (the API would refuse it: a dead end).
func TestRollbackPreviousOnlyWhenThereIsOne(t *testing.T) {
	r, a, _ := formsRig(t)
	pp := do(t, a, "GET", r.srv.URL+"/projects/blog", nil)
	if pp.code != 200 || !strings.Contains(pp.body, `id="rollback-shop">Roll back to the previous revision</button>`) {
		t.Fatalf("shop has two revisions: want its rollback button: %d %.3000s", pp.code, pp.body)
	}
	if strings.Contains(pp.body, `id="rollback-polls"`) {
		t.Fatalf("polls runs its only revision, yet the page offers to roll it back")
	}
}

// TestUploadedAppSourceOnce: an uploaded app's card says what it runs
// once, by its short digest, not its source line again with the whole
// 64-digit digest.
func TestUploadedAppSourceOnce(t *testing.T) {
	r, a, _ := formsRig(t)
	pp := do(t, a, "GET", r.srv.URL+"/projects/blog", nil)
	card := regexp.MustCompile(`(?s)<section class="card app" id="app-polls">.*?</section>`).FindString(pp.body)
	if card == "" || strings.Contains(card, digest) || strings.Count(card, "/home/alice/polls") != 1 {
		t.Fatalf("polls' card (full digest shown: %v, origin shown %d times):\n%s", strings.Contains(card, digest), strings.Count(card, "/home/alice/polls"), card)
	}
}
