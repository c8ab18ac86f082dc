package e2e

import (
	"fmt"
	"html"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// noisyApp is a git app whose view writes a marker to sys.stderr and to
// the request's wsgi.errors before answering, the two ways Django code
// reports trouble besides logging. Neither is flushed: Django code rarely
// does.
func noisyApp(t *testing.T) *gitApp {
	t.Helper()
	g := newGitApp(t, "noisy", "noisy")
	g.write(t, "views.py", `import sys

from django.http import HttpResponse


def index(request):
    marker = request.GET.get("m", "")
    print("stderr-" + marker, file=sys.stderr)
    request.META["wsgi.errors"].write("wsgierrors-" + marker + "\n")
    return HttpResponse("noisy " + marker)
`)
	g.git(t, "commit", "-q", "-am", "noisy view")
	return g
}

// TestLogsShowAppErrors: what a project's Django code writes to stderr or
// wsgi.errors, and Django's own "Not Found" line for a 404 (a path with
// markup in it too), over HTTP and HTTPS, are in the project's logs at
// once, as `opusctl logs` and the web console's log panel show them to the
// project's owner (a plain user), and in no other project's logs.
func TestLogsShowAppErrors(t *testing.T) {
	h := needHost(t)
	owner := h.otherID
	name, other := h.newProject(t), h.newProject(t)
	h.mustCtl(t, owner, "create", name, "--app", serveGit(t, noisyApp(t))+"@main")
	h.mustCtl(t, owner, "create", other, "--app", serveGit(t, newGitApp(t, "quiet", "quiet"))+"@main")
	c := webClient()
	var want, wantHTML []string
	for _, scheme := range []string{"http", "https"} {
		m := fmt.Sprintf("%s%08x", scheme, rand.Uint32())
		mustGet(t, c, h.url(name, scheme, "/noisy/?m="+m), "noisy "+m)
		for _, missing := range []string{"/missing-" + m + "/", "/missing-<b>" + m + "</b>"} {
			if code, body := get(t, c, h.url(name, scheme, (&url.URL{Path: missing}).EscapedPath())); code != http.StatusNotFound {
				t.Errorf("GET %s %s: %d %.200q, want 404", scheme, missing, code, body)
			}
			want = append(want, "Not Found: "+missing)
			wantHTML = append(wantHTML, "Not Found: "+html.EscapeString(missing))
		}
		want = append(want, "stderr-"+m, "wsgierrors-"+m)
		wantHTML = append(wantHTML, "stderr-"+m, "wsgierrors-"+m)
	}
	// The lines are written before the responses leave, so they must be
	// there now: no waiting.
	logs := h.mustCtl(t, owner, "logs", name)
	for _, w := range want {
		if !strings.Contains(logs, w) {
			t.Errorf("opusctl logs %s lacks %q:\n%s", name, w, logs)
		}
	}
	if o := h.mustCtl(t, owner, "logs", other); strings.Contains(o, "noisy") || strings.Contains(o, "missing-") {
		t.Errorf("opusctl logs %s shows %s's lines:\n%s", other, name, o)
	}

	// The console's log panel, as the owner sees it.
	cc := consoleClient()
	if a := consoleDo(t, cc, "GET", h.loginLink(t, owner), nil); a.code != http.StatusSeeOther {
		t.Fatalf("the owner's login link: %d %q", a.code, a.location)
	}
	page := consoleDo(t, cc, "GET", "https://"+h.webAddr+"/projects/"+name, nil)
	if page.code != http.StatusOK {
		t.Fatalf("console project page: %d %.300s", page.code, page.body)
	}
	for _, w := range wantHTML {
		if !strings.Contains(page.body, w) {
			t.Errorf("the console's log panel for %s lacks %q", name, w)
		}
	}
	if strings.Contains(page.body, "<b>") {
		t.Errorf("the console's log panel shows a logged path's markup unescaped")
	}
	h.mustCtl(t, owner, "destroy", name, "--yes")
	h.mustCtl(t, owner, "destroy", other, "--yes")
}
