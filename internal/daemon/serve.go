package daemon

import (
	"context"
	"fmt"
	"net"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"google.golang.org/grpc"
)

// Serving is what Serve serves and how it stops.
type Serving struct {
	GRPC     *grpc.Server
	Listener net.Listener
	// Failed carries the failures of the daemon's other servers (opusd's
	// web console); each ends the daemon as a failure of GRPC.Serve does.
	Failed <-chan error
	// Checks must all pass for the watchdog to ping systemd (when systemd
	// set one, WatchdogSec=; with none it pings while serving).
	Checks []HealthCheck
	// Started runs once GRPC serves and systemd was told READY=1.
	Started func()
	// Stopping runs first at stop, after STOPPING=1: the place to stop
	// answering health checks SERVING and to close other servers.
	Stopping func()
	// CallGrace bounds how long calls in flight may run after the stop;
	// those still running then are cut off.
	CallGrace time.Duration
	// Drain runs once GRPC has stopped, with a context that ends
	// DrainGrace later: work in flight gets that long to finish.
	Drain      func(context.Context) error
	DrainGrace time.Duration
}

// Serve serves s until ctx ends or a server fails, then stops: it says
// STOPPING=1, runs s.Stopping, stops accepting calls and lets those in
// flight end within s.CallGrace (then cuts them off), and drains. It
// returns the failure that ended it, or nil after ctx ended.
func (d *Daemon) Serve(ctx context.Context, s Serving) error {
	served := make(chan error, 1)
	go func() { served <- s.GRPC.Serve(s.Listener) }()
	d.notify(sd.SdNotifyReady)
	checking, stopChecking := context.WithCancel(ctx)
	defer stopChecking()
	go watchdog(checking, d.Log, s.Checks...)
	if s.Started != nil {
		s.Started()
	}

	var failure error
	select {
	case <-ctx.Done():
		d.Log.Info(d.Name+" stopping", "signal", context.Cause(ctx))
	case err := <-served:
		failure = fmt.Errorf("serve: %w", err)
	case failure = <-s.Failed:
	}
	if failure != nil {
		d.Log.Error(d.Name+" stopping", "err", failure)
	}
	stopChecking()
	d.notify(sd.SdNotifyStopping)
	if s.Stopping != nil {
		s.Stopping()
	}
	d.stopGRPC(s.GRPC, s.CallGrace)
	if s.Drain != nil {
		dctx, cancel := context.WithTimeout(context.Background(), s.DrainGrace)
		err := s.Drain(dctx)
		cancel()
		if err != nil {
			d.Log.Warn("work in flight cut short by the stop", "err", err, "grace", s.DrainGrace)
		}
	}
	d.Log.Info(d.Name + " stopped")
	return failure
}

// stopGRPC stops g gracefully (no new calls; those in flight end) within
// grace, and then hard.
func (d *Daemon) stopGRPC(g *grpc.Server, grace time.Duration) {
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		d.Log.Warn("calls still running after the grace period; cutting them off", "grace", grace)
		g.Stop()
	}
}

// notify tells systemd state (READY=1, STOPPING=1); without systemd it
// does nothing.
func (d *Daemon) notify(state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		d.Log.Warn("sd_notify "+state+" failed", "err", err)
	}
}
