package web

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/credential"
	"github.com/opus-hosting/opus/unprivd/service"
	"github.com/opus-hosting/opus/unprivd/store"
)

// alice and bob, as typed on the sign-in form: the rig's users are not in
// the host's user database, so by uid (a name typed is looked up there).
var alice, bob = strconv.Itoa(uidA), strconv.Itoa(uidB)

// passwordSignIn posts user and pw on the sign-in form with a fresh
// browser.
func (r *rig) passwordSignIn(t *testing.T, user, pw string) (answer, *http.Client) {
	t.Helper()
	c := r.browser()
	pg := do(t, c, "GET", r.srv.URL+"/login", nil)
	return do(t, c, "POST", r.srv.URL+"/login", url.Values{"csrf": {csrfOf(t, pg.body)}, "user": {user}, "password": {pw}}), c
}

func (r *rig) setPassword(t *testing.T, uid uint32, pw string) {
	t.Helper()
	if _, err := r.as(t, uid).SetConsolePassword(context.Background(), &opusv1.SetConsolePasswordRequest{Password: pw}); err != nil {
		t.Fatal(err)
	}
}

// signedIn reports whether c's session still opens the project list.
func (r *rig) signedIn(t *testing.T, c *http.Client) bool {
	t.Helper()
	a := do(t, c, "GET", r.srv.URL+"/", nil)
	if a.code != http.StatusOK && (a.code != http.StatusSeeOther || a.location != "/login") {
		t.Fatalf("project list: %d %q", a.code, a.location)
	}
	return a.code == http.StatusOK
}

// TestNoLockout: a flood of unknown login links from one address refuses
// only that address's unknown links; a password flood against A refuses
// A's password only: valid links, B's password and A's link still sign in.
func TestNoLockout(t *testing.T) {
	r := newRig(t)
	r.setPassword(t, uidA, "password of alice")
	r.setPassword(t, uidB, "password of bob")
	r.setPassword(t, 0, "password of root")
	var codes []int
	for i := range service.MaxLinkFails + 5 {
		codes = append(codes, do(t, r.browser(), "GET", fmt.Sprintf("%s/login/link?t=bogus%d", r.srv.URL, i), nil).code)
	}
	checkLinkLimit(t, "unknown link", codes)
	r.signIn(t, uidA)
	r.signIn(t, uidB)
	if a, _ := r.passwordSignIn(t, "root", "password of root"); a.code != http.StatusSeeOther {
		t.Fatalf("root's password after a link flood: %d", a.code)
	}

	for i := range service.MaxAccountAddrFails {
		if a, _ := r.passwordSignIn(t, alice, fmt.Sprint("wrong ", i)); a.code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d for A: %d", i, a.code)
		}
	}
	if a, _ := r.passwordSignIn(t, alice, "password of alice"); a.code != http.StatusTooManyRequests {
		t.Errorf("A's password after a flood against A: %d, want 429", a.code)
	}
	if a, _ := r.passwordSignIn(t, bob, "password of bob"); a.code != http.StatusSeeOther {
		t.Errorf("B's password after a flood against A: %d", a.code)
	}
	r.signIn(t, uidA)
	// That the counters hold A's key alone is service's
	// TestConsoleSignInNoLockout.
}

// TestNewPasswordLiftsLockout: an account locked by wrong passwords
// signs in with the new password its owner then sets (its failures were
// against the old one); names no user has are told "wrong user or
// password" even once their shared counter is full, never "locked".
func TestNewPasswordLiftsLockout(t *testing.T) {
	r := newRig(t)
	r.setPassword(t, uidA, "password of alice")
	for i := range service.MaxAccountAddrFails {
		r.passwordSignIn(t, alice, fmt.Sprint("wrong ", i))
	}
	if a, _ := r.passwordSignIn(t, alice, "password of alice"); a.code != http.StatusTooManyRequests {
		t.Fatalf("A's password after a flood against A: %d, want 429", a.code)
	}
	r.setPassword(t, uidA, "new password of alice")
	if a, _ := r.passwordSignIn(t, alice, "new password of alice"); a.code != http.StatusSeeOther {
		t.Errorf("A's new password after the flood: %d, want signed in", a.code)
	}
	for i := range service.MaxAccountFails + 2 {
		a, _ := r.passwordSignIn(t, fmt.Sprintf("nosuchuser%d", i), "x")
		if a.code != http.StatusUnauthorized || !strings.Contains(a.body, "Wrong user or password") {
			t.Fatalf("unknown name %d: %d %.200q; want 401 saying wrong user or password", i, a.code, a.body)
		}
	}
}

// TestSignInBusy: while every password hasher is busy, a sign-in is
// answered at once with 503 and a Retry-After, and does not count as a
// failure.
func TestSignInBusy(t *testing.T) {
	r := newRig(t)
	r.setPassword(t, uidA, "password of alice")
	// Keep both hashers busy until a sign-in found them so.
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range credential.PasswordHashers {
		wg.Go(func() {
			for !stop.Load() {
				credential.CheckPassword("", "x")
			}
		})
	}
	var busy answer
	for range 50 {
		a, _ := r.passwordSignIn(t, alice, "a wrong password")
		if a.code == http.StatusServiceUnavailable {
			busy = a
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	if busy.code != http.StatusServiceUnavailable {
		t.Fatal("no sign-in was refused while every hasher was busy")
	}
	if n, err := strconv.Atoi(busy.header.Get("Retry-After")); err != nil || n < 1 {
		t.Errorf("Retry-After %q", busy.header.Get("Retry-After"))
	}
	// Busy answers are not failures: A still has attempts left.
	if a, _ := r.passwordSignIn(t, alice, "password of alice"); a.code != http.StatusSeeOther {
		t.Errorf("A's password after busy answers: %d", a.code)
	}
}

// TestAccountOfGoneUser: when A's uid is given to another user (or to no
// one), A's session, password and unused link sign no one in, and the
// account is deleted; the uid's new user starts afresh.
func TestAccountOfGoneUser(t *testing.T) {
	for _, next := range []string{"carol", ""} {
		t.Run("uid now "+cmp.Or(next, "no one's"), func(t *testing.T) {
			r := newRig(t)
			r.setPassword(t, uidA, "password of alice")
			session, _ := r.signIn(t, uidA)
			link, err := r.as(t, uidA).CreateLoginLink(context.Background(), &opusv1.CreateLoginLinkRequest{})
			if err != nil {
				t.Fatal(err)
			}
			r.users.set(uidA, next)

			if r.signedIn(t, session) {
				t.Error("the old user's session still signs in")
			}
			if a, _ := r.passwordSignIn(t, alice, "password of alice"); a.code == http.StatusSeeOther {
				t.Error("the old password signs in")
			}
			if a := do(t, r.browser(), "GET", link.GetUrl(), nil); a.code == http.StatusSeeOther {
				t.Errorf("the old user's login link signs in: %d", a.code)
			}
			err = r.st.View(context.Background(), func(tx *store.Tx) error { _, err := tx.ConsoleAccount(uidA); return err })
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the old user's account: %v, want deleted", err)
			}
			if next != "" {
				c, _ := r.signIn(t, uidA)
				if home := do(t, c, "GET", r.srv.URL+"/", nil); home.code != http.StatusOK {
					t.Errorf("the new user's first sign-in: %d", home.code)
				}
				r.setPassword(t, uidA, "password of carol")
				if a, _ := r.passwordSignIn(t, alice, "password of carol"); a.code != http.StatusSeeOther {
					t.Errorf("the new user's password: %d", a.code)
				}
			} else if _, err := r.as(t, uidA).CreateLoginLink(context.Background(), &opusv1.CreateLoginLinkRequest{}); err == nil {
				t.Error("a uid without a user got a login link")
			}
		})
	}
}

// TestPasswordChangeEndsSessions: a new password ends every session of
// the account (not another's).
func TestPasswordChangeEndsSessions(t *testing.T) {
	r := newRig(t)
	r.setPassword(t, uidA, "first password of alice")
	a1, _ := r.signIn(t, uidA)
	_, a2 := r.passwordSignIn(t, alice, "first password of alice")
	b, _ := r.signIn(t, uidB)
	r.setPassword(t, uidA, "second password of alice")
	if r.signedIn(t, a1) || r.signedIn(t, a2) {
		t.Error("a session survived its password's change")
	}
	if !r.signedIn(t, b) {
		t.Error("B's session ended with A's password change")
	}
}

// TestDeleteAccountEndsSessions: an admin's DeleteConsoleAccount ends the
// account's sessions and forgets its password.
func TestDeleteAccountEndsSessions(t *testing.T) {
	r := newRig(t)
	r.setPassword(t, uidA, "password of alice")
	a, _ := r.signIn(t, uidA)
	if _, err := r.as(t, 0).DeleteConsoleAccount(context.Background(), &opusv1.DeleteConsoleAccountRequest{Uid: uidA}); err != nil {
		t.Fatal(err)
	}
	if r.signedIn(t, a) {
		t.Error("a deleted account's session still signs in")
	}
	if x, _ := r.passwordSignIn(t, alice, "password of alice"); x.code != http.StatusUnauthorized {
		t.Errorf("a deleted account's password: %d", x.code)
	}
}

// TestCrossOriginRefused: a POST a browser marks as cross-origin is
// refused even with the session cookie and its CSRF token; sign-in too.
func TestCrossOriginRefused(t *testing.T) {
	r := newRig(t)
	a, _ := r.signIn(t, uidA)
	csrf := csrfOf(t, do(t, a, "GET", r.srv.URL+"/", nil).body)
	post := func(c *http.Client, path string, form url.Values, hdr map[string]string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", r.srv.URL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, hdr := range []map[string]string{
		{"Origin": "https://evil.example"},
		{"Origin": "null"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site", "Origin": r.srv.URL},
	} {
		if code := post(a, "/new", url.Values{"csrf": {csrf}, "name": {"blog"}}, hdr); code != http.StatusForbidden {
			t.Errorf("create posted with %v: %d, want 403", hdr, code)
		}
		if code := post(a, "/logout", url.Values{"csrf": {csrf}}, hdr); code != http.StatusForbidden {
			t.Errorf("sign-out posted with %v: %d, want 403", hdr, code)
		}
	}
	if ps := projectNames(t, r.st); len(ps) != 0 || !r.signedIn(t, a) {
		t.Fatalf("refused cross-origin forms: projects %v, still signed in %v", ps, r.signedIn(t, a))
	}
	b := r.browser()
	tok := csrfOf(t, do(t, b, "GET", r.srv.URL+"/login", nil).body)
	if code := post(b, "/login", url.Values{"csrf": {tok}, "user": {alice}, "password": {"x"}}, map[string]string{"Sec-Fetch-Site": "cross-site"}); code != http.StatusForbidden {
		t.Errorf("sign-in posted cross-site: %d, want 403", code)
	}
	if code := post(a, "/logout", url.Values{"csrf": {csrf}}, map[string]string{"Sec-Fetch-Site": "same-origin"}); code != http.StatusSeeOther {
		t.Errorf("same-origin sign-out: %d", code)
	}
}

// TestSignInAddressIsTheConnection: the address sign-in failures count
// against is the connection's, never one a request names: unknown links
// sent each with another X-Forwarded-For, X-Real-IP and Forwarded are
// still one address's, refused once it has MaxLinkFails of them.
func TestSignInAddressIsTheConnection(t *testing.T) {
	r := newRig(t)
	c := r.browser()
	var codes []int
	for i := range service.MaxLinkFails + 2 {
		req, err := http.NewRequest("GET", fmt.Sprintf("%s/login/link?t=bogus%d", r.srv.URL, i), nil)
		if err != nil {
			t.Fatal(err)
		}
		forged := fmt.Sprintf("198.51.100.%d", i+1)
		req.Header.Set("X-Forwarded-For", forged)
		req.Header.Set("X-Real-IP", forged)
		req.Header.Set("Forwarded", "for="+forged)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		codes = append(codes, res.StatusCode)
	}
	checkLinkLimit(t, "unknown link with a forged client address", codes)
}

// checkLinkLimit: unknown links from one address answer 401 until the
// per-address limit, then 429.
func checkLinkLimit(t *testing.T, what string, codes []int) {
	t.Helper()
	for i, code := range codes {
		want := http.StatusUnauthorized
		if i >= service.MaxLinkFails-1 {
			want = http.StatusTooManyRequests
		}
		if code != want {
			t.Fatalf("%s %d: %d, want %d (all: %v)", what, i, code, want, codes)
		}
	}
}
