// Package packtest is the table of upload digests every caller of
// pack.ValidateDigest is tested against (opusd's API, the upload store):
// one table, so they cannot disagree. For tests only; an import test
// keeps it out of the daemons.
package packtest

import "strings"

// Digest is an upload digest and why the rule refuses it: a part of the
// message, "" when it is valid.
type Digest struct {
	D   string
	Why string
}

// OK says whether the rule accepts the digest.
func (d Digest) OK() bool { return d.Why == "" }

// Digests are the cases.
var Digests = []Digest{
	{"sha256:" + strings.Repeat("ab", 32), ""},
	{"sha256:" + strings.Repeat("09", 32), ""},
	{"sha256:" + strings.Repeat("AB", 32), "lowercase hex"},
	{"sha256:" + strings.Repeat("ab", 31), "64 hex digits"},
	{"sha256:" + strings.Repeat("ab", 33), "64 hex digits"},
	{"sha512:" + strings.Repeat("ab", 32), "must start with"},
	{"sha256:../../../../etc/passwd" + strings.Repeat("a", 42), "lowercase hex"},
	{"sha256:" + strings.Repeat("ab", 31) + "a/", "lowercase hex"},
	{"", "must start with"},
}
