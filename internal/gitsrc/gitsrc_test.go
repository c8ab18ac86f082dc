package gitsrc_test

import (
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/gitsrc"
	"github.com/opus-hosting/opus/internal/gitsrc/gitsrctest"
)

func TestCheckURL(t *testing.T) {
	for _, c := range gitsrctest.URLs {
		local, err := gitsrc.CheckURL(c.URL)
		if (err == nil) != c.OK || err == nil && local != c.Local {
			t.Errorf("CheckURL(%.60q) = %v, %v; want ok=%v local=%v", c.URL, local, err, c.OK, c.Local)
		}
	}
}

func TestCheckRef(t *testing.T) {
	for _, c := range gitsrctest.Refs {
		if err := gitsrc.CheckRef(c.Ref); (err == nil) != c.OK {
			t.Errorf("CheckRef(%.60q) = %v, want ok=%v", c.Ref, err, c.OK)
		}
	}
}

func FuzzCheckURL(f *testing.F) {
	for _, c := range gitsrctest.URLs {
		f.Add(c.URL)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		local, err := gitsrc.CheckURL(raw)
		if err != nil {
			return
		}
		if len(raw) == 0 || raw[0] == '-' || len(raw) > gitsrc.MaxURL {
			t.Fatalf("%q allowed", raw)
		}
		if local != (raw[0] == '/' || len(raw) > 7 && strings.EqualFold(raw[:7], "file://")) {
			t.Fatalf("%q: local=%v", raw, local)
		}
	})
}

func FuzzCheckRef(f *testing.F) {
	for _, c := range gitsrctest.Refs {
		f.Add(c.Ref)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if gitsrc.CheckRef(s) != nil {
			return
		}
		if strings.HasPrefix(s, "-") || strings.Contains(s, "..") || strings.ContainsAny(s, " \t\n~^:?*[\\") || len(s) > gitsrc.MaxRef {
			t.Fatalf("ref %q accepted", s)
		}
	})
}

// TestForms: Forms lists exactly what CheckURL accepts (opusctl's help is
// made from it): each form is accepted, local exactly when admin-only, and
// of the schemes people try, those CheckURL accepts are the ones listed.
func TestForms(t *testing.T) {
	listed := map[string]bool{}
	for _, f := range gitsrc.Forms {
		listed[f.Scheme] = true
		u := gitsrctest.Example(f.Pattern)
		local, err := gitsrc.CheckURL(u)
		if err != nil || local != f.Local || strings.ContainsAny(u, "[]") {
			t.Errorf("form %q (%q): CheckURL = %v, %v; want accepted, local=%v", f.Pattern, u, local, err, f.Local)
		}
		if f.Scheme != "" && !strings.HasPrefix(f.Pattern, f.Scheme+"://") {
			t.Errorf("form %q does not start with its scheme %q", f.Pattern, f.Scheme)
		}
	}
	for _, s := range gitsrctest.Schemes {
		_, err := gitsrc.CheckURL(gitsrctest.SchemeURL(s))
		if (err == nil) != listed[s] {
			t.Errorf("scheme %q: CheckURL(%q) = %v, but listed in Forms = %v", s, gitsrctest.SchemeURL(s), err, listed[s])
		}
	}
	// Every accepted case of the shared table has a form.
	for _, c := range gitsrctest.URLs {
		if !c.OK {
			continue
		}
		scheme := ""
		if i := strings.Index(c.URL, "://"); i > 0 {
			scheme = strings.ToLower(c.URL[:i])
		}
		found := false
		for _, f := range gitsrc.Forms {
			found = found || f.Scheme == scheme && f.Local == c.Local
		}
		if !found {
			t.Errorf("accepted %q has no form in Forms", c.URL)
		}
	}
	if got := gitsrc.OrList(true); strings.Count(got, ",")+2 != len(gitsrc.Forms) || !strings.Contains(got, " or ") {
		t.Errorf("OrList(true) = %q; want all %d forms", got, len(gitsrc.Forms))
	}
}

func TestDefaultAppName(t *testing.T) {
	for _, c := range []struct{ loc, want string }{
		{"https://git.example/team/shop.git", "shop"},
		{"https://git.example/team/shop/", "shop"},
		{"https://git.example/shop", "shop"},
		{"https://git.example", ""},
		{"https://git.example/", ""},
		{"ssh://git@git.example:2222/srv/polls.git", "polls"},
		{"git@git.example:shop.git", "shop"},
		{"git.example:team/polls", "polls"},
		{"file:///srv/git/blog.git", "blog"},
		{"/srv/git/blog.git", "blog"},
		{"/srv/apps/polls/", "polls"},
		{"./polls", "polls"},
		{"/", ""},
		{".", ""},
		{"..", ""},
		{"", ""},
	} {
		if got := gitsrc.DefaultAppName(c.loc); got != c.want {
			t.Errorf("gitsrc.DefaultAppName(%q) = %q, want %q", c.loc, got, c.want)
		}
	}
}

func FuzzDefaultAppName(f *testing.F) {
	for _, s := range []string{"https://h/x/shop.git", "git@h:shop.git", "/srv/a", "h:", "a://", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, loc string) {
		name := gitsrc.DefaultAppName(loc)
		if strings.Contains(name, "/") || name == "." || name == ".." {
			t.Fatalf("gitsrc.DefaultAppName(%q) = %q: not one path element", loc, name)
		}
		if name != "" && !strings.Contains(loc, name) {
			t.Fatalf("gitsrc.DefaultAppName(%q) = %q: not taken from the location", loc, name)
		}
	})
}
