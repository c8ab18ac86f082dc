package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// axeVersion is the axe-core in testdata/axe (scripts/axe.sh pins it).
const axeVersion = "4.14.1"

// axeTags are the rule sets the console must pass: WCAG 2.0 A and AA,
// WCAG 2.1 AA, and Deque's best practices.
const axeTags = `['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']`

// axeRunJS runs axe on the whole document and returns its violations,
// each node named by its CSS selector and the start of its markup.
const axeRunJS = `axe.run(document, {runOnly: {type: 'tag', values: ` + axeTags + `}, resultTypes: ['violations']})
  .then(r => r.violations.map(v => ({id: v.id, impact: v.impact || '', help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.map(n => ({target: n.target.map(String).join(' '), html: n.html.slice(0, 160),
      summary: (n.failureSummary || '').replace(/\s+/g, ' ').slice(0, 300)}))})))`

type axeViolation struct {
	ID      string `json:"id"`
	Impact  string `json:"impact"`
	Help    string `json:"help"`
	HelpURL string `json:"helpUrl"`
	Nodes   []struct {
		Target  string `json:"target"`
		HTML    string `json:"html"`
		Summary string `json:"summary"`
	} `json:"nodes"`
}

var axeSource = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile("testdata/axe/axe.min.js")
	return string(b), err
})

// runAxe injects axe-core into the page the browser shows (through
// DevTools' Runtime.evaluate, which the page's Content-Security-Policy
// does not govern) and returns its violations.
func runAxe(t *testing.T, ctx context.Context) []axeViolation {
	t.Helper()
	src, err := axeSource()
	if err != nil {
		t.Fatalf("axe-core (make axe fetches it): %v", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[string](src+";\naxe.version"))
	if err != nil || v != axeVersion {
		t.Fatalf("inject axe-core: version %q, want %s: %v", v, axeVersion, err)
	}
	out, err := chromedp.Run(sctx, chromedp.Evaluate[[]axeViolation](axeRunJS, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("axe.run: %v", err)
	}
	return out
}

// blocking is what fails the check: axe's "serious" and "critical".
func blocking(impact string) bool { return impact == "serious" || impact == "critical" }

// describe lists violations for a failure message: rule, impact, help,
// and each offending element with axe's summary of what to fix.
func describe(vs []axeViolation) string {
	var b strings.Builder
	for _, v := range vs {
		fmt.Fprintf(&b, "\n  [%s] %s: %s (%s)", v.Impact, v.ID, v.Help, v.HelpURL)
		for _, n := range v.Nodes {
			fmt.Fprintf(&b, "\n      %s  %s\n        %s", n.Target, n.HTML, n.Summary)
		}
	}
	return b.String()
}

// checkAccessible runs axe on the page the browser shows and fails the
// test on any serious or critical violation; lesser ones are logged.
func checkAccessible(t *testing.T, ctx context.Context, page string, width int64) {
	t.Helper()
	var bad, minor []axeViolation
	for _, v := range runAxe(t, ctx) {
		if blocking(v.Impact) {
			bad = append(bad, v)
		} else {
			minor = append(minor, v)
		}
	}
	if len(bad) > 0 {
		t.Errorf("%s at %d px: axe-core %s finds %d serious or critical violation(s):%s", page, width, axeVersion, len(bad), describe(bad))
	}
	if len(minor) > 0 {
		t.Logf("%s at %d px: axe-core's moderate and minor findings:%s", page, width, describe(minor))
	}
}

// TestConsoleAccessible: axe-core (WCAG 2.0/2.1 A and AA and best
// practices) finds no serious or critical violation on any console page
// (consoleTour: signed out and in, refused forms, a failed operation, the
// remove confirmation, not found) on a 390 px phone or a 1280 px desktop;
// on each, Tab from the top first focuses a link that skips to the main
// content, then reaches every link, button and field in reading order,
// each visibly focused (keyboard.walkTabs).
// First it shows that the checks can fail: axe runs under the console's
// CSP and reports an image without alt text added to a page, and the
// focus check measures a header link outlined in the header's color as
// too faint.
func TestConsoleAccessible(t *testing.T) {
	h := needHost(t)
	tour := h.newConsoleTour(t, "ax")
	ctx := h.keyboardBrowser(t)

	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	res, err := chromedp.RunResponse(sctx, chromedp.Navigate("https://"+h.webAddr+"/login"))
	cancel()
	if err != nil {
		t.Fatalf("open the sign-in page: %v", err)
	}
	if csp, _ := res.Headers["Content-Security-Policy"].(string); !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("the sign-in page's Content-Security-Policy is %q; the check must run under the console's own policy", csp)
	}
	step(t, ctx, "add an image without alt text", time.Minute,
		chromedp.Evaluate[chromedp.Void](`document.querySelector('main').append(Object.assign(document.createElement('img'), {src: '/static/console.css', id: 'axe-probe'}))`))
	found := false
	for _, v := range runAxe(t, ctx) {
		for _, n := range v.Nodes {
			if v.ID == "image-alt" && blocking(v.Impact) && n.Target == "#axe-probe" {
				found = true
			}
		}
	}
	if !found {
		t.Fatal("axe-core did not report an image without alt text added to the sign-in page: the check cannot see violations")
	}

	// And the focus check sees an outline that does not stand out: the
	// header's link outlined in the header's own color.
	k := &keyboard{t: t, ctx: ctx, page: "sign-in page with a poor outline"}
	step(t, ctx, "outline header links in the header's color", time.Minute,
		chromedp.Evaluate[chromedp.Void](`document.styleSheets[0].insertRule('header a:focus-visible { outline-color: #233044 !important }', document.styleSheets[0].cssRules.length)`))
	k.press(kb.Tab + kb.Tab)
	if f := k.focus(); !k.is("header a.brand") || f.Contrast >= minFocusContrast {
		t.Fatalf("the focus check measures %s outlined in the header's color at contrast %.2f: it cannot see a poor outline", f.Name, f.Contrast)
	}

	h.walk(t, ctx, tour, []int64{390, 1280}, func(p consolePage, width int64) {
		checkAccessible(t, ctx, p.name, width)
		k.page = fmt.Sprintf("%s at %d px", p.name, width)
		k.walkTabs()
	})
}
