package names

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/opus-hosting/opus/internal/names/namestest"
)

func TestValidateProject(t *testing.T) {
	for _, c := range namestest.Projects {
		err := ValidateProject(c.Name)
		switch {
		case c.OK() && err != nil:
			t.Errorf("ValidateProject(%q) = %v, want nil", c.Name, err)
		case !c.OK() && (err == nil || !strings.Contains(err.Error(), c.Why)):
			t.Errorf("ValidateProject(%q) = %v, want error containing %q", c.Name, err, c.Why)
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
		if !utf8.ValidString(s) || len(s) == 0 || len(s) > MaxProject || len(User(strings.Repeat("p", MaxUserPrefix-1)+"-", s)) > 32 {
			t.Fatalf("accepted %q", s)
		}
		if strings.ContainsAny(s, "/.\x00\n -_") || s[0] < 'a' || s[0] > 'z' {
			t.Fatalf("accepted unsafe %q", s)
		}
	})
}

func TestValidateUserPrefix(t *testing.T) {
	for _, tt := range []struct {
		in, wantErr string
	}{
		{"opus-", ""},
		{"tk3j9a-", ""},
		{"abcdefg-", ""},
		{"abcdefgh-", "2 to 8"},
		{"-", "2 to 8"},
		{"opus", "end with '-'"},
		{"9opus-", "start with a lowercase letter"},
		{"Opus-", "start with a lowercase letter"},
		{"op_us-", "contains '_'"},
		{"op:s-", "contains ':'"},
	} {
		err := ValidateUserPrefix(tt.in)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("ValidateUserPrefix(%q) = %v, want %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestProjectOfUser(t *testing.T) {
	for _, tt := range []struct {
		prefix, user, want string
		ok                 bool
	}{
		{"opus-", "opus-blog", "blog", true},
		{"opus-", "opus-", "", false},
		{"opus-", "opus-Blog", "", false},
		{"opus-", "opus-admin", "", false}, // reserved: no project can have it
		{"tabcde-", "opus-blog", "", false},
		{"tabcde-", "tabcde-blog", "blog", true},
	} {
		got, ok := ProjectOfUser(tt.prefix, tt.user)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ProjectOfUser(%q, %q) = %q, %v; want %q, %v", tt.prefix, tt.user, got, ok, tt.want, tt.ok)
		}
	}
}

func TestValidateHostName(t *testing.T) {
	for _, c := range namestest.Hosts {
		if err := ValidateHostName(c.Name); (err == nil) != c.OK {
			t.Errorf("ValidateHostName(%.40q) = %v, want ok=%v", c.Name, err, c.OK)
		}
	}
}

// FuzzValidateHostName: whatever it accepts can go into an Apache
// directive line safely.
func FuzzValidateHostName(f *testing.F) {
	for _, c := range namestest.Hosts {
		f.Add(c.Name)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateHostName(s) != nil {
			return
		}
		if s == "" || len(s) > MaxHostName || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-.") != "" ||
			strings.Contains(s, "..") || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.HasPrefix(s, "-") {
			t.Fatalf("host %q accepted", s)
		}
	})
}

// TestProjectPatternIsTheRule: the console's hint (ProjectPattern and
// MaxProject) accepts exactly what ValidateProject accepts, keywords and
// reserved names aside (the hint cannot list them; the server says).
func TestProjectPatternIsTheRule(t *testing.T) {
	re := regexp.MustCompile("^(?:" + ProjectPattern + ")$")
	for _, c := range namestest.Projects {
		if strings.Contains(c.Why, "keyword") || strings.Contains(c.Why, "reserved") {
			continue
		}
		if hint := re.MatchString(c.Name) && len(c.Name) <= MaxProject; hint != c.OK() {
			t.Errorf("%q: the hint says %v, the rule %v", c.Name, hint, c.OK())
		}
	}
}
