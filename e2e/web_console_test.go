package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// consoleUser() is the web console test's user (see newConsoleUser).
func consoleUser() string { return testRun.Account("wa") }

// newConsoleUser makes a fresh unprivileged user for the web console test
// (the console must work for a plain user, not only for root) and removes
// it at the end, after the test's projects are gone.
func newConsoleUser(t *testing.T) uint32 {
	t.Helper()
	_, uid := addUser(t, "wa")
	return uid
}

// serveGit serves g's repository with git daemon at git://127.0.0.1:PORT/
// NAME, so a user who is not an admin may name it (local paths are for
// admins only, plain http is refused, and a test https server's
// certificate would not be trusted).
func serveGit(t *testing.T, g *gitApp) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	parent := filepath.Dir(g.dir)
	d := exec.CommandContext(ctx, "git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
		fmt.Sprintf("--port=%d", port), "--base-path="+parent, parent)
	if err := d.Start(); err != nil {
		cancel()
		t.Fatalf("git daemon: %v", err)
	}
	t.Cleanup(func() { cancel(); d.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatalf("git daemon did not listen on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "git://" + addr + "/" + g.name
}

// consoleClient is an HTTP client for the console that keeps cookies and
// does not follow redirects (the tests look at them).
func consoleClient() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true},
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type consoleAnswer struct {
	code           int
	body, location string
}

func consoleDo(t *testing.T, c *http.Client, method, u string, form url.Values) consoleAnswer {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return consoleAnswer{code: res.StatusCode, body: string(b), location: res.Header.Get("Location")}
}

// loginLink runs `opusctl web login` as uid and returns the link.
func (h *host) loginLink(t *testing.T, uid uint32) string {
	t.Helper()
	link := strings.TrimSpace(h.mustCtl(t, uid, "web", "login"))
	if !strings.HasPrefix(link, "https://"+h.webAddr+"/login/link?t=") {
		t.Fatalf("opusctl web login printed %q, want a link to https://%s", link, h.webAddr)
	}
	return link
}

// browser starts Debian's chromium headless with a fresh profile; *.opus
// .localhost resolves to loopback and the test's ports are allowed.
func (h *host) browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("the web console test needs chromium (scripts/deps.sh installs it)")
	}
	_, webPort, _ := strings.Cut(h.webAddr, ":")
	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox, // root
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("user-data-dir", t.TempDir()),
		chromedp.Flag("host-resolver-rules", "MAP *.opus.localhost 127.0.0.1"),
		// The console and the projects have self-signed certificates.
		chromedp.Flag("ignore-certificate-errors", true),
		// Free ports can land on ones Chromium calls unsafe.
		chromedp.Flag("explicitly-allowed-ports", fmt.Sprintf("%s,%d,%d", webPort, h.cfg.HTTPPort, h.cfg.HTTPSPort)),
		chromedp.Flag("window-size", "1200,900"),
	)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(alloc)
	t.Cleanup(cancel2)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// shot saves a screenshot of the current page as docs/console-NAME.png
// when OPUS_SCREENSHOTS=1 (how the README's pictures are made).
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("OPUS_SCREENSHOTS") != "1" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join("..", "docs", "console-"+name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// step runs browser actions with a time limit.
func step(t *testing.T, ctx context.Context, what string, d time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.OuterHTML("body"))
		t.Fatalf("%s: %v\npage: %.3000s", what, err, body)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// visit navigates to u and returns the HTTP status and the page's text.
func visit(t *testing.T, ctx context.Context, u string) (int64, string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := chromedp.RunResponse(sctx, chromedp.Navigate(u))
	if err != nil {
		t.Fatalf("navigate %s: %v", u, err)
	}
	return res.Status, text(t, ctx, "body")
}

// TestWebConsole: a plain user signs in with a login link, creates a
// project with one git app through the form, watches its steps complete,
// follows its URL to the deployed app, and updates the app to another tag;
// another user sees none of it; forged forms, used links and bad sessions
// are refused.
func TestWebConsole(t *testing.T) {
	h := needHost(t)
	uidA := newConsoleUser(t)
	app := newGitApp(t, "shop", "shop version one")
	app.addVersion(t, "v2", "shop version two")
	gitURL := serveGit(t, app)
	name := h.newProject(t)
	base := "https://" + h.webAddr
	ctx := h.browser(t)

	// Sign in with a link: the browser lands on A's (empty) project list.
	link := h.loginLink(t, uidA)
	step(t, ctx, "sign in with the link", time.Minute, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#no-projects")))
	if who := text(t, ctx, ".who"); !strings.Contains(who, consoleUser()) {
		t.Fatalf("signed in as %q, want %s", who, consoleUser())
	}

	// Create through the form and watch the steps finish live.
	step(t, ctx, "open the create form", time.Minute, chromedp.Navigate(base+"/new"), chromedp.WaitVisible(chromedp.CSS("#create")))
	step(t, ctx, "fill the create form", time.Minute,
		chromedp.SendKeys(chromedp.CSS("#name"), name),
		chromedp.SendKeys(chromedp.CSS("#url0"), gitURL),
		chromedp.SendKeys(chromedp.CSS("#ref0"), "v1"))
	shot(t, ctx, "new")
	step(t, ctx, "submit the create form", time.Minute, chromedp.Click(chromedp.CSS("#create-submit")), chromedp.WaitVisible(chromedp.CSS("#steps")))
	step(t, ctx, "wait for the deploy to end", 5*time.Minute, chromedp.WaitVisible(chromedp.CSS("#done")))
	if st := text(t, ctx, "#op-state"); st != "succeeded" {
		t.Fatalf("create operation %s: %s", st, text(t, ctx, "main"))
	}
	steps := text(t, ctx, "#steps")
	for _, s := range []string{"user", "sources", "migrate", "vhost", "health"} {
		if !regexp.MustCompile(`(?m)^` + s + `\s+done`).MatchString(steps) {
			t.Errorf("step %s not shown done in:\n%s", s, steps)
		}
	}
	shot(t, ctx, "operation")
	appURL, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#done a.url"), "href"))
	if err != nil || !strings.HasPrefix(appURL.Value, "http://"+name+".opus.localhost:") {
		t.Fatalf("project URL on the operation page: %+v %v", appURL, err)
	}
	if code, body := visit(t, ctx, appURL.Value+"shop/"); code != 200 || !strings.Contains(body, "shop version one") {
		t.Fatalf("deployed app: %d %.300q", code, body)
	}

	// The project page, then the app moved to v2 through its form.
	step(t, ctx, "open the project page", time.Minute, chromedp.Navigate(base+"/projects/"+name), chromedp.WaitVisible(chromedp.CSS("#app-shop")))
	step(t, ctx, "update the app to v2", time.Minute,
		chromedp.SetValue(chromedp.CSS("#update-shop-ref"), "v2"),
		chromedp.Click(chromedp.CSS("#update-shop")),
		chromedp.WaitVisible(chromedp.CSS("#steps")))
	step(t, ctx, "wait for the update to end", 5*time.Minute, chromedp.WaitVisible(chromedp.CSS("#done")))
	if st := text(t, ctx, "#op-state"); st != "succeeded" {
		t.Fatalf("update operation %s: %s", st, text(t, ctx, "main"))
	}
	if code, body := visit(t, ctx, appURL.Value+"shop/"); code != 200 || !strings.Contains(body, "shop version two") {
		t.Fatalf("app after the update: %d %.300q", code, body)
	}
	// The project page shows the new commit and both revisions.
	step(t, ctx, "open the project page again", time.Minute, chromedp.Navigate(base+"/projects/"+name), chromedp.WaitVisible(chromedp.CSS("#app-shop")))
	v2 := app.git(t, "rev-parse", "v2")
	if appText := text(t, ctx, "#app-shop"); !strings.Contains(appText, v2[:12]) || !strings.Contains(appText, "2 revisions, newest first") {
		t.Fatalf("app after the update does not show commit %s and 2 revisions:\n%s", v2[:12], appText)
	}
	shot(t, ctx, "project")
	step(t, ctx, "open the project list", time.Minute, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#projects")))
	if list := text(t, ctx, "#projects"); !strings.Contains(list, name) || !strings.Contains(list, "ready") {
		t.Fatalf("A's list: %s", list)
	}
	shot(t, ctx, "projects")

	// User B: none of A's projects, A's project page is not found, and
	// B's forms cannot touch it.
	b := consoleClient()
	if a := consoleDo(t, b, "GET", h.loginLink(t, h.otherID), nil); a.code != http.StatusSeeOther || a.location != "/" {
		t.Fatalf("B's login link: %d %q", a.code, a.location)
	}
	bl := consoleDo(t, b, "GET", base+"/", nil)
	if bl.code != 200 || strings.Contains(bl.body, name) {
		t.Fatalf("B's list: %d, mentions %s: %v", bl.code, name, strings.Contains(bl.body, name))
	}
	if bp := consoleDo(t, b, "GET", base+"/projects/"+name, nil); bp.code != http.StatusNotFound || !strings.Contains(bp.body, "not found") {
		t.Fatalf("B on A's project: %d %.300s", bp.code, bp.body)
	}
	bcsrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(bl.body)
	if bcsrf == nil {
		t.Fatal("no CSRF token on B's page")
	}
	if bd := consoleDo(t, b, "POST", base+"/projects/"+name+"/destroy", url.Values{"csrf": {bcsrf[1]}, "confirm": {name}}); bd.code != http.StatusNotFound {
		t.Fatalf("B destroying A's project: %d", bd.code)
	}

	// A form without the CSRF token is refused and changes nothing.
	forged := consoleDo(t, b, "POST", base+"/new", url.Values{"name": {name + "x"}, "url0": {gitURL}})
	if forged.code != http.StatusForbidden {
		t.Fatalf("POST without CSRF token: %d", forged.code)
	}
	if r := h.ctl(t, 0, "", "show", name+"x"); r.code == 0 {
		t.Fatal("a forged form created a project")
	}
	if r := h.ctl(t, 0, "", "show", name, "-o", "json"); r.code != 0 || !strings.Contains(r.out, `"PHASE_READY"`) {
		t.Fatalf("A's project after B's attempts: %d %s", r.code, r.out)
	}

	// A used login link does not work twice.
	if a := consoleDo(t, consoleClient(), "GET", link, nil); a.code != http.StatusUnauthorized {
		t.Fatalf("used login link: %d %q", a.code, a.location)
	}
	// An expired or garbage session cookie is refused.
	u, _ := url.Parse(base)
	for _, v := range []string{"garbage", strings.Repeat("A", 43)} {
		c := consoleClient()
		c.Jar.SetCookies(u, []*http.Cookie{{Name: "__Host-opus_session", Value: v}})
		if a := consoleDo(t, c, "GET", base+"/", nil); a.code != http.StatusSeeOther || a.location != "/login" {
			t.Fatalf("session cookie %q: %d %q", v, a.code, a.location)
		}
	}

	// Accounts: B may not list them; root may, and disabling A ends A's
	// session in the browser at once.
	if r := h.ctl(t, h.otherID, "", "web", "accounts"); r.code != 1 || !strings.Contains(r.err, "admin") {
		t.Fatalf("web accounts as B: %d %s", r.code, r.err)
	}
	if out := h.mustCtl(t, 0, "web", "accounts"); !strings.Contains(out, consoleUser()) || !strings.Contains(out, strconv.Itoa(int(uidA))) {
		t.Fatalf("web accounts does not list %s:\n%s", consoleUser(), out)
	}
	h.mustCtl(t, 0, "web", "disable", consoleUser())
	step(t, ctx, "A after being disabled", time.Minute, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("input[name=password]")))
	shot(t, ctx, "login")
	h.mustCtl(t, 0, "web", "disable", consoleUser(), "--enable")

	// A password sign-in works once set.
	if r := h.ctl(t, uidA, "a console password for the test\n", "web", "passwd", "--password-stdin"); r.code != 0 {
		t.Fatalf("web passwd: %d %s", r.code, r.err)
	}
	step(t, ctx, "sign in with the password", time.Minute,
		chromedp.Navigate(base+"/login"),
		chromedp.SendKeys(chromedp.CSS("input[name=user]"), consoleUser()),
		chromedp.SendKeys(chromedp.CSS("input[name=password]"), "a console password for the test"),
		chromedp.Submit(chromedp.CSS("input[name=password]")),
		chromedp.WaitVisible(chromedp.CSS("#projects")))

	// Text the owner controls is shown escaped: an environment value
	// holding a script tag (stored inertly) appears on the project page.
	const tag = "<script>alert('opus')</script>"
	h.mustCtl(t, uidA, "set", name, "env.OPUS_XSS="+tag)

	// An admin (root) sees A's project, with the logged tag escaped, and
	// can destroy it.
	adm := consoleClient()
	if a := consoleDo(t, adm, "GET", h.loginLink(t, 0), nil); a.code != http.StatusSeeOther {
		t.Fatalf("root's login link: %d %q", a.code, a.location)
	}
	if al := consoleDo(t, adm, "GET", base+"/", nil); al.code != 200 || !strings.Contains(al.body, name) {
		t.Fatalf("admin's list lacks %s: %d", name, al.code)
	}
	var page consoleAnswer
	deadline := time.Now().Add(30 * time.Second)
	for {
		page = consoleDo(t, adm, "GET", base+"/projects/"+name, nil)
		if strings.Contains(page.body, "&lt;script&gt;alert(") || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if page.code != 200 || !strings.Contains(page.body, "&lt;script&gt;alert(") || strings.Contains(page.body, tag) {
		t.Fatalf("admin's project page: %d; escaped tag shown: %v; raw tag present: %v",
			page.code, strings.Contains(page.body, "&lt;script&gt;alert("), strings.Contains(page.body, tag))
	}
	acsrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page.body)
	if acsrf == nil {
		t.Fatal("no CSRF token on the admin's project page")
	}
	if d := consoleDo(t, adm, "POST", base+"/projects/"+name+"/destroy", url.Values{"csrf": {acsrf[1]}, "confirm": {name}}); d.code != http.StatusSeeOther {
		t.Fatalf("admin destroying A's project: %d %.300s", d.code, d.body)
	}
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		if r := h.ctl(t, 0, "", "show", name); r.code != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("project %s still there 3 minutes after the admin destroyed it", name)
		}
	}
	if passwdLine(t, projUser(name)) != "" {
		t.Errorf("user opus-%s survived the admin's destroy", name)
	}
}
