// Package excerpt shortens text a message quotes (a refused name, URL or
// log line) to a bound, cutting on a UTF-8 boundary: a message may end up
// in a protobuf string (an operation's message, say), which must be valid
// UTF-8, so a cut through a multi-byte character would make a message no
// answer can carry. Every such cut in the daemons is this one.
//
// Python (python.go) is the one reading of a failed Python program's
// output: its exception line first, then the traceback lines above it.
package excerpt

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// ShortLen is what Short keeps.
const ShortLen = 64

// Short is Cut(s, ShortLen): a quoted value in a refusal.
func Short(s string) string { return Cut(s, ShortLen) }

// Cut returns s when it is at most n bytes long, else its first n bytes or
// fewer, ending on a character boundary, followed by "...". Each byte of
// invalid UTF-8 in what is kept becomes '?', so the result is valid UTF-8
// and keeps the bound.
func Cut(s string, n int) string {
	if len(s) <= n && utf8.ValidString(s) {
		return s
	}
	if len(s) <= n {
		return toValid(s)
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return toValid(s[:i]) + "..."
}

func toValid(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 {
			b = append(b, '?')
			i++
			continue
		}
		b = append(b, s[i:i+size]...)
		i += size
	}
	return string(b)
}

// Line is s as one line of printable text, at most n bytes (then cut as
// Cut cuts): every run of white space (newlines, tabs, others) becomes
// one space, none at either end, and anything else that is not printable
// (a control character such as a terminal escape, a bidirectional
// override or another format character, invalid UTF-8) becomes "?", so
// that neither a terminal nor a page can be made to show something other
// than the text. It is how the daemons record text someone else chose and
// others are shown: a commit's subject, the name an upload came from.
// It stops reading s once it has more than n bytes to show.
func Line(s string, n int) string {
	var b strings.Builder
	space := false
	for i := 0; i < len(s) && b.Len() <= n; {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == utf8.RuneError && size <= 1:
			r = '?'
		case unicode.IsSpace(r):
			space = b.Len() > 0
			continue
		case !unicode.IsPrint(r):
			r = '?'
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return Cut(b.String(), n)
}
