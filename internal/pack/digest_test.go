package pack

import (
	"strings"
	"testing"
)

func FuzzValidateDigest(f *testing.F) {
	for _, s := range []string{"sha256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64), "sha256:", "md5:x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateDigest(s) != nil {
			return
		}
		if len(s) != 71 || !strings.HasPrefix(s, "sha256:") || strings.Trim(s[7:], "0123456789abcdef") != "" {
			t.Fatalf("digest %q accepted", s)
		}
	})
}
