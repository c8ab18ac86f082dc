package names

import (
	"regexp"
	"strings"
	"testing"
)

func TestValidateAppName(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"blog", ""},
		{"_private", ""},
		{"shop2", ""},
		{"my_app", ""},
		{strings.Repeat("a", 64), ""},
		{"", "empty"},
		{strings.Repeat("a", 65), "at most 64"},
		{"2fast", "starts with a digit"},
		{"Blog", "uppercase letter 'B'"},
		{"my-app", `contains '-'`},
		{"blog.views", `contains '.'`},
		{"café", "contains"},
		{"class", "Python keyword"},
		{"match", "Python keyword"},
		{"__init__", "two underscores"},
		{"django", "would shadow"},
		{"opus_project", "would shadow"},
		{"os", "would shadow"},
		{"json", "would shadow"},
		{"tests", "would shadow"},
		{"wsgi", "would shadow"},
	} {
		err := ValidateAppName(tc.name)
		if tc.want == "" {
			if err != nil {
				t.Errorf("ValidateAppName(%q) = %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ValidateAppName(%q) = %v, want %q", tc.name, err, tc.want)
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
