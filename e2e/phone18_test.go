package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/opus-hosting/opus/internal/names"
)

// fitsJS measures the page against a viewport WIDTH px wide: the
// document's scroll width, the outermost elements that reach past its
// right edge (an element inside a box that scrolls on its own does not
// count: its box is where the page ends), and the links and buttons of
// the header that break over two lines.
const fitsJS = `(() => {
  const W = %d;
  const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
    (e.classList.length ? '.' + [...e.classList].join('.') : '');
  const scrolls = e => { for (let p = e.parentElement; p; p = p.parentElement) {
    if (p === document.body || p === document.documentElement) return false;
    const o = getComputedStyle(p).overflowX; if (o === 'auto' || o === 'scroll' || o === 'hidden') return true; }
    return false; };
  const wide = [];
  for (const e of document.body.querySelectorAll('*')) {
    const r = e.getBoundingClientRect();
    if (r.width === 0 || r.right <= W + 0.5 || scrolls(e)) continue;
    const p = e.parentElement.getBoundingClientRect();
    if (e.parentElement !== document.body && p.right > W + 0.5) continue;
    wide.push(name(e) + ' (right edge ' + Math.round(r.right) + ' px: ' + JSON.stringify((e.textContent || e.value || '').trim().slice(0, 60)) + ')');
  }
  const wrapped = [];
  for (const e of document.querySelectorAll('header a, header button')) {
    const lh = parseFloat(getComputedStyle(e).lineHeight) || 20;
    if (e.getBoundingClientRect().height > 1.6 * lh) wrapped.push(name(e) + ' ' + JSON.stringify(e.textContent.trim()));
  }
  return {scroll: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight, wide, wrapped};
})()`

type fit struct {
	Scroll  int64    `json:"scroll"`
	Height  int64    `json:"height"`
	Wide    []string `json:"wide"`
	Wrapped []string `json:"wrapped"`
}

// checkFits fails the test, naming the page and what sticks out, if the
// page the browser shows scrolls sideways at width px or a header link
// wraps. It returns the measures.
func checkFits(t *testing.T, ctx context.Context, page string, width int64) fit {
	t.Helper()
	f, err := chromedp.Run(ctx, chromedp.Evaluate[fit](fmt.Sprintf(fitsJS, width)))
	if err != nil {
		t.Fatalf("measure %s: %v", page, err)
	}
	if f.Scroll > width || len(f.Wide) > 0 {
		t.Errorf("%s at %d px scrolls sideways: document %d px wide; sticking out:\n\t%s", page, width, f.Scroll, strings.Join(f.Wide, "\n\t"))
	}
	if len(f.Wrapped) > 0 {
		t.Errorf("%s at %d px: header items break over lines: %s", page, width, strings.Join(f.Wrapped, ", "))
	}
	if width < 600 && page == "projects" {
		// README's phone picture (make screenshots); the wide ones are
		// TestWebConsole's.
		shot(t, ctx, page+"-phone")
	}
	t.Logf("%s at %d px: %d px tall", page, width, f.Height)
	return f
}

// readableBy copies dir into a fresh directory uid can read (opusctl packs
// an app with its caller's own rights; t.TempDir() is root's alone).
func readableBy(t *testing.T, dir string) string {
	t.Helper()
	parent, err := os.MkdirTemp(root, "app-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-r", dir, parent).CombinedOutput(); err != nil {
		t.Fatalf("cp -r %s %s: %v %s", dir, parent, err, out)
	}
	if out, err := exec.Command("chmod", "-R", "a+rX", parent).CombinedOutput(); err != nil {
		t.Fatalf("chmod: %v %s", err, out)
	}
	return filepath.Join(parent, filepath.Base(dir))
}

// longProject is a run-unique project name as long as names allow (the
// longest name makes the longest URLs), destroyed at cleanup.
func (h *host) longProject(t *testing.T) string {
	t.Helper()
	short := h.newProject(t)
	name := short + strings.Repeat("x", names.MaxProject-len(short))
	t.Cleanup(func() {
		if r := h.ctl(t, 0, "", "show", name); r.code == 0 {
			h.ctl(t, 0, "", "destroy", name, "--yes")
		}
	})
	return name
}

// TestConsoleFitsAPhone: every console page (consoleTour: signed out and
// in, refused forms and a failed operation included) fits a 390 px phone
// without sideways scrolling (long project names, URLs and a traceback
// included) and a 1280 px desktop; the header's links do not break over
// lines.
func TestConsoleFitsAPhone(t *testing.T) {
	h := needHost(t)
	tour := h.newConsoleTour(t, "ph")
	ctx := h.browser(t)
	h.walk(t, ctx, tour, []int64{390, 1280}, func(p consolePage, width int64) {
		f := checkFits(t, ctx, p.name, width)
		// The project page's operations are one line each (their steps
		// are on the operation's page): on a phone it stays a few
		// screens tall, not the 11,000 px a steps column made.
		if p.name == "project" && width < 600 && f.Height > maxPhoneProjectHeight {
			t.Errorf("project page at %d px is %d px tall, want at most %d", width, f.Height, maxPhoneProjectHeight)
		}
	})
}

// maxPhoneProjectHeight bounds TestConsoleFitsAPhone's project page (two
// apps, three operations, one with a traceback) on a phone.
const maxPhoneProjectHeight = 5000
