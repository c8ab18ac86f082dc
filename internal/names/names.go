// Package names holds the rules for project names that both daemons apply.
// opusd checks a name before it records a project; opus-privd checks it again,
// on its own, before it derives a path or a user name from it. A valid name is
// at once a DNS label (it becomes NAME<suffix>), part of a Linux user name
// ("opus-NAME", at most 32 bytes) and safe as a path element.
package names

import (
	"fmt"
	"strings"

	"github.com/opus-hosting/opus/internal/excerpt"
)

// MaxProject is the longest project name: a user prefix of at most
// MaxUserPrefix bytes plus the name must fit in the 32 bytes useradd allows.
const MaxProject = 24

// DefaultUserPrefix starts the name of every Linux user Opus creates,
// unless the host configuration names another (user_prefix).
const DefaultUserPrefix = "opus-"

// MaxUserPrefix is the longest user prefix.
const MaxUserPrefix = 32 - MaxProject

// reserved are names a project may not take because they would shadow a
// Python module the rendered project needs, or confuse a reader of the host
// (a user called opus-root).
var reserved = map[string]bool{
	"django": true, "os": true, "sys": true, "site": true, "test": true,
	"tests": true, "opus": true, "opusd": true, "privd": true, "root": true,
	"admin": true, "static": true, "media": true, "manage": true,
	"wsgi": true, "settings": true, "urls": true, "apache": true,
	"apache2": true, "www": true, "json": true, "re": true, "io": true,
	"time": true, "string": true, "types": true, "code": true, "data": true,
	"secrets": true, "logging": true, "email": true, "http": true,
	"html": true, "random": true, "socket": true, "select": true,
	"signal": true, "abc": true, "ast": true, "copy": true, "math": true,
	"pathlib": true, "typing": true, "collections": true, "functools": true,
}

// keywords are Python's keywords and soft keywords.
var keywords = map[string]bool{
	"false": true, "none": true, "true": true, "and": true, "as": true,
	"assert": true, "async": true, "await": true, "break": true,
	"class": true, "continue": true, "def": true, "del": true, "elif": true,
	"else": true, "except": true, "finally": true, "for": true,
	"from": true, "global": true, "if": true, "import": true, "in": true,
	"is": true, "lambda": true, "nonlocal": true, "not": true, "or": true,
	"pass": true, "raise": true, "return": true, "try": true,
	"while": true, "with": true, "yield": true, "match": true,
	"case": true, "type": true,
}

// IsPythonKeyword reports whether s is a Python keyword (in lower case, as
// names here are).
func IsPythonKeyword(s string) bool { return keywords[strings.ToLower(s)] }

// ProjectPattern is the charset of a project name as an HTML form's
// pattern (and a regular expression): the console's hint is this rule's,
// with MaxProject for its length. ValidateProject also refuses keywords
// and reserved names.
const ProjectPattern = "[a-z][a-z0-9]*"

// ValidateProject says why name is not a valid project name, or returns nil.
// The message names the rule, so it can go to the user as it is.
func ValidateProject(name string) error {
	if err := checkLength("project name", name, MaxProject, fmt.Sprintf("1 to %d lowercase letters and digits, starting with a letter", MaxProject)); err != nil {
		return err
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9':
			if i == 0 {
				return fmt.Errorf("project name %q starts with a digit; it must start with a lowercase letter", name)
			}
		default:
			return fmt.Errorf("project name %q contains %q; only lowercase letters a-z and digits 0-9 are allowed", excerpt.Short(name), rune(c))
		}
	}
	if keywords[name] {
		return fmt.Errorf("project name %q is a Python keyword; choose another name", name)
	}
	if reserved[name] {
		return fmt.Errorf("project name %q is reserved; choose another name", name)
	}
	return nil
}

// checkLength says why a name (what: "project name") is empty or longer
// than max characters; use says what is allowed.
func checkLength(what, name string, max int, use string) error {
	if name == "" {
		return fmt.Errorf("%s is empty; use %s", what, use)
	}
	if len(name) > max {
		return fmt.Errorf("%s %q is %d characters long; at most %d are allowed", what, excerpt.Short(name), len(name), max)
	}
	return nil
}

// User returns the Linux user name of a project under prefix. It does not
// validate.
func User(prefix, project string) string { return prefix + project }

// Marker is the GECOS field Opus writes for a project's user and the one
// proof that Opus made it: privd touches no user without it. It contains
// no comma or colon, so it survives /etc/passwd round trips unchanged.
func Marker(project string) string { return "Opus project " + project }

// ValidateUserPrefix says why p cannot start project user names, or
// returns nil: 2 to MaxUserPrefix characters, a lowercase letter first,
// then lowercase letters, digits and '-', ending with '-' (so that the
// project name after it is unambiguous).
func ValidateUserPrefix(p string) error {
	if len(p) < 2 || len(p) > MaxUserPrefix {
		return fmt.Errorf("%q must be 2 to %d characters long, like %q", excerpt.Short(p), MaxUserPrefix, DefaultUserPrefix)
	}
	if p[0] < 'a' || p[0] > 'z' {
		return fmt.Errorf("%q must start with a lowercase letter", p)
	}
	for i := 1; i < len(p); i++ {
		if c := p[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%q contains %q; only a-z, 0-9 and '-' are allowed", p, rune(c))
		}
	}
	if p[len(p)-1] != '-' {
		return fmt.Errorf("%q must end with '-', like %q", p, DefaultUserPrefix)
	}
	return nil
}

// ProjectOfUser returns the project a user name under prefix belongs to,
// if the rest of the name is a valid project name.
func ProjectOfUser(prefix, user string) (string, bool) {
	p, ok := strings.CutPrefix(user, prefix)
	if !ok || ValidateProject(p) != nil {
		return "", false
	}
	return p, true
}

// Bounds of a host name.
const (
	MaxHostName = 253
	MaxLabel    = 63
)

// ValidateHostName says why h is not a host name Opus serves (an extra
// name of a project: ServerAlias, ALLOWED_HOSTS, certificate names), or
// returns nil: lowercase DNS labels of a-z, 0-9 and '-', no label empty or
// starting or ending with '-', at most 253 characters. Anything else
// (spaces, newlines, quotes, an Apache directive) is refused, never
// escaped. opusd's API and privd both check host names with it.
func ValidateHostName(h string) error {
	if h == "" {
		return fmt.Errorf("host name is empty")
	}
	if len(h) > MaxHostName {
		return fmt.Errorf("host name %q is %d characters long; at most %d are allowed", excerpt.Short(h), len(h), MaxHostName)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" {
			return fmt.Errorf("host name %q has an empty label", excerpt.Short(h))
		}
		if len(label) > MaxLabel {
			return fmt.Errorf("host name %q has a label longer than %d characters", excerpt.Short(h), MaxLabel)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host name %q has a label starting or ending with '-'", excerpt.Short(h))
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("host name %q contains %q; only lowercase a-z, 0-9, '-' and '.' are allowed", excerpt.Short(h), r)
			}
		}
	}
	return nil
}
