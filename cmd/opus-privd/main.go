// Command opus-privd is the root half of Opus: a small gRPC service on a
// Unix socket that only the opus user may call (see package privd/server).
// This main only reads configuration and flags, resolves the opus user,
// opens the listener (systemd socket activation or its own socket), wires
// the privd packages together, and handles sd_notify and signals.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/journal"
	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/internal/socklock"
	"github.com/opus-hosting/opus/privd/account"
	"github.com/opus-hosting/opus/privd/apache"
	"github.com/opus-hosting/opus/privd/cgroup"
	"github.com/opus-hosting/opus/privd/confine"
	"github.com/opus-hosting/opus/privd/manage"
	"github.com/opus-hosting/opus/privd/server"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// stopTimeout is how long in-flight calls get to finish on SIGTERM before
// the server is stopped hard.
const stopTimeout = 30 * time.Second

func main() {
	// privd runs itself again to start tenant code confined (package
	// confine); in that mode this never returns.
	confine.MaybeRunChild()
	os.Exit(run(os.Args[1:], os.Stderr))
}

// options are the command line after parsing.
type options struct {
	configPath  string
	configGiven bool
	socket      string
	logLevel    slog.Level
	overrides   map[string]string // config keys set by flags
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	def := config.Default()
	fs := flag.NewFlagSet("opus-privd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: opus-privd [flags]\n\nopus-privd is Opus's privileged daemon; it serves only the opus user.\nFlags override the configuration file.\n\n")
		fs.PrintDefaults()
	}
	o := options{overrides: map[string]string{}}
	fs.StringVar(&o.configPath, "config", config.DefaultPath, "configuration `file` (a missing default file means built-in defaults)")
	fs.StringVar(&o.socket, "socket", def.PrivdSocket(), "Unix socket `path` to listen on when not socket-activated; unless set, privd.sock in the configured run_dir")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	// Flags that override one configuration key each.
	keyed := []struct{ flag, key, def, usage string }{
		{"base-dir", "base_dir", def.BaseDir, "base `dir`ectory holding project trees"},
		{"opus-user", "opus_user", def.OpusUser, "the only `user` privd serves"},
		{"apache-mode", "apache_mode", def.ApacheMode, "Apache `mode`: managed or system"},
		{"apache-dir", "apache_dir", def.ApacheDir, "managed Apache's ServerRoot, or the system vhost `dir`ectory"},
		{"http-port", "http_port", strconv.Itoa(def.HTTPPort), "Apache's HTTP `port` for project vhosts"},
		{"https-port", "https_port", strconv.Itoa(def.HTTPSPort), "Apache's HTTPS `port` for project vhosts"},
	}
	vals := map[string]*string{}
	for _, k := range keyed {
		vals[k.flag] = fs.String(k.flag, k.def, k.usage)
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := o.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return o, fmt.Errorf("--log-level: %w", err)
	}
	socketGiven := false
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "config":
			o.configGiven = true
		case "socket":
			socketGiven = true
		}
		for _, k := range keyed {
			if k.flag == f.Name {
				o.overrides[k.key] = *vals[k.flag]
			}
		}
	})
	if !socketGiven {
		o.socket = ""
	}
	return o, nil
}

// loadConfig reads the file (optional unless named on the command line) and
// applies the flag overrides.
func loadConfig(o options) (config.Config, error) {
	cfg, err := config.Load(o.configPath, !o.configGiven)
	if err != nil {
		return cfg, err
	}
	for k, v := range o.overrides {
		if err := cfg.Set(k, v); err != nil {
			return cfg, fmt.Errorf("flag: %w", err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// opusIDs resolves the opus user; privd refuses to start without it.
func opusIDs(name string) (uid, gid uint32, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("opus user %q: %w (create it, or set opus_user)", name, err)
	}
	uid64, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid64, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("opus user %q has uid %q gid %q", name, u.Uid, u.Gid)
	}
	if uid64 == 0 {
		return 0, 0, fmt.Errorf("opus user %q has uid 0; it must be unprivileged", name)
	}
	return uint32(uid64), uint32(gid64), nil
}

// listen uses the socket systemd passed, if any, else makes its own socket
// that only root and the opus group can connect to. Either way it first
// takes the socket's lock (internal/socklock), held until privd exits: a
// second privd started by mistake is refused before it can remove the
// running one's socket and bind its own — also when the running one was
// socket-activated and bound nothing itself.
func listen(socket string, opusGID uint32, log *slog.Logger) (net.Listener, *socklock.Lock, error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, nil, fmt.Errorf("systemd socket activation: %w", err)
	}
	if len(ls) > 0 {
		if len(ls) != 1 || ls[0] == nil {
			return nil, nil, fmt.Errorf("systemd passed %d sockets; want one Unix socket", len(ls))
		}
		if _, ok := ls[0].(*net.UnixListener); !ok {
			return nil, nil, fmt.Errorf("systemd passed a %T; want a Unix socket", ls[0])
		}
		// The lock goes with the path actually served (the unit's
		// ListenStream=), which a privd started by hand would bind.
		path := socket
		if addr := ls[0].Addr().String(); filepath.IsAbs(addr) {
			path = addr
		}
		lock, err := lockSocket(path)
		if err != nil {
			ls[0].Close()
			return nil, nil, err
		}
		log.Info("using socket from systemd", "addr", ls[0].Addr().String())
		return ls[0], lock, nil
	}
	lock, err := lockSocket(socket)
	if err != nil {
		return nil, nil, err
	}
	l, err := peercred.Listen(socket, 0o660, int(opusGID))
	if err != nil {
		lock.Release()
		return nil, nil, err
	}
	log.Info("listening", "socket", socket)
	return l, lock, nil
}

// lockSocket takes socket's lock, saying plainly when another privd holds it.
func lockSocket(socket string) (*socklock.Lock, error) {
	lock, err := socklock.Acquire(socket, socklock.DefaultWait)
	if errors.Is(err, socklock.ErrHeld) {
		return nil, fmt.Errorf("another opus-privd is already serving %s (%w); this one stops without touching it (stop the other one first, or give this one its own run_dir or --socket)", socket, err)
	}
	return lock, err
}

func run(args []string, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "opus-privd:", err)
		return 2
	}
	log := slog.New(journal.ForDaemon("opus-privd", stderr, &slog.HandlerOptions{Level: o.logLevel}))
	slog.SetDefault(log)
	if err := serve(o, log); err != nil {
		log.Error("opus-privd failed", "err", err)
		return 1
	}
	return 0
}

func serve(o options, log *slog.Logger) error {
	if err := closeInheritedOnExec(); err != nil {
		return err
	}
	cfg, err := loadConfig(o)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (euid is %d)", os.Geteuid())
	}
	uid, gid, err := opusIDs(cfg.OpusUser)
	if err != nil {
		return err
	}
	socket := o.socket
	if socket == "" {
		socket = cfg.PrivdSocket()
	}

	ctl, err := apache.New(cfg)
	if err != nil {
		return err
	}
	runner := manage.New(cfg)
	runner.Logger = log
	// The privd packages meet only here; these assignments are the
	// compile-time check that they fit the server's interfaces.
	apacheSites := apache.NewSites(cfg, ctl, apache.Options{Logger: log})
	var (
		sites   server.Sites   = apacheSites
		manager server.Manager = runner
	)
	if sys, ok := ctl.(*apache.System); ok {
		// Without the include, vhosts would pass configtest and never be
		// served: refuse installs (not start-up, so removals and logs keep
		// working) and say so now, not at the first deploy.
		if err := sys.CheckInclude(); err != nil {
			log.Error("InstallSite is refused until the system Apache includes Opus's vhosts", "err", err)
		}
		sites = apache.IncludeGuard{Sites: apacheSites, Check: sys.CheckInclude}
	}
	if err := checkBackendPort(cfg.BackendPort, unprivilegedPortStart); err != nil {
		return err
	}
	accounts := &account.Accounts{BaseDir: cfg.BaseDir, Prefix: cfg.UserPrefix, UIDs: cfg.ProjectUIDs}
	apacheBackends := apache.NewBackends(cfg, "/proc/self/exe", func(project string) (uint32, uint32, error) {
		u, err := accounts.LookupUser(project)
		return u.UID, u.GID, err
	}, log)
	switch root, err := cgroup.Detect(""); {
	case cfg.ApacheMode == config.ApacheSystem && apache.SystemdRuns():
		apacheBackends.Units = apache.NewUnits()
		log.Info("backends run as instances of " + apache.UnitTemplate)
	case err != nil:
		log.Warn("backends run without control groups of their own (memory, task and CPU bounds)", "err", err)
	default:
		apacheBackends.Cgroups = root
	}
	var backends server.Backends = apacheBackends
	srv := server.New(server.Config{
		OpusUID: uid, OpusGID: gid, BaseDir: cfg.BaseDir, Accounts: accounts,
		Sites: sites, Backends: backends, Manager: manager, Logger: log, BackendAddr: cfg.BackendAddr,
	})
	l, lock, err := listen(socket, gid, log)
	if err != nil {
		return err
	}
	defer lock.Release()
	g := srv.GRPC()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- g.Serve(l) }()
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY failed", "err", err)
	}
	log.Info("opus-privd ready", "opus_user", cfg.OpusUser, "opus_uid", uid, "base_dir", cfg.BaseDir,
		"apache_mode", cfg.ApacheMode, "apache_dir", cfg.ApacheDir)
	supervised, stopSupervising := context.WithCancel(context.Background())
	defer stopSupervising()
	go apacheBackends.Supervise(supervised)
	if m, ok := ctl.(*apache.Managed); ok {
		go bringUpApache(m, apacheSites, log)
	}

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case sig := <-sigs:
		log.Info("stopping", "signal", sig.String())
	}
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	select {
	case <-stopped:
	case <-ctx.Done():
		log.Warn("calls still running after timeout; stopping hard", "timeout", stopTimeout)
		g.Stop()
	}
	log.Info("stopped")
	return nil
}

// unprivilegedPortStart is the sysctl of the first port any user may bind.
const unprivilegedPortStart = "/proc/sys/net/ipv4/ip_unprivileged_port_start"

// checkBackendPort refuses a backend port unprivileged users may bind
// (net.ipv4.ip_unprivileged_port_start lowered): a tenant could then take
// another project's backend address while its backend is down.
func checkBackendPort(port int, sysctl string) error {
	b, err := os.ReadFile(sysctl)
	if err != nil {
		return nil // no such sysctl: ports below 1024 are root's
	}
	start, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err == nil && port >= start {
		return fmt.Errorf("backend_port %d: this host lets any user bind ports from %d (net.ipv4.ip_unprivileged_port_start), so a tenant could stand in for another project's backend; choose a port below %d", port, start, start)
	}
	return nil
}

// apacheStartTimeout bounds bringing the managed Apache up at start-up.
const apacheStartTimeout = 2 * time.Minute

// bringUpApache starts the managed front Apache when it is down but has
// vhosts to serve — after a reboot nothing else would start it until some
// project changed. A running front is left alone: a graceful restart
// would be work for nothing (it restarts no project's Python). It goes
// through Sites.Reload, so it is configtested and serialised with any
// InstallSite that arrives meanwhile.
func bringUpApache(m *apache.Managed, sites *apache.Sites, log *slog.Logger) {
	if pid := m.Running(); pid != 0 {
		log.Info("managed Apache already running", "master_pid", pid)
		return
	}
	vhosts, err := filepath.Glob(filepath.Join(m.Sites(), "*.conf"))
	if err != nil || len(vhosts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), apacheStartTimeout)
	defer cancel()
	res, err := sites.Reload(ctx, &privdv1.ReloadApacheRequest{})
	if err != nil {
		log.Error("could not start the managed Apache for the installed sites", "sites", len(vhosts), "err", err)
		return
	}
	log.Info("started the managed Apache for the installed sites", "sites", len(vhosts), "master_pid", res.GetMasterPid(), "started", res.GetStarted())
}
