package source

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

func TestCommitSubject(t *testing.T) {
	for _, tc := range []struct {
		name, msg, want string
	}{
		{"one line", "Add the news page\n", "Add the news page"},
		{"body dropped", "Fix login\n\nThe form lost its token.\n", "Fix login"},
		{"first paragraph joined, as git's %s", "Fix login\nand logout\n\nbody", "Fix login and logout"},
		{"leading newlines", "\n\nsubject\n", "subject"},
		{"blank line of spaces ends it", "a\n   \nb", "a"},
		{"white space runs", "a\t\t b\r\n  c", "a b c"},
		{"terminal escape", "red \x1b[31malert\x1b[0m", "red ?[31malert?[0m"},
		{"bell and NUL", "a\x07b\x00c", "a?b?c"},
		{"bidi override", "evil\u202egnp.exe", "evil?gnp.exe"},
		{"zero width", "a\u200bb", "a?b"},
		{"invalid UTF-8", "caf\xe9 \xff", "caf? ?"},
		{"non-ASCII kept", "Übersetzung 翻訳 ✓", "Übersetzung 翻訳 ✓"},
		{"no-break space is a space", "a\u00a0\u00a0b", "a b"},
		{"HTML is text", "<script>alert(1)</script>", "<script>alert(1)</script>"},
		{"empty", "", ""},
		{"only white space", " \n\t\n", ""},
		{"long", strings.Repeat("x", 1000), strings.Repeat("x", MaxSubject) + "..."},
		{"long multibyte cut on a boundary", strings.Repeat("é", 150), strings.Repeat("é", MaxSubject/2) + "..."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := CommitSubject(tc.msg); got != tc.want {
				t.Errorf("CommitSubject(%q) = %q, want %q", tc.msg, got, tc.want)
			}
		})
	}
}

func FuzzCommitSubject(f *testing.F) {
	for _, s := range []string{"subject\n\nbody", "a\x1b[2Jb", "\u202e\u2066x", "caf\xe9", strings.Repeat("ü", 300), " \t\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		got := CommitSubject(msg)
		if !utf8.ValidString(got) {
			t.Fatalf("CommitSubject(%q) = %q: not UTF-8", msg, got)
		}
		if len(strings.TrimSuffix(got, "...")) > MaxSubject {
			t.Fatalf("CommitSubject(%q) is %d bytes", msg, len(got))
		}
		if got != strings.TrimSpace(got) || strings.Contains(got, "  ") {
			t.Fatalf("CommitSubject(%q) = %q: white space not collapsed", msg, got)
		}
		for _, r := range got {
			if r != ' ' && !unicode.IsPrint(r) {
				t.Fatalf("CommitSubject(%q) = %q holds %U", msg, got, r)
			}
		}
	})
}

// TestGitFetchSubject: a fetch records the subject of an author's commit
// message that tries to break out of its line.
func TestGitFetchSubject(t *testing.T) {
	repo := testRepo(t)
	writeFiles(t, repo, map[string]string{"views.py": "VERSION = 3\n"})
	gitRun(t, repo, "add", ".")
	gitRun(t, repo, "commit", "-q", "--cleanup=verbatim", "-m", "Release \x1b]0;owned\x07three\nsecond line\n\nbody\x1b[2J")
	g := &Git{CacheDir: filepath.Join(t.TempDir(), "cache"), Timeout: time.Minute, MaxBytes: 10 << 20}
	c, err := g.Fetch(context.Background(), repo, "main", true, filepath.Join(t.TempDir(), "app"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "Release ?]0;owned?three second line"; c.Subject != want {
		t.Errorf("subject %q, want %q", c.Subject, want)
	}
}
