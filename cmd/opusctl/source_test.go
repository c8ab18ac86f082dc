package main

import (
	"errors"
	"io/fs"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/opus-hosting/opus/internal/gitsrc"
	"github.com/opus-hosting/opus/internal/gitsrc/gitsrctest"
	"github.com/opus-hosting/opus/internal/names/namestest"
)

// fakeFS is a stat over an in-memory tree rooted at "/".
func fakeFS() statFunc {
	m := fstest.MapFS{
		"srv/polls/__init__.py":     {Data: []byte{}},
		"srv/repo/.git/HEAD":        {Data: []byte("ref: refs/heads/main\n")},
		"srv/repo/app.py":           {Data: []byte{}},
		"srv/bare.git/HEAD":         {Data: []byte("ref: refs/heads/main\n")},
		"srv/bare.git/objects/x":    {Data: []byte{}},
		"srv/bare.git/refs/heads/m": {Data: []byte{}},
		"srv/at@home/__init__.py":   {Data: []byte{}},
		"srv/shop.git/.git/HEAD":    {Data: []byte("ref: refs/heads/main\n")},
		"srv/plain.git/__init__.py": {Data: []byte{}},
		"srv/.git/HEAD":             {Data: []byte{}},
		"srv/file.txt":              {Data: []byte("x")},
	}
	return func(name string) (fs.FileInfo, error) {
		if !strings.HasPrefix(name, "/") {
			return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
		}
		name = strings.TrimPrefix(name, "/")
		if name == "" {
			name = "."
		}
		return fs.Stat(m, name)
	}
}

func TestParseSource(t *testing.T) {
	tests := []struct {
		arg     string
		want    appSource
		wantErr string
	}{
		{arg: "/srv/polls", want: appSource{name: "polls", location: "/srv/polls"}},
		{arg: "blog=/srv/polls", want: appSource{name: "blog", location: "/srv/polls"}},
		{arg: "/srv/polls@v1", wantErr: "plain directory"},
		{arg: "/srv/repo", want: appSource{name: "repo", git: true, location: "/srv/repo"}},
		{arg: "/srv/repo@feature/x", want: appSource{name: "repo", git: true, location: "/srv/repo", ref: "feature/x"}},
		{arg: "/srv/bare.git@v2", want: appSource{name: "bare", git: true, location: "/srv/bare.git", ref: "v2"}},
		{arg: "/srv/bare.git", want: appSource{name: "bare", git: true, location: "/srv/bare.git"}},
		{arg: "/srv/shop.git", want: appSource{name: "shop", git: true, location: "/srv/shop.git"}},
		{arg: "/srv/plain.git", want: appSource{name: "plain", location: "/srv/plain.git"}},
		{arg: "/srv/.git", wantErr: "cannot tell an app name"},
		{arg: "x=/srv/.git", want: appSource{name: "x", location: "/srv/.git"}},
		{arg: "/srv/at@home", want: appSource{name: "at@home", location: "/srv/at@home"}},
		{arg: "/srv/missing", wantErr: "file does not exist"},
		{arg: "/srv/file.txt", wantErr: "not a directory"},
		{arg: "https://git.example.com/me/news.git", want: appSource{name: "news", git: true, location: "https://git.example.com/me/news.git"}},
		{arg: "https://git.example.com/me/news.git@v1.2", want: appSource{name: "news", git: true, location: "https://git.example.com/me/news.git", ref: "v1.2"}},
		{arg: "ssh://git@host:2222/srv/news@main", want: appSource{name: "news", git: true, location: "ssh://git@host:2222/srv/news", ref: "main"}},
		{arg: "git@github.com:me/news.git", want: appSource{name: "news", git: true, location: "git@github.com:me/news.git"}},
		{arg: "git@github.com:me/news.git@release/1", want: appSource{name: "news", git: true, location: "git@github.com:me/news.git", ref: "release/1"}},
		{arg: "host:news", want: appSource{name: "news", git: true, location: "host:news"}},
		{arg: "n2=file:///srv/repo@abc123", want: appSource{name: "n2", git: true, location: "file:///srv/repo", ref: "abc123"}},
		{arg: "https://git.example.com/x/shop.git", want: appSource{name: "shop", git: true, location: "https://git.example.com/x/shop.git"}},
		{arg: "https://git.example.com/x/shop.git/", want: appSource{name: "shop", git: true, location: "https://git.example.com/x/shop.git/"}},
		{arg: "git://git.example.com/shop.git@v1", want: appSource{name: "shop", git: true, location: "git://git.example.com/shop.git", ref: "v1"}},
		{arg: "file:///srv/shop.git", want: appSource{name: "shop", git: true, location: "file:///srv/shop.git"}},
		{arg: "https://example.com/", wantErr: "cannot tell an app name"},
		{arg: "https://example.com/.git", wantErr: "cannot tell an app name"},
		{arg: "https://example.com/news.git@", wantErr: "empty @REF"},
		{arg: "x=", wantErr: "is empty"},
		{arg: "", wantErr: "is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.arg, func(t *testing.T) {
			got, err := parseSource(tc.arg, fakeFS())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseSource(%q) = %+v, %v; want error %q", tc.arg, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseSource(%q) = %+v, %v; want %+v", tc.arg, got, err, tc.want)
			}
		})
	}
}

func TestLooksLikeSource(t *testing.T) {
	tests := []struct {
		arg  string
		want bool
	}{
		{"v1.2", false}, {"main", false}, {"feature/x", false}, {"0123abc", false},
		{"./polls", true}, {"/srv/polls", true}, {"../x", true}, {".", true},
		{"https://e.com/x.git", true}, {"git@h:x.git", true}, {"app=/srv/polls", true},
		{"/srv/polls@v1", true},
	}
	for _, tc := range tests {
		if got := looksLikeSource(tc.arg, fakeFS()); got != tc.want {
			t.Errorf("looksLikeSource(%q) = %v, want %v", tc.arg, got, tc.want)
		}
	}
}

// FuzzParseSource checks that any argument either parses into a complete
// source or is refused, and never panics.
func FuzzParseSource(f *testing.F) {
	for _, s := range []string{"/srv/polls", "a=/srv/repo@v1", "git@h:x.git@m", "https://h/x@y", "ssh://u@h:1/p", "@", "=@", "a=", "h:", "://", "/srv/at@home@x"} {
		f.Add(s)
	}
	stat := fakeFS()
	f.Fuzz(func(t *testing.T, arg string) {
		src, err := parseSource(arg, stat)
		if err != nil {
			return
		}
		if src.location == "" || src.name == "" {
			t.Fatalf("parseSource(%q) = %+v: empty location or name", arg, src)
		}
		if !src.git && src.ref != "" {
			t.Fatalf("parseSource(%q) = %+v: an upload with a ref", arg, src)
		}
		if !strings.Contains(arg, src.location) && src.git {
			t.Fatalf("parseSource(%q) = %+v: location not from the argument", arg, src)
		}
	})
}

// TestHelpListsAcceptedSources: the help of create and apps lists exactly
// the git sources opusd accepts (gitsrc, the one rule), the admin-only
// ones under "for admins only": every scheme the help shows is accepted,
// and every form gitsrc accepts is shown.
func TestHelpListsAcceptedSources(t *testing.T) {
	schemeRe := regexp.MustCompile(`\b([a-z][a-z0-9+.-]*)://`)
	for _, cmd := range []string{"create", "apps"} {
		help := runCLI(t, "", "", cmd, "--help")
		if help.code != 0 {
			t.Fatalf("%s --help: exit %d: %s", cmd, help.code, help.stderr)
		}
		text := help.stdout
		start := strings.Index(text, "SRC is where")
		admins := strings.Index(text, "for admins only")
		if start < 0 || admins < start {
			t.Fatalf("%s --help has no source rule with an admins-only part:\n%s", cmd, text)
		}
		end := strings.Index(text[start:], "Python package name.")
		if end < 0 {
			t.Fatalf("%s --help: the source rule does not end as sourceHelp does:\n%s", cmd, text)
		}
		// Only the source rule: other parts (the database's) show URLs too.
		for _, m := range schemeRe.FindAllStringSubmatch(text[start:start+end], -1) {
			if _, err := gitsrc.CheckURL(gitsrctest.SchemeURL(m[1])); err != nil {
				t.Errorf("%s --help shows %s://, which opusd refuses: %v", cmd, m[1], err)
			}
		}
		for _, f := range gitsrc.Forms {
			at := strings.Index(text, f.Pattern)
			if f.Pattern == "/ABSOLUTE/PATH" { // described in words
				at = strings.Index(text, "a local path to one")
			}
			switch {
			case at < start:
				t.Errorf("%s --help does not show the accepted form %q", cmd, f.Pattern)
			case f.Local != (at > admins):
				t.Errorf("%s --help shows %q on the wrong side of \"for admins only\" (admin-only: %v)", cmd, f.Pattern, f.Local)
			}
		}
	}
}

// TestProjectNamesAgree: create's early check refuses exactly the project
// names of the one table every caller of names.ValidateProject is tested
// against (opusd's API and privd's checks are, in their packages), as
// usage errors.
func TestProjectNamesAgree(t *testing.T) {
	for _, c := range namestest.Projects {
		err := checkProjectName(c.Name)
		if (err == nil) != c.OK() {
			t.Errorf("project %.40q: %v, want ok=%v", c.Name, err, c.OK())
		}
		var u usageError
		if err != nil && !errors.As(err, &u) {
			t.Errorf("project %.40q: %v is not a usage error (exit 2)", c.Name, err)
		}
	}
}
