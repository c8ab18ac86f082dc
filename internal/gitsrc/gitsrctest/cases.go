// Package gitsrctest is the table of git URLs and refs every caller of
// package gitsrc's rules is tested against (opusd's API, its fetcher,
// opusctl's early checks): one table, so they cannot disagree. For tests
// only; an import test keeps it out of the daemons.
package gitsrctest

import "strings"

// URL is a git URL and what gitsrc.CheckURL says of it.
type URL struct {
	URL   string
	OK    bool
	Local bool // a repository on this host (admins only)
}

// URLs are the cases, each allowed or refused for a reason.
var URLs = []URL{
	{"https://github.com/example/app.git", true, false},
	{"HTTPS://github.com/example/app.git", true, false},
	{"ssh://git@example.com/app.git", true, false},
	{"git://example.com/app.git", true, false},
	{"git@example.com:team/app.git", true, false},
	// scp-like without a user: git takes it, and so does the fetcher
	// (the API accepted it, the fetcher refused it: issue 16).
	{"example.com:team/app.git", true, false},
	{"/srv/git/app.git", true, true},
	{"file:///srv/git/app.git", true, true},
	{"", false, false},
	{"http://example.com/app.git", false, false},
	{"ext::sh -c touch% /tmp/pwned", false, false},
	{"fd::17", false, false},
	{"-uhttps://example.com/app.git", false, false},
	{"https://-oProxyCommand=x/app.git", false, false},
	{"ssh://-oProxyCommand=x/app.git", false, false},
	{"https:///app.git", false, false},
	{"ftp://example.com/app.git", false, false},
	{"file://host/srv/app.git", false, false},
	{"file:relative/app.git", false, false},
	{"relative/app.git", false, false},
	{"app.git", false, false},
	{"-host:path", false, false},
	{"host::path", false, false},
	{"https://example.com/app .git", false, false},
	{"https://example.com/app\n.git", false, false},
	{"https://example.com/" + string(make([]byte, 2100)), false, false},
}

// Ref is a git ref and whether gitsrc.CheckRef allows it.
type Ref struct {
	Ref string
	OK  bool
}

// Refs are the cases.
var Refs = []Ref{
	{"", true},
	{"main", true},
	{"v1.2.3", true},
	{"feature/x", true},
	{"0123abcd", true},
	{"-main", false},
	{"main..other", false},
	{"a b", false},
	{"a~1", false},
	{"a^", false},
	{"a:b", false},
	{"a?", false},
	{"a*", false},
	{"a[", false},
	{"a\\b", false},
	{"a\x00", false},
	{string(make([]byte, 300)), false},
}

// Schemes are URL schemes git knows or people try; gitsrc.Forms must name
// exactly those of them that gitsrc.CheckURL accepts.
var Schemes = []string{"https", "http", "ssh", "git", "file", "ftp", "ftps", "rsync", "git+ssh", "ssh+git", "ext", "fd"}

// SchemeURL is a URL with scheme that is right in every other way.
func SchemeURL(scheme string) string {
	if scheme == "file" {
		return "file:///srv/git/app.git"
	}
	return scheme + "://git@example.com/team/app.git"
}

// Example fills in the placeholders of a gitsrc.Form pattern.
func Example(pattern string) string {
	return strings.NewReplacer("[USER@]", "git@", "HOST", "example.com", "/ABSOLUTE/PATH", "/srv/git/app.git", "PATH", "team/app.git").Replace(pattern)
}
