package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/testrun"
	"github.com/opus-hosting/opus/unprivd/credential"
)

// The web console's sign-in, its limits and its accounts, against the real
// opusd (plain HTTP clients over TLS; TestWebConsole drives a browser).

var consoleCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// consoleBase is the console's base URL.
func (h *host) consoleBase() string { return "https://" + h.webAddr }

// consoleSignIn posts user and password on the sign-in form with c (the
// form's double-submit token fetched first, as a browser does).
func (h *host) consoleSignIn(t *testing.T, c *http.Client, user, pw string) consoleAnswer {
	t.Helper()
	page := consoleDo(t, c, "GET", h.consoleBase()+"/login", nil)
	m := consoleCSRF.FindStringSubmatch(page.body)
	if page.code != http.StatusOK || m == nil {
		t.Fatalf("sign-in page: %d, CSRF field found: %v", page.code, m != nil)
	}
	return consoleDo(t, c, "POST", h.consoleBase()+"/login", url.Values{"csrf": {m[1]}, "user": {user}, "password": {pw}})
}

// mustSignIn signs c in with a password and fails the test otherwise.
func (h *host) mustSignIn(t *testing.T, c *http.Client, user, pw string) {
	t.Helper()
	if a := h.consoleSignIn(t, c, user, pw); a.code != http.StatusSeeOther || a.location != "/" {
		t.Fatalf("%s's correct password: %d %q %.300s", user, a.code, a.location, a.body)
	}
}

// linkSignIn opens a fresh login link of uid in a new client and returns
// the signed-in client.
func (h *host) linkSignIn(t *testing.T, uid uint32) *http.Client {
	t.Helper()
	c := consoleClient()
	h.linkSignInWith(t, c, uid)
	return c
}

// linkSignInWith opens a fresh login link of uid with c.
func (h *host) linkSignInWith(t *testing.T, c *http.Client, uid uint32) {
	t.Helper()
	if a := consoleDo(t, c, "GET", h.loginLink(t, uid), nil); a.code != http.StatusSeeOther || a.location != "/" {
		t.Fatalf("login link of uid %d: %d %q %.300s", uid, a.code, a.location, a.body)
	}
}

// consoleClientFrom is consoleClient connecting from the source address
// ip (on Linux all of 127.0.0.0/8 is loopback). A test that floods the
// console from one address takes its own, so the limits it trips hold
// none of the other tests' requests (from 127.0.0.1) in the same run.
func consoleClientFrom(ip net.IP) *http.Client {
	c := consoleClient()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
	c.Transport.(*http.Transport).DialContext = d.DialContext
	return c
}

// signedIn reports whether c's session still opens the project list (a
// signed-out client is sent to /login).
func (h *host) signedIn(t *testing.T, c *http.Client) bool {
	t.Helper()
	a := consoleDo(t, c, "GET", h.consoleBase()+"/", nil)
	switch {
	case a.code == http.StatusOK:
		return true
	case a.code == http.StatusSeeOther && a.location == "/login":
		return false
	}
	t.Fatalf("project list: %d %q", a.code, a.location)
	return false
}

// setConsolePassword runs `opusctl web passwd` as uid.
func (h *host) setConsolePassword(t *testing.T, uid uint32, pw string) {
	t.Helper()
	if r := h.ctl(t, uid, pw+"\n", "web", "passwd", "--password-stdin"); r.code != 0 {
		t.Fatalf("web passwd as uid %d: %d %s", uid, r.code, r.err)
	}
}

// passwordUser makes a plain user of the run (role) with console
// password pw.
func (h *host) passwordUser(t *testing.T, role, pw string) (string, uint32) {
	t.Helper()
	name, uid := addUser(t, role)
	h.setConsolePassword(t, uid, pw)
	return name, uid
}

// consoleAccounts is `opusctl web accounts` as root, one line per account.
func (h *host) consoleAccounts(t *testing.T) string { return h.mustCtl(t, 0, "web", "accounts") }

// listsAccount reports whether the accounts table has a row for uid.
func listsAccount(table string, uid uint32) bool {
	return regexp.MustCompile(`(?m)^` + strconv.FormatUint(uint64(uid), 10) + `\s`).MatchString(table)
}

// TestConsoleNoLockout: everyone on the host reaches the console from one
// loopback address, so a flood of bad login links from an address must not
// keep anyone else there out, nor a password flood against one account
// another's password: 25 unknown links later, a fresh link and another
// account's password still sign in from that address; after wrong
// passwords for A, B's password still signs in and A still signs in with a
// link. (The test's address is its own, 127.x.y.z, so what it trips holds
// no other test.)
func TestConsoleNoLockout(t *testing.T) {
	h := needHost(t)
	t.Cleanup(func() { h.dumpLogs(t) })
	const pwA, pwB = "console password of A", "console password of B"
	nameA, uidA := h.passwordUser(t, "ca", pwA)
	nameB, uidB := h.passwordUser(t, "cb", pwB)
	src := net.IPv4(127, byte(1+rand.IntN(254)), byte(rand.IntN(256)), byte(1+rand.IntN(254)))
	client := func() *http.Client { return consoleClientFrom(src) }

	var last consoleAnswer
	for i := range 25 {
		last = consoleDo(t, client(), "GET", fmt.Sprintf("%s/login/link?t=bogus%d", h.consoleBase(), i), nil)
		if last.code != http.StatusUnauthorized && last.code != http.StatusTooManyRequests {
			t.Fatalf("unknown login link %d: %d", i, last.code)
		}
	}
	if last.code != http.StatusTooManyRequests {
		t.Errorf("the 25th unknown login link from one address: %d, want 429 (unknown links are limited per address)", last.code)
	}
	h.linkSignInWith(t, client(), uidB)
	h.mustSignIn(t, client(), nameA, pwA)

	// Wrong passwords for A: A's password is refused for a while, B's is
	// not, and A's link still works.
	for i := range 8 {
		if a := h.consoleSignIn(t, client(), nameA, fmt.Sprintf("wrong password %d", i)); a.code != http.StatusUnauthorized && a.code != http.StatusTooManyRequests {
			t.Fatalf("wrong password %d for A: %d", i, a.code)
		}
	}
	if a := h.consoleSignIn(t, client(), nameA, pwA); a.code != http.StatusTooManyRequests {
		t.Errorf("A's correct password right after a flood against A: %d, want 429", a.code)
	}
	h.mustSignIn(t, client(), nameB, pwB)
	h.mustSignIn(t, client(), strconv.FormatUint(uint64(uidB), 10), pwB)
	h.linkSignInWith(t, client(), uidA)
}

// vmHWM is a process's peak resident set size in bytes (VmHWM).
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^VmHWM:\s+(\d+) kB$`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("no VmHWM in /proc/%d/status", pid)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

// TestConsolePasswordHashingBounded: each password check costs 64 MiB
// (argon2id); a burst of sign-ins must not cost 64 MiB each. N concurrent
// wrong passwords: some are answered at once with 503 and a Retry-After,
// and opusd's peak memory stays far below N × 64 MiB.
func TestConsolePasswordHashingBounded(t *testing.T) {
	h := needHost(t)
	t.Cleanup(func() { h.dumpLogs(t) })
	nameA, _ := h.passwordUser(t, "cc", "console password of A")
	nameB, _ := h.passwordUser(t, "cd", "console password of B")
	pid := h.opusd.Process.Pid
	// Start measuring the peak from now (5 resets VmHWM to VmRSS).
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
	before := vmHWM(t, pid)

	const n = 12
	type result struct {
		code       int
		retryAfter string
		took       time.Duration
	}
	results := make([]result, n)
	// Each client fetches its form first, then all post together.
	forms := make([]url.Values, n)
	clients := make([]*http.Client, n)
	for i := range n {
		clients[i] = consoleClient()
		page := consoleDo(t, clients[i], "GET", h.consoleBase()+"/login", nil)
		m := consoleCSRF.FindStringSubmatch(page.body)
		if m == nil {
			t.Fatalf("sign-in page %d: %d", i, page.code)
		}
		forms[i] = url.Values{"csrf": {m[1]}, "user": {nameA}, "password": {fmt.Sprintf("wrong password %d", i)}}
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest("POST", h.consoleBase()+"/login", strings.NewReader(forms[i].Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			t0 := time.Now()
			res, err := clients[i].Do(req)
			if err != nil {
				t.Errorf("POST %d: %v", i, err)
				return
			}
			res.Body.Close()
			results[i] = result{res.StatusCode, res.Header.Get("Retry-After"), time.Since(t0)}
		})
	}
	close(start)
	wg.Wait()
	peak := vmHWM(t, pid)
	busy := 0
	for i, r := range results {
		switch r.code {
		case http.StatusServiceUnavailable:
			busy++
			if n, err := strconv.Atoi(r.retryAfter); err != nil || n < 1 {
				t.Errorf("503 %d without a Retry-After in seconds: %q", i, r.retryAfter)
			}
			if r.took > 3*time.Second {
				t.Errorf("503 %d took %v; a full hasher must answer at once", i, r.took)
			}
		case http.StatusUnauthorized, http.StatusTooManyRequests:
		default:
			t.Errorf("wrong password %d: %d", i, r.code)
		}
	}
	t.Logf("%d of %d answered 503; opusd's peak RSS %d MiB (%d MiB before)", busy, n, peak>>20, before>>20)
	if busy == 0 {
		t.Errorf("none of %d concurrent password checks was turned away", n)
	}
	// credential.PasswordHashers checks at once, 64 MiB each, and one more for
	// slack; n unbounded checks would be n × 64 MiB.
	if limit := before + (credential.PasswordHashers+1)*64<<20; peak > limit {
		t.Errorf("opusd's peak RSS %d MiB during %d concurrent sign-ins, want at most %d MiB", peak>>20, n, limit>>20)
	}
	// The burst is over: B's password works.
	h.mustSignIn(t, consoleClient(), nameB, "console password of B")
}

// reuseUID deletes user old and makes a new user of the run (role) with
// the same uid, as an admin reusing a freed uid would. The uid is one of
// testRun.AccountIDs(), so no user made meanwhile takes it.
func reuseUID(t *testing.T, old string, uid uint32, role string) string {
	t.Helper()
	if err := run("userdel", old); err != nil {
		t.Fatal(err)
	}
	_ = exec.Command("groupdel", old).Run()
	name, _ := addUserID(t, role, uid)
	return name
}

// TestConsoleAccountDiesWithUser: a console account is its Unix user's,
// not its uid's. After userdel and a new user with the same uid, the old
// password, session and login link sign no one in, and the old account is
// gone from `opusctl web accounts`.
func TestConsoleAccountDiesWithUser(t *testing.T) {
	h := needHost(t)
	t.Cleanup(func() { h.dumpLogs(t) })
	const pw = "the old user's console password"
	oldName, uid := addUserID(t, "ce", testrun.MustFreeID(t, testRun.AccountIDs()))
	h.setConsolePassword(t, uid, pw)
	session := consoleClient()
	h.mustSignIn(t, session, oldName, pw)
	link := h.loginLink(t, uid)
	if !listsAccount(h.consoleAccounts(t), uid) {
		t.Fatalf("web accounts does not list uid %d", uid)
	}

	newName := reuseUID(t, oldName, uid, "cf")
	if h.signedIn(t, session) {
		t.Error("the deleted user's session still signs in")
	}
	for _, who := range []string{newName, strconv.FormatUint(uint64(uid), 10)} {
		if a := h.consoleSignIn(t, consoleClient(), who, pw); a.code == http.StatusSeeOther {
			t.Errorf("the deleted user's password signs in as %s: %d %q", who, a.code, a.location)
		}
	}
	if a := consoleDo(t, consoleClient(), "GET", link, nil); a.code == http.StatusSeeOther {
		t.Errorf("the deleted user's login link signs in: %d %q", a.code, a.location)
	}
	table := h.consoleAccounts(t)
	if listsAccount(table, uid) || strings.Contains(table, oldName) {
		t.Errorf("the deleted user's account is still listed:\n%s", table)
	}
	// The new user starts afresh: no password, their own link works.
	c := h.linkSignIn(t, uid)
	if a := consoleDo(t, c, "GET", h.consoleBase()+"/", nil); a.code != http.StatusOK || !strings.Contains(a.body, newName) {
		t.Errorf("the new user's page: %d, names %s: %v", a.code, newName, strings.Contains(a.body, newName))
	}
	if table := h.consoleAccounts(t); !regexp.MustCompile(`(?m)^` + strconv.FormatUint(uint64(uid), 10) + `\s+` + newName + `\s+no\s`).MatchString(table) {
		t.Errorf("the new user's account is not listed as %s without a password:\n%s", newName, table)
	}
}

// TestConsolePasswordChangeEndsSessions: `opusctl web passwd` ends every
// session of the account (it is where a user goes when a password leaked);
// the new password signs in, the old one does not.
func TestConsolePasswordChangeEndsSessions(t *testing.T) {
	h := needHost(t)
	t.Cleanup(func() { h.dumpLogs(t) })
	const oldPW, newPW = "the first console password", "the second console password"
	name, uid := h.passwordUser(t, "cg", oldPW)
	byPassword := consoleClient()
	h.mustSignIn(t, byPassword, name, oldPW)
	byLink := h.linkSignIn(t, uid)
	other := h.linkSignIn(t, h.otherID)

	h.setConsolePassword(t, uid, newPW)
	if h.signedIn(t, byPassword) || h.signedIn(t, byLink) {
		t.Error("a session survived its password's change")
	}
	if !h.signedIn(t, other) {
		t.Error("another user's session ended with this user's password change")
	}
	if a := h.consoleSignIn(t, consoleClient(), name, oldPW); a.code == http.StatusSeeOther {
		t.Error("the old password still signs in")
	}
	h.mustSignIn(t, consoleClient(), name, newPW)
}

// TestConsoleDeleteAccount: an admin deletes a console account with
// `opusctl web delete`: its sessions end, its password is gone, it is no
// longer listed. A plain user may not, and their refused attempt changes
// nothing.
func TestConsoleDeleteAccount(t *testing.T) {
	h := needHost(t)
	t.Cleanup(func() { h.dumpLogs(t) })
	const pw = "a console password to forget"
	name, uid := h.passwordUser(t, "ch", pw)
	session := h.linkSignIn(t, uid)

	before, accounts := hostState(t), h.consoleAccounts(t)
	if r := h.ctl(t, h.otherID, "", "web", "delete", name); r.code != 1 || !strings.Contains(r.err, "admin") {
		t.Fatalf("web delete as a plain user: %d %s", r.code, r.err)
	}
	if hostState(t) != before || h.consoleAccounts(t) != accounts || !h.signedIn(t, session) {
		t.Fatal("a refused web delete changed something")
	}

	h.mustCtl(t, 0, "web", "delete", name)
	if h.signedIn(t, session) {
		t.Error("a deleted account's session still signs in")
	}
	if a := h.consoleSignIn(t, consoleClient(), name, pw); a.code == http.StatusSeeOther {
		t.Error("a deleted account's password still signs in")
	}
	if table := h.consoleAccounts(t); listsAccount(table, uid) {
		t.Errorf("a deleted account is still listed:\n%s", table)
	}
	if r := h.ctl(t, 0, "", "web", "delete", name); r.code == 0 || !strings.Contains(r.err, "no web console account") {
		t.Errorf("deleting it again: %d %s", r.code, r.err)
	}
	if hostState(t) != before {
		t.Error("deleting a console account changed the host's accounts")
	}
}

// consoleHeaders is consoleDo with extra request headers.
func consoleHeaders(t *testing.T, c *http.Client, method, u string, form url.Values, hdr map[string]string) consoleAnswer {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	res.Body.Close()
	return consoleAnswer{code: res.StatusCode, location: res.Header.Get("Location")}
}

// TestConsoleCrossOrigin: a form posted from another site is refused with
// 403 even when it carries a valid session cookie and CSRF token, whether
// the browser says so with Origin or with Sec-Fetch-Site; the same form
// from the console itself works.
func TestConsoleCrossOrigin(t *testing.T) {
	h := needHost(t)
	t.Cleanup(func() { h.dumpLogs(t) })
	_, uid := addUser(t, "ci")
	c := h.linkSignIn(t, uid)
	page := consoleDo(t, c, "GET", h.consoleBase()+"/", nil)
	m := consoleCSRF.FindStringSubmatch(page.body)
	if m == nil {
		t.Fatalf("no CSRF token on the project list: %d", page.code)
	}
	form := url.Values{"csrf": {m[1]}}
	before, accounts := hostState(t), h.consoleAccounts(t)
	for _, hdr := range []map[string]string{
		{"Origin": "https://evil.example"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"},
		{"Origin": "null"},
	} {
		if a := consoleHeaders(t, c, "POST", h.consoleBase()+"/logout", form, hdr); a.code != http.StatusForbidden {
			t.Errorf("sign-out posted with %v: %d %q, want 403", hdr, a.code, a.location)
		}
		if !h.signedIn(t, c) {
			t.Fatalf("a cross-origin sign-out (%v) ended the session", hdr)
		}
	}
	// The sign-in form too.
	pre := consoleClient()
	lp := consoleDo(t, pre, "GET", h.consoleBase()+"/login", nil)
	if lm := consoleCSRF.FindStringSubmatch(lp.body); lm == nil {
		t.Fatal("no CSRF token on the sign-in page")
	} else if a := consoleHeaders(t, pre, "POST", h.consoleBase()+"/login", url.Values{"csrf": {lm[1]}, "user": {"x"}, "password": {"y"}},
		map[string]string{"Sec-Fetch-Site": "cross-site"}); a.code != http.StatusForbidden {
		t.Errorf("sign-in posted cross-site: %d, want 403", a.code)
	}
	if hostState(t) != before || h.consoleAccounts(t) != accounts {
		t.Error("refused cross-origin forms changed something")
	}
	// From the console itself, the same form signs out.
	if a := consoleHeaders(t, c, "POST", h.consoleBase()+"/logout", form, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": h.consoleBase()}); a.code != http.StatusSeeOther || a.location != "/login" {
		t.Fatalf("same-origin sign-out: %d %q", a.code, a.location)
	}
	if h.signedIn(t, c) {
		t.Error("the session survived its sign-out")
	}
}
