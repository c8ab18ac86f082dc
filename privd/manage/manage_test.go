package manage

import (
	"context"
	"os/user"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/names/namestest"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

const (
	migrate   = privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE
	superuser = privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER
	check     = privdv1.ManageCommand_MANAGE_COMMAND_CHECK
	static    = privdv1.ManageCommand_MANAGE_COMMAND_COLLECTSTATIC
)

func TestArgv(t *testing.T) {
	su := &privdv1.RunManageRequest{SuperuserUsername: "admin", SuperuserEmail: "admin@example.com", SuperuserPassword: "s3cret-pass"}
	tests := []struct {
		name string
		cmd  privdv1.ManageCommand
		req  *privdv1.RunManageRequest
		want []string // nil = refused
		err  string
	}{
		{"migrate", migrate, &privdv1.RunManageRequest{}, []string{"migrate", "--noinput"}, ""},
		{"migrate app", migrate, &privdv1.RunManageRequest{MigrateApp: "blog"}, []string{"migrate", "blog", "--noinput"}, ""},
		{"migrate zero", migrate, &privdv1.RunManageRequest{MigrateApp: "blog", MigrateTarget: "zero"}, []string{"migrate", "blog", "zero", "--noinput"}, ""},
		{"migrate to name", migrate, &privdv1.RunManageRequest{MigrateApp: "blog", MigrateTarget: "0002_auto"}, []string{"migrate", "blog", "0002_auto", "--noinput"}, ""},
		{"target without app", migrate, &privdv1.RunManageRequest{MigrateTarget: "zero"}, nil, "needs migrate_app"},
		{"app with option", migrate, &privdv1.RunManageRequest{MigrateApp: "--database=x"}, nil, "not a Python identifier"},
		{"app keyword", migrate, &privdv1.RunManageRequest{MigrateApp: "class"}, nil, "not a Python identifier"},
		{"app digit first", migrate, &privdv1.RunManageRequest{MigrateApp: "1blog"}, nil, "not a Python identifier"},
		{"target with space", migrate, &privdv1.RunManageRequest{MigrateApp: "blog", MigrateTarget: "zero x"}, nil, "migrate_target"},
		{"createsuperuser", superuser, su, []string{"createsuperuser", "--noinput", "--username=admin", "--email=admin@example.com"}, ""},
		{"username option-like stays a value", superuser, &privdv1.RunManageRequest{SuperuserUsername: "-x", SuperuserEmail: "-x@example.com", SuperuserPassword: "pw"}, []string{"createsuperuser", "--noinput", "--username=-x", "--email=-x@example.com"}, ""},
		{"no email", superuser, &privdv1.RunManageRequest{SuperuserUsername: "a", SuperuserPassword: "pw"}, nil, "needs an e-mail address"},
		{"email Django refuses", superuser, &privdv1.RunManageRequest{SuperuserUsername: "a", SuperuserEmail: "a@b", SuperuserPassword: "pw"}, nil, "not an e-mail address Django accepts"},
		{"bad username", superuser, &privdv1.RunManageRequest{SuperuserUsername: "a b", SuperuserPassword: "pw"}, nil, "username"},
		{"long username", superuser, &privdv1.RunManageRequest{SuperuserUsername: strings.Repeat("a", 151), SuperuserPassword: "pw"}, nil, "username"},
		{"email control char", superuser, &privdv1.RunManageRequest{SuperuserUsername: "a", SuperuserEmail: "a@b\n", SuperuserPassword: "pw"}, nil, "email"},
		{"no password", superuser, &privdv1.RunManageRequest{SuperuserUsername: "a", SuperuserEmail: "a@example.com"}, nil, "password is empty"},
		{"NUL in password", superuser, &privdv1.RunManageRequest{SuperuserUsername: "a", SuperuserEmail: "a@example.com", SuperuserPassword: "a\x00b"}, nil, "NUL"},
		{"check", check, &privdv1.RunManageRequest{}, []string{"check"}, ""},
		{"collectstatic", static, &privdv1.RunManageRequest{}, []string{"collectstatic", "--noinput", "--clear"}, ""},
		{"unspecified", privdv1.ManageCommand_MANAGE_COMMAND_UNSPECIFIED, &privdv1.RunManageRequest{}, nil, "not allowed"},
		{"unknown enum", privdv1.ManageCommand(99), &privdv1.RunManageRequest{}, nil, "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Argv(tt.cmd, tt.req)
			if tt.want == nil {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Argv = %q, %v; want error containing %q", got, err, tt.err)
				}
				if pw := tt.req.GetSuperuserPassword(); len(pw) > 2 && strings.Contains(err.Error(), pw) {
					t.Errorf("error reveals the password: %v", err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("Argv = %q, %v; want %q", got, err, tt.want)
			}
			if pw := tt.req.GetSuperuserPassword(); pw != "" {
				for _, a := range got {
					if strings.Contains(a, pw) {
						t.Errorf("password on argv: %q", got)
					}
				}
			}
		})
	}
}

func TestEnvIsFixed(t *testing.T) {
	t.Setenv("LEAK_ME", "x")
	env := Env(layout.For("/srv/opus", "blog"))
	want := []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/srv/opus/projects/blog",
		"PYTHONDONTWRITEBYTECODE=1", "DJANGO_SETTINGS_MODULE=opus_project.settings"}
	if !slices.Equal(env, want) {
		t.Errorf("Env = %q, want %q", env, want)
	}
}

func TestRunRefuses(t *testing.T) {
	looked := false
	r := &Runner{Base: "/nonexistent", Python: "/usr/bin/python3",
		LookupUser: func(string) (*user.User, error) {
			looked = true
			return &user.User{Uid: "0", Gid: "0", Username: "root"}, nil
		}}
	tests := []struct {
		name string
		req  *privdv1.RunManageRequest
		want string
	}{
		{"bad project", &privdv1.RunManageRequest{Project: "../x", Commands: []privdv1.ManageCommand{check}}, "project name"},
		{"no commands", &privdv1.RunManageRequest{Project: "blog"}, "no commands"},
		{"one bad command among good", &privdv1.RunManageRequest{Project: "blog", Commands: []privdv1.ManageCommand{check, superuser}}, "username"},
		{"root user", &privdv1.RunManageRequest{Project: "blog", Commands: []privdv1.ManageCommand{check}}, "refusing to run as root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			looked = false
			resp, err := r.Run(context.Background(), tt.req)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run = %v, %v; want error containing %q", resp, err, tt.want)
			}
			if looked && tt.want != "refusing to run as root" {
				t.Error("user looked up for a request refused by validation")
			}
		})
	}
}

func TestTailAndRedact(t *testing.T) {
	tl := &tail{max: 10}
	tl.Write([]byte("0123456789"))
	tl.Write([]byte("abcdef"))
	if got := tl.String(); got != "6789abcdef" {
		t.Errorf("tail = %q", got)
	}
	// Bytes that are not UTF-8 (the project's code wrote them, or the
	// window cut a character) must not fail the reply's string field.
	for _, tc := range []struct {
		max      int
		in, want string
	}{
		{64, "x\xff\xfe y", "x\uFFFD y"},
		{7, " ü日本", "\uFFFD日本"}, // the window cuts ü in two
	} {
		tl = &tail{max: tc.max}
		tl.Write([]byte(tc.in))
		if got := tl.String(); got != tc.want || !utf8.ValidString(got) {
			t.Errorf("tail of %q = %q, want %q", tc.in, got, tc.want)
		}
	}
	tests := []struct{ out, pw, want string }{
		{"x hunter22 y", "hunter22", "x [redacted] y"},
		{"a b a", "a", "a b a"},
		{"nothing", "", "nothing"},
	}
	for _, tt := range tests {
		if got := redact(tt.out, tt.pw); got != tt.want {
			t.Errorf("redact(%q, %q) = %q, want %q", tt.out, tt.pw, got, tt.want)
		}
	}
}

// TestArgvSuperuserEmails: privd takes exactly the e-mail addresses of
// the table opusd's API and opusctl are tested against.
func TestArgvSuperuserEmails(t *testing.T) {
	for _, c := range namestest.Emails {
		argv, err := Argv(superuser, &privdv1.RunManageRequest{SuperuserUsername: "admin", SuperuserEmail: c.Addr, SuperuserPassword: "pw"})
		if (err == nil) != c.OK || err == nil && argv[len(argv)-1] != "--email="+c.Addr {
			t.Errorf("Argv with e-mail %.40q = %q, %v; want ok=%v", c.Addr, argv, err, c.OK)
		}
	}
}

func FuzzValidateUsername(f *testing.F) {
	for _, s := range []string{"admin", "a.b@c+d-e_f", "", "a b", "ünïcode", "-x", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateUsername(s) != nil {
			return
		}
		argv, err := Argv(superuser, &privdv1.RunManageRequest{SuperuserUsername: s, SuperuserEmail: "admin@example.com", SuperuserPassword: "pw"})
		if err != nil {
			t.Fatal(err)
		}
		if len(argv) != 4 || argv[2] != "--username="+s || strings.ContainsAny(s, " \t\n\x00=") {
			t.Fatalf("accepted username %q gives argv %q", s, argv)
		}
	})
}

func FuzzArgvMigrate(f *testing.F) {
	f.Add("blog", "zero")
	f.Add("", "")
	f.Add("--fake", "x")
	f.Add("blog", "0001_initial")
	f.Fuzz(func(t *testing.T, app, target string) {
		argv, err := Argv(migrate, &privdv1.RunManageRequest{MigrateApp: app, MigrateTarget: target})
		if err != nil {
			return
		}
		for _, a := range argv[1 : len(argv)-1] {
			if strings.HasPrefix(a, "-") || a == "" {
				t.Fatalf("argv %q holds an option-like or empty argument", argv)
			}
		}
		if argv[0] != "migrate" || argv[len(argv)-1] != "--noinput" || len(argv) > 4 {
			t.Fatalf("argv %q", argv)
		}
	})
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name         string
		lines        string
		code, cmds   int
		failed, want int
	}{
		{"all done", "start 0\ndone 0 0\nstart 1\ndone 1 0\n", 0, 2, -1, 0},
		{"second fails", "start 0\ndone 0 0\nstart 1\ndone 1 3\n", 3, 3, 1, 3},
		{"killed while running", "start 0\ndone 0 0\nstart 1\n", -1, 2, 1, -1},
		{"died before the first", "", 1, 2, 0, 1},
		{"exit 0 without finishing", "start 0\ndone 0 0\n", 0, 2, 0, 1},
		{"exit 0 but a command failed", "start 0\ndone 0 2\n", 0, 2, 0, 2},
		{"garbage and out of range ignored", "start 9\nstart x\ndone 7 0\nstart 0\n", -1, 2, 0, -1},
		{"truncated line", "start 0\ndone 0 0\nsta", 0, 1, -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseStatus(tt.lines, tt.code, tt.cmds)
			if got.failed != tt.failed || (tt.failed >= 0 && got.code != tt.want) {
				t.Errorf("parseStatus = %+v, want failed %d code %d", got, tt.failed, tt.want)
			}
		})
	}
}

// FuzzParseStatus: whatever the project's code writes to the progress
// file, the result names a real command or none, and a failure never has
// exit code 0.
func FuzzParseStatus(f *testing.F) {
	f.Add("start 0\ndone 0 0\n", 0, 1)
	f.Add("start 1\n", -1, 2)
	f.Add("done 5 0\nstart -1\n", 1, 3)
	f.Fuzz(func(t *testing.T, lines string, code, cmds int) {
		if cmds < 1 || cmds > 8 {
			return
		}
		got := parseStatus(lines, code, cmds)
		if got.failed < -1 || got.failed >= cmds {
			t.Fatalf("failed index %d out of range for %d commands", got.failed, cmds)
		}
		if got.failed >= 0 && got.code == 0 {
			t.Fatalf("failure with exit code 0: %+v", got)
		}
		if got.failed == -1 && code != 0 {
			t.Fatalf("success reported for exit code %d", code)
		}
	})
}
