package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/unprivd/service/servicetest/apinames"
)

// TestCLIMessagesNameNoInternals walks opusctl's own error paths (command
// lines it refuses before calling opusd) and some of opusd's answers it
// relays, and checks what it prints names no RPC, proto field, proto path
// or service, and no "rpc error:"; and that each exits with the status the
// help gives (2 for a mistake in what was given, 1 otherwise).
func TestCLIMessagesNameNoInternals(t *testing.T) {
	s := startOpusd(t)
	seedProjects(t, s)
	names := apinames.Patterns()
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "nothere")
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"nosuchcommand"}, exitUsage},
		{[]string{"ls", "--nosuchflag"}, exitUsage},
		{[]string{"ls", "-o", "yaml"}, exitUsage},
		{[]string{"create"}, exitUsage},
		{[]string{"create", "Bad_Name", "--empty"}, exitUsage},
		{[]string{"create", "tnew"}, exitUsage},
		{[]string{"create", "tnew", "--app", missing}, exitUsage},
		{[]string{"create", "tnew", "--app", "http://example.com/x.git"}, exitUsage},
		{[]string{"create", "tnew", "--empty", "--superuser", "admin"}, exitUsage},
		{[]string{"create", "tnew", "--empty", "--database", "mysql"}, exitUsage},
		{[]string{"create", "talpha", "--empty"}, exitError},
		{[]string{"show", "nosuch"}, exitError},
		{[]string{"show", "-x-"}, exitUsage},
		{[]string{"apps", "add", "talpha", "Bad=https://example.com/x.git"}, exitUsage},
		{[]string{"apps", "update", "talpha", "nosuch", "v1"}, exitError},
		{[]string{"apps", "rm", "talpha", "nosuch"}, exitError},
		{[]string{"set", "talpha", "colour=red"}, exitUsage},
		{[]string{"set", "talpha", "debug=maybe"}, exitUsage},
		{[]string{"set", "talpha", "novalue"}, exitUsage},
		{[]string{"cert", "set", "talpha", "--cert", garbage, "--key", garbage}, exitUsage},
		{[]string{"cert", "set", "talpha", "--cert", missing, "--key", garbage}, exitUsage},
		{[]string{"wait", "op-x"}, exitUsage},
		{[]string{"ops", "nosuch"}, exitError},
		{[]string{"logs", "talpha", "--lines", "100000"}, exitUsage},
		{[]string{"web", "passwd"}, exitUsage},
	} {
		r := runCLI(t, s.Socket, "", tc.args...)
		what := strings.Join(tc.args, " ")
		t.Logf("opusctl %s → %d: %s", what, r.code, r.stderr)
		if r.code != tc.code {
			t.Errorf("opusctl %s: exit %d, want %d: %s", what, r.code, tc.code, r.stderr)
		}
		if r.stderr == "" {
			t.Errorf("opusctl %s: says nothing on stderr", what)
		}
		if found := apinames.Find(names, r.stdout+r.stderr); len(found) > 0 {
			t.Errorf("opusctl %s: names %q, internal names:\n%s%s", what, found, r.stdout, r.stderr)
		}
	}
}
