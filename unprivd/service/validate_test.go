package service

import (
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/gitsrc/gitsrctest"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// TestGitRulesAgree: the API takes exactly the git URLs and refs of the
// one table every caller of package gitsrc is tested against (the fetcher
// is, in unprivd/source), so a source it accepts is one the fetcher will
// fetch; a local repository only from an admin. Before, the API took
// host:path, which the fetcher refused: the create was accepted and the
// deploy failed.
func TestGitRulesAgree(t *testing.T) {
	s := &Service{}
	admin, owner := caller{uid: 0, admin: true}, caller{uid: 1000}
	for _, c := range gitsrctest.URLs {
		src := &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: c.URL}}}
		_, err := s.source(admin, 1000, "apps[0].source", src)
		if (err == nil) != c.OK {
			t.Errorf("an admin's git url %.60q: %v, want ok=%v", c.URL, err, c.OK)
		}
		_, err = s.source(owner, 1000, "apps[0].source", src)
		if want := c.OK && !c.Local; (err == nil) != want {
			t.Errorf("an owner's git url %.60q: %v, want ok=%v", c.URL, err, want)
		}
	}
	for _, c := range gitsrctest.Refs {
		src := &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: "https://example.com/a.git", Ref: c.Ref}}}
		if _, err := s.source(owner, 1000, "apps[0].source", src); (err == nil) != c.OK {
			t.Errorf("ref %.60q: %v, want ok=%v", c.Ref, err, c.OK)
		}
	}
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
