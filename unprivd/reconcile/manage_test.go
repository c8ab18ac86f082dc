package reconcile

import (
	"os"
	"strings"
	"testing"
)

func TestManageError(t *testing.T) {
	missing, err := os.ReadFile("../../internal/excerpt/testdata/missing.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		command string
		code    int32
		output  string
		want    []string // the error's first lines
	}{
		{"traceback", "check", 1, string(missing), []string{
			"manage.py check failed: ModuleNotFoundError: No module named 'notanapp'",
			"Traceback (most recent call last; 6 lines above left out):",
			`  File "/usr/lib/python3/dist-packages/django/core/management/__init__.py", line 395, in execute`,
		}},
		{"command error", "createsuperuser", 1, "\nYou have 1 unapplied migration(s).\nCommandError: You must use --email with --noinput.\n", []string{
			"manage.py createsuperuser failed: CommandError: You must use --email with --noinput.",
			"You have 1 unapplied migration(s).",
		}},
		{"killed", "migrate", -1, "Operations to perform:\n  Applying polls.0001_initial...\nopus-privd: migrate stopped: context deadline exceeded\n", []string{
			"manage.py migrate was killed; its last lines:",
			"Operations to perform:",
			"  Applying polls.0001_initial...",
			"opus-privd: migrate stopped: context deadline exceeded",
		}},
		{"exit code", "migrate", 3, "", []string{"manage.py migrate failed (exit code 3) without saying why"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Split(manageError(tc.command, tc.code, tc.output).Error(), "\n")
			if len(got) < len(tc.want) {
				t.Fatalf("error has %d lines, want at least %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
			for i, w := range tc.want {
				if got[i] != w {
					t.Errorf("line %d = %q, want %q", i, got[i], w)
				}
			}
		})
	}
}
