package reconcile

import (
	"os"
	"strings"
	"testing"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
			"Traceback (most recent call last; 4 lines above left out):",
			`  File "/usr/lib/python3/dist-packages/django/core/management/__init__.py", line 419, in execute_from_command_line`,
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

// TestPrivdErrInWords: a privd call's failure names the work in words, not
// the call, and no grpc-go wrapping, whatever the code; the code stays.
func TestPrivdErrInWords(t *testing.T) {
	for call := range privdWork {
		for _, c := range []codes.Code{codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.InvalidArgument, codes.Internal} {
			err := privdErr(call, status.Error(c, "boom"))
			msg := err.Error()
			if strings.Contains(msg, call) || strings.Contains(msg, "rpc error") || strings.Contains(msg, "privd "+call) ||
				!strings.HasPrefix(msg, privdWork[call]+": ") || !strings.Contains(msg, "boom") {
				t.Errorf("privdErr(%s, %v) = %q", call, c, msg)
			}
			if status.Code(err) != c {
				t.Errorf("privdErr(%s, %v): code %v lost", call, c, status.Code(err))
			}
		}
	}
	if len(privdWork) != privdv1.File_opus_privd_v1_privd_proto.Services().Get(0).Methods().Len() {
		t.Errorf("privdWork names %d calls; privd serves %d", len(privdWork), privdv1.File_opus_privd_v1_privd_proto.Services().Get(0).Methods().Len())
	}
}
