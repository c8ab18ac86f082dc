package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/opus-hosting/opus/internal/procs"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Health check and teardown timing.
const (
	healthRequestTimeout = 10 * time.Second
	// The health check asks again after healthInterval, growing by half
	// each time up to healthIntervalMax: a graceful restart usually makes
	// the vhost live within a few tens of milliseconds, and a request that
	// reaches the project's daemon waits for Django's import by itself, so
	// a long first interval is only latency; a project that takes long to
	// start is asked less often.
	healthInterval    = 50 * time.Millisecond
	healthIntervalMax = time.Second
	healthLogLines    = 20
	// processWait bounds how long the teardown waits for the project's
	// mod_wsgi daemon to exit after Apache dropped its vhost. What is left
	// then (a process the tenant detached) privd's DeleteUser ends.
	processWait = 2 * time.Second
)

// stepVhost has privd install the project's vhost with the certificate
// the certificate step chose. privd answers whether anything changed,
// which decides whether Apache must reload.
func stepVhost(ctx context.Context, t *Task) (string, error) {
	if len(t.certPEM) == 0 || len(t.keyPEM) == 0 {
		return "", errors.New("no certificate chosen (the certificate step did not run)")
	}
	res, err := t.Privd.InstallSite(ctx, &privdv1.InstallSiteRequest{
		Project:   t.Project.Name,
		Aliases:   t.Project.Spec.Settings.Hosts,
		Processes: uint32(t.opt.WSGIProcesses), Threads: uint32(t.opt.WSGIThreads),
		CertificatePem: t.certPEM, KeyPem: t.keyPEM,
	})
	if err != nil {
		return "", privdErr("InstallSite", err)
	}
	t.vhostChanged = res.GetChanged()
	if t.vhostChanged {
		// Recorded, so that a crash before the reload step still reloads.
		if err := t.Update(ctx, func(p *store.Project) { p.Status.ReloadPending = true }); err != nil {
			return "", err
		}
		return "virtual host " + t.ServerName() + " installed", nil
	}
	return "virtual host unchanged", nil
}

// stepReload makes Apache serve what is installed. A graceful restart
// restarts every project's mod_wsgi daemon, so it happens only when the
// vhost changed or Apache is down (privd then starts it). A change of
// code or settings alone restarts just this project's daemon, by touching
// its WSGI script (mod_wsgi restarts a daemon whose script changed).
func stepReload(ctx context.Context, t *Task) (string, error) {
	defer t.gate.leave(t.Project.Name)
	up := apacheUp(ctx, t)
	if t.vhostChanged || t.Project.Status.ReloadPending || !up {
		// Through the gate: deploys of a burst share the graceful restart.
		res, err := t.gate.reload(ctx, t.Project.Name, func(ctx context.Context) (*privdv1.ReloadApacheResponse, error) {
			return t.Privd.ReloadApache(ctx, &privdv1.ReloadApacheRequest{})
		})
		if err != nil {
			return "", privdErr("ReloadApache", err)
		}
		if why, ok := res.GetRolledBack()[t.Project.Name]; ok {
			// Apache did not survive the restart with this site: privd put
			// back the site it served before and started Apache again.
			// ReloadPending stays set: the next run installs the site again.
			return "", fmt.Errorf("the new site was rolled back, so the project still serves its previous one: %s", why)
		}
		t.reloaded = true
		if err := t.Update(ctx, func(p *store.Project) { p.Status.ReloadPending = false }); err != nil {
			return "", err
		}
		if res.GetStarted() {
			return fmt.Sprintf("started Apache (master pid %d)", res.GetMasterPid()), nil
		}
		return fmt.Sprintf("graceful restart (master pid %d)", res.GetMasterPid()), nil
	}
	if t.codeChanged || t.Project.Status.ObservedGeneration < t.Project.Generation {
		now := time.Now()
		if err := os.Chtimes(t.Layout.WSGI(), now, now); err != nil {
			return "", fmt.Errorf("restart the project's daemon: %w", err)
		}
		return "vhost unchanged: no graceful restart; touched wsgi.py to restart only this project's daemon", nil
	}
	return "vhost unchanged: no graceful restart", nil
}

// apacheUp reports whether something accepts connections on Apache's
// HTTP port.
func apacheUp(ctx context.Context, t *Task) bool {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", t.opt.HealthAddr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// stepHealth asks the project's own vhost for "/" until it answers. "/"
// is always the rendered index view, so anything but a 2xx or 3xx is a
// failure; in particular the 404 of Apache's catch-all vhost means the
// project's vhost is not live yet (a graceful restart is asynchronous), so
// "any status below 500" would not do. A refused connection means Apache
// is down: it is started once.
func stepHealth(ctx context.Context, t *Task) (string, error) {
	host := t.ServerName()
	url := "http://" + t.opt.HealthAddr + "/"
	shown := fmt.Sprintf("http://%s:%d/", host, t.opt.HTTPPort)
	client := &http.Client{
		Timeout:       healthRequestTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
	defer client.CloseIdleConnections()
	start := time.Now()
	deadline := start.Add(t.opt.HealthTimeout)
	started := false
	interval := healthInterval
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return "", fmt.Errorf("health: %w", err)
		}
		req.Host = host
		resp, err := client.Do(req)
		switch {
		case err == nil:
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode >= 200 && resp.StatusCode < 400 {
				return fmt.Sprintf("%s answered %d in %s", shown, resp.StatusCode, time.Since(start).Round(time.Millisecond)), nil
			}
			last = fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		case errors.Is(err, syscall.ECONNREFUSED) && !started:
			started = true
			if _, err := t.Privd.ReloadApache(ctx, &privdv1.ReloadApacheRequest{}); err != nil {
				return "", privdErr("ReloadApache", err)
			}
			continue
		default:
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			last = err.Error()
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(interval):
		}
		interval = min(interval*3/2, healthIntervalMax)
	}
	msg := fmt.Sprintf("%s did not answer within %s; last answer: %s", shown, t.opt.HealthTimeout, last)
	res, err := t.Privd.TailLog(ctx, &privdv1.TailLogRequest{Project: t.Project.Name, Lines: healthLogLines})
	switch {
	case err != nil:
		msg += fmt.Sprintf("\n(the project's error log could not be read: %v)", privdErr("TailLog", err))
	case len(res.GetLines()) > 0:
		msg += "\nlast lines of the project's error log:\n" + tailLines(strings.Join(res.GetLines(), "\n"), healthLogLines)
	}
	return "", errors.New(msg)
}

// stepTeardownReload makes Apache drop the removed vhost, which also ends
// the project's mod_wsgi daemon (its user can only be deleted without
// processes). It runs when the site step removed the vhost, or when a
// process of the project's user is still running (an earlier teardown
// removed the vhost and stopped before reloading).
func stepTeardownReload(ctx context.Context, t *Task) (string, error) {
	uid := t.Project.Status.UID
	if !t.siteRemoved && len(procs.Table{}.Of(uid, 1)) == 0 {
		return "no virtual host was removed: no graceful restart", nil
	}
	res, err := t.Privd.ReloadApache(ctx, &privdv1.ReloadApacheRequest{})
	if err != nil {
		return "", privdErr("ReloadApache", err)
	}
	return fmt.Sprintf("graceful restart (master pid %d)", res.GetMasterPid()), nil
}

// waitNoProcesses waits until no process runs as uid, for at most
// processWait. It reports how many are left.
func waitNoProcesses(ctx context.Context, uid uint32) int {
	deadline := time.Now().Add(processWait)
	for {
		n := len(procs.Table{}.Of(uid, 0))
		if n == 0 || time.Now().After(deadline) {
			return n
		}
		select {
		case <-ctx.Done():
			return n
		case <-time.After(200 * time.Millisecond):
		}
	}
}
