package gitsrc_test

import (
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/gitsrc"
	"github.com/opus-hosting/opus/internal/gitsrc/gitsrctest"
)

func TestCheckURL(t *testing.T) {
	for _, c := range gitsrctest.URLs {
		local, err := gitsrc.CheckURL(c.URL)
		if (err == nil) != c.OK || err == nil && local != c.Local {
			t.Errorf("CheckURL(%.60q) = %v, %v; want ok=%v local=%v", c.URL, local, err, c.OK, c.Local)
		}
	}
}

func TestCheckRef(t *testing.T) {
	for _, c := range gitsrctest.Refs {
		if err := gitsrc.CheckRef(c.Ref); (err == nil) != c.OK {
			t.Errorf("CheckRef(%.60q) = %v, want ok=%v", c.Ref, err, c.OK)
		}
	}
}

func FuzzCheckURL(f *testing.F) {
	for _, c := range gitsrctest.URLs {
		f.Add(c.URL)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		local, err := gitsrc.CheckURL(raw)
		if err != nil {
			return
		}
		if len(raw) == 0 || raw[0] == '-' || len(raw) > gitsrc.MaxURL {
			t.Fatalf("%q allowed", raw)
		}
		if local != (raw[0] == '/' || len(raw) > 7 && strings.EqualFold(raw[:7], "file://")) {
			t.Fatalf("%q: local=%v", raw, local)
		}
	})
}

func FuzzCheckRef(f *testing.F) {
	for _, c := range gitsrctest.Refs {
		f.Add(c.Ref)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if gitsrc.CheckRef(s) != nil {
			return
		}
		if strings.HasPrefix(s, "-") || strings.Contains(s, "..") || strings.ContainsAny(s, " \t\n~^:?*[\\") || len(s) > gitsrc.MaxRef {
			t.Fatalf("ref %q accepted", s)
		}
	})
}
