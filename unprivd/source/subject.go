package source

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/opus-hosting/opus/internal/excerpt"
)

// MaxSubject bounds a commit subject as recorded, in bytes (before the
// "..." a cut adds).
const MaxSubject = 200

// maxSubjectScan bounds how much of a commit message is looked at: a
// subject longer than this is cut anyway.
const maxSubjectScan = 4 << 10

// CommitSubject is the subject of a git commit message as Opus records
// and shows it: what "git log --format=%s" shows (the first paragraph,
// its lines joined by spaces), made one line of printable text, at most
// MaxSubject bytes. A commit message is the repository author's text, so
// it is an attacker's: every run of white space (newlines, tabs, others)
// becomes one space, and anything else that is not printable (control
// characters such as a terminal escape, bidirectional overrides, other
// format characters, invalid UTF-8) becomes "?", so neither a terminal
// nor a page can be made to show something else than the text.
func CommitSubject(msg string) string {
	if len(msg) > maxSubjectScan {
		msg = msg[:maxSubjectScan]
	}
	// The first paragraph: up to the first blank line. A line of only
	// spaces is blank for git too.
	lines := strings.Split(strings.TrimLeft(msg, "\r\n"), "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) == "" {
			lines = lines[:i]
			break
		}
	}
	para := strings.Join(lines, "\n")
	var b strings.Builder
	space := false
	for i := 0; i < len(para); {
		r, n := utf8.DecodeRuneInString(para[i:])
		i += n
		switch {
		case r == utf8.RuneError && n <= 1:
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
		if b.Len() > MaxSubject {
			break
		}
	}
	return excerpt.Cut(b.String(), MaxSubject)
}
