package names

import (
	"errors"
	"fmt"
	"strings"

	"github.com/opus-hosting/opus/internal/excerpt"
)

// MaxSuperuserEmail bounds a superuser's e-mail address in bytes (Django's
// EmailField max_length).
const MaxSuperuserEmail = 254

// atext are the characters besides ASCII letters and digits of an
// unquoted (dot-atom) local part, as Django's EmailValidator allows them.
const atext = "!#$%&'*+/=?^_`{}|~-"

// ValidateSuperuserEmail checks the e-mail address of the Django superuser
// Opus creates. Both daemons apply it (opusd when a project is asked for,
// privd before it runs createsuperuser), so that nothing is made for an
// address that would fail only after the migrations:
//   - it is required: `createsuperuser --noinput` refuses an empty one
//     (e-mail is a required field of Django's user model), although the
//     interactive prompt allows it;
//   - it is an address Django's EmailValidator accepts. This accepts a
//     subset of that: a dot-atom local part and an ASCII domain of labels
//     whose last is 2 to 63 characters, or localhost; no quoted local
//     part, address literal or non-ASCII domain.
func ValidateSuperuserEmail(e string) error {
	if e == "" {
		return errors.New("a superuser needs an e-mail address: Django's createsuperuser refuses to make one without")
	}
	bad := func(why string) error {
		return fmt.Errorf("%q is not an e-mail address Django accepts (%s); write it as name@example.com", excerpt.Short(e), why)
	}
	if len(e) > MaxSuperuserEmail {
		return bad(fmt.Sprintf("%d bytes long; at most %d", len(e), MaxSuperuserEmail))
	}
	at := strings.LastIndexByte(e, '@')
	if at < 0 {
		return bad("no @")
	}
	local, domain := e[:at], e[at+1:]
	for _, atom := range strings.Split(local, ".") {
		if atom == "" {
			return bad("the part before @ is empty, or has an empty part between dots")
		}
		for _, r := range atom {
			if !isAlnum(r) && !strings.ContainsRune(atext, r) {
				return bad(fmt.Sprintf("%q before @", r))
			}
		}
	}
	if domain == "localhost" {
		return nil
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return bad("the domain needs a dot, as in example.com")
	}
	for i, l := range labels {
		last := i == len(labels)-1
		if l == "" || len(l) > 63 || last && len(l) < 2 || l[0] == '-' || l[len(l)-1] == '-' {
			return bad(fmt.Sprintf("domain label %q", excerpt.Short(l)))
		}
		for _, r := range l {
			if !isAlnum(r) && r != '-' {
				return bad(fmt.Sprintf("%q in the domain", r))
			}
		}
	}
	return nil
}

// isAlnum reports whether r is an ASCII letter or digit.
func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}
