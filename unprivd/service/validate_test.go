package service

import (
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/gitsrc/gitsrctest"
	"github.com/opus-hosting/opus/internal/names/namestest"
	"github.com/opus-hosting/opus/internal/pack/packtest"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestGitRulesAgree: the API takes exactly the git URLs and refs of the
// one table every caller of package gitsrc is tested against (the fetcher
// is, in unprivd/source), so a source it accepts is one the fetcher will
// fetch; a local repository only from an admin. Before, the API took
// host:path, which the fetcher refused: the create was accepted and the
// deploy failed.
func TestGitRulesAgree(t *testing.T) {
	// The table is about what a URL says; whether opusd can fetch over
	// ssh is its environment's (TestSSHSourcesNeedAnAgent).
	t.Setenv("SSH_AUTH_SOCK", "/run/opus-test-agent.sock")
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

// TestNamesAgree: the API takes exactly the project and app names of the
// tables every caller of names.ValidateProject and ValidateAppName is
// tested against (privd's checks and opusctl's are, in their packages):
// as a project's name, as a request's project, and as an app's name in a
// new project's apps and in a request about one app.
func TestNamesAgree(t *testing.T) {
	s := &Service{}
	for _, c := range namestest.Projects {
		if err := validateProject("name", c.Name); (err == nil) != c.OK() {
			t.Errorf("project %.40q: %v, want ok=%v", c.Name, err, c.OK())
		}
		if err := validateProjectApp(c.Name, "blog"); (err == nil) != c.OK() {
			t.Errorf("request about project %.40q: %v, want ok=%v", c.Name, err, c.OK())
		}
	}
	for _, c := range namestest.Apps {
		if err := validateProjectApp("blog", c.Name); (err == nil) != c.OK() {
			t.Errorf("request about app %.40q: %v, want ok=%v", c.Name, err, c.OK())
		}
		src := &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: "https://git.example.com/x.git"}}}
		_, err := s.appSpec(caller{uid: 1000}, 1000, "apps[0]", &opusv1.AppSpec{Name: c.Name, Source: src})
		if (err == nil) != c.OK() {
			t.Errorf("new app %.40q: %v, want ok=%v", c.Name, err, c.OK())
		}
	}
}

// TestDigestsAgree: the API takes exactly the upload digests of the one
// table every caller of pack.ValidateDigest is tested against (the upload
// store is, in unprivd/source): a digest the rule refuses is refused as
// such; one it accepts is looked up (and, as nobody sent it, not found).
func TestDigestsAgree(t *testing.T) {
	s := &Service{}
	for _, c := range packtest.Digests {
		src := &opusv1.AppSource{Kind: &opusv1.AppSource_Upload{Upload: &opusv1.UploadedSource{Digest: c.D}}}
		_, err := s.appSpec(caller{uid: 1000}, 1000, "apps[0]", &opusv1.AppSpec{Name: "blog", Source: src})
		if err == nil {
			t.Fatalf("digest %.40q of no upload: accepted", c.D)
		}
		if looked := strings.Contains(err.Error(), "you have no upload"); looked != c.OK() {
			t.Errorf("digest %.40q: %v, want looked up=%v", c.D, err, c.OK())
		}
	}
}

// TestSSHSourcesNeedAnAgent: without an ssh agent opusd cannot fetch over
// ssh, so an ssh source (either form) is refused up front, saying so and
// what to use instead, while the same URLs pass with one.
func TestSSHSourcesNeedAnAgent(t *testing.T) {
	s := &Service{}
	owner := caller{uid: 1000}
	for _, url := range []string{"ssh://git@example.com/app.git", "git@example.com:team/app.git", "example.com:team/app.git"} {
		src := &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: url}}}
		t.Setenv("SSH_AUTH_SOCK", "")
		_, err := s.source(owner, 1000, "app.source", src)
		if msg := status.Convert(err).Message(); status.Code(err) != codes.InvalidArgument || !strings.Contains(msg, "ssh sources need an ssh key opusd can use, and opusd has none; use an https:// or git:// URL") {
			t.Errorf("%s without an agent: %v", url, err)
		}
		t.Setenv("SSH_AUTH_SOCK", "/run/opus-test-agent.sock")
		if _, err := s.source(owner, 1000, "app.source", src); err != nil {
			t.Errorf("%s with an agent: %v", url, err)
		}
	}
	https := &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: "https://example.com/app.git"}}}
	t.Setenv("SSH_AUTH_SOCK", "")
	if _, err := s.source(owner, 1000, "app.source", https); err != nil {
		t.Errorf("https without an agent: %v", err)
	}
}
