// Command opusd is the unprivileged Opus daemon: it serves the opus.v1.Opus
// API on a Unix socket any local user may connect to (identity is the
// socket's peer uid), keeps state in a bbolt file, and reconciles projects
// through opus-privd. It runs as the opus user; it never needs root.
//
// This is a thin main: flags and configuration, the listener (systemd
// socket activation or its own socket), the gRPC server, sd_notify and
// signals. Everything else lives in unprivd/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/journal"
	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/internal/socklock"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/drift"
	"github.com/opus-hosting/opus/unprivd/postgres"
	"github.com/opus-hosting/opus/unprivd/reconcile"
	"github.com/opus-hosting/opus/unprivd/service"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/store"
	"github.com/opus-hosting/opus/unprivd/web"
)

// shutdownGrace is how long steps in flight may run after SIGTERM before
// they are cancelled (and resumed at the next start).
const shutdownGrace = 30 * time.Second

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "opusd:", err)
		os.Exit(1)
	}
}

type flags struct {
	config, socket, stateDir, privdSocket, adminGroup, serverSuffix, logLevel, webAddr string
}

func run() error {
	def := config.Default()
	var f flags
	fs := flag.NewFlagSet("opusd", flag.ContinueOnError)
	fs.StringVar(&f.config, "config", config.DefaultPath, "configuration file (a missing file means defaults)")
	fs.StringVar(&f.socket, "socket", def.OpusdSocket(), "Unix socket to serve the Opus API on, unless systemd passes one (config run_dir)")
	fs.StringVar(&f.stateDir, "state-dir", def.BaseDir, "base directory: state file opusd.db, uploads in sources/, git cache in git/, project trees in projects/ (config base_dir)")
	fs.StringVar(&f.privdSocket, "privd-socket", def.PrivdSocket(), "opus-privd's Unix socket (config run_dir)")
	fs.StringVar(&f.adminGroup, "admin-group", def.AdminGroup, "group whose members may see and change every project (config admin_group)")
	fs.StringVar(&f.serverSuffix, "server-suffix", def.ServerSuffix, "suffix making a project's host name (config server_suffix)")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.webAddr, "web-addr", "", "HOST:PORT to serve the web console on over HTTPS (for example 127.0.0.1:8444; certificate in BASE/web/); empty: no console")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: opusd [flags]\n\nServes the Opus API and deploys projects through opus-privd.\nFlags override the configuration file.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(journal.ForDaemon("opusd", os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	// The default file is optional (opusd runs on the built-in defaults);
	// one named on the command line must exist, as for opus-privd: a typo
	// must not run opusd on other settings than privd's.
	given := false
	fs.Visit(func(fl *flag.Flag) { given = given || fl.Name == "config" })
	cfg, err := config.Load(f.config, !given)
	if err != nil {
		return err
	}
	// Flags given on the command line win over the file.
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if set["state-dir"] {
		cfg.BaseDir = f.stateDir
	}
	if set["admin-group"] {
		cfg.AdminGroup = f.adminGroup
	}
	if set["server-suffix"] {
		cfg.ServerSuffix = f.serverSuffix
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	socket, privdSocket := cfg.OpusdSocket(), cfg.PrivdSocket()
	if set["socket"] {
		socket = f.socket
	}
	if set["privd-socket"] {
		privdSocket = f.privdSocket
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if err := os.MkdirAll(cfg.BaseDir, 0o751); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	st, err := store.Open(ctx, filepath.Join(cfg.BaseDir, "opusd.db"), store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	uploads, err := source.NewStore(filepath.Join(cfg.BaseDir, "sources"), source.StoreOptions{
		Limits: source.DefaultLimits, Quota: cfg.UploadQuota, Grace: cfg.UploadGrace})
	if err != nil {
		return err
	}
	// Before the reconciler or the API reads a record: uploads recorded
	// before they had owners become their projects' owners'.
	if err := service.AdoptLegacyUploads(ctx, st, uploads, log); err != nil {
		return err
	}

	// privd must run as root: a socket someone else planted is not believed.
	privdConn, err := grpc.NewClient("unix://"+privdSocket, grpc.WithTransportCredentials(peercred.ClientExpecting(0)))
	if err != nil {
		return fmt.Errorf("privd client %s: %w", privdSocket, err)
	}
	defer privdConn.Close()
	privd := privdv1.NewPrivdClient(privdConn)

	gitCache := filepath.Join(cfg.BaseDir, "git")
	if err := os.MkdirAll(gitCache, 0o750); err != nil {
		return fmt.Errorf("git cache: %w", err)
	}
	// PostgreSQL provisioning is on when postgres_admin is set.
	var (
		pgAdmin   reconcile.Provisioner
		provision *service.Provisioning
	)
	if cfg.PostgresAdmin != "" {
		a, err := postgres.New(cfg.PostgresAdmin)
		if err != nil {
			return err
		}
		pgAdmin = a
		host, port := a.ProjectHost()
		provision = &service.Provisioning{Host: host, Port: port}
		log.Info("provisioning PostgreSQL for projects that ask", "admin", a.String())
		if a.PasswordInConfig() {
			log.Warn("postgres_admin holds a password, and opus.conf is readable by every local user; use peer authentication over the local socket (see opus.conf)", "admin", a.String())
		}
	}
	rec := reconcile.New(st, privd, reconcile.Options{
		BaseDir: cfg.BaseDir, ServerSuffix: cfg.ServerSuffix,
		HTTPPort: cfg.HTTPPort, HTTPSPort: cfg.HTTPSPort, ProjectUIDs: cfg.ProjectUIDs,
		WSGIProcesses: cfg.WSGIProcesses, WSGIThreads: cfg.WSGIThreads, TLSSecurityLevel: cfg.TLSSecurityLevel,
		Uploads: uploads, Git: &source.Git{CacheDir: gitCache, MaxBytes: int64(cfg.GitMaxBytes)},
		Postgres: pgAdmin, Logger: log,
	})
	// The web console, off unless --web-addr: HTTPS with its own
	// self-signed certificate under BASE/web/.
	var (
		webLis     net.Listener
		consoleURL string
	)
	if f.webAddr != "" {
		if webLis, consoleURL, err = web.Listen(f.webAddr, filepath.Join(cfg.BaseDir, "web"), time.Now()); err != nil {
			return err
		}
		defer webLis.Close()
	}
	svc, err := service.New(service.Config{
		Store: st, Privd: privd, Reconciler: rec, Admins: service.GroupAdmins{Group: cfg.AdminGroup},
		Uploads:    uploads,
		UserPrefix: cfg.UserPrefix, ProjectUIDs: cfg.ProjectUIDs, ServerSuffix: cfg.ServerSuffix, HTTPPort: cfg.HTTPPort, HTTPSPort: cfg.HTTPSPort,
		MaxUpload: source.DefaultLimits.MaxCompressed, Logger: log, ConsoleURL: consoleURL, TLSSecurityLevel: cfg.TLSSecurityLevel,
		HostCheck: drift.Host{BaseDir: cfg.BaseDir, SitesDir: layout.Sites(cfg.ApacheDir), BackendsDir: layout.Backends(cfg.ApacheDir), UserPrefix: cfg.UserPrefix, UIDs: cfg.ProjectUIDs},
		Provision: provision,
	})
	if err != nil {
		return err
	}

	lis, lock, err := listener(socket)
	if err != nil {
		return err
	}
	defer lock.Release()
	g := grpc.NewServer(append(svc.ServerOptions(), grpc.Creds(peercred.Server()))...)
	svc.Register(g)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)

	// Step work is not cut off by the signal: Stop gives it a grace period.
	if err := rec.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	go svc.RunUploadPruner(ctx, service.PruneInterval(cfg.UploadGrace))

	serveErr := make(chan error, 2)
	go func() { serveErr <- g.Serve(lis) }()
	// The console calls this same gRPC server (same interceptors and
	// access table) as the signed-in uid, over an in-process listener.
	var (
		webSrv  *http.Server
		console *web.Console
	)
	if webLis != nil {
		inproc := peercred.NewInProcess()
		go g.Serve(inproc)
		if console, err = web.New(web.Config{Listener: inproc, Logger: log}); err != nil {
			return err
		}
		webSrv = &http.Server{Handler: console, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		go func() {
			if err := webSrv.Serve(webLis); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("web console: %w", err)
			}
		}()
		log.Info("web console serving", "url", consoleURL)
	}
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY", "err", err)
	}
	go watchdog(ctx, log, storeWorking(st, writeStallLimit), apiServing(lis.Addr().String()))
	log.Info("opusd serving", "socket", lis.Addr().String(), "state", st.Path(), "privd", privdSocket, "admin_group", cfg.AdminGroup)

	var failure error
	select {
	case <-ctx.Done():
		log.Info("opusd stopping")
	case failure = <-serveErr:
		log.Error("serve", "err", failure)
	}
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	hs.Shutdown()
	if webSrv != nil {
		// Live-progress streams would hold a graceful shutdown open.
		webSrv.Close()
		console.Close()
	}
	// Stop accepting, let in-flight calls end (watchers are cut off by
	// Stop after a short wait), then let the reconciler finish its steps.
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		g.Stop()
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := rec.Stop(sctx); err != nil {
		log.Warn("reconciler stopped with steps cut short; they run again at next start", "err", err)
	}
	log.Info("opusd stopped")
	return failure
}

// listener returns the socket systemd passed (socket activation), or
// listens on path, mode 0666: any local user may connect; identity is
// checked per call from the peer credentials. Before binding it takes the
// socket's lock (internal/socklock), held until opusd exits, so a second
// opusd started by mistake cannot remove the running one's socket and bind
// its own. A socket-activated opusd binds nothing and takes no lock (its
// socket's directory is systemd's, not the opus user's to write); a second
// opusd with the same configuration is stopped before it gets near the
// socket anyway, by the lock on the state store.
func listener(path string) (net.Listener, *socklock.Lock, error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, nil, fmt.Errorf("systemd socket activation: %w", err)
	}
	var got []net.Listener
	for _, l := range ls {
		if l != nil {
			got = append(got, l)
		}
	}
	switch len(got) {
	case 0:
		lock, err := socklock.Acquire(path, socklock.DefaultWait)
		if errors.Is(err, socklock.ErrHeld) {
			return nil, nil, fmt.Errorf("another opusd is already serving %s (%w); this one stops without touching it (stop the other one first, or give this one its own --socket)", path, err)
		}
		if err != nil {
			return nil, nil, err
		}
		l, err := peercred.Listen(path, 0o666, -1)
		if err != nil {
			lock.Release()
			return nil, nil, err
		}
		return l, lock, nil
	case 1:
		if !strings.HasPrefix(got[0].Addr().Network(), "unix") {
			return nil, nil, fmt.Errorf("systemd passed a %s socket; opusd serves only Unix sockets (peer credentials are its authentication)", got[0].Addr().Network())
		}
		return got[0], nil, nil
	default:
		return nil, nil, fmt.Errorf("systemd passed %d sockets; opusd expects one", len(got))
	}
}
