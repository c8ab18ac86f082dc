package web

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// signedIn reports whether c's session still opens the project list.
func (r *rig) signedIn(t *testing.T, c *http.Client) bool {
	t.Helper()
	a := do(t, c, "GET", r.srv.URL+"/", nil)
	if a.code != http.StatusOK && (a.code != http.StatusSeeOther || a.location != "/login") {
		t.Fatalf("project list: %d %q", a.code, a.location)
	}
	return a.code == http.StatusOK
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
	if code := post(b, "/login", url.Values{"csrf": {tok}, "user": {"61001"}, "password": {"x"}}, map[string]string{"Sec-Fetch-Site": "cross-site"}); code != http.StatusForbidden {
		t.Errorf("sign-in posted cross-site: %d, want 403", code)
	}
	if code := post(a, "/logout", url.Values{"csrf": {csrf}}, map[string]string{"Sec-Fetch-Site": "same-origin"}); code != http.StatusSeeOther {
		t.Errorf("same-origin sign-out: %d", code)
	}
}
