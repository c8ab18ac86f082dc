// Package opusprivd assembles the root daemon from the host
// configuration: the managed or system Apache with its sites and
// backends, control groups, accounts, manage.py runs, and the gRPC server
// that serves only the opus user (privd/server); it serves them through
// internal/daemon's lifecycle. This is the one place the privd packages
// meet. cmd/opus-privd is the command line around it.
package opusprivd

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/daemon"
	"github.com/opus-hosting/opus/privd/account"
	"github.com/opus-hosting/opus/privd/apache"
	"github.com/opus-hosting/opus/privd/cgroup"
	"github.com/opus-hosting/opus/privd/manage"
	"github.com/opus-hosting/opus/privd/server"
)

// callGrace is how long in-flight calls get to finish on SIGTERM before
// the server is stopped hard.
const callGrace = 30 * time.Second

// Run runs opus-privd, serving on socket unless systemd passes one, until
// ctx ends. It must run as root.
func Run(ctx context.Context, d *daemon.Daemon, socket string) error {
	// Before anything can exec (nothing before this point does: reading
	// the command line and the configuration, making the logger).
	if err := closeInheritedOnExec(); err != nil {
		return err
	}
	cfg, log := d.Config, d.Log
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (euid is %d)", os.Geteuid())
	}
	uid, gid, err := opusIDs(cfg.OpusUser)
	if err != nil {
		return err
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
		Data: runner, SnapshotMaxBytes: cfg.SnapshotMaxBytes,
	})
	// Only root and the opus group can connect. The lock is taken also on
	// a socket systemd passed: a second privd started by mistake is
	// refused before it can remove the running one's socket and bind its
	// own, also when the running one was socket-activated and bound
	// nothing itself.
	l, lock, err := d.Listen(daemon.Socket{Path: socket, Mode: 0o660, Group: int(gid), LockActivated: true})
	if err != nil {
		return err
	}
	defer lock.Release()

	supervised, stopSupervising := context.WithCancel(context.Background())
	defer stopSupervising()
	return d.Serve(ctx, daemon.Serving{
		GRPC: srv.GRPC(), Listener: l, CallGrace: callGrace,
		Started: func() {
			log.Info("opus-privd ready", "opus_user", cfg.OpusUser, "opus_uid", uid, "base_dir", cfg.BaseDir,
				"apache_mode", cfg.ApacheMode, "apache_dir", cfg.ApacheDir)
			go apacheBackends.Supervise(supervised)
			if m, ok := ctl.(*apache.Managed); ok {
				go bringUpApache(m, apacheSites, log)
			}
		},
	})
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
