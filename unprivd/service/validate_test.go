package service

import (
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
