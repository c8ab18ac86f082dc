// Package opusd assembles the unprivileged daemon from the host
// configuration: the state store, uploads, the client of opus-privd,
// PostgreSQL provisioning, the reconciler, the API service with its
// health service, and the optional web console; it serves them through
// internal/daemon's lifecycle. cmd/opusd is the command line around it.
package opusd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/opus-hosting/opus/internal/daemon"
	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/peercred"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/acme"
	"github.com/opus-hosting/opus/unprivd/drift"
	"github.com/opus-hosting/opus/unprivd/metrics"
	"github.com/opus-hosting/opus/unprivd/postgres"
	"github.com/opus-hosting/opus/unprivd/reconcile"
	"github.com/opus-hosting/opus/unprivd/service"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/store"
	"github.com/opus-hosting/opus/unprivd/web"
)

const (
	// callGrace is how long API calls in flight may run after SIGTERM;
	// then they (live watchers, mostly) are cut off.
	callGrace = 5 * time.Second
	// shutdownGrace is how long steps in flight may run after the API
	// stopped before they are cancelled (and resumed at the next start).
	shutdownGrace = 30 * time.Second
)

// Options are opusd's settings that are not in the host configuration.
type Options struct {
	// Socket is the API's socket, unless systemd passes one.
	Socket string
	// PrivdSocket is opus-privd's socket.
	PrivdSocket string
	// WebAddr is HOST:PORT of the web console; empty: no console.
	WebAddr string
}

// Run runs opusd until ctx ends, then stops it: the API stops answering
// health checks SERVING, the console closes, calls in flight get
// callGrace, and the reconciler's steps shutdownGrace.
func Run(ctx context.Context, d *daemon.Daemon, o Options) error {
	cfg, log := d.Config, d.Log
	// Refused before anything is made: a typo must leave no state.
	if o.WebAddr != "" {
		if err := web.CheckAddr(o.WebAddr); err != nil {
			return fmt.Errorf("--web-addr: %w", err)
		}
	}
	if err := os.MkdirAll(cfg.BaseDir, 0o751); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	// One set of upload limits: the store's, the API's (its largest
	// archive) and the web console's (which keeps to both).
	uploadLimits := source.DefaultLimits
	uploads, err := source.NewStore(filepath.Join(cfg.BaseDir, "sources"), source.StoreOptions{
		Limits: uploadLimits, Quota: cfg.UploadQuota, Grace: cfg.UploadGrace})
	if err != nil {
		return err
	}
	// Before the reconciler or the API reads a record: uploads recorded
	// before they had owners become their projects' owners'.
	if err := service.AdoptLegacyUploads(ctx, st, uploads, log); err != nil {
		return err
	}

	// privd must run as root: a socket someone else planted is not believed.
	privdConn, err := grpc.NewClient("unix://"+o.PrivdSocket, grpc.WithTransportCredentials(peercred.ClientExpecting(0)),
		grpc.WithConnectParams(privdReconnect))
	if err != nil {
		return fmt.Errorf("privd client %s: %w", o.PrivdSocket, err)
	}
	defer privdConn.Close()
	privd := privdv1.NewPrivdClient(privdConn)

	gitCache := filepath.Join(cfg.BaseDir, "git")
	if err := os.MkdirAll(gitCache, 0o750); err != nil {
		return fmt.Errorf("git cache: %w", err)
	}
	pgAdmin, provision, err := provisioning(d)
	if err != nil {
		return err
	}
	// With acme_directory, every project's certificate comes from the
	// ACME CA; without, nothing of ACME runs (self-signed, as always).
	var issuer reconcile.Issuer
	if cfg.ACME() {
		ac, err := acme.New(cfg, log)
		if err != nil {
			return err
		}
		issuer = ac
		log.Info("certificates from the ACME CA", "directory", cfg.ACMEDirectory, "check_interval", cfg.ACMECheckInterval)
	}
	// The metrics observe the reconciler and read its queue: made first,
	// they read it through rec once it exists.
	var rec *reconcile.Reconciler
	// The disk pruner runs a pass after each successful deploy; svc is
	// set before the reconciler starts.
	var svc *service.Service
	git := &source.Git{CacheDir: gitCache, MaxBytes: int64(cfg.GitMaxBytes)}
	mets := metrics.New(metrics.Config{Store: st, Privd: privd, Logger: log,
		Queue: func() (int, int) { return rec.Queue() }})
	ropt := reconcile.Options{
		ACME: issuer, ACMECheckInterval: cfg.ACMECheckInterval,
		BaseDir: cfg.BaseDir, ServerSuffix: cfg.ServerSuffix,
		HTTPPort: cfg.HTTPPort, HTTPSPort: cfg.HTTPSPort, ProjectUIDs: cfg.ProjectUIDs,
		WSGIProcesses: cfg.WSGIProcesses, WSGIThreads: cfg.WSGIThreads, TLSSecurityLevel: cfg.TLSSecurityLevel,
		Uploads: uploads, Git: git,
		Postgres: pgAdmin, Logger: log,
		SnapshotMaxBytes: cfg.SnapshotMaxBytes, SnapshotKeep: cfg.SnapshotKeep, SnapshotQuota: cfg.SnapshotQuota,
		RevisionsKeep: cfg.RevisionsKeep,
		Succeeded:     func(string) { svc.KickPrune() },
		Observer:      mets,
	}
	rec = reconcile.New(st, privd, ropt)
	// With the state shared by several hosts, this host's part in moving
	// projects (nil on one host).
	mv, err := newMoves(cfg, st, privd, ropt, rec, log)
	if err != nil {
		return err
	}
	defer mv.close()
	// Any local user may connect; identity is checked per call from the
	// peer credentials. A socket-activated opusd takes no lock: its
	// socket's directory is systemd's, not the opus user's to write, and
	// a second opusd with the same configuration is stopped before it
	// gets near the socket anyway, by the lock on the state store. The
	// socket comes before the metrics and console addresses: a second
	// opusd beside the running one says that, not that a port is taken.
	lis, lock, err := d.Listen(daemon.Socket{Path: o.Socket, Mode: 0o666, Group: -1})
	if err != nil {
		return err
	}
	defer lock.Release()
	metricsSrv, err := listenMetrics(mets, cfg.MetricsListen)
	if err != nil {
		return err
	}
	defer metricsSrv.close()
	con, err := listenConsole(o.WebAddr, cfg.BaseDir)
	if err != nil {
		return err
	}
	defer con.close()
	svc, err = service.New(service.Config{
		Store: st, Privd: privd, Reconciler: rec, Admins: service.GroupAdmins{Group: cfg.AdminGroup},
		Uploads:  uploads,
		HostName: cfg.Host(), Mover: mv.kicker(),
		UserPrefix: cfg.UserPrefix, ProjectUIDs: cfg.ProjectUIDs, ServerSuffix: cfg.ServerSuffix, HTTPPort: cfg.HTTPPort, HTTPSPort: cfg.HTTPSPort,
		MaxUpload: uploadLimits.MaxCompressed, Logger: log, ConsoleURL: con.url(), TLSSecurityLevel: cfg.TLSSecurityLevel,
		HostCheck: drift.Host{BaseDir: cfg.BaseDir, SitesDir: layout.Sites(cfg.ApacheDir), BackendsDir: layout.Backends(cfg.ApacheDir), UserPrefix: cfg.UserPrefix, UIDs: cfg.ProjectUIDs},
		Provision: provision,
		Backups:   &service.Backups{BaseDir: cfg.BaseDir, MaxData: cfg.SnapshotMaxBytes, MaxApps: cfg.UploadQuota, OpusVersion: opusVersion()},
		Disk: service.Disk{BaseDir: cfg.BaseDir, Git: git, RevisionsKeep: cfg.RevisionsKeep,
			GitCacheMaxBytes: cfg.GitCacheMaxBytes, GitCacheIdle: cfg.GitCacheIdle,
			UploadQuota: cfg.UploadQuota, SnapshotQuota: cfg.SnapshotQuota},
	})
	if err != nil {
		return err
	}

	g := grpc.NewServer(append(svc.ServerOptions(), grpc.Creds(peercred.Server()))...)
	svc.Register(g)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)

	// Listed among the hosts before it works on a project: a host_name
	// another live host holds is refused here, before this opusd takes
	// that host's projects for its own. New projects may be placed here
	// from then on; the reconciler starts next and picks them up.
	instance, err := hostInstance(cfg.BaseDir)
	if err != nil {
		return fmt.Errorf("this host's instance id: %w", err)
	}
	h := store.Host{Name: cfg.Host(), Front: cfg.Front(), HTTPPort: cfg.HTTPPort, HTTPSPort: cfg.HTTPSPort,
		Capacity: cfg.HostCapacity, Since: time.Now(), Instance: instance}
	h.PeerAddr, h.PeerFingerprint = mv.peerAddr(cfg)
	if err := st.RegisterHost(ctx, h); err != nil {
		return err
	}
	// Step work is not cut off by the signal: Stop gives it a grace period.
	if err := rec.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	if err := mv.start(ctx); err != nil {
		return err
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	go svc.RunDiskPruner(ctx, service.PruneInterval(cfg.UploadGrace))
	failed := make(chan error, 1)
	if err := con.serve(g, consoleUploads(uploadLimits), log, failed); err != nil {
		return err
	}
	metricsSrv.serve(log, failed)
	return d.Serve(ctx, daemon.Serving{
		GRPC: g, Listener: lis, Failed: failed,
		Checks: []daemon.HealthCheck{storeWorking(st, writeStallLimit), apiServing(lis.Addr().String())},
		Started: func() {
			log.Info("opusd serving", "socket", lis.Addr().String(), "state", st.Path(), "host", cfg.Host(), "privd", o.PrivdSocket, "admin_group", cfg.AdminGroup)
		},
		Stopping: func() {
			hs.Shutdown()
			// Live-progress streams would hold a graceful shutdown open.
			con.close()
			metricsSrv.close()
		},
		CallGrace: callGrace,
		Drain: func(ctx context.Context) error {
			mv.stop(ctx)
			if err := rec.Stop(ctx); err != nil {
				return fmt.Errorf("reconciler stopped with steps cut short; they run again at next start: %w", err)
			}
			return nil
		},
		DrainGrace: shutdownGrace,
	})
}

// provisioning is PostgreSQL provisioning, on when postgres_admin is set.
func provisioning(d *daemon.Daemon) (reconcile.Provisioner, *service.Provisioning, error) {
	if d.Config.PostgresAdmin == "" {
		return nil, nil, nil
	}
	a, err := postgres.New(d.Config.PostgresAdmin)
	if err != nil {
		return nil, nil, err
	}
	host, port := a.ProjectHost()
	d.Log.Info("provisioning PostgreSQL for projects that ask", "admin", a.String())
	if a.PasswordInConfig() {
		d.Log.Warn("postgres_admin holds a password, and opus.conf is readable by every local user; use peer authentication over the local socket (see opus.conf)", "admin", a.String())
	}
	return a, &service.Provisioning{Host: host, Port: port}, nil
}

// privdReconnect is how opusd dials privd again after losing it. gRPC's
// default backoff grows to two minutes, so after privd restarted every
// call would fail fast ("not reachable") for up to that long; privd is a
// local socket, so trying again every two seconds at most costs nothing
// and brings opusd back within moments of privd.
var privdReconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
	MinConnectTimeout: 5 * time.Second,
}

// opusVersion is this build's module version (recorded in backups), or
// "(devel)".
func opusVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
