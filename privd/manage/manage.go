// Package manage runs the few manage.py commands opus-privd allows, as the
// project's own user, with the configured interpreter, a fixed environment,
// a timeout and bounded output. Commands come from privd's enum only; every
// argument is validated here, and the superuser password travels in the
// child's environment, never on its argv and never in a log.
package manage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/names"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// Defaults.
const (
	// DefaultTimeout bounds one Run, all its commands together.
	DefaultTimeout = 10 * time.Minute
	// MaxOutput is how much of the combined output Run keeps (the tail).
	MaxOutput = 64 << 10
)

// Field bounds.
const (
	maxUsername = 150 // Django's AbstractUser.username max_length
	maxEmail    = 254
	maxPassword = 4096
	maxAppLabel = 100
)

// Runner runs manage.py commands for projects under one base directory.
type Runner struct {
	// Base is the base directory of project trees.
	Base string
	// Python is the interpreter (the one mod_wsgi embeds).
	Python string
	// Timeout bounds one Run (DefaultTimeout if 0).
	Timeout time.Duration
	// Logger receives structured logs (slog.Default() if nil).
	Logger *slog.Logger
	// LookupUser finds the project's user (user.Lookup if nil).
	LookupUser func(name string) (*user.User, error)
}

// New returns a Runner for cfg.
func New(cfg config.Config) *Runner {
	return &Runner{Base: cfg.BaseDir, Python: cfg.Python}
}

// Argv returns the manage.py arguments (after the interpreter and the path
// of manage.py) for cmd. It validates what it puts on the command line.
// The password is not an argument of any command.
func Argv(cmd privdv1.ManageCommand, req *privdv1.RunManageRequest) ([]string, error) {
	switch cmd {
	case privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE:
		app, target := req.GetMigrateApp(), req.GetMigrateTarget()
		if app == "" && target != "" {
			return nil, fmt.Errorf("migrate_target %q needs migrate_app", target)
		}
		args := []string{"migrate"}
		if app != "" {
			if err := validateAppLabel(app); err != nil {
				return nil, err
			}
			args = append(args, app)
		}
		if target != "" {
			if err := validateTarget(target); err != nil {
				return nil, err
			}
			args = append(args, target)
		}
		return append(args, "--noinput"), nil
	case privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER:
		if err := ValidateUsername(req.GetSuperuserUsername()); err != nil {
			return nil, err
		}
		if err := ValidateEmail(req.GetSuperuserEmail()); err != nil {
			return nil, err
		}
		if err := ValidatePassword(req.GetSuperuserPassword()); err != nil {
			return nil, err
		}
		// "--opt=value" so that a value can never be read as an option.
		return []string{"createsuperuser", "--noinput",
			"--username=" + req.GetSuperuserUsername(), "--email=" + req.GetSuperuserEmail()}, nil
	case privdv1.ManageCommand_MANAGE_COMMAND_CHECK:
		return []string{"check"}, nil
	case privdv1.ManageCommand_MANAGE_COMMAND_COLLECTSTATIC:
		return []string{"collectstatic", "--noinput", "--clear"}, nil
	}
	return nil, fmt.Errorf("manage command %v is not allowed", cmd)
}

// ValidateUsername applies Django's default username rule: 1-150 of
// letters, digits and "@.+-_".
func ValidateUsername(u string) error {
	if u == "" {
		return errors.New("superuser username is empty")
	}
	if n := len([]rune(u)); n > maxUsername {
		return fmt.Errorf("superuser username is %d characters long; at most %d are allowed", n, maxUsername)
	}
	for _, r := range u {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("@.+-_", r)) {
			return fmt.Errorf("superuser username %q contains %q; only letters, digits and @.+-_ are allowed", u, r)
		}
	}
	return nil
}

// ValidateEmail bounds the superuser's email and refuses control characters
// and spaces. Django validates the address itself; empty is allowed.
func ValidateEmail(e string) error {
	if len(e) > maxEmail {
		return fmt.Errorf("superuser email is %d bytes long; at most %d are allowed", len(e), maxEmail)
	}
	for _, r := range e {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("superuser email %q contains %q", e, r)
		}
	}
	return nil
}

// ValidatePassword requires a non-empty password of bounded length without
// NUL (an environment variable cannot hold one). Its value never appears in
// the error.
func ValidatePassword(p string) error {
	switch {
	case p == "":
		return errors.New("superuser password is empty")
	case len(p) > maxPassword:
		return fmt.Errorf("superuser password is longer than %d bytes", maxPassword)
	case strings.IndexByte(p, 0) >= 0:
		return errors.New("superuser password contains a NUL byte")
	}
	return nil
}

// validateAppLabel requires an ASCII Python identifier (Django app label).
func validateAppLabel(app string) error {
	if len(app) > maxAppLabel || !isIdent(app, false) || names.IsPythonKeyword(app) {
		return fmt.Errorf("migrate_app %q is not a Python identifier", app)
	}
	return nil
}

// validateTarget accepts "zero" or a migration name, which is a module name
// like "0002_auto": letters, digits and '_' (it may start with a digit).
func validateTarget(t string) error {
	if len(t) > maxAppLabel || !isIdent(t, true) {
		return fmt.Errorf("migrate_target %q is neither \"zero\" nor a migration name (letters, digits, '_')", t)
	}
	return nil
}

func isIdent(s string, digitFirst bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case c >= '0' && c <= '9' && (i > 0 || digitFirst):
		default:
			return false
		}
	}
	return true
}

// Env is the complete environment of a manage.py child: nothing of privd's
// own environment is inherited.
func Env(p layout.Project) []string {
	return []string{
		"PATH=/usr/bin:/bin",
		"LANG=C.UTF-8",
		"HOME=" + p.Root,
		"PYTHONDONTWRITEBYTECODE=1",
		"DJANGO_SETTINGS_MODULE=" + layout.PackageName + ".settings",
	}
}

// Run validates the whole request, then runs its commands in order as the
// project's user, stopping at the first failure. A command that fails is
// reported in the response (failed_command, exit_code, output), not as an
// error; errors are for refused requests and for failures to start.
func (r *Runner) Run(ctx context.Context, req *privdv1.RunManageRequest) (*privdv1.RunManageResponse, error) {
	name := req.GetProject()
	if err := names.ValidateProject(name); err != nil {
		return nil, fmt.Errorf("run manage: %w", err)
	}
	if len(req.GetCommands()) == 0 {
		return nil, fmt.Errorf("run manage %s: no commands", name)
	}
	argvs := make([][]string, len(req.GetCommands()))
	for i, c := range req.GetCommands() {
		a, err := Argv(c, req)
		if err != nil {
			return nil, fmt.Errorf("run manage %s: %w", name, err)
		}
		argvs[i] = a
	}
	cred, err := r.credential(name)
	if err != nil {
		return nil, fmt.Errorf("run manage %s: %w", name, err)
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log := r.Logger
	if log == nil {
		log = slog.Default()
	}

	p := layout.For(r.Base, name)
	out := &tail{max: MaxOutput}
	resp := &privdv1.RunManageResponse{}
	for i, c := range req.GetCommands() {
		env := Env(p)
		if c == privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER {
			env = append(env, "DJANGO_SUPERUSER_PASSWORD="+req.GetSuperuserPassword())
		}
		start := time.Now()
		mark := out.total()
		code, err := r.runOne(ctx, p, cred, argvs[i], env, out)
		if code != 0 && c == privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER && alreadyExists(out.since(mark)) {
			// An existing superuser of that name is what we wanted.
			code, err = 0, nil
		}
		log.Info("manage.py", "project", name, "command", argvs[i][0], "exit_code", code,
			"duration", time.Since(start).Round(time.Millisecond))
		if err != nil && code == 0 {
			return nil, fmt.Errorf("run manage %s %s: %w", name, argvs[i][0], err)
		}
		if code != 0 {
			resp.FailedCommand, resp.ExitCode = c, int32(code)
			if ctx.Err() != nil {
				fmt.Fprintf(out, "\nopus-privd: %s stopped: %v\n", argvs[i][0], ctx.Err())
			}
			break
		}
	}
	resp.Output = redact(out.String(), req.GetSuperuserPassword())
	return resp, nil
}

// credential returns the project user's uid and gid, and no supplementary
// groups (privd's own, root's, must not leak into the child).
func (r *Runner) credential(project string) (*syscall.Credential, error) {
	lookup := r.LookupUser
	if lookup == nil {
		lookup = user.Lookup
	}
	u, err := lookup(names.User(project))
	if err != nil {
		return nil, fmt.Errorf("project user: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("project user %s has a non-numeric uid/gid %q/%q", u.Username, u.Uid, u.Gid)
	}
	if uid == 0 || gid == 0 {
		return nil, fmt.Errorf("project user %s has uid %d gid %d; refusing to run as root", u.Username, uid, gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// runOne runs one manage.py command. It returns the exit code (-1 when the
// child did not exit normally, for example on timeout) and an error when
// the child could not be run at all (then the code is 0) or did not exit
// normally.
func (r *Runner) runOne(ctx context.Context, p layout.Project, cred *syscall.Credential, args, env []string, out *tail) (int, error) {
	cmd := exec.CommandContext(ctx, r.Python, append([]string{p.Manage()}, args...)...)
	cmd.Dir = p.Code
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setsid: true}
	// Kill the whole session, not just Python: manage.py may have children.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit):
		if code := exit.ExitCode(); code > 0 {
			return code, nil
		}
		return -1, err
	default:
		return 0, err
	}
}

// alreadyExists recognises createsuperuser's "username is taken" failure
// (Django 3.2: "Error: That username is already taken.").
func alreadyExists(output string) bool {
	return strings.Contains(output, "already taken") || strings.Contains(output, "already exists")
}

// redact removes the password from output, should any code print it. Short
// passwords are left alone: replacing every "a" would destroy the output,
// and such a password is no secret.
func redact(output, password string) string {
	if len(password) < 6 {
		return output
	}
	return strings.ReplaceAll(output, password, "[redacted]")
}

// tail keeps the last max bytes written to it; stdout and stderr share it.
type tail struct {
	mu    sync.Mutex
	max   int
	buf   []byte
	wrote int64
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.wrote += int64(len(p))
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) total() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.wrote
}

// since returns what was written after total() returned mark, as far as
// it is still kept.
func (t *tail) since(mark int64) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.wrote - mark
	if n > int64(len(t.buf)) {
		n = int64(len(t.buf))
	}
	return string(bytes.Clone(t.buf[int64(len(t.buf))-n:]))
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
