package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// consolePage is one page of the console as the tour reaches it: by its
// address, then, for a page that only a refused form shows, by sending
// that form with the values given (set without events: how the page is
// reached is not what is tested).
type consolePage struct {
	name   string
	path   string
	status int64
	// form, when set, is the CSS selector of a form on path's page that
	// is sent with fill (CSS selector → value; a checkbox is ticked by
	// "on") to reach the page tested.
	form string
	fill map[string]string
}

// consoleTour is every page of the console, signed out and signed in,
// each in its ordinary state and in the states a person meets when things
// go wrong: one list, which TestConsoleFitsAPhone and
// TestConsoleAccessible both walk.
type consoleTour struct {
	uid       uint32
	user      string
	name      string // the tour's project (long name, app "shop")
	signedOut []consolePage
	signedIn  []consolePage
}

// newConsoleTour makes the tour's user and a deployed project with the
// longest name a project may have and an app, whose last change (adding
// an app that raises at start) failed with a traceback.
func (h *host) newConsoleTour(t *testing.T, role string) *consoleTour {
	t.Helper()
	user, uid := addUser(t, role)
	name := h.longProject(t)
	if r := h.ctl(t, uid, "", "create", name, "--app", readableBy(t, hostileApp(t, "shop", "pass"))); r.code != 0 {
		t.Fatalf("create %s: exit %d %s", name, r.code, r.err)
	}
	r := h.ctl(t, uid, "", "apps", "add", name, readableBy(t, hostileApp(t, "brokenwithaverylongappname", "raise RuntimeError('opus-e2e-phone-'+'x'*150)")))
	m := opID.FindStringSubmatch(r.err)
	if r.code != 1 || m == nil || !strings.Contains(r.err, "Traceback") {
		t.Fatalf("apps add of a broken app: exit %d, want a failed operation with a traceback:\n%s", r.code, r.err)
	}
	failedOp := m[1]
	project := "/projects/" + name
	return &consoleTour{
		uid: uid, user: user, name: name,
		signedOut: []consolePage{
			{name: "login", path: "/login", status: 200},
			{name: "login refused", path: "/login", status: 401, form: "form[action='/login']",
				fill: map[string]string{"input[name=user]": user, "input[name=password]": "not the password"}},
		},
		signedIn: []consolePage{
			{name: "projects", path: "/", status: 200},
			{name: "new project", path: "/new", status: 200},
			{name: "new project refused (name)", path: "/new", status: 422, form: "#create",
				fill: map[string]string{"#name": "Not-A-Name", "#empty": "on"}},
			{name: "new project refused (no apps)", path: "/new", status: 422, form: "#create",
				fill: map[string]string{"#name": name[:len(name)-1] + "z"}},
			{name: "project", path: project, status: 200},
			{name: "project, settings refused", path: project, status: 422, form: "#settings",
				fill: map[string]string{"#settings-env": "NOT A NAME=VALUE LINE"}},
			{name: "project, destroy refused", path: project, status: 422, form: "#destroy form",
				fill: map[string]string{"#destroy input[name=confirm]": "not its name"}},
			{name: "remove confirmation", path: project + "/apps/shop/remove", status: 200},
			{name: "remove refused", path: project + "/apps/shop/remove", status: 422, form: "#remove form",
				fill: map[string]string{"#confirm": "not its name"}},
			{name: "operation (failed)", path: "/ops/" + failedOp, status: 200},
			{name: "not found", path: "/projects/" + name[:len(name)-1] + "q", status: 404},
			{name: "bad name", path: project + "nope", status: 422},
		},
	}
}

// setWidth emulates a viewport width px wide: a phone (touch, portrait)
// below 600 px, a desktop window otherwise.
func setWidth(t *testing.T, ctx context.Context, width int64) {
	t.Helper()
	var opts []chromedp.EmulateViewportOption
	height := int64(800)
	if width < 600 {
		opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait)
		height = 844
	}
	step(t, ctx, fmt.Sprintf("viewport %d px", width), time.Minute, chromedp.EmulateViewport(width, height, opts...))
}

// reach brings the browser to p and fails the test unless the console
// answered with p's status.
func reach(t *testing.T, ctx context.Context, base string, p consolePage) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := chromedp.RunResponse(sctx, chromedp.Navigate(base+p.path))
	if err != nil {
		t.Fatalf("%s: open %s: %v", p.name, p.path, err)
	}
	code := res.Status
	if p.form != "" {
		if code != 200 {
			t.Fatalf("%s: the page of its form (%s) answered HTTP %d", p.name, p.path, code)
		}
		var fill []chromedp.Action[chromedp.Void]
		for sel, v := range p.fill {
			if v == "on" {
				fill = append(fill, chromedp.SetAttributeValue(chromedp.CSS(sel), "checked", ""))
				continue
			}
			fill = append(fill, chromedp.SetValue(chromedp.CSS(sel), v))
		}
		step(t, ctx, p.name+": fill the form", time.Minute, fill...)
		res, err := chromedp.RunResponse(sctx, chromedp.Submit(chromedp.CSS(p.form)))
		if err != nil {
			t.Fatalf("%s: submit %s: %v", p.name, p.form, err)
		}
		code = res.Status
	}
	if code != p.status {
		body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
		t.Fatalf("%s (%s): HTTP %d, want %d\n%.2000s", p.name, p.path, code, p.status, body)
	}
}

// walk visits every page of the tour at every width, signed out and then
// signed in (with a login link), and runs check on each.
func (h *host) walk(t *testing.T, ctx context.Context, tour *consoleTour, widths []int64, check func(p consolePage, width int64)) {
	t.Helper()
	base := "https://" + h.webAddr
	for _, w := range widths {
		setWidth(t, ctx, w)
		for _, p := range tour.signedOut {
			reach(t, ctx, base, p)
			check(p, w)
		}
	}
	step(t, ctx, "sign in with the link", time.Minute, chromedp.Navigate(h.loginLink(t, tour.uid)), chromedp.WaitVisible(chromedp.CSS("#projects")))
	for _, w := range widths {
		setWidth(t, ctx, w)
		for _, p := range tour.signedIn {
			reach(t, ctx, base, p)
			check(p, w)
		}
	}
}
