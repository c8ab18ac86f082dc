// Package apache is opus-privd's control of Apache: it renders a project's
// virtual host from validated structured fields, installs it together with
// the project's TLS key and certificate, configtests every change and rolls
// back a change Apache refuses, and coalesces graceful restarts (a lone
// one runs at once; later ones within a window share the next: see
// Coalescer, whose doc has the rule and why it is correct). Two modes
// share one Control interface: a managed instance privd starts itself from a
// generated httpd.conf, and Debian's system Apache driven by apache2ctl.
package apache

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opus-hosting/opus/internal/atomicfile"
	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/procs"
	"github.com/opus-hosting/opus/internal/subprocess"
)

// Control is one Apache instance as privd drives it. Sites calls it with its
// own lock held, so implementations need not serialise calls themselves.
type Control interface {
	// ConfigTest checks the whole configuration; the error carries Apache's
	// own message.
	ConfigTest(ctx context.Context) error
	// Graceful gracefully restarts Apache after a configtest, starting it
	// when it is down (started is then true), and returns once Apache
	// serves the new configuration. pid is the master's pid. When Apache
	// was signalled or started and does not serve afterwards (see
	// ErrNotServing), the error wraps ErrNotServing and Apache is down.
	Graceful(ctx context.Context) (pid int, started bool, err error)
	// Stop stops Apache (for tests and shutdown of the managed instance).
	Stop(ctx context.Context) error
}

// Paths are the directories privd keeps under ApacheDir, in both modes.
type Paths struct {
	// Dir is ApacheDir: the managed ServerRoot, or in system mode the
	// directory the main config includes vhosts from.
	Dir string
}

// Sites is the directory of rendered vhosts, one NAME.conf per project.
func (p Paths) Sites() string { return layout.Sites(p.Dir) }

// TLS is privd's own key and certificate directory (root only).
func (p Paths) TLS() string { return filepath.Join(p.Dir, "tls") }

// Logs holds the managed error log and every project's error log. Apache
// opens logs as root, so they never live in a project's tree.
func (p Paths) Logs() string { return filepath.Join(p.Dir, "logs") }

// Run holds the pid file, WSGI sockets and other runtime files.
func (p Paths) Run() string { return filepath.Join(p.Dir, "run") }

// Vhost is the path of a project's vhost file.
func (p Paths) Vhost(project string) string { return filepath.Join(p.Sites(), project+".conf") }

// Cert is the path of a project's certificate (leaf then chain).
func (p Paths) Cert(project string) string { return filepath.Join(p.TLS(), project+".crt") }

// Key is the path of a project's private key (root:root 0600).
func (p Paths) Key(project string) string { return filepath.Join(p.TLS(), project+".key") }

// PendingKey is the key privd made for the project's next certificate
// (CertificateRequest), until Install makes it the site's key.
func (p Paths) PendingKey(project string) string {
	return filepath.Join(p.TLS(), project+".pending.key")
}

// ErrorLog is the path of a project's own error log.
func (p Paths) ErrorLog(project string) string {
	return filepath.Join(p.Logs(), project+".error.log")
}

// IncludeLine is the one line an administrator adds to Debian's Apache
// configuration (for example /etc/apache2/conf-available/opus.conf, then
// a2enconf opus) so the system Apache serves Opus's vhosts.
func (p Paths) IncludeLine() string {
	return "IncludeOptional " + filepath.Join(p.Sites(), "*.conf")
}

// ensureDirs creates privd's directories with their fixed modes.
func (p Paths) ensureDirs() error {
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{p.Dir, 0o755}, {p.Sites(), 0o755}, {p.TLS(), 0o700}, {p.Logs(), 0o750}, {p.Run(), 0o755}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return fmt.Errorf("apache: create %s: %w", d.path, err)
		}
		// MkdirAll leaves an existing directory's mode alone; the key
		// directory must be root-only whatever happened before.
		if err := os.Chmod(d.path, d.mode); err != nil {
			return fmt.Errorf("apache: chmod %s: %w", d.path, err)
		}
	}
	return nil
}

// New returns the Control for cfg.ApacheMode.
func New(cfg config.Config) (Control, error) {
	switch cfg.ApacheMode {
	case config.ApacheManaged:
		return NewManaged(cfg), nil
	case config.ApacheSystem:
		return NewSystem(cfg), nil
	}
	return nil, fmt.Errorf("apache: unknown mode %q", cfg.ApacheMode)
}

// cmdTimeout bounds every Apache subprocess.
const cmdTimeout = 60 * time.Second

// apacheEnv is the fixed environment of every Apache subprocess: privd's
// own environment is not passed on to Apache and its mod_wsgi daemons.
var apacheEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}

// run runs an Apache command with a timeout and returns its bounded,
// combined output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	return runEnv(ctx, apacheEnv, name, args...)
}

// runEnv is run with environment env.
func runEnv(ctx context.Context, env []string, name string, args ...string) (string, error) {
	return subprocess.Run(ctx, cmdTimeout, env, name, args...)
}

// Managed is an Apache instance privd runs itself, with ServerRoot ApacheDir
// and its own ports, configured by a generated httpd.conf.
type Managed struct {
	Paths
	// Binary is Debian's apache2 binary.
	Binary string
	// HTTPPort and HTTPSPort are the ports the instance listens on.
	HTTPPort, HTTPSPort int
	// ServerSuffix names the catch-all vhost's certificate.
	ServerSuffix string
	// TLSSecurityLevel is the OpenSSL security level the instance serves
	// certificates at (config tls_security_level).
	TLSSecurityLevel int
	// RestartTimeout bounds the wait for a restart to finish
	// (DefaultRestartTimeout if 0).
	RestartTimeout time.Duration
}

// NewManaged returns the managed instance described by cfg.
func NewManaged(cfg config.Config) *Managed {
	return &Managed{
		Paths:            Paths{Dir: cfg.ApacheDir},
		Binary:           "/usr/sbin/apache2",
		HTTPPort:         cfg.HTTPPort,
		HTTPSPort:        cfg.HTTPSPort,
		ServerSuffix:     cfg.ServerSuffix,
		TLSSecurityLevel: cfg.TLSSecurityLevel,
	}
}

// ConfPath is the generated main configuration.
func (m *Managed) ConfPath() string { return filepath.Join(m.Dir, "httpd.conf") }

// PidFile is where the master writes its pid.
func (m *Managed) PidFile() string { return filepath.Join(m.Run(), "httpd.pid") }

func (m *Managed) args(extra ...string) []string {
	return append([]string{"-d", m.Dir, "-f", m.ConfPath()}, extra...)
}

// Prepare creates the directories, the catch-all certificate and httpd.conf.
// ConfigTest and Graceful call it, so a fresh ApacheDir just works.
func (m *Managed) Prepare() error {
	if err := checkConfPath(m.Dir); err != nil {
		return err
	}
	if err := m.ensureDirs(); err != nil {
		return err
	}
	if err := ensureDefaultCert(m.TLS(), "default"+m.ServerSuffix, m.TLSSecurityLevel); err != nil {
		return err
	}
	conf, err := m.renderMain()
	if err != nil {
		return err
	}
	if _, err := atomicfile.WriteIfChanged(m.ConfPath(), conf, 0o644); err != nil {
		return err
	}
	return nil
}

// ConfigTest runs "apache2 -t" on the generated configuration.
func (m *Managed) ConfigTest(ctx context.Context) error {
	if err := m.Prepare(); err != nil {
		return err
	}
	if _, err := run(ctx, m.Binary, m.args("-t")...); err != nil {
		return fmt.Errorf("apache configtest: %w", err)
	}
	return nil
}

// Running returns the master's pid when it is alive, or 0.
func (m *Managed) Running() int { return masterOf(m.PidFile(), m.ConfPath()) }

// masterOf returns the pid pidFile names when that process is alive and
// still the master of conf (its command line names it, so a recycled pid
// is no master), or 0.
func masterOf(pidFile, conf string) int {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !pidAlive(pid, conf) {
		return 0
	}
	return pid
}

// ErrorLogPath is the instance's main error log.
func (m *Managed) ErrorLogPath() string { return filepath.Join(m.Logs(), "error.log") }

// Graceful configtests, then gracefully restarts the master and waits
// until it reports the restart done, or starts it when it is down. A
// configtest passes configurations the restart then refuses (a
// certificate below the security level, a key that does not match): the
// master exits, and Graceful reports ErrNotServing with Apache's reason.
func (m *Managed) Graceful(ctx context.Context) (int, bool, error) {
	if err := m.ConfigTest(ctx); err != nil {
		return 0, false, err
	}
	if pid := m.Running(); pid != 0 {
		if err := gracefulMaster(ctx, pid, m.ConfPath(), watchLog(m.ErrorLogPath()), m.RestartTimeout); err != nil {
			m.awaitGeneration()
			return pid, false, fmt.Errorf("apache graceful: %w", err)
		}
		return pid, false, nil
	}
	// A stale pid file would make "-k start" believe Apache is running.
	if err := os.Remove(m.PidFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, false, fmt.Errorf("apache: remove stale pid file: %w", err)
	}
	return startMaster(ctx, m.ErrorLogPath(), m.PidFile(), m.Running, func() error {
		_, err := run(ctx, m.Binary, m.args("-k", "start")...)
		return err
	})
}

// startMaster runs start and waits for the new master's pid file. Apache's
// start loads the whole configuration, certificates included, before it
// detaches: its failure leaves Apache down, and the error log says why.
func startMaster(ctx context.Context, errorLog, pidFile string, running func() int, start func() error) (int, bool, error) {
	w := watchLog(errorLog)
	if err := start(); err != nil {
		w.poll(0)
		return 0, false, fmt.Errorf("apache start: %w: %w: %s", ErrNotServing, err, w.reason())
	}
	for {
		if pid := running(); pid != 0 {
			return pid, true, nil
		}
		select {
		case <-ctx.Done():
			return 0, false, fmt.Errorf("apache start: no master pid in %s: %w", pidFile, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// awaitGeneration waits, after a failed restart, until no process of the
// instance is left (workers finishing their requests hold the listening
// sockets a new start needs), and kills those still there after
// exitTimeout: their master is gone.
func (m *Managed) awaitGeneration() {
	deadline := time.Now().Add(exitTimeout)
	for {
		pids := processesNaming(m.ConfPath())
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processesNaming returns the live processes whose command line holds s.
func processesNaming(s string) []int {
	var pids []int
	for _, pid := range (procs.Table{}).Matching(func(c []byte) bool { return bytes.Contains(c, []byte(s)) }) {
		if pidAlive(pid, s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Stop stops the master and waits until it is gone; it kills it if it does
// not go within ctx.
func (m *Managed) Stop(ctx context.Context) error {
	pid := m.Running()
	if pid == 0 {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("apache stop: signal %d: %w", pid, err)
	}
	for m.Running() != 0 {
		select {
		case <-ctx.Done():
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return fmt.Errorf("apache stop: master %d still running: %w", pid, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// System is Debian's own Apache, driven by apache2ctl. Its vhosts are the
// files in Paths.Sites(), which the administrator includes with
// Paths.IncludeLine().
type System struct {
	Paths
	// Ctl is apache2ctl.
	Ctl string
	// PidFile is Debian's master pid file.
	PidFile string
	// EtcDir is Debian's configuration directory, searched by CheckInclude.
	EtcDir string
	// ErrorLog is Debian's main error log, where the master reports how a
	// restart went.
	ErrorLog string
	// RestartTimeout bounds the wait for a restart to finish
	// (DefaultRestartTimeout if 0).
	RestartTimeout time.Duration
	// Env is apache2ctl's environment (apacheEnv, and APACHE_CONFDIR for
	// an instance other than Debian's default).
	Env []string
}

// NewSystem returns the system Apache described by cfg: Debian's default
// instance, or the one cfg.ApacheInstance names, laid out as Debian's
// envvars lay every instance out.
func NewSystem(cfg config.Config) *System {
	suffix := ""
	env := apacheEnv
	if cfg.ApacheInstance != "" {
		suffix = "-" + cfg.ApacheInstance
		env = append(slices.Clone(apacheEnv), "APACHE_CONFDIR=/etc/apache2"+suffix)
	}
	return &System{
		Paths:    Paths{Dir: cfg.ApacheDir},
		Ctl:      "/usr/sbin/apache2ctl",
		PidFile:  "/run/apache2" + suffix + "/apache2.pid",
		EtcDir:   "/etc/apache2" + suffix,
		ErrorLog: "/var/log/apache2" + suffix + "/error.log",
		Env:      env,
	}
}

func (s *System) env() []string {
	if s.Env == nil {
		return apacheEnv
	}
	return s.Env
}

// ConfigTest runs "apache2ctl configtest".
func (s *System) ConfigTest(ctx context.Context) error {
	if err := s.ensureDirs(); err != nil {
		return err
	}
	if _, err := runEnv(ctx, s.env(), s.Ctl, "configtest"); err != nil {
		return fmt.Errorf("apache configtest: %w", err)
	}
	return nil
}

func (s *System) running() int {
	b, err := os.ReadFile(s.PidFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !pidAlive(pid, "") {
		return 0
	}
	return pid
}

// Graceful configtests, then runs "apache2ctl graceful" and waits until the
// master reports the restart done in Debian's error log (or, when that log
// cannot be read, is still alive a moment later), or runs "apache2ctl
// start" when Apache is down. A restart the master does not survive is
// reported as ErrNotServing, as for the managed instance.
func (s *System) Graceful(ctx context.Context) (int, bool, error) {
	if err := s.ConfigTest(ctx); err != nil {
		return 0, false, err
	}
	if pid := s.running(); pid != 0 {
		w := watchLog(s.ErrorLog)
		if _, err := runEnv(ctx, s.env(), s.Ctl, "graceful"); err != nil {
			return pid, false, fmt.Errorf("apache graceful: %w", err)
		}
		alive := sameMaster(pid, "apache2")
		stop := func(p int) { stopPid(p, alive) }
		if err := awaitRestart(ctx, w, pid, alive, stop, cmp.Or(s.RestartTimeout, DefaultRestartTimeout)); err != nil {
			return pid, false, fmt.Errorf("apache graceful: %w", err)
		}
		return pid, false, nil
	}
	return startMaster(ctx, s.ErrorLog, s.PidFile, s.running, func() error {
		_, err := runEnv(ctx, s.env(), s.Ctl, "start")
		return err
	})
}

// Stop runs "apache2ctl stop".
func (s *System) Stop(ctx context.Context) error {
	if _, err := runEnv(ctx, s.env(), s.Ctl, "stop"); err != nil {
		return fmt.Errorf("apache stop: %w", err)
	}
	return nil
}

// CheckInclude reports whether Debian's configuration includes privd's vhost
// directory, and says exactly which line to add when it does not. Without
// it, vhosts privd installs would pass configtest but never be served.
func (s *System) CheckInclude() error {
	want := filepath.Join(s.Sites(), "*.conf")
	found := false
	err := filepath.WalkDir(s.EtcDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || found {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".conf")) {
			return nil
		}
		// Only files Apache reads: not *-available, which are not enabled.
		rel, _ := filepath.Rel(s.EtcDir, path)
		if strings.Contains(rel, "-available"+string(filepath.Separator)) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && (strings.EqualFold(f[0], "Include") || strings.EqualFold(f[0], "IncludeOptional")) &&
				strings.Trim(f[1], `"`) == want {
				found = true
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("apache: search %s for the Opus include: %w", s.EtcDir, err)
	}
	if !found {
		return fmt.Errorf("apache: the system Apache does not include Opus's vhosts; add the line %q to an enabled file under %s (for example conf-available/opus.conf, then a2enconf opus)", s.IncludeLine(), s.EtcDir)
	}
	var missing []string
	for _, m := range frontModules {
		if _, err := os.Stat(filepath.Join(s.EtcDir, "mods-enabled", m+".load")); err != nil {
			missing = append(missing, m)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("apache: the system Apache routes to each project's backend with modules it does not load: run a2enmod %s", strings.Join(missing, " "))
	}
	return nil
}

// frontModules are the modules of Debian's Apache the vhosts privd renders
// use (TLS, the X-Forwarded-Proto header, the route to the backend).
var frontModules = []string{"ssl", "headers", "proxy", "proxy_http"}
