package apache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/opus-hosting/opus/internal/atomicfile"
	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/procs"
	"github.com/opus-hosting/opus/internal/subprocess"
	"github.com/opus-hosting/opus/privd/cgroup"
	"github.com/opus-hosting/opus/privd/confine"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// A project's backend is an Apache of its own: a master privd starts
// confined (a mount namespace with private /tmp, /var/tmp and /dev/shm, no
// new privileges, limits), from a configuration that names this project
// and nothing else, whose workers and mod_wsgi daemon run as the project's
// user. It listens at the project's own loopback address
// (config.BackendAddr), on a port only root can bind, and serves the
// project's code and static files; the front routes to it. No key and no
// other tenant's state was ever in the process its daemons fork from, and
// restarting it restarts this project's Python alone.

// Backend timing.
const (
	// backendListenWait bounds the wait for a started backend to accept
	// connections: a start is Apache's own (no Python is imported before
	// the first request), well under a second.
	backendListenWait = 20 * time.Second
	// backendStopWait bounds the wait for a stopped master to go before it
	// is killed; mod_wsgi gives its daemons 5 s to end.
	backendStopWait = 10 * time.Second
	// superviseEvery is how often privd looks for backends that died.
	superviseEvery = 2 * time.Second
)

// group is the control group of project's backend: beneath privd's own,
// one parent per Opus instance (by user prefix), one group per project.
func (b *Backends) group(project string) (*cgroup.Group, error) {
	if b.Cgroups == nil {
		return nil, nil
	}
	return b.Cgroups.Group(CgroupParent(b.cfg.UserPrefix) + "/" + project)
}

// CgroupParent is the name of the control group, beneath privd's own,
// that holds every backend of an Opus instance with user prefix prefix.
func CgroupParent(prefix string) string { return "opus." + strings.TrimSuffix(prefix, "-") }

// UserLookup returns the uid and gid of a project's user, refusing a user
// Opus did not make (privd/account's LookupUser).
type UserLookup func(project string) (uid, gid uint32, err error)

// Backends runs, supervises and stops the projects' backends.
type Backends struct {
	cfg   config.Config
	paths Paths
	// Binary is Debian's apache2.
	Binary string
	// Self is privd's own executable, which starts every backend confined
	// (see package confine).
	Self string
	// Limits bound each backend (confine.DefaultLimits when zero).
	Limits confine.Limits
	// Lookup finds a project's user; required.
	Lookup UserLookup
	// Cgroups is where each backend gets a control group of its own, with
	// the configured limits (nil: the host gives none; the rlimits of
	// package confine still hold).
	Cgroups *cgroup.Root
	// Units, when set, runs every backend as an instance of its systemd
	// unit instead (system mode under systemd): systemd confines, bounds
	// and restarts it; Cgroups and Limits are not used.
	Units *Units
	// RestartTimeout bounds a graceful restart (DefaultRestartTimeout if 0).
	RestartTimeout time.Duration
	log            *slog.Logger

	mu      sync.Mutex
	locks   map[string]*sync.Mutex // one per project: its calls and supervision in turn
	backoff map[string]backoff     // projects whose backend would not start
}

type backoff struct {
	next  time.Time
	delay time.Duration
}

// NewBackends returns the backends of cfg; self is privd's executable.
func NewBackends(cfg config.Config, self string, lookup UserLookup, log *slog.Logger) *Backends {
	if log == nil {
		log = slog.Default()
	}
	return &Backends{cfg: cfg, paths: Paths{Dir: cfg.ApacheDir}, Binary: "/usr/sbin/apache2", Self: self,
		Lookup: lookup, log: log, locks: map[string]*sync.Mutex{}, backoff: map[string]backoff{}}
}

// Backends holds one directory per project's backend.
func (p Paths) Backends() string { return layout.Backends(p.Dir) }

// Backend is the directory of a project's backend: its httpd.conf and its
// run directory (pid file, mod_wsgi's sockets). Root's, mode 0755.
func (p Paths) Backend(project string) string { return filepath.Join(p.Backends(), project) }

func (p Paths) backendConf(project string) string {
	return filepath.Join(p.Backend(project), "httpd.conf")
}
func (p Paths) backendRun(project string) string { return filepath.Join(p.Backend(project), "run") }
func (p Paths) backendPid(project string) string {
	return filepath.Join(p.backendRun(project), "httpd.pid")
}

func (b *Backends) lock(project string) func() {
	l := b.projectLock(project)
	l.Lock()
	return l.Unlock
}

func (b *Backends) projectLock(project string) *sync.Mutex {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.locks[project]
	if !ok {
		l = &sync.Mutex{}
		b.locks[project] = l
	}
	return l
}

// backendTemplate is a project's backend. ServerLimit 2 with
// MaxRequestWorkers one process's threads: one worker process serves, and
// a graceful restart starts the next generation beside the one finishing
// its requests. The daemon group is as it was under the shared Apache
// (display-name (wsgi:NAME), home=, python-path=). X-Forwarded-Proto is
// the front's (it sets it on every request it routes): a client that
// connects here directly may claim https, which gives it nothing the
// front's https would not.
var backendTemplate = template.Must(template.New("backend").Parse(`# Generated by opus-privd: the backend of project {{.Name}} - do not edit.
ServerRoot "{{.Dir}}"
DefaultRuntimeDir {{.Run}}
PidFile {{.PidFile}}
ErrorLog {{.ErrorLog}}
LogLevel warn
ServerName {{.ServerName}}
ServerTokens Prod
ServerSignature Off
{{range .Modules}}LoadModule {{.}}_module {{$.ModulesDir}}/mod_{{.}}.so
{{end}}User {{.User}}
Group {{.User}}
TypesConfig /etc/mime.types
Listen {{.Addr}}
StartServers 1
ServerLimit 2
ThreadLimit {{.Workers}}
ThreadsPerChild {{.Workers}}
MaxRequestWorkers {{.Workers}}
MinSpareThreads 1
MaxSpareThreads {{.Spare}}
WSGISocketPrefix {{.Run}}/wsgi
WSGIRestrictEmbedded On
<Directory />
    AllowOverride None
    Options None
    Require all denied
</Directory>
SetEnvIf X-Forwarded-Proto "^https$" HTTPS=on
WSGIDaemonProcess {{.Name}} user={{.User}} group={{.User}} home={{.Root}} processes={{.Processes}} threads={{.Threads}} display-name=%{GROUP} python-path={{.Code}} lang=C.UTF-8 locale=C.UTF-8
WSGIProcessGroup {{.Name}}
WSGIApplicationGroup %{GLOBAL}
WSGIScriptAlias / {{.WSGI}} process-group={{.Name}} application-group=%{GLOBAL}
Alias /static/ {{.Static}}/
<Directory {{.Code}}>
    AllowOverride None
    Options None
    Require all denied
    <Files wsgi.py>
        Require all granted
    </Files>
</Directory>
<Directory {{.Static}}>
    AllowOverride None
    Options None
    Require all granted
</Directory>
`))

// RenderBackend validates s and renders its backend's httpd.conf for cfg;
// addr is the backend's address (config.BackendAddr of the project user's
// uid). Every value is a validated name, a number, or a path derived from
// cfg.
func RenderBackend(cfg config.Config, s Site, addr netip.AddrPort) ([]byte, error) {
	s, err := s.check(cfg, addr)
	if err != nil {
		return nil, err
	}
	p, ap := layout.For(cfg.BaseDir, s.Project), Paths{Dir: cfg.ApacheDir}
	var b bytes.Buffer
	err = backendTemplate.Execute(&b, map[string]any{
		"Name": s.Project, "ServerName": cfg.ServerName(s.Project), "User": names.User(cfg.UserPrefix, s.Project),
		"Dir": ap.Backend(s.Project), "Run": ap.backendRun(s.Project), "PidFile": ap.backendPid(s.Project),
		"ErrorLog": ap.ErrorLog(s.Project), "Addr": addr.String(), "ModulesDir": modulesDir,
		"Modules":   []string{"mpm_event", "authz_core", "alias", "mime", "setenvif", "reqtimeout", "wsgi"},
		"Processes": s.Processes, "Threads": s.Threads, "Workers": backendWorkers(s), "Spare": backendWorkers(s) + 1,
		"Root": p.Root, "Code": p.Code, "Static": p.Static, "WSGI": p.WSGI(),
	})
	if err != nil {
		return nil, fmt.Errorf("apache: render backend for %s: %w", s.Project, err)
	}
	return b.Bytes(), nil
}

// The backend loads mod_reqtimeout, as Debian's Apache does: any local
// user reaches a backend directly, and without it a few connections that
// never finish their request would hold all of its workers.

// backendWorkers is the backend's worker threads: one per daemon thread,
// and a few for static files, at most 128.
func backendWorkers(s Site) int { return min(s.Processes*s.Threads+4, 128) }

// Ensure makes the project's backend serve its rendered configuration: it
// writes it, starts the backend when it is down, and restarts it
// gracefully when the configuration changed. It returns once the backend
// accepts connections.
func (b *Backends) Ensure(ctx context.Context, req *privdv1.EnsureBackendRequest) (*privdv1.EnsureBackendResponse, error) {
	name := req.GetProject()
	uid, gid, err := b.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", name, err)
	}
	addr := b.cfg.BackendAddr(uid)
	conf, err := RenderBackend(b.cfg, Site{Project: name, Processes: int(req.GetProcesses()), Threads: int(req.GetThreads())}, addr)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", name, err)
	}
	limits := config.BackendLimits{MemoryBytes: int64(req.GetMemoryBytes()), Tasks: int(req.GetTasks()), CPUPercent: int(req.GetCpuPercent())}.Or(b.cfg.BackendLimits())
	if err := limits.Validate(""); err != nil {
		return nil, fmt.Errorf("backend %s: %w", name, err)
	}
	defer b.lock(name)()
	if err := b.ensureDirs(name); err != nil {
		return nil, fmt.Errorf("backend %s: %w", name, err)
	}
	path := b.paths.backendConf(name)
	prev, prevErr := os.ReadFile(path)
	changed, err := atomicfile.WriteIfChanged(path, conf, 0o644)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", name, err)
	}
	// restore puts back the configuration the backend had (none, for a
	// new one) when the new one fails.
	restore := func() {
		if !changed {
			return
		}
		if prevErr == nil {
			_ = atomicfile.Write(path, prev, 0o644)
		} else {
			_ = os.Remove(path)
		}
	}
	b.clearBackoff(name)
	if err := b.setLimits(ctx, name, limits); err != nil {
		return nil, fmt.Errorf("backend %s: %w", name, err)
	}
	if pid := b.Running(name); pid != 0 {
		if !changed {
			return &privdv1.EnsureBackendResponse{MasterPid: int32(pid)}, nil
		}
		// A running backend must never be restarted onto a configuration
		// it would not survive.
		if _, err := run(ctx, b.Binary, b.args(name, "-t")...); err != nil {
			restore()
			return nil, fmt.Errorf("backend %s: configtest: %w", name, err)
		}
		if err := b.graceful(ctx, name, pid); err != nil {
			return nil, fmt.Errorf("backend %s: %w", name, err)
		}
		return &privdv1.EnsureBackendResponse{MasterPid: int32(pid), Restarted: true}, nil
	}
	// A backend that is down is tested by its start.
	pid, err := b.start(ctx, name, uid, gid, addr, &limits)
	if err != nil {
		restore()
		return nil, fmt.Errorf("backend %s: %w", name, err)
	}
	return &privdv1.EnsureBackendResponse{MasterPid: int32(pid), Started: true}, nil
}

func (b *Backends) args(project string, extra ...string) []string {
	return append([]string{"-d", b.paths.Backend(project), "-f", b.paths.backendConf(project)}, extra...)
}

func (b *Backends) ensureDirs(project string) error {
	if err := b.paths.ensureDirs(); err != nil {
		return err
	}
	for _, d := range []string{b.paths.Backends(), b.paths.Backend(project), b.paths.backendRun(project)} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("apache: create %s: %w", d, err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return fmt.Errorf("apache: chmod %s: %w", d, err)
		}
	}
	return nil
}

// Running returns the pid of the project's backend master when it is
// alive, or 0.
func (b *Backends) Running(project string) int {
	return masterOf(b.paths.backendPid(project), b.paths.backendConf(project))
}

// setLimits sets the limits of project's control group, when it has one:
// a running backend's bounds change at once.
func (b *Backends) setLimits(ctx context.Context, project string, l config.BackendLimits) error {
	if b.Units != nil {
		if b.Running(project) == 0 {
			return nil // start writes them
		}
		return b.Units.write(ctx, b.cfg, project, l)
	}
	g, err := b.group(project)
	if err != nil || g == nil || !g.Exists() {
		return err
	}
	return g.Ensure(cgroup.Limits{MemoryBytes: l.MemoryBytes, Tasks: int64(l.Tasks), CPUPercent: l.CPUPercent})
}

// start starts the backend confined and waits until it accepts
// connections at addr. Its control group gets limits; nil keeps those of
// a group that is there (a backend started again after it died keeps its
// project's bounds) and gives a new one the host's defaults.
func (b *Backends) start(ctx context.Context, project string, uid, gid uint32, addr netip.AddrPort, limits *config.BackendLimits) (int, error) {
	if err := os.Remove(b.paths.backendPid(project)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("remove stale pid file: %w", err)
	}
	// A master that was killed leaves its mod_wsgi daemons running, still
	// holding the old generation's sockets: they go first (all of its
	// group, where there is one).
	for _, pid := range (procs.Table{}).Of(uid, 0) {
		if cmdline, _ := (procs.Table{}).Cmdline(pid); bytes.HasPrefix(cmdline, []byte("(wsgi:"+project+")")) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	w := watchLog(b.paths.ErrorLog(project))
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	if err := b.launch(ctx, project, uid, gid, limits); err != nil {
		w.poll(0)
		return 0, fmt.Errorf("start: %w %s", err, w.reason())
	}
	begun := time.Now()
	for {
		pid := b.Running(project)
		if pid != 0 && accepts(ctx, addr) {
			b.log.Info("backend started", "project", project, "master_pid", pid, "addr", addr.String())
			return pid, nil
		}
		// A master that cannot bind its address exits after it detached,
		// saying why in the log and writing no pid file.
		if v, _ := w.poll(pid); v == failed || pid == 0 && len(w.lines) > 0 && time.Since(begun) > 2*time.Second {
			return 0, fmt.Errorf("start: the backend did not come up: %s", w.reason())
		}
		if time.Since(begun) > backendListenWait {
			return 0, fmt.Errorf("start: the backend does not accept connections at %s after %s: %s", addr, backendListenWait, w.reason())
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("start: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// launch starts the backend's master: as an instance of its systemd unit
// (Units), or confined by privd itself in a control group of its own
// where the host has them. limits: see start.
func (b *Backends) launch(ctx context.Context, project string, uid, gid uint32, limits *config.BackendLimits) error {
	l := b.cfg.BackendLimits()
	if limits != nil {
		l = *limits
	}
	if b.Units != nil {
		return b.Units.start(ctx, b.cfg, project, l)
	}
	var joins []string
	g, err := b.group(project)
	if err != nil {
		return err
	}
	if g != nil {
		g.Kill(backendStopWait)
		if limits != nil || !g.Exists() {
			if err := g.Ensure(cgroup.Limits{MemoryBytes: l.MemoryBytes, Tasks: int64(l.Tasks), CPUPercent: l.CPUPercent}); err != nil {
				return err
			}
		}
		joins = g.ProcsFiles()
	}
	// The project's task bound is its user's RLIMIT_NPROC too (the only
	// bound where the host has no control groups).
	rl := b.Limits
	if l.Tasks > 0 {
		rl.Tasks = uint64(l.Tasks)
	}
	cmd, err := confine.Command(ctx, b.Self, confine.Spec{UID: uid, GID: gid, Master: true,
		Path: b.Binary, Args: append([]string{backendArgv0(project)}, b.args(project, "-k", "start")...), Env: apacheEnv, Dir: "/",
		Keep: []string{b.cfg.ApacheDir, b.cfg.BaseDir}, Limits: rl, CgroupProcs: joins})
	if err != nil {
		return err
	}
	_, err = subprocess.Wait(ctx, cmd, backendArgv0(project)+" -k start")
	return err
}

// backendArgv0 is the name a backend's processes show: mod_wsgi writes its
// daemon's display name, (wsgi:NAME), over the master's argv[0] and cuts
// it to that length, so argv[0] must be longer than it ("/usr/sbin/apache2"
// would cut a project name of more than ten characters).
func backendArgv0(project string) string { return "apache2-backend-" + project }

// accepts reports whether something accepts connections at addr.
func accepts(ctx context.Context, addr netip.AddrPort) bool {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// graceful restarts the backend gracefully (its mod_wsgi daemon with it)
// and waits for the master to report the restart done.
func (b *Backends) graceful(ctx context.Context, project string, pid int) error {
	if err := gracefulMaster(ctx, pid, b.paths.backendConf(project), watchLog(b.paths.ErrorLog(project)), b.RestartTimeout); err != nil {
		return fmt.Errorf("graceful restart: %w", err)
	}
	return nil
}

// Remove stops the project's backend, ending every process of its
// generation and of its control group, and removes its directory and
// group. Removing an absent backend
// succeeds with removed=false.
func (b *Backends) Remove(ctx context.Context, req *privdv1.RemoveBackendRequest) (*privdv1.RemoveBackendResponse, error) {
	name := req.GetProject()
	if err := names.ValidateProject(name); err != nil {
		return nil, fmt.Errorf("remove backend: %w", err)
	}
	defer b.lock(name)()
	dir := b.paths.Backend(name)
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return &privdv1.RemoveBackendResponse{Removed: false}, nil
	}
	if err := b.stop(ctx, name); err != nil {
		return nil, fmt.Errorf("remove backend %s: %w", name, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("remove backend %s: %w", name, err)
	}
	b.clearBackoff(name)
	b.log.Info("backend removed", "project", name)
	return &privdv1.RemoveBackendResponse{Removed: true}, nil
}

// stop ends the master (SIGTERM: Apache stops its workers and mod_wsgi its
// daemons), then kills whatever of its generation is left.
func (b *Backends) stop(ctx context.Context, project string) error {
	if b.Units != nil {
		return b.Units.stop(ctx, project)
	}
	conf := b.paths.backendConf(project)
	if pid := b.Running(project); pid != 0 {
		alive := sameMaster(pid, conf)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(backendStopWait)
		for alive(pid) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, pid := range processesNaming(conf) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// Whatever the tenant started and detached is still in the group.
	g, err := b.group(project)
	if err != nil || g == nil {
		return err
	}
	if left := g.Kill(backendStopWait); left > 0 {
		return fmt.Errorf("%d processes of the backend's control group survived SIGKILL", left)
	}
	if err := g.Remove(); err != nil {
		return err
	}
	// The instance's parent group goes with its last backend (removing
	// one that still has groups fails, and is left).
	if parent, err := b.Cgroups.Group(CgroupParent(b.cfg.UserPrefix)); err == nil {
		_ = parent.Remove()
	}
	return nil
}

// Projects returns the projects that have a backend configuration.
func (b *Backends) Projects() []string {
	ents, _ := os.ReadDir(b.paths.Backends())
	var out []string
	for _, e := range ents {
		if e.IsDir() && names.ValidateProject(e.Name()) == nil {
			if _, err := os.Lstat(b.paths.backendConf(e.Name())); err == nil {
				out = append(out, e.Name())
			}
		}
	}
	slices.Sort(out)
	return out
}

// Supervise starts every configured backend that is down, at once and
// then every couple of seconds until ctx ends: after a reboot, a privd
// restart or a crash, each backend comes back by itself. A backend that
// will not start is tried again later, each time twice as late, up to a
// minute.
func (b *Backends) Supervise(ctx context.Context) {
	for {
		for _, name := range b.Projects() {
			if ctx.Err() != nil {
				return
			}
			b.revive(ctx, name)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(superviseEvery):
		}
	}
}

// revive starts project's backend if it is configured and down.
func (b *Backends) revive(ctx context.Context, project string) {
	b.mu.Lock()
	bo := b.backoff[project]
	b.mu.Unlock()
	if time.Now().Before(bo.next) {
		return
	}
	// A project whose call is under way (a start, a graceful restart: up
	// to a minute) is looked at next round: one slow project must not
	// hold up the revival of every other.
	l := b.projectLock(project)
	if !l.TryLock() {
		return
	}
	defer l.Unlock()
	if _, err := os.Lstat(b.paths.backendConf(project)); err != nil || b.Running(project) != 0 {
		return
	}
	uid, gid, err := b.Lookup(project)
	if err == nil {
		var pid int
		if pid, err = b.start(ctx, project, uid, gid, b.cfg.BackendAddr(uid), nil); err == nil {
			b.log.Warn("backend was down and is started again", "project", project, "master_pid", pid)
			b.clearBackoff(project)
			return
		}
	}
	bo.delay = min(max(2*bo.delay, superviseEvery), time.Minute)
	bo.next = time.Now().Add(bo.delay)
	b.mu.Lock()
	b.backoff[project] = bo
	b.mu.Unlock()
	b.log.Error("backend is down and does not start", "project", project, "retry_in", bo.delay, "err", err)
}

func (b *Backends) clearBackoff(project string) {
	b.mu.Lock()
	delete(b.backoff, project)
	b.mu.Unlock()
}
