package names

import (
	"regexp"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/names/namestest"
)

func TestValidateAppName(t *testing.T) {
	for _, c := range namestest.Apps {
		err := ValidateAppName(c.Name)
		switch {
		case c.OK() && err != nil:
			t.Errorf("ValidateAppName(%q) = %v", c.Name, err)
		case !c.OK() && (err == nil || !strings.Contains(err.Error(), c.Why)):
			t.Errorf("ValidateAppName(%q) = %v, want %q", c.Name, err, c.Why)
		}
	}
}

var appNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,63}$`)

func FuzzValidateAppName(f *testing.F) {
	for _, s := range []string{"blog", "Blog", "", "class", "a-b", "../x", "x\x00", "django", "__x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateAppName(name)
		if err == nil && !appNameRE.MatchString(name) {
			t.Fatalf("accepted %q", name)
		}
		if err != nil && err.Error() == "" {
			t.Fatal("empty message")
		}
	})
}
