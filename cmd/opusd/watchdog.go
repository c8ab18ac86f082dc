package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/unprivd/store"
)

// healthCheck is one thing that must work for opusd to count as alive.
type healthCheck struct {
	name  string
	check func(context.Context) error
}

// watchdog pings systemd's watchdog (WATCHDOG=1) every half WatchdogSec=
// while every check passes within that half interval, until ctx ends. It
// does nothing when systemd set no watchdog for this process. A check that
// fails or hangs means no ping: systemd then kills and restarts opusd
// after WatchdogSec=, and the restarted opusd resumes its operations from
// the store, which is the recovery the watchdog is for.
//
// What opusd's checks (storeWorking, apiServing) catch: a store whose
// reads fail or hang, a write transaction in progress for longer than
// writeStallLimit (a writer stuck in fsync on a dead disk, or an Update
// whose function blocks: every later write queues behind it while reads
// still work), and an API socket that does not answer the gRPC health
// check. What they do NOT catch: a reconciler stuck in a slow step
// (Apache, pip, a migration) outside any transaction, which looks the same
// as a slow but healthy migration, so it is left to the steps' own
// timeouts; and a wedged handler for other RPCs, as the health service
// answers from memory and only proves the server accepts and serves calls.
func watchdog(ctx context.Context, log *slog.Logger, checks ...healthCheck) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("watchdog: bad WATCHDOG_USEC/WATCHDOG_PID; not pinging", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	every := interval / 2
	log.Info("watchdog enabled", "interval", interval, "ping_every", every)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if err := runChecks(ctx, every, checks); err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Error("watchdog: unhealthy, not pinging (systemd restarts opusd if this lasts)", "err", err, "watchdog_sec", interval)
		} else if _, err := daemon.SdNotify(false, daemon.SdNotifyWatchdog); err != nil {
			log.Warn("watchdog: sd_notify WATCHDOG=1", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// runChecks runs the checks one after another, all within limit. A check
// that hangs past limit counts as failed; it is left to finish in the
// background (and, if it never does, the missing pings end the process).
func runChecks(ctx context.Context, limit time.Duration, checks []healthCheck) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		for _, c := range checks {
			if err := c.check(ctx); err != nil {
				done <- fmt.Errorf("%s: %w", c.name, err)
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		// A check that gave up because the time ran out hung just the same.
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("health checks did not finish within %s: %w", limit, err)
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("health checks did not finish within %s: %w", limit, ctx.Err())
	}
}

// writeStallLimit is how long a store write transaction may run before
// opusd counts as hung. Healthy ones write a few small records and take
// milliseconds (seconds on a very busy disk); a stalled one is caught at
// the first check past the limit, so with WatchdogSec=30s (checks every
// 15 s, the last ping at most 15 s before that check) systemd restarts
// opusd 35-50 s after the write began. Any WatchdogSec works with it: the
// limit only has to exceed the longest healthy write.
const writeStallLimit = 20 * time.Second

// storeWorking: no write transaction has been in progress for longer than
// stallLimit, and a read transaction on the state file goes through. The
// read alone proves little, since bbolt readers never wait for the writer.
func storeWorking(st *store.Store, stallLimit time.Duration) healthCheck {
	return healthCheck{name: "state store", check: func(ctx context.Context) error {
		if d, stalled := st.WriteStalled(time.Now(), stallLimit); stalled {
			return fmt.Errorf("a write transaction has been in progress for %s (limit %s): disk or writer stuck", d.Round(time.Millisecond), stallLimit)
		}
		return st.View(ctx, func(tx *store.Tx) error {
			_, err := tx.Projects()
			return err
		})
	}}
}

// apiServing: the API socket accepts a connection and the gRPC server
// answers the standard health check SERVING, exactly as a client would see
// it (through the same peer-credential transport and interceptors). The
// client connects on the first check and lives as long as the process.
func apiServing(socket string) healthCheck {
	var (
		once sync.Once
		hc   healthpb.HealthClient
		err  error
	)
	return healthCheck{name: "API", check: func(ctx context.Context) error {
		once.Do(func() {
			var cc *grpc.ClientConn
			cc, err = grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(peercred.Client()))
			hc = healthpb.NewHealthClient(cc)
		})
		if err != nil {
			return fmt.Errorf("client for %s: %w", socket, err)
		}
		res, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if res.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health status %s", res.Status)
		}
		return nil
	}}
}
