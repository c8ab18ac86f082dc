package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	// healthBodyMax bounds what is read of an answer's body (then dropped):
	// the project's code writes it.
	healthBodyMax = 64 << 10
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
	if len(t.certPEM) == 0 {
		return "", errors.New("no certificate chosen (the certificate step did not run)")
	}
	install := func() (*privdv1.InstallSiteResponse, error) {
		return t.Privd.InstallSite(ctx, &privdv1.InstallSiteRequest{
			Project:        t.Project.Name,
			Aliases:        t.Project.Spec.Settings.Hosts,
			CertificatePem: t.certPEM, KeyPem: t.keyPEM,
		})
	}
	res, err := install()
	if err != nil && len(t.keyPEM) == 0 && status.Code(err) == codes.InvalidArgument {
		// privd no longer holds the key of the CA's certificate opusd kept
		// (a failed graceful restart put the site's previous key back):
		// serve a self-signed certificate; the renewal loop asks the CA
		// for a new one at once.
		t.Log.Warn("acme: privd refused the kept certificate from the CA; serving a self-signed one until the CA issues a new one", "err", err)
		if rerr := os.Remove(ACMECertPath(t.opt.BaseDir, t.Project.Name)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return "", fmt.Errorf("forget the refused certificate: %w", rerr)
		}
		leaf, _, serr := selfSigned(t, t.ServerName(), t.Clock.Now())
		if serr != nil {
			return "", serr
		}
		if uerr := t.Update(ctx, func(p *store.Project) {
			p.Status.Certificate = store.CertificateStatus{Kind: CertSelfSigned, NotAfter: leaf.NotAfter}
		}); uerr != nil {
			return "", uerr
		}
		res, err = install()
	}
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

// stepHealth asks the project's own vhost for "/" until it answers, then
// every app's mount point (/APP/ for each app with a urls.py, as the
// rendered urls.py mounts them), and fails on a 5xx at any of them.
//
// "/" is always the rendered index view, so anything but a 2xx or 3xx there
// is a failure; in particular the 404 of Apache's catch-all vhost means the
// project's vhost is not live yet (a graceful restart is asynchronous), so
// "any status below 500" would not do. A refused connection means Apache
// is down: it is started once.
//
// Once "/" answered, the front routes to the backend and the project's
// URLconf (every app's urls.py, which include() imports) loaded; what a
// mount point adds is running the app's own view. See healthMounts for
// what counts as failing there.
func stepHealth(ctx context.Context, t *Task) (string, error) {
	p := newProber(t)
	defer p.close()
	start := time.Now()
	deadline := start.Add(t.opt.HealthTimeout)
	started := false
	interval := healthInterval
	var last string
	for {
		code, err := p.get(ctx, "/")
		switch {
		case err == nil:
			if code >= 200 && code < 400 {
				msg := fmt.Sprintf("%s answered %d in %s", p.shown("/"), code, time.Since(start).Round(time.Millisecond))
				mounts, err := healthMounts(ctx, t, p, deadline)
				if err != nil {
					return "", err
				}
				return msg + "; " + mounts, nil
			}
			last = statusText(code)
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
	msg := fmt.Sprintf("%s did not answer within %s; last answer: %s", p.shown("/"), t.opt.HealthTimeout, last)
	return "", errors.New(withErrorLog(ctx, t, msg))
}

// healthRetryFor is how long a mount point that answered a 5xx (or did not
// answer) is asked again before the health check fails, the first time
// after healthRetryInterval, then at a growing interval. "/" has answered
// by then, so the front routes to the backend and a daemon runs the new
// code. A 5xx left is either the app's own error — Django's 500 for a view
// that raises, which the same GET gets at every request, so waiting longer
// only delays the answer the owner needs — or a moment of the backend: a
// mod_wsgi daemon process being replaced (a second process taking the
// touched wsgi.py, maximum-requests, a memory limit) can fail the one
// request it held (mod_wsgi's 500 "truncated headers") or give the front's
// proxy a 502/503. Requests that arrive meanwhile queue for the daemon's
// socket rather than fail, so such a moment is well under a second. Three
// seconds of asking again at the growing interval (six requests in all)
// rides it out, and a steady 500 fails in seconds, not after the whole
// health timeout (90 s by default) as "/" would. The retries start at
// healthRetryInterval rather than "/"'s healthInterval: each 500 writes a
// traceback to the project's error log, which the owner then reads, and a
// moment of the backend is not over sooner than that anyway.
const (
	healthRetryFor      = 3 * time.Second
	healthRetryInterval = 250 * time.Millisecond
)

// mountPoint is an app's URL prefix and what it last answered.
type mountPoint struct {
	app, path string
	code      int    // last status; 0 when the request failed
	last      string // last answer, for the failure message
	tries     int
}

// healthMounts requests the mount point of every app that has one, all
// once and then those that failed again, until each answered below 500 or
// healthRetryFor has passed since the first failure (or the health
// deadline, whichever is first; every mount point is asked at least once).
// It reports how many answered, or an error naming each failing URL with
// its status.
//
// A 4xx is not a failure: an app whose urls.py has no pattern for "" (no
// index view) answers 404 at its mount point, one behind a login 403 or
// 401 (or a redirect to its login page, a 3xx). The app's URLconf was
// imported for "/" already; a 4xx means Django resolved the request and
// answered it, while a 5xx is what a view that raises (or a backend that
// cannot run it) gives.
func healthMounts(ctx context.Context, t *Task, p *prober, deadline time.Time) (string, error) {
	var mounts []*mountPoint
	for _, a := range djangoConfig(t).Apps {
		if a.URLs { // the rule the rendered urls.py mounts by
			mounts = append(mounts, &mountPoint{app: a.Name, path: "/" + a.Name + "/"})
		}
	}
	if len(mounts) == 0 {
		return "no app has a urls.py to mount", nil
	}
	pending := mounts
	var firstFail time.Time
	interval := healthRetryInterval
	for {
		var failing []*mountPoint
		for _, m := range pending {
			if !time.Now().Before(deadline) {
				// The health check's time is spent: asked one after the
				// other, mount points that each take nearly
				// healthRequestTimeout (one app's code answering slowly,
				// many apps) would otherwise hold this reconcile worker,
				// which other projects' runs share, without bound.
				if m.tries > 0 {
					failing = append(failing, m) // still failing: judged below
				} else {
					m.code, m.last = 0, "no request: the health check's "+t.opt.HealthTimeout.String()+" were spent"
				}
				continue
			}
			rctx, cancel := context.WithDeadline(ctx, deadline)
			code, err := p.get(rctx, m.path)
			cancel()
			m.tries++
			switch {
			case err != nil && ctx.Err() != nil:
				return "", ctx.Err()
			case err != nil:
				// No answer in time: a view may be slow (or wait on
				// something) without being broken, and "/" answered, so
				// the backend runs. Only a server error fails the change;
				// this is said, not judged.
				m.code, m.last = 0, "no answer within "+healthRequestTimeout.String()
				if !time.Now().Before(deadline) {
					m.last = "no answer before the health check's " + t.opt.HealthTimeout.String() + " were spent"
				}
			case code >= 500:
				m.code, m.last = code, statusText(code)
				failing = append(failing, m)
			default:
				m.code, m.last = code, ""
			}
		}
		if len(failing) == 0 {
			break
		}
		now := time.Now()
		if firstFail.IsZero() {
			firstFail = now
		}
		if now.Sub(firstFail) >= healthRetryFor || now.After(deadline) {
			return "", errors.New(withErrorLog(ctx, t, mountFailure(t, p, failing, now.Sub(firstFail))))
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(interval):
		}
		interval = min(interval*3/2, healthIntervalMax)
		pending = failing
	}
	answers := make([]string, len(mounts))
	for i, m := range mounts {
		answers[i] = fmt.Sprintf("%s %d", m.path, m.code)
		if m.code == 0 {
			answers[i] = fmt.Sprintf("%s gave %s (not judged: only a server error fails the check)", m.path, m.last)
		}
	}
	n := "1 app mount point"
	if len(mounts) > 1 {
		n = fmt.Sprintf("%d app mount points", len(mounts))
	}
	return fmt.Sprintf("%s answered: %s", n, strings.Join(answers, ", ")), nil
}

// mountFailure says which apps' mount points failed and how, and where the
// reason is.
func mountFailure(t *Task, p *prober, failing []*mountPoint, over time.Duration) string {
	var b strings.Builder
	for _, m := range failing {
		what := "answered " + m.last
		times := "once"
		if m.tries > 1 {
			times = fmt.Sprintf("at each of %d requests over %s", m.tries, over.Round(100*time.Millisecond))
		}
		fmt.Fprintf(&b, "app %s: %s %s %s\n", m.app, p.shown(m.path), what, times)
	}
	page := "this app's page fails"
	if len(failing) > 1 {
		page = "these apps' pages fail"
	}
	fmt.Fprintf(&b, "%s with a server error; the project's error log says why (opusctl logs %s)", page, t.Project.Name)
	return b.String()
}

// withErrorLog adds the last lines of the project's error log to msg.
func withErrorLog(ctx context.Context, t *Task, msg string) string {
	res, err := t.Privd.TailLog(ctx, &privdv1.TailLogRequest{Project: t.Project.Name, Lines: healthLogLines})
	switch {
	case err != nil:
		msg += fmt.Sprintf("\n(the project's error log could not be read: %v)", privdErr("TailLog", err))
	case len(res.GetLines()) > 0:
		msg += "\nlast lines of the project's error log:\n" + tailLines(strings.Join(res.GetLines(), "\n"), healthLogLines)
	}
	return msg
}

func statusText(code int) string {
	return fmt.Sprintf("HTTP %d %s", code, http.StatusText(code))
}

// prober makes the health check's requests: to Apache's address, with the
// project's host name, no redirect followed, no proxy, no connection kept,
// the body read to a bound and dropped.
type prober struct {
	client     *http.Client
	addr, host string
	port       int
}

func newProber(t *Task) *prober {
	return &prober{
		client: &http.Client{
			Timeout:       healthRequestTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
		},
		addr: t.opt.HealthAddr, host: t.ServerName(), port: t.opt.HTTPPort,
	}
}

func (p *prober) close() { p.client.CloseIdleConnections() }

// shown is the URL of path as the project's owner would load it.
func (p *prober) shown(path string) string {
	return fmt.Sprintf("http://%s:%d%s", p.host, p.port, path)
}

// get requests path and answers its status.
func (p *prober) get(ctx context.Context, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+path, nil)
	if err != nil {
		return 0, fmt.Errorf("health: %w", err)
	}
	req.Host = p.host
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, healthBodyMax))
	resp.Body.Close()
	return resp.StatusCode, nil
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
