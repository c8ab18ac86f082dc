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

// stepBackend has privd make the project's backend (its own Apache +
// mod_wsgi, as its user) serve: started when down, gracefully restarted
// when its configuration changed. Either way this project's Python, and
// no other's, starts afresh; the reload step then need not restart it.
func stepBackend(ctx context.Context, t *Task) (string, error) {
	set := t.Project.Spec.Settings
	res, err := t.Privd.EnsureBackend(ctx, &privdv1.EnsureBackendRequest{Project: t.Project.Name,
		Processes: uint32(t.opt.WSGIProcesses), Threads: uint32(t.opt.WSGIThreads),
		MemoryBytes: uint64(set.MemoryBytes), Tasks: uint32(set.Tasks), CpuPercent: uint32(set.CPUPercent)})
	if err != nil {
		return "", privdErr("EnsureBackend", err)
	}
	switch {
	case res.GetStarted():
		t.backendFresh = true
		return fmt.Sprintf("backend started (master pid %d)", res.GetMasterPid()), nil
	case res.GetRestarted():
		t.backendFresh = true
		return fmt.Sprintf("backend restarted gracefully (master pid %d)", res.GetMasterPid()), nil
	}
	return fmt.Sprintf("backend running (master pid %d)", res.GetMasterPid()), nil
}

// stepVhost has privd install the project's vhost on the front, routing
// to its backend, with the certificate the certificate step chose. privd
// answers whether anything changed, which decides whether the front must
// reload.
func stepVhost(ctx context.Context, t *Task) (string, error) {
	if len(t.certPEM) == 0 || len(t.keyPEM) == 0 {
		return "", errors.New("no certificate chosen (the certificate step did not run)")
	}
	res, err := t.Privd.InstallSite(ctx, &privdv1.InstallSiteRequest{
		Project:        t.Project.Name,
		Aliases:        t.Project.Spec.Settings.Hosts,
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

// stepReload makes the front serve what is installed and the project's
// backend run its current code. The front runs no Python: its graceful
// restart, when the vhost changed or the front is down (privd then starts
// it), restarts no project. A change of code or settings restarts this
// project's daemon alone, by touching its WSGI script (mod_wsgi restarts a
// daemon whose script changed), unless the backend step just started it
// afresh.
func stepReload(ctx context.Context, t *Task) (string, error) {
	defer t.gate.leave(t.Project.Name)
	var done []string
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
			done = append(done, fmt.Sprintf("started the front Apache (master pid %d)", res.GetMasterPid()))
		} else {
			done = append(done, fmt.Sprintf("front graceful restart (master pid %d), no Python restarted", res.GetMasterPid()))
		}
	} else {
		done = append(done, "front unchanged: no graceful restart")
	}
	if !t.backendFresh && (t.codeChanged || t.Project.Status.ObservedGeneration < t.Project.Generation) {
		now := time.Now()
		if err := os.Chtimes(t.Layout.WSGI(), now, now); err != nil {
			return "", fmt.Errorf("restart the project's daemon: %w", err)
		}
		done = append(done, "touched wsgi.py to restart only this project's daemon")
	}
	return strings.Join(done, "; "), nil
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

// stepTeardownReload makes the front drop the removed vhost (a graceful
// restart of the front, which runs no project's code). It runs when the
// site step removed the vhost; should an earlier teardown have stopped
// between the two, the front routes the name to a backend address no
// project will ever have again (config.BackendAddr) until its next
// restart.
func stepTeardownReload(ctx context.Context, t *Task) (string, error) {
	if !t.siteRemoved {
		return "no virtual host was removed: no graceful restart", nil
	}
	res, err := t.Privd.ReloadApache(ctx, &privdv1.ReloadApacheRequest{})
	if err != nil {
		return "", privdErr("ReloadApache", err)
	}
	return fmt.Sprintf("front graceful restart (master pid %d)", res.GetMasterPid()), nil
}

// stepRemoveBackend has privd stop the project's backend (its master, its
// workers and its mod_wsgi daemon) and remove its configuration.
func stepRemoveBackend(ctx context.Context, t *Task) (string, error) {
	res, err := t.Privd.RemoveBackend(ctx, &privdv1.RemoveBackendRequest{Project: t.Project.Name})
	if err != nil {
		return "", privdErr("RemoveBackend", err)
	}
	if res.GetRemoved() {
		return "backend stopped and removed", nil
	}
	return "no backend to remove", nil
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
