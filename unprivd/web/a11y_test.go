package web

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// tagWithID is the start tag of the element whose id is id.
func tagWithID(body, id string) string {
	return regexp.MustCompile(`<[a-z]+\b[^>]*\sid="` + regexp.QuoteMeta(id) + `"[^>]*>`).FindString(body)
}

// TestRefusedFieldSaysWhy: after a refused form, the field it was
// refused for is marked invalid and described by the element that shows
// its error (a screen reader reads the error with the field), no other
// field is marked, and the page opens with focus where the keyboard user
// goes next: the field itself, or on the project page the message's link
// to it.
func TestRefusedFieldSaysWhy(t *testing.T) {
	r, a, csrf := formsRig(t)
	for _, tc := range []struct {
		name, path string
		form       url.Values
		field      string // id of the field refused
		errorID    string // id of the element that says why
		want       string // in that element's text
		focus      string // the start tag autofocus is on
	}{
		{"project name", "/new", url.Values{"name": {"Bad!"}, "empty": {"on"}}, "name", "error-name", "project name", `id="name"`},
		{"no apps", "/new", url.Values{"name": {"news"}}, "url0", "error-apps", "No apps yet", `id="url0"`},
		{"environment", "/projects/blog/settings", url.Values{"env": {"novalue"}}, "settings-env", "error-settings-env", "NAME=VALUE", `href="#settings-env"`},
		{"host names", "/projects/blog/settings", url.Values{"hosts": {"bad_host!"}}, "settings-hosts", "error-settings-hosts", "bad_host!", `href="#settings-hosts"`},
		{"add an app", "/projects/blog/apps", url.Values{"url": {"ext::sh -c x"}, "app": {"news"}}, "add-url", "error-add-url", "remote transport helper", `href="#add-url"`},
		{"update an app", "/projects/blog/apps/shop/update", url.Values{"url": {"ext::sh -c x"}}, "update-shop-url", "error-update-shop-url", "remote transport helper", `href="#update-shop-url"`},
		{"remove: wrong name", "/projects/blog/apps/shop/remove", url.Values{"confirm": {"polls"}}, "confirm", "alert", "Nothing was removed", `id="confirm"`},
		{"destroy: wrong name", "/projects/blog/destroy", url.Values{"confirm": {"blo"}}, "destroy-confirm", "error-destroy-confirm", "is not the project&#39;s name", `href="#destroy-confirm"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.form.Set("csrf", csrf)
			x := do(t, a, "POST", r.srv.URL+tc.path, tc.form)
			if x.code < 400 {
				t.Fatalf("POST %s %v: %d, want a refusal", tc.path, tc.form, x.code)
			}
			field := tagWithID(x.body, tc.field)
			if !strings.Contains(field, ` aria-invalid="true"`) || !strings.Contains(field, ` aria-describedby="`+tc.errorID+`"`) {
				t.Fatalf("the refused field is %q: want aria-invalid=\"true\" aria-describedby=%q\n%.5000s", field, tc.errorID, x.body)
			}
			says := regexp.MustCompile(`\sid="` + regexp.QuoteMeta(tc.errorID) + `"[^>]*>([^<]*)`).FindStringSubmatch(x.body)
			if says == nil || !strings.Contains(says[1], tc.want) {
				t.Fatalf("the element %q that describes the field says %q, want %q\n%.5000s", tc.errorID, says, tc.want, x.body)
			}
			if n := strings.Count(x.body, `aria-invalid="true"`); n != 1 {
				t.Fatalf("%d fields marked invalid, want 1\n%.5000s", n, x.body)
			}
			focus := regexp.MustCompile(`<[a-z]+\b[^>]*\sautofocus\b[^>]*>`).FindAllString(x.body, -1)
			if len(focus) != 1 || !strings.Contains(focus[0], tc.focus) {
				t.Fatalf("autofocus on %q, want one, on the element with %s", focus, tc.focus)
			}
		})
	}
	// Pages shown without a refusal mark nothing and focus nothing.
	for _, path := range []string{"/new", "/projects/blog", "/projects/blog/apps/shop/remove"} {
		x := do(t, a, "GET", r.srv.URL+path, nil)
		if x.code != http.StatusOK || strings.Contains(x.body, "aria-invalid") || strings.Contains(x.body, "autofocus") {
			t.Fatalf("GET %s: %d, marks a field invalid or focuses one:\n%.5000s", path, x.code, x.body)
		}
	}
}
