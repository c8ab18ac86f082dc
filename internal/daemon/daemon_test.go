package daemon

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/logtest"
)

// testCommand is a command with each kind of flag: keys of the
// configuration, a path derived from it, and one of the command line only.
func testCommand() (c *Command, socket, web *string) {
	socket, web = new(string), new(string)
	c = New("testd", "testd serves tests.")
	c.Key("base-dir", "base_dir", "base `dir`ectory")
	c.Key("http-port", "http_port", "HTTP `port`")
	c.Key("opus-user", "opus_user", "the opus `user`")
	c.PathVar(socket, "socket", config.Config.PrivdSocket, "socket `path`")
	c.StringVar(web, "web-addr", "", "console `address`")
	return c, socket, web
}

// TestFlagsOverConfig: the file is read over the defaults (optional
// unless named), each keyed flag given sets its key over the file through
// config.Set, the whole is validated, and a path flag not given follows
// the configuration read.
func TestFlagsOverConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "opus.conf")
	if err := os.WriteFile(conf, []byte("base_dir /srv/opus\nhttp_port 81\nopus_user svc\nrun_dir /run/o\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		parseErr string // in Parse's error
		cfgErr   string // in Config's error
		check    func(c config.Config, socket, web string) bool
	}{
		{"a named file must exist", []string{"--config", filepath.Join(dir, "absent")}, "", "no such file", nil},
		{"the file over the defaults", []string{"--config", conf}, "", "", func(c config.Config, socket, web string) bool {
			return c.BaseDir == "/srv/opus" && c.HTTPPort == 81 && c.OpusUser == "svc" && c.HTTPSPort == config.Default().HTTPSPort &&
				socket == "/run/o/privd.sock" && web == ""
		}},
		{"flags over the file", []string{"--config", conf, "--base-dir", "/b", "--http-port", "82", "--opus-user", "o",
			"--socket", "/run/x.sock", "--web-addr", "127.0.0.1:1"}, "", "", func(c config.Config, socket, web string) bool {
			return c.BaseDir == "/b" && c.HTTPPort == 82 && c.OpusUser == "o" && c.RunDir == "/run/o" &&
				socket == "/run/x.sock" && web == "127.0.0.1:1"
		}},
		{"a flag set to its default still wins", []string{"--config", conf, "--http-port", "8080"}, "", "", func(c config.Config, _, _ string) bool {
			return c.HTTPPort == 8080
		}},
		{"bad number", []string{"--config", conf, "--http-port", "x"}, "", "--http-port", nil},
		{"invalid whole", []string{"--config", conf, "--http-port", "8443"}, "", "configuration: http_port and https_port are both 8443", nil},
		// A value a flag set is refused naming the flag (opusd's
		// --state-dir sets base_dir), and the key.
		{"invalid flag value", []string{"--config", conf, "--base-dir", "rel"}, "", `--base-dir: base_dir: "rel" must be a clean absolute path`, nil},
		{"invalid flag value among others", []string{"--config", conf, "--http-port", "82", "--opus-user", "root"}, "", `--opus-user: opus_user: "root" must name an unprivileged user`, nil},
		{"bad level", []string{"--log-level", "loud"}, `--log-level: "loud" is not a log level; use debug, info, warn or error`, "", nil},
		{"unknown flag", []string{"--base", "/b"}, "not defined", "", nil},
		{"stray argument", []string{"serve"}, "unexpected arguments", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, socket, web := testCommand()
			err := c.Parse(tc.args, &bytes.Buffer{})
			if tc.parseErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.parseErr) {
					t.Fatalf("Parse: %v, want an error with %q", err, tc.parseErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			cfg, err := c.Config()
			if tc.cfgErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.cfgErr) {
					t.Fatalf("Config: %v, want an error with %q", err, tc.cfgErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Config: %v", err)
			}
			if !tc.check(cfg, *socket, *web) {
				t.Errorf("config %+v, socket %q, web %q", cfg, *socket, *web)
			}
		})
	}
	// The default path may be missing: the built-in defaults apply.
	c, socket, _ := testCommand()
	if err := c.Parse(nil, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	c.configPath = filepath.Join(dir, "absent")
	if cfg, err := c.Config(); err != nil || cfg != config.Default() || *socket != config.Default().PrivdSocket() {
		t.Errorf("missing default file: %+v, socket %q, %v", cfg, *socket, err)
	}
}

// TestUsage: --help prints the description and every flag with its
// default, which for a keyed flag is the key's built-in default.
func TestUsage(t *testing.T) {
	c, _, _ := testCommand()
	var out bytes.Buffer
	if err := c.Parse([]string{"--help"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	def := config.Default()
	for _, want := range []string{"Usage: testd [flags]", "testd serves tests.", "Flags override the configuration file.",
		"-config file", config.DefaultPath, "-log-level level", "-base-dir dir", def.BaseDir, "-http-port port", `(default "8080")`,
		"-opus-user user", "-socket path", def.PrivdSocket(), "-web-addr address"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
}

func TestKeyUnknownPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Key accepted a key the configuration does not have")
		}
	}()
	New("testd", "").Key("colour", "colour", "")
}

// TestMainExitStatus: 0 after --help or a clean stop, 2 for a bad command
// line, 1 for a refused configuration or a failed Run; Run sees the
// configuration read, and failures are logged.
func TestMainExitStatus(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "opus.conf")
	if err := os.WriteFile(conf, []byte("http_port 81\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	failed := errors.New("it broke")
	tests := []struct {
		name   string
		args   []string
		runErr error
		status int
		out    string // in stderr, exactly once
		ran    bool
	}{
		{"help", []string{"--help"}, nil, ExitOK, "Usage: testd", false},
		{"unknown flag", []string{"--nope"}, nil, ExitUsage, "flag provided but not defined: -nope", false},
		{"bad value", []string{"--http-port"}, nil, ExitUsage, "flag needs an argument: -http-port", false},
		{"bad level", []string{"--log-level", "loud"}, nil, ExitUsage, "testd: --log-level: \"loud\" is not a log level; use debug, info, warn or error", false},
		{"stray argument", []string{"serve"}, nil, ExitUsage, `testd: unexpected arguments: ["serve"]`, false},
		{"missing named file", []string{"--config", filepath.Join(dir, "typo.conf")}, nil, ExitFailure, "typo.conf: no such file", false},
		{"run fails", []string{"--config", conf}, failed, ExitFailure, `msg="testd failed" err="it broke"`, true},
		{"run stops", []string{"--config", conf, "--log-level", "debug"}, nil, ExitOK, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _, _ := testCommand()
			ran := false
			c.Run = func(ctx context.Context, d *Daemon) error {
				ran = true
				if d.Name != "testd" || d.Config.HTTPPort != 81 || d.Log == nil || ctx.Err() != nil {
					t.Errorf("Run got name %q, config %+v, ctx %v", d.Name, d.Config, ctx.Err())
				}
				return tc.runErr
			}
			var out logtest.Buffer
			if got := c.Main(tc.args, &out); got != tc.status {
				t.Errorf("exit %d, want %d\n%s", got, tc.status, out.String())
			}
			// Said once: the flag package prints its own errors (with the
			// usage), and Main must not say them again.
			if n := strings.Count(out.String(), tc.out); n != 1 && tc.out != "" {
				t.Errorf("stderr has %q %d times, want once:\n%s", tc.out, n, out.String())
			}
			if ran != tc.ran {
				t.Errorf("Run called: %v, want %v", ran, tc.ran)
			}
		})
	}
}

// TestSignalContext: SIGTERM ends the context, its cause naming the
// signal; after stop the signal is no longer caught here.
func TestSignalContext(t *testing.T) {
	ctx, stop := signalContext(context.Background())
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not end the context")
	}
	var sig SignalError
	if !errors.As(context.Cause(ctx), &sig) || sig.Signal != syscall.SIGTERM || sig.Error() != "terminated" {
		t.Errorf("cause %v, want SIGTERM", context.Cause(ctx))
	}
}
