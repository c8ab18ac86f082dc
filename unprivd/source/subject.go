package source

import (
	"strings"

	"github.com/opus-hosting/opus/internal/excerpt"
)

// MaxSubject bounds a commit subject as recorded, in bytes (before the
// "..." a cut adds).
const MaxSubject = 200

// maxSubjectScan bounds how much of a commit message is looked at: a
// subject longer than this is cut anyway (excerpt.Line looks at no more
// than MaxSubject of it, but the paragraph is found first).
const maxSubjectScan = 4 << 10

// CommitSubject is the subject of a git commit message as Opus records
// and shows it: what "git log --format=%s" shows (the first paragraph,
// its lines joined by spaces), made one line of printable text, at most
// MaxSubject bytes. A commit message is the repository author's text, so
// it is an attacker's: it is made one line of printable text by
// excerpt.Line (white space runs become one space; a terminal escape, a
// bidirectional override or invalid UTF-8 becomes "?"), so neither a
// terminal nor a page can be made to show something else than the text.
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
	return excerpt.Line(strings.Join(lines, "\n"), MaxSubject)
}
