// Package manage runs the few manage.py commands opus-privd allows, as the
// project's own user, with the configured interpreter, a fixed environment,
// a timeout and bounded output. All commands of one request run in a single
// Python process (a fixed driver embedded here), so a deploy pays the
// interpreter start and django.setup() once, not once per command. Commands come from privd's enum only; every
// argument is validated here, and the superuser password travels in the
// child's environment, never on its argv and never in a log.
package manage

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
	"github.com/opus-hosting/opus/privd/confine"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// Defaults.
const (
	// DefaultTimeout bounds one Run, all its commands together.
	DefaultTimeout = 10 * time.Minute
	// MaxOutput is how much of the combined output Run keeps (the tail).
	MaxOutput = 64 << 10
	// DefaultMaxParallel is how many Runs may have Python running at once;
	// more wait their turn. Each is CPU-bound and holds Django in memory,
	// so running more at once than this only makes all of them later.
	DefaultMaxParallel = 4
)

// Field bounds.
const (
	maxUsername = 150 // Django's AbstractUser.username max_length
	maxPassword = 4096
	maxAppLabel = 100
)

// Runner runs manage.py commands for projects under one base directory.
type Runner struct {
	// Base is the base directory of project trees.
	Base string
	// Python is the interpreter (the one mod_wsgi embeds).
	Python string
	// UserPrefix starts project users' names (names.DefaultUserPrefix if
	// empty).
	UserPrefix string
	// Self is the executable that runs the confined child (see package
	// confine); /proc/self/exe, the running binary, when empty.
	Self string
	// Limits bound manage.py (confine.DefaultLimits when zero).
	Limits confine.Limits
	// Timeout bounds one Run (DefaultTimeout if 0).
	Timeout time.Duration
	// Logger receives structured logs (slog.Default() if nil).
	Logger *slog.Logger
	// LookupUser finds the project's user (user.Lookup if nil).
	LookupUser func(name string) (*user.User, error)
	// MaxParallel bounds the Runs whose Python runs at once
	// (DefaultMaxParallel if 0). privd bounds it itself rather than
	// trusting its caller to.
	MaxParallel int

	slotsOnce sync.Once
	slots     chan struct{}
}

// acquire waits for a turn to run Python; release gives it back.
func (r *Runner) acquire(ctx context.Context) (release func(), err error) {
	r.slotsOnce.Do(func() {
		n := r.MaxParallel
		if n <= 0 {
			n = DefaultMaxParallel
		}
		r.slots = make(chan struct{}, n)
	})
	select {
	case r.slots <- struct{}{}:
		return func() { <-r.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// New returns a Runner for cfg.
func New(cfg config.Config) *Runner {
	return &Runner{Base: cfg.BaseDir, Python: cfg.Python, UserPrefix: cfg.UserPrefix}
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
		if err := names.ValidateSuperuserEmail(req.GetSuperuserEmail()); err != nil {
			return nil, fmt.Errorf("superuser email: %w", err)
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
// project's user in ONE Python process (the embedded driver), stopping at
// the first failure. A command that fails is reported in the response
// (failed_command, exit_code, output), not as an error; errors are for
// refused requests and for failures to start.
func (r *Runner) Run(ctx context.Context, req *privdv1.RunManageRequest) (*privdv1.RunManageResponse, error) {
	name := req.GetProject()
	if err := names.ValidateProject(name); err != nil {
		return nil, fmt.Errorf("run manage: %w", err)
	}
	if len(req.GetCommands()) == 0 {
		return nil, fmt.Errorf("run manage %s: no commands", name)
	}
	argvs := make([][]string, len(req.GetCommands()))
	superuser := false
	for i, c := range req.GetCommands() {
		a, err := Argv(c, req)
		if err != nil {
			return nil, fmt.Errorf("run manage %s: %w", name, err)
		}
		argvs[i] = a
		superuser = superuser || c == privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER
	}
	cred, err := r.credential(name)
	if err != nil {
		return nil, fmt.Errorf("run manage %s: %w", name, err)
	}
	// The timeout starts with the turn: waiting for one is not running.
	release, err := r.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("run manage %s: waiting for a turn: %w", name, err)
	}
	defer release()
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
	env := Env(p)
	if superuser {
		// The driver takes it out of its environment at once and sets it
		// again only while createsuperuser runs.
		env = append(env, "DJANGO_SUPERUSER_PASSWORD="+req.GetSuperuserPassword())
	}
	out := &tail{max: MaxOutput}
	start := time.Now()
	st, err := r.runDriver(ctx, p, cred, argvs, env, out)
	if err != nil {
		return nil, fmt.Errorf("run manage %s: %w", name, err)
	}
	resp := &privdv1.RunManageResponse{}
	words := make([]string, len(argvs))
	for i, a := range argvs {
		words[i] = a[0]
	}
	if st.failed >= 0 {
		resp.FailedCommand, resp.ExitCode = req.GetCommands()[st.failed], int32(st.code)
		if ctx.Err() != nil {
			fmt.Fprintf(out, "\nopus-privd: %s stopped: %v\n", argvs[st.failed][0], ctx.Err())
		}
		log.Info("manage.py", "project", name, "commands", strings.Join(words, ","), "failed", argvs[st.failed][0],
			"exit_code", st.code, "duration", time.Since(start).Round(time.Millisecond))
	} else {
		log.Info("manage.py", "project", name, "commands", strings.Join(words, ","), "exit_code", 0,
			"duration", time.Since(start).Round(time.Millisecond))
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
	prefix := r.UserPrefix
	if prefix == "" {
		prefix = names.DefaultUserPrefix
	}
	u, err := lookup(names.User(prefix, project))
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

// driverSource is the fixed Python program that runs several manage.py
// commands in one interpreter; see driver.py for its protocol.
//
//go:embed driver.py
var driverSource string

// driverStatusMax bounds what privd reads of the driver's progress file
// (a few short lines; the project's code could write anything there).
const driverStatusMax = 4 << 10

// driverResult is what the driver's progress lines and exit said.
type driverResult struct {
	failed int // index of the failed command, -1 when all succeeded
	code   int // its exit code; -1 when the process was killed
}

// runDriver runs the commands argvs through the driver in one Python
// process as the project's user. It returns an error only when the
// process could not be run at all.
func (r *Runner) runDriver(ctx context.Context, p layout.Project, cred *syscall.Credential, argvs [][]string, env []string, out *tail) (driverResult, error) {
	list, err := json.Marshal(argvs)
	if err != nil {
		return driverResult{}, fmt.Errorf("encode commands: %w", err)
	}
	// Progress goes to an unlinked file rather than a pipe: a grandchild
	// keeping a pipe open could never block privd on it.
	status, err := os.CreateTemp("", "opus-manage-status-")
	if err != nil {
		return driverResult{}, fmt.Errorf("progress file: %w", err)
	}
	os.Remove(status.Name())
	defer status.Close()
	if err := status.Chown(int(cred.Uid), int(cred.Gid)); err != nil {
		return driverResult{}, fmt.Errorf("progress file: %w", err)
	}

	self := r.Self
	if self == "" {
		self = "/proc/self/exe"
	}
	// The project's code runs confined: its own /tmp, no new privileges,
	// limits (package confine), in a session of its own.
	cmd, err := confine.Command(ctx, self, confine.Spec{UID: cred.Uid, GID: cred.Gid, Path: r.Python,
		Args: []string{r.Python, "-c", driverSource, p.Manage(), string(list)}, Env: env, Dir: p.Code, Keep: []string{r.Base}, Limits: r.Limits})
	if err != nil {
		return driverResult{}, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{status} // fd 3 in the child
	// Kill the whole session, not just Python: manage.py may have children.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	code := 0
	var exit *exec.ExitError
	switch {
	case runErr == nil:
	case errors.As(runErr, &exit):
		code = exit.ExitCode() // -1 when killed by a signal
	default:
		return driverResult{}, fmt.Errorf("start %s: %w", r.Python, runErr)
	}
	buf := make([]byte, driverStatusMax)
	n, _ := status.ReadAt(buf, 0)
	return parseStatus(string(buf[:n]), code, len(argvs)), nil
}

// parseStatus decides from the driver's progress lines and its exit code
// which command failed. The failed command is the last one started; when
// none started (Python or Django failed before) it is the first.
func parseStatus(lines string, code, commands int) driverResult {
	running, lastDone, lastCode := -1, -1, 0
	for _, l := range strings.Split(lines, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 2 && f[0] == "start":
			if i, err := strconv.Atoi(f[1]); err == nil && i >= 0 && i < commands {
				running = i
			}
		case len(f) == 3 && f[0] == "done":
			i, err1 := strconv.Atoi(f[1])
			c, err2 := strconv.Atoi(f[2])
			if err1 == nil && err2 == nil && i >= 0 && i < commands {
				lastDone, lastCode = i, c
			}
		}
	}
	if code == 0 && lastDone == commands-1 && lastCode == 0 {
		return driverResult{failed: -1}
	}
	failed := max(running, 0)
	if code == 0 {
		// Exited 0 without finishing (or reporting) every command: the
		// driver never does that, so something else ended it early.
		code = 1
		if lastDone == failed && lastCode != 0 {
			code = lastCode
		}
	}
	return driverResult{failed: failed, code: code}
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
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// String returns what was kept as valid UTF-8 (the reply's field is a
// protobuf string, which cannot carry anything else): bytes that are not
// — written by the project's code, or a character cut by the tail's
// window — become U+FFFD, so they cannot fail the whole call.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.ToValidUTF8(string(t.buf), "\uFFFD")
}
