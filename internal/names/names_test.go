package names

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidateProject(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string // substring; "" means valid
	}{
		{"demo", ""},
		{"blog2", ""},
		{"a", ""},
		{strings.Repeat("a", MaxProject), ""},
		{"", "empty"},
		{strings.Repeat("a", 40), "at most 24"},
		{"Root", "contains 'R'"},
		{"a b", "contains ' '"},
		{"../x", "contains '.'"},
		{"my-blog", "contains '-'"},
		{"my_blog", "contains '_'"},
		{"2blog", "starts with a digit"},
		{"blög", "only lowercase"},
		{"x\ny", "contains '\\n'"},
		{"class", "Python keyword"},
		{"django", "reserved"},
		{"os", "reserved"},
		{"site", "reserved"},
		{"test", "reserved"},
	}
	for _, tt := range tests {
		err := ValidateProject(tt.name)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("ValidateProject(%q) = %v, want nil", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ValidateProject(%q) = %v, want error containing %q", tt.name, err, tt.wantErr)
		}
	}
}

// FuzzValidateProject: whatever is accepted is safe as a path element, a
// DNS label and part of a user name.
func FuzzValidateProject(f *testing.F) {
	for _, s := range []string{"demo", "../x", "a/b", "", ".", "..", "a\x00b", "A", "z9", "é", strings.Repeat("z", 30)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateProject(s) != nil {
			return
		}
		if !utf8.ValidString(s) || len(s) == 0 || len(s) > MaxProject || len(User(s)) > 32 {
			t.Fatalf("accepted %q", s)
		}
		if strings.ContainsAny(s, "/.\x00\n -_") || s[0] < 'a' || s[0] > 'z' {
			t.Fatalf("accepted unsafe %q", s)
		}
	})
}
