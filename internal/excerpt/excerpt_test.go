package excerpt

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"longer than ten", 10, "longer tha..."},
		{strings.Repeat("ä", 10), 5, "ää..."}, // ä is 2 bytes: the third would be cut
		{"a\xffb", 10, "a?b"},
		{"", 3, ""},
	} {
		if got := Cut(tc.in, tc.n); got != tc.want {
			t.Errorf("Cut(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

func FuzzCut(f *testing.F) {
	f.Add("hello", 3)
	f.Add(strings.Repeat("€", 30), 64)
	f.Add("a\xff\xfe", 2)
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n < 0 || n > 1<<16 {
			return
		}
		got := Cut(s, n)
		if !utf8.ValidString(got) {
			t.Fatalf("Cut(%q, %d) = %q: not UTF-8", s, n, got)
		}
		if kept := strings.TrimSuffix(got, "..."); len(s) > n && len(kept) > n {
			t.Fatalf("Cut(%q, %d) kept %d bytes", s, n, len(kept))
		}
	})
}

func TestLine(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		n        int
		want     string
	}{
		{"plain", "polls (from the web console)", 100, "polls (from the web console)"},
		{"white space runs, none at the ends", " \ta\t\t b\r\n  c\n", 100, "a b c"},
		{"terminal escape", "red \x1b[31malert\x1b[0m", 100, "red ?[31malert?[0m"},
		{"bell and NUL", "a\x07b\x00c", 100, "a?b?c"},
		{"bidi override and isolate", "evil\u202egnp.exe\u2066", 100, "evil?gnp.exe?"},
		{"zero width", "a\u200bb", 100, "a?b"},
		{"line separator is a space", "a\u2028b", 100, "a b"},
		{"invalid UTF-8", "caf\xe9 \xff", 100, "caf? ?"},
		{"non-ASCII kept", "Übersetzung 翻訳 ✓", 100, "Übersetzung 翻訳 ✓"},
		{"HTML is text", "<script>alert(1)</script>", 100, "<script>alert(1)</script>"},
		{"empty", "", 10, ""},
		{"long", strings.Repeat("x", 1000), 10, strings.Repeat("x", 10) + "..."},
		{"long multibyte cut on a boundary", strings.Repeat("é", 150), 5, "éé..."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Line(tc.in, tc.n); got != tc.want {
				t.Errorf("Line(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
			}
		})
	}
}

func FuzzLine(f *testing.F) {
	for _, s := range []string{"subject\n\nbody", "a\x1b[2Jb", "\u202e\u2066x", "caf\xe9", strings.Repeat("ü", 300), " \t\n"} {
		f.Add(s, 64)
	}
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n < 0 || n > 1<<16 {
			return
		}
		got := Line(s, n)
		if !utf8.ValidString(got) {
			t.Fatalf("Line(%q, %d) = %q: not UTF-8", s, n, got)
		}
		if len(strings.TrimSuffix(got, "...")) > n {
			t.Fatalf("Line(%q, %d) = %q: longer than %d bytes", s, n, got, n)
		}
		if got != strings.TrimSpace(got) || strings.Contains(got, "  ") {
			t.Fatalf("Line(%q, %d) = %q: white space not collapsed", s, n, got)
		}
		for _, r := range got {
			if r != ' ' && !unicode.IsPrint(r) {
				t.Fatalf("Line(%q, %d) = %q: holds %U", s, n, got, r)
			}
		}
	})
}
