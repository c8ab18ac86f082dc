package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// HealthCheck is one thing that must work for a daemon to count as alive.
type HealthCheck struct {
	Name  string
	Check func(context.Context) error
}

// watchdog pings systemd's watchdog (WATCHDOG=1) every half WatchdogSec=
// while every check passes within that half interval, until ctx ends. It
// does nothing when systemd set no watchdog for this process. A check that
// fails or hangs means no ping: systemd then kills and restarts the
// daemon after WatchdogSec=, and the restarted one resumes its work from
// its state, which is the recovery the watchdog is for. What each check
// catches, and what none can, is for the daemon that defines it to say.
func watchdog(ctx context.Context, log *slog.Logger, checks ...HealthCheck) {
	interval, err := sd.SdWatchdogEnabled(false)
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
			log.Error("watchdog: unhealthy, not pinging (systemd restarts the daemon if this lasts)", "err", err, "watchdog_sec", interval)
		} else if _, err := sd.SdNotify(false, sd.SdNotifyWatchdog); err != nil {
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
func runChecks(ctx context.Context, limit time.Duration, checks []HealthCheck) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		for _, c := range checks {
			if err := c.Check(ctx); err != nil {
				done <- fmt.Errorf("%s: %w", c.Name, err)
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
