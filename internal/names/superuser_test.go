package names_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/names/namestest"
)

func TestValidateSuperuserEmail(t *testing.T) {
	for _, c := range namestest.Emails {
		if err := names.ValidateSuperuserEmail(c.Addr); (err == nil) != c.OK {
			t.Errorf("ValidateSuperuserEmail(%.40q) = %v, want ok=%v", c.Addr, err, c.OK)
		}
	}
	if err := names.ValidateSuperuserEmail(""); err == nil || !strings.Contains(err.Error(), "needs an e-mail address") {
		t.Errorf("empty address: %v; want it to say an address is needed", err)
	}
}

// TestSuperuserEmailDjangoAgrees: every address the rule takes, Django's
// own EmailValidator (the one createsuperuser applies) takes too, so no
// accepted address fails after the migrations. It runs the host's Django,
// so not under -short.
func TestSuperuserEmailDjangoAgrees(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs the host's Django (/usr/bin/python3), a process outside the test")
	}
	// Every accepted case, and one Django refuses (so a checker that
	// refuses nothing fails).
	var probes, want []string
	for _, c := range namestest.Emails {
		if c.OK {
			probes, want = append(probes, c.Addr), append(want, "ok")
		}
	}
	probes, want = append(probes, "a@b"), append(want, "refused")
	in, err := json.Marshal(probes)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The environment is checked before the test runs, by itself: once
	// Django is there, anything that goes wrong below fails the test.
	if out, err := exec.CommandContext(ctx, "/usr/bin/python3", "-c", "import django").CombinedOutput(); err != nil {
		t.Skipf("needs python3-django for /usr/bin/python3 (run `make deps` as root): %v %s", err, out)
	}
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "-c", `
import json, sys
from django.core.validators import validate_email
from django.conf import settings
settings.configure()
from django.core.exceptions import ValidationError
for a in json.load(sys.stdin):
    try:
        validate_email(a)
        print("ok")
    except ValidationError:
        print("refused")
`)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	got := strings.Fields(string(out))
	if len(got) != len(probes) {
		t.Fatalf("Django answered %q for %d addresses", got, len(probes))
	}
	for i, a := range probes {
		if got[i] != want[i] {
			t.Errorf("%.40q: Django says %s, want %s", a, got[i], want[i])
		}
	}
}

func FuzzValidateSuperuserEmail(f *testing.F) {
	for _, c := range namestest.Emails {
		f.Add(c.Addr)
	}
	f.Fuzz(func(t *testing.T, e string) {
		if names.ValidateSuperuserEmail(e) != nil {
			return
		}
		if len(e) > names.MaxSuperuserEmail || strings.Count(e, "@") != 1 {
			t.Fatalf("accepted %q", e)
		}
		for _, r := range e {
			if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"()<>[]\,;:`, r) {
				t.Fatalf("accepted %q, which holds %q", e, r)
			}
		}
	})
}
