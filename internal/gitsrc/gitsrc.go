// Package gitsrc holds the rules for a git source both opusd's API and its
// fetcher apply: which URLs may be fetched and which refs named. One home,
// so that a request the API accepts is one the fetcher will fetch.
package gitsrc

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"strings"
	"unicode"

	"github.com/opus-hosting/opus/internal/excerpt"
)

// MaxURL and MaxRef bound a URL and a ref, in bytes.
const (
	MaxURL = 2048
	MaxRef = 256
)

// Form is one way of writing a git source that CheckURL accepts.
type Form struct {
	// Pattern shows the form, e.g. "https://HOST/PATH".
	Pattern string
	// Scheme is the URL scheme, or "" for the forms that have none.
	Scheme string
	// Local is a repository on this host, which opusd reads with its own
	// rights: only admins may name one (CheckURL reports it; the API
	// decides).
	Local bool
	// SSH is fetched over ssh: opusd needs an ssh key to do that (an
	// agent the host administrator gives it), and without one such a
	// source is refused before anything is made.
	SSH bool
}

// Forms are all the forms of git source CheckURL accepts, remote ones
// first; opusctl's help is made from them, so it lists exactly these.
// Plain http:// is refused (anyone on the way could change the code).
var Forms = []Form{
	{Pattern: "https://HOST/PATH", Scheme: "https"},
	{Pattern: "ssh://[USER@]HOST/PATH", Scheme: "ssh", SSH: true},
	{Pattern: "git://HOST/PATH", Scheme: "git"},
	{Pattern: "[USER@]HOST:PATH", SSH: true},
	{Pattern: "/ABSOLUTE/PATH", Local: true},
	{Pattern: "file:///ABSOLUTE/PATH", Scheme: "file", Local: true},
}

// allowed is what every refusal of a URL says is allowed.
var allowed = "use " + OrList(false)

// SSHForms lists the patterns of the Forms fetched over ssh, "a and b".
func SSHForms() string {
	var ps []string
	for _, f := range Forms {
		if f.SSH {
			ps = append(ps, f.Pattern)
		}
	}
	return strings.Join(ps, " and ")
}

// OrList lists the patterns of Forms, "a, b or c": the remote ones, and
// with local the admin-only ones too.
func OrList(local bool) string {
	var ps []string
	for _, f := range Forms {
		if !f.Local || local {
			ps = append(ps, f.Pattern)
		}
	}
	if len(ps) < 2 {
		return strings.Join(ps, "")
	}
	return strings.Join(ps[:len(ps)-1], ", ") + " or " + ps[len(ps)-1]
}

var (
	// helper is git's "<transport>::<address>" remote helper syntax
	// (ext:: runs a command).
	helper = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*::`)
	// scpLike is git's scp-like syntax, [user@]host:path, with a host
	// that does not start with '-'.
	scpLike = regexp.MustCompile(`^([A-Za-z0-9._-]+@)?[A-Za-z0-9][A-Za-z0-9.-]*:[^:]`)
)

// CheckURL says why raw may not be fetched, or returns nil. local
// reports a repository on this host (only admins may name one: the
// caller decides).
func CheckURL(raw string) (local bool, err error) {
	switch {
	case raw == "":
		return false, errors.New("git url is empty; " + allowed)
	case len(raw) > MaxURL:
		return false, fmt.Errorf("git url is longer than %d bytes", MaxURL)
	case helper.MatchString(raw):
		// Said before anything else: "ext::" runs a command, whatever
		// else is wrong with the URL.
		return false, fmt.Errorf("git url %q uses the remote transport helper %q, which is not allowed (it could run commands); %s",
			excerpt.Short(raw), strings.SplitN(raw, "::", 2)[0]+"::", allowed)
	case strings.HasPrefix(raw, "-"):
		return false, fmt.Errorf("git url %q starts with '-'", excerpt.Short(raw))
	}
	for _, r := range raw {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return false, fmt.Errorf("git url %q contains a space or control character", excerpt.Short(raw))
		}
	}
	if strings.HasPrefix(raw, "/") {
		return true, nil
	}
	if !strings.Contains(raw, "://") {
		if strings.HasPrefix(raw, "file:") {
			return false, fmt.Errorf("git url %q: a file URL must name an absolute path (file:///...)", excerpt.Short(raw))
		}
		if scpLike.MatchString(raw) && !strings.Contains(raw, "::") {
			return false, nil
		}
		return false, fmt.Errorf("git url %q is neither a URL, [user@]host:path, nor an absolute path; %s", excerpt.Short(raw), allowed)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return false, fmt.Errorf("git url %q: %v", excerpt.Short(raw), err)
	}
	switch u.Scheme { // url.Parse lowercases it
	case "https", "ssh", "git":
		if u.Hostname() == "" {
			return false, fmt.Errorf("git url %q has no host", excerpt.Short(raw))
		}
		if strings.HasPrefix(u.Hostname(), "-") {
			return false, fmt.Errorf("git url %q: its host starts with '-'", excerpt.Short(raw))
		}
		return false, nil
	case "file":
		if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			return false, fmt.Errorf("git url %q: a file URL must name an absolute path (file:///...)", excerpt.Short(raw))
		}
		return true, nil
	case "http":
		return false, fmt.Errorf("git url %q uses plain http, which anyone on the way could tamper with; use https://", excerpt.Short(raw))
	}
	return false, fmt.Errorf("git url %q: scheme %q is not one of https, ssh, git; %s", excerpt.Short(raw), u.Scheme, allowed)
}

// CheckRef says why ref may not name a branch, tag or commit, or returns
// nil; "" (the remote's HEAD) is allowed.
func CheckRef(ref string) error {
	if ref == "" {
		return nil
	}
	if len(ref) > MaxRef || strings.HasPrefix(ref, "-") || strings.Contains(ref, "..") {
		return fmt.Errorf("ref %q is not a branch, tag or commit name", excerpt.Short(ref))
	}
	for _, r := range ref {
		if unicode.IsControl(r) || unicode.IsSpace(r) || strings.ContainsRune("~^:?*[\\", r) {
			return fmt.Errorf("ref %q contains %q, which git does not allow in a ref", excerpt.Short(ref), r)
		}
	}
	return nil
}

// DefaultAppName is the app name a source location gives when none is
// named: its last path element without ".git" (https://h/x/shop.git,
// git@h:shop.git, /srv/shop and ./shop all give shop), or "" when nothing
// is left to name it by. opusctl and the web console both use it, so a
// source gives the same name wherever it is typed; the API checks the
// name (names.ValidateAppName) like any other.
func DefaultAppName(loc string) string {
	loc = strings.TrimRight(loc, "/")
	if i := strings.Index(loc, "://"); i > 0 {
		rest := loc[i+3:]
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			return "" // a host alone names no repository
		}
		loc = rest[j:]
	} else if scpLike.MatchString(loc) && !strings.HasPrefix(loc, ".") {
		loc = loc[strings.IndexByte(loc, ':')+1:]
	}
	name := strings.TrimSuffix(path.Base(loc), ".git")
	if name == "." || name == "/" || name == ".." {
		return ""
	}
	return name
}
