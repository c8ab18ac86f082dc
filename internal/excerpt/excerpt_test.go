package excerpt

import (
	"strings"
	"testing"
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
