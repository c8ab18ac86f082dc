package service

import (
	"strings"
	"testing"
	"unicode"
)

func TestValidateGitURL(t *testing.T) {
	for _, tc := range []struct {
		url   string
		local bool
		ok    bool
	}{
		{"https://github.com/a/b.git", false, true},
		{"http://example.com/r", false, false},
		{"ssh://git@example.com/r.git", false, true},
		{"git://example.com/r.git", false, true},
		{"git@github.com:a/b.git", false, true},
		{"example.com:repo.git", false, true},
		{"/srv/git/blog", true, true},
		{"file:///srv/git/blog", true, true},
		{"", false, false},
		{"file://relative/x", false, false},
		{"relative/path", false, false},
		{"./blog", false, false},
		{"ext::sh -c touch% /tmp/pwned", false, false},
		{"ftp://example.com/r", false, false},
		{"https://", false, false},
		{"-uhttps://x", false, false},
		{"https://example.com/a b", false, false},
		{"https://example.com/\n", false, false},
		{"fd::17", false, false},
	} {
		local, err := validateGitURL(tc.url)
		if (err == nil) != tc.ok || (tc.ok && local != tc.local) {
			t.Errorf("validateGitURL(%q) = %v, %v; want ok=%v local=%v", tc.url, local, err, tc.ok, tc.local)
		}
	}
	for _, helper := range []string{"ext::sh -c touch% /tmp/pwned", "fd::17", "EXT::x"} {
		if _, err := validateGitURL(helper); err == nil || !strings.Contains(err.Error(), "transport helper") {
			t.Errorf("validateGitURL(%q) = %v; want a refusal naming the transport helper", helper, err)
		}
	}
}

func FuzzValidateGitURL(f *testing.F) {
	for _, s := range []string{"https://github.com/a/b.git", "git@h:p", "/srv/x", "file:///x", "ext::x", "-x", "a b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		local, err := validateGitURL(s)
		if err != nil {
			return
		}
		if local && !strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "file:///") {
			t.Fatalf("%q judged local", s)
		}
		if !local && (strings.HasPrefix(s, "/") || strings.HasPrefix(s, "file:")) {
			t.Fatalf("%q is a path but not judged local", s)
		}
		if strings.HasPrefix(s, "-") || (!local && strings.Contains(s, "::")) || strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			t.Fatalf("%q accepted", s)
		}
	})
}

func FuzzValidateRef(f *testing.F) {
	for _, s := range []string{"", "main", "v1.2", "refs/heads/x", "-x", "a..b", "a b", "HEAD~1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if validateRef(s) != nil {
			return
		}
		if strings.HasPrefix(s, "-") || strings.Contains(s, "..") || strings.ContainsAny(s, " \t\n~^:?*[\\") || len(s) > 256 {
			t.Fatalf("ref %q accepted", s)
		}
	})
}

func FuzzValidateDigest(f *testing.F) {
	for _, s := range []string{"sha256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64), "sha256:", "md5:x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if validateDigest(s) != nil {
			return
		}
		if len(s) != 71 || !strings.HasPrefix(s, "sha256:") || strings.Trim(s[7:], "0123456789abcdef") != "" {
			t.Fatalf("digest %q accepted", s)
		}
	})
}

func FuzzValidateAppNameLocal(f *testing.F) {
	for _, s := range []string{"blog", "my_app", "class", "1x", "Blog", "", "a-b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if validateAppNameLocal(s) != nil {
			return
		}
		if s == "" || s[0] >= '0' && s[0] <= '9' || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Fatalf("app name %q accepted", s)
		}
	})
}
