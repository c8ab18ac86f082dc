package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// focusJS describes the focused element: a name for messages (tag, id,
// classes, text), whether it is on screen, its outline, the lowest
// contrast between the outline's color and what is drawn just outside it
// (sampled at the middle of each side, through elementsFromPoint: the
// first opaque background there), and its box in page coordinates.
const focusJS = `(() => {
  const e = document.activeElement;
  if (!e || e === document.body || e === document.documentElement) return {name: 'body'};
  const label = (e.textContent || e.value || e.getAttribute('aria-label') || '').trim().replace(/\s+/g, ' ').slice(0, 40);
  const name = e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.getAttribute('name') ? '[name=' + e.getAttribute('name') + ']' : '') +
    (e.classList.length ? '.' + [...e.classList].join('.') : '') + (label ? ' ' + JSON.stringify(label) : '');
  const cs = getComputedStyle(e);
  const r = e.getBoundingClientRect();
  const visible = r.width > 0 && r.height > 0 && r.bottom > 0 && r.right > 0 && r.top < innerHeight && r.left < innerWidth &&
    cs.visibility !== 'hidden' && parseFloat(cs.opacity) > 0;
  const rgb = c => {
    const n = (c.match(/[\d.]+/g) || []).map(Number);
    if (c.startsWith('color(')) return {v: n.slice(0, 3).map(x => x * 255), a: n.length > 3 ? n[3] : 1};
    return {v: n.slice(0, 3), a: n.length > 3 ? n[3] : 1};
  };
  const lum = v => { const l = v.map(x => { x /= 255; return x <= 0.04045 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
    return 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2]; };
  const contrast = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  const bgAt = (x, y) => {
    for (const el of document.elementsFromPoint(x, y)) {
      if (el === e || e.contains(el)) continue;
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.a >= 0.99) return c.v;
    }
    return [255, 255, 255];
  };
  const ow = parseFloat(cs.outlineWidth) || 0;
  const oc = rgb(cs.outlineColor).v;
  const d = (parseFloat(cs.outlineOffset) || 0) + ow / 2;
  const mx = (r.left + r.right) / 2, my = (r.top + r.bottom) / 2;
  let low = Infinity;
  for (const [x, y] of [[r.left - d, my], [r.right + d, my], [mx, r.top - d], [mx, r.bottom + d]]) {
    if (x < 0 || y < 0 || x >= innerWidth || y >= innerHeight) continue;
    low = Math.min(low, contrast(oc, bgAt(x, y)));
  }
  return {name, visible, outlineStyle: cs.outlineStyle, outlineWidth: ow, outline: cs.outlineStyle + ' ' + cs.outlineWidth + ' ' + cs.outlineColor,
    contrast: low === Infinity ? 0 : low, x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height,
    inMain: !!e.closest('main'), id: e.id};
})()`

// keyboardBrowser is h.browser whose page acts as the focused window (as
// the tab a person types in is): headless Chromium's window never has
// focus, so without this an element focused as a page loads (autofocus)
// would not match :focus until a key is pressed.
func (h *host) keyboardBrowser(t *testing.T) context.Context {
	t.Helper()
	ctx := h.browser(t)
	if _, err := chromedp.Call(ctx, emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true}); err != nil {
		t.Fatalf("emulate a focused page: %v", err)
	}
	return ctx
}

// settle waits until the page has rendered twice, by which time an
// autofocus element has been focused.
func (k *keyboard) settle() {
	k.t.Helper()
	step(k.t, k.ctx, k.page+": let the page render", time.Minute,
		chromedp.Evaluate[chromedp.Void](`new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))`, chromedp.EvalAwaitPromise))
}

// focused is what focusJS says of the focused element.
type focused struct {
	Name         string  `json:"name"`
	ID           string  `json:"id"`
	Visible      bool    `json:"visible"`
	OutlineStyle string  `json:"outlineStyle"`
	OutlineWidth float64 `json:"outlineWidth"`
	Outline      string  `json:"outline"`
	Contrast     float64 `json:"contrast"`
	X, Y, W, H   float64
	InMain       bool `json:"inMain"`
}

// minFocusContrast is WCAG 1.4.11's for a focus indicator against what is
// next to it; minFocusWidth is the outline's least width in CSS px.
const (
	minFocusContrast = 3.0
	minFocusWidth    = 2.0
)

// keyboard drives the browser with key events only (Input.dispatchKeyEvent:
// no mouse, no script clicks) and checks every element it focuses: on
// screen, with an outline at least minFocusWidth wide whose contrast with
// its surroundings is at least minFocusContrast, and after the one before
// it in reading order (not above it, not left of it on the same line).
type keyboard struct {
	t     *testing.T
	ctx   context.Context
	page  string
	prev  *focused
	trail []string
}

func (k *keyboard) focus() focused {
	k.t.Helper()
	f, err := chromedp.Run(k.ctx, chromedp.Evaluate[focused](focusJS))
	if err != nil {
		k.t.Fatalf("%s: read the focused element: %v", k.page, err)
	}
	return f
}

// press sends keys (see package kb for Tab, Enter, ...).
func (k *keyboard) press(keys string) {
	k.t.Helper()
	step(k.t, k.ctx, fmt.Sprintf("%s: press %q", k.page, keys), time.Minute, chromedp.KeyEvent(keys))
}

// newPage starts the checks of a page just shown: reading order starts
// again at its top.
func (k *keyboard) newPage(page string) {
	k.page, k.prev, k.trail = page, nil, nil
}

// check fails the test unless f, the focused element, can be seen to be
// focused.
func (k *keyboard) check(f focused) {
	k.t.Helper()
	switch {
	case f.Name == "body":
		k.t.Errorf("%s: nothing is focused after %s", k.page, strings.Join(k.trail, " → "))
	case !f.Visible:
		k.t.Errorf("%s: the focused %s is not on screen", k.page, f.Name)
	case f.OutlineStyle == "none" || f.OutlineWidth < minFocusWidth:
		k.t.Errorf("%s: the focused %s has outline %q: want a visible outline at least %g px wide", k.page, f.Name, f.Outline, minFocusWidth)
	case f.Contrast < minFocusContrast:
		k.t.Errorf("%s: the focus outline of %s (%s) has contrast %.2f:1 with what is around it, want at least %g:1", k.page, f.Name, f.Outline, f.Contrast, minFocusContrast)
	}
}

// next presses Tab and returns what it focuses, unchecked.
func (k *keyboard) next() focused {
	k.t.Helper()
	k.press(kb.Tab)
	f := k.focus()
	k.trail = append(k.trail, f.Name)
	return f
}

// inOrder fails the test if f comes before the previously focused
// element in reading order: back on an earlier line (wholly above it and
// starting left of it), or left of it on the same line. (A box to the
// right that starts higher, such as the next of the forms set side by
// side, comes after.)
func (k *keyboard) inOrder(f focused) {
	k.t.Helper()
	if p := k.prev; p != nil {
		cy := f.Y + f.H/2
		backUp := f.Y+f.H <= p.Y+1 && f.X+1 < p.X
		leftOnSameLine := cy >= p.Y && cy <= p.Y+p.H && f.X+f.W <= p.X+1
		if backUp || leftOnSameLine {
			k.t.Errorf("%s: Tab goes from %s (at %.0f,%.0f) back to %s (at %.0f,%.0f): the Tab order does not follow the page's reading order",
				k.page, p.Name, p.X, p.Y, f.Name, f.X, f.Y)
		}
	}
	k.prev = &f
}

// tab presses Tab and checks the element it focuses: seen to be focused,
// after the previous one in reading order.
func (k *keyboard) tab() focused {
	k.t.Helper()
	f := k.next()
	if f.Name != "body" {
		k.check(f)
		k.inOrder(f)
	}
	return f
}

// tabTo presses Tab until the element matching sel is focused (none if
// it is).
func (k *keyboard) tabTo(sel string) {
	k.t.Helper()
	if k.is(sel) {
		return
	}
	for range 120 {
		k.tab()
		if k.is(sel) {
			return
		}
	}
	k.t.Fatalf("%s: %s is never focused by Tab; focus went %s", k.page, sel, strings.Join(k.trail, " → "))
}

// is says whether the focused element matches sel.
func (k *keyboard) is(sel string) bool {
	k.t.Helper()
	ok, err := chromedp.Run(k.ctx, chromedp.Evaluate[bool](fmt.Sprintf(`!!document.activeElement && document.activeElement.matches(%q)`, sel)))
	if err != nil {
		k.t.Fatalf("%s: match %s: %v", k.page, sel, err)
	}
	return ok
}

// follow presses keys that load another page and returns its HTTP status.
func (k *keyboard) follow(keys, page string) int64 {
	k.t.Helper()
	sctx, cancel := context.WithTimeout(k.ctx, time.Minute)
	defer cancel()
	res, err := chromedp.RunResponse(sctx, chromedp.KeyEvent(keys))
	if err != nil {
		k.t.Fatalf("%s: %q to %s: %v", k.page, keys, page, err)
	}
	k.newPage(page)
	k.settle()
	return res.Status
}

// skipLink selects the link that skips to the main content.
const skipLink = `a[href="#main"]`

// walkTabs presses Tab through the whole page, from where focus is (the
// top, or the field a refused form focuses) round to where it started,
// checking each element focused (see tab), and fails the test if an
// element one can act on (link, button, field, summary) is never focused,
// or if Tab from the top of the page does not first focus the link that
// skips to the main content.
func (k *keyboard) walkTabs() {
	k.t.Helper()
	k.prev, k.trail = nil, nil
	// seen marks the focused element and says whether it was already.
	seen := func() bool {
		k.t.Helper()
		was, err := chromedp.Run(k.ctx, chromedp.Evaluate[bool](`(() => { const e = document.activeElement; const was = e.dataset.tabbed === '1'; e.dataset.tabbed = '1'; return was; })()`))
		if err != nil {
			k.t.Fatalf("%s: mark the focused element: %v", k.page, err)
		}
		return was
	}
	k.settle()
	start := k.focus()
	fromTop := start.Name == "body"
	if !fromTop {
		k.check(start)
		seen()
		k.prev = &start
	}
	for i := 0; ; i++ {
		if i > 300 {
			k.t.Fatalf("%s: Tab never comes round: %s", k.page, strings.Join(k.trail, " → "))
		}
		f := k.next()
		if f.Name == "body" {
			if fromTop && i > 0 {
				break // past the last element, having started at the top
			}
			fromTop, k.prev = true, nil
			continue
		}
		if seen() {
			break
		}
		if k.is(skipLink) {
			k.prev = nil // the top again
		} else if fromTop {
			k.t.Errorf("%s: the first Tab from the top focuses %s, want the link that skips to the main content", k.page, f.Name)
		}
		fromTop = false
		k.check(f)
		k.inOrder(f)
	}
	missed, err := chromedp.Run(k.ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, summary')]
	  .filter(e => !e.disabled && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden' && e.dataset.tabbed !== '1')
	  .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + ' ' + JSON.stringify((e.textContent || e.name || '').trim().slice(0, 40)))`))
	if err != nil {
		k.t.Fatalf("%s: list what Tab did not reach: %v", k.page, err)
	}
	if len(missed) > 0 {
		k.t.Errorf("%s: Tab never reaches %s (focus went %s)", k.page, strings.Join(missed, ", "), strings.Join(k.trail, " → "))
	}
	k.prev, k.trail = nil, nil
}

// TestConsoleKeyboardOnly: a plain user uses the console with the
// keyboard alone — signs in with a password, opens a project, turns DEBUG
// on and applies it, sees the operation end; then sends the settings with
// a bad environment line and, from the refused page, reaches the field in
// error with one key. Every element focused on the way is visibly focused
// (an outline of enough contrast) and focus moves in reading order; the
// first Tab on a page is a link to skip to the main content, which works.
func TestConsoleKeyboardOnly(t *testing.T) {
	h := needHost(t)
	user, uid := addUser(t, "kb")
	const pw = "a console password typed with keys"
	h.setConsolePassword(t, uid, pw)
	name := h.newProject(t)
	if r := h.ctl(t, uid, "", "create", name, "--app", readableBy(t, hostileApp(t, "shop", "pass"))); r.code != 0 {
		t.Fatalf("create %s: exit %d %s", name, r.code, r.err)
	}
	ctx := h.keyboardBrowser(t)
	setWidth(t, ctx, 1280)
	base := "https://" + h.webAddr
	k := &keyboard{t: t, ctx: ctx}

	// Sign in.
	if code, _ := visit(t, ctx, base+"/login"); code != 200 {
		t.Fatalf("sign-in page: HTTP %d", code)
	}
	k.newPage("sign-in page")
	k.tabTo(`input[name=user]`)
	k.press(user)
	k.tab()
	if !k.is(`input[name=password]`) {
		t.Fatalf("Tab from the user field goes to %s, want the password", k.trail[len(k.trail)-1])
	}
	k.press(pw)
	if code := k.follow(kb.Enter, "project list"); code != 200 {
		t.Fatalf("sign in with Enter: HTTP %d", code)
	}
	if text(t, ctx, ".who") == "" || !strings.Contains(text(t, ctx, "#projects"), name) {
		t.Fatalf("after signing in with the keyboard: %s", text(t, ctx, "body"))
	}

	// The skip link works: Enter on it, then Tab, lands in the main
	// content.
	f := k.tab()
	if !k.is(skipLink) {
		t.Fatalf("the first Tab on the project list focuses %s, want the link that skips to the main content", f.Name)
	}
	k.press(kb.Enter)
	k.newPage("project list after the skip link")
	if f := k.tab(); !f.InMain {
		t.Fatalf("Tab after the skip link focuses %s, outside the main content", f.Name)
	}

	// Open the project.
	k.tabTo(fmt.Sprintf(`a.project[href="/projects/%s"]`, name))
	if code := k.follow(kb.Enter, "project page"); code != 200 {
		t.Fatalf("open the project with Enter: HTTP %d", code)
	}

	// Turn DEBUG on with Space, apply with Enter.
	k.tabTo("#settings-debug")
	k.press(" ")
	if on, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('#settings-debug').checked`)); !on {
		t.Fatal("Space on the DEBUG box did not tick it")
	}
	k.tabTo(`#settings button[type=submit]`)
	if code := k.follow(kb.Enter, "operation page"); code != 200 {
		t.Fatalf("apply the settings with Enter: HTTP %d", code)
	}
	step(t, ctx, "wait for the settings to be applied", 5*time.Minute, chromedp.WaitVisible(chromedp.CSS("#done")))
	if st := text(t, ctx, "#op-state"); st != "succeeded" {
		t.Fatalf("settings operation %s: %s", st, text(t, ctx, "main"))
	}
	if r := h.ctl(t, uid, "", "show", name, "-o", "json"); r.code != 0 || !regexp.MustCompile(`"debug":\s*true`).MatchString(r.out) {
		t.Fatalf("the project after DEBUG was turned on with the keyboard: exit %d\n%s", r.code, r.out)
	}
	k.newPage("operation page")
	k.walkTabs()

	// Back to the project by its link in the title; a refused form.
	k.tabTo(fmt.Sprintf(`h1 a[href="/projects/%s"]`, name))
	if code := k.follow(kb.Enter, "project page"); code != 200 {
		t.Fatalf("back to the project with Enter: HTTP %d", code)
	}
	k.tabTo("#settings-env")
	const bad = "no equals sign here"
	k.press(bad)
	k.tabTo(`#settings button[type=submit]`)
	if code := k.follow(kb.Enter, "refused settings"); code != 422 {
		t.Fatalf("settings with a bad environment line: HTTP %d, want 422", code)
	}
	// The page opens with focus on the message's link to the field; Enter
	// there puts focus in the field, which says what is wrong with it.
	f = k.focus()
	if !k.is(`#messages a[href="#settings-env"]`) {
		t.Fatalf("the refused settings page opens with focus on %s, want the message's link to the field", f.Name)
	}
	k.check(f)
	k.press(kb.Enter)
	f = k.focus()
	if f.ID != "settings-env" {
		t.Fatalf("Enter on the link to the field focuses %s, want the environment field", f.Name)
	}
	k.check(f)
	field, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`(() => { const e = document.activeElement;
	  const d = (e.getAttribute('aria-describedby') || '').split(/\s+/).map(id => document.getElementById(id)).filter(Boolean);
	  return [e.value, e.getAttribute('aria-invalid') || '', d.map(x => x.textContent).join(' ')]; })()`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(field[0]) != bad || field[1] != "true" || !strings.Contains(field[2], "NAME=VALUE") {
		t.Fatalf("the field in error: value %q, aria-invalid %q, described by %q; want what was typed, \"true\" and the error", field[0], field[1], field[2])
	}
}
