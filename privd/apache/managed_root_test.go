package apache

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/testrun"
	"github.com/opus-hosting/opus/privd/account"
	"github.com/opus-hosting/opus/privd/confine"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

func TestMain(m *testing.M) {
	// Backends start confined through the test binary itself.
	confine.MaybeRunChild()
	os.Exit(testrun.Main(m))
}

// apachePids returns the pids of processes whose command line names dir.
func apachePids(dir string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(dir+"/")) || !bytes.Contains(b, []byte("apache2")) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func killApacheIn(dir string) {
	for _, pid := range apachePids(dir) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randSuffix() string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 6)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return string(b)
}

// createProjectUser makes project's user with privd's account package,
// under the run's prefix (so the run removes it even if it dies), and
// deletes it when the test ends.
func createProjectUser(t *testing.T, acc *account.Accounts, project string) *user.User {
	t.Helper()
	uid, err := testrun.FreeID(acc.UIDs)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := acc.EnsureUser(context.Background(), project, uid); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := acc.DeleteUser(context.Background(), project); err != nil {
			t.Errorf("delete user of %s: %v", project, err)
		}
	})
	u, err := user.Lookup(acc.User(project))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

const helloWSGI = `import os

def application(environ, start_response):
    environ['wsgi.errors'].write('opus-test-marker %s\n' % environ.get('mod_wsgi.process_group'))
    body = ('hello from %s uid=%d\n' % (environ.get('mod_wsgi.process_group'), os.getuid())).encode()
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [body]
`

// countingControl wraps the real Control to count calls and, when broken
// is set, make the real configtest fail with a genuinely invalid file.
type countingControl struct {
	Control
	sites     string
	mu        sync.Mutex
	tests     int
	gracefuls int
	broken    bool
}

func (c *countingControl) ConfigTest(ctx context.Context) error {
	c.mu.Lock()
	c.tests++
	broken := c.broken
	c.mu.Unlock()
	if broken {
		bad := filepath.Join(c.sites, "zzbroken.conf")
		if err := os.WriteFile(bad, []byte("BogusDirective on\n"), 0o644); err != nil {
			return err
		}
		defer os.Remove(bad)
	}
	return c.Control.ConfigTest(ctx)
}

func (c *countingControl) Graceful(ctx context.Context) (int, bool, error) {
	c.mu.Lock()
	c.gracefuls++
	c.mu.Unlock()
	return c.Control.Graceful(ctx)
}

func (c *countingControl) counts() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tests, c.gracefuls
}

// userBusy reports whether a process runs as uid (a live run's user).
func userBusy(uid string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/status")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" && f[1] == uid {
				return true
			}
		}
	}
	return false
}

// managedEnv is a managed Apache of its own (directory, ports) for a test
// on the real thing, stopped and removed at cleanup.
type managedEnv struct {
	dir      string
	cfg      config.Config
	managed  *Managed
	backends *Backends
	routes   map[string]netip.AddrPort // project → its backend's address
}

// route is where project's vhost routes: its backend.
func (e *managedEnv) route(project string) netip.AddrPort { return e.routes[project] }

// newManagedEnv skips unless the test may start Apache (root, not -short,
// mod_wsgi installed). Apache runs on files in the run's directory
// (www-data may traverse it), so a killed run's Apache is found and
// stopped by the next run; its project users are the run's.
func newManagedEnv(t *testing.T) *managedEnv {
	t.Helper()
	run := testrun.Need(t, "starts a managed Apache and creates project users")
	if _, err := os.Stat("/usr/lib/apache2/modules/mod_wsgi.so"); err != nil {
		t.Skip("needs apache2 and libapache2-mod-wsgi-py3")
	}
	dir := run.TempDir(t)
	cfg := config.Default()
	cfg.ApacheDir = filepath.Join(dir, "apache")
	cfg.BaseDir = filepath.Join(dir, "base")
	cfg.ServerSuffix = ".opus.test"
	cfg.UserPrefix = run.UserPrefix()
	cfg.ProjectUIDs = run.UIDs()
	cfg.HTTPPort, cfg.HTTPSPort = freePort(t), freePort(t)
	acc := &account.Accounts{Prefix: cfg.UserPrefix, BaseDir: cfg.BaseDir, UIDs: cfg.ProjectUIDs}
	e := &managedEnv{dir: dir, cfg: cfg, managed: NewManaged(cfg), routes: map[string]netip.AddrPort{},
		backends: NewBackends(cfg, "/proc/self/exe", func(project string) (uint32, uint32, error) {
			u, err := acc.LookupUser(project)
			return u.UID, u.GID, err
		}, nil)}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.managed.Stop(sctx); err != nil {
			t.Error(err)
		}
		killApacheIn(dir)
	})
	return e
}

// addProject makes a project user and a tree whose WSGI script answers
// "hello from PROJECT uid=UID", and a static file, and starts its backend.
func (e *managedEnv) addProject(t *testing.T) (string, *user.User) {
	t.Helper()
	project := "ap" + randSuffix()
	u := createProjectUser(t, &account.Accounts{Prefix: e.cfg.UserPrefix, BaseDir: e.cfg.BaseDir, UIDs: e.cfg.ProjectUIDs}, project)
	// Runs before the user is deleted: Apache and the project's daemon
	// must be gone first.
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.managed.Stop(sctx)
		if _, err := e.backends.Remove(sctx, &privdv1.RemoveBackendRequest{Project: project}); err != nil {
			t.Errorf("remove backend of %s: %v", project, err)
		}
		for deadline := time.Now().Add(10 * time.Second); userBusy(u.Uid) && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
	})
	p := layout.For(e.cfg.BaseDir, project)
	for _, d := range []string{p.Root, p.Code, p.Static} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Dir(p.Root), 0o755)
	os.Chmod(e.cfg.BaseDir, 0o755)
	if err := os.WriteFile(p.WSGI(), []byte(helloWSGI), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.Static, "hello.txt"), []byte("static ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.backends.Ensure(context.Background(), &privdv1.EnsureBackendRequest{Project: project, Processes: 1, Threads: 2}); err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	e.routes[project] = e.cfg.BackendAddr(uint32(uid))
	return project, u
}

// fetch GETs url with Host host, asking again for 5 s at most until the
// answer is want: a graceful restart is under way when Reload returns (the
// old configuration may still answer on a busy host), and a daemon may
// still be starting.
func fetch(t *testing.T, c *http.Client, url, host string, want int) (int, string) {
	t.Helper()
	var code int
	var body string
	for i := 0; i < 50; i++ {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = host
		resp, err := c.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, body = resp.StatusCode, string(b)
			if code == want {
				return code, body
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return code, body
}

func TestManagedApache(t *testing.T) {
	env := newManagedEnv(t)
	ctx := context.Background()
	dir, cfg, managed := env.dir, env.cfg, env.managed
	project, u := env.addProject(t)

	ctl := &countingControl{Control: managed, sites: managed.Sites()}
	sites := NewSites(cfg, ctl, Options{ReloadWindow: 200 * time.Millisecond})

	// Apache is down: Reload starts it.
	r, err := sites.Reload(ctx, &privdv1.ReloadApacheRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.GetStarted() || r.GetMasterPid() <= 0 {
		t.Fatalf("first Reload = %v, want started with a pid", r)
	}
	pid := r.GetMasterPid()

	host := cfg.ServerName(project)
	certPEM, keyPEM, err := selfSigned(host, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	req := &privdv1.InstallSiteRequest{Project: project, CertificatePem: certPEM, KeyPem: keyPEM}
	if ir, err := sites.Install(ctx, req, env.route(project)); err != nil || !ir.GetChanged() {
		t.Fatalf("Install = %v, %v", ir, err)
	}
	if ir, err := sites.Install(ctx, req, env.route(project)); err != nil || ir.GetChanged() {
		t.Fatalf("second Install = %v, %v; want unchanged", ir, err)
	}
	if r, err = sites.Reload(ctx, nil); err != nil || r.GetStarted() || r.GetMasterPid() != pid {
		t.Fatalf("Reload = %v, %v; want pid %d not started", r, err, pid)
	}

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	httpsClient := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host},
	}}
	httpClient := &http.Client{Timeout: 20 * time.Second}
	get := func(c *http.Client, url, host string, want int) (int, string) {
		t.Helper()
		return fetch(t, c, url, host, want)
	}
	httpURL := fmt.Sprintf("http://127.0.0.1:%d", cfg.HTTPPort)
	httpsURL := fmt.Sprintf("https://127.0.0.1:%d", cfg.HTTPSPort)
	wantBody := fmt.Sprintf("hello from %s uid=%s\n", project, u.Uid)
	serving := func(t *testing.T) {
		t.Helper()
		if code, body := get(httpClient, httpURL+"/", host, 200); code != 200 || body != wantBody {
			t.Errorf("HTTP %s: %d %q, want 200 %q", host, code, body, wantBody)
		}
		if code, body := get(httpsClient, httpsURL+"/", host, 200); code != 200 || body != wantBody {
			t.Errorf("HTTPS %s: %d %q, want 200 %q", host, code, body, wantBody)
		}
	}

	t.Run("serves HTTP and HTTPS as the project user", func(t *testing.T) {
		serving(t)
		if code, body := get(httpClient, httpURL+"/static/hello.txt", host, 200); code != 200 || body != "static ok\n" {
			t.Errorf("static: %d %q", code, body)
		}
		if code, _ := get(httpClient, httpURL+"/", "unknown.example.com", 404); code != 404 {
			t.Errorf("unknown host: %d, want 404 from the catch-all", code)
		}
		// The daemon process, named by display-name, runs as the project user.
		found := 0
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, pc := range procs {
			b, _ := os.ReadFile(pc)
			if !bytes.HasPrefix(b, []byte("(wsgi:"+project+")")) {
				continue
			}
			st, _ := os.ReadFile(filepath.Join(filepath.Dir(pc), "status"))
			for _, l := range strings.Split(string(st), "\n") {
				if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
					found++
					if f[1] != u.Uid {
						t.Errorf("wsgi daemon %s runs as uid %s, want %s", pc, f[1], u.Uid)
					}
				}
			}
		}
		if found == 0 {
			t.Error("no (wsgi:" + project + ") daemon process found")
		}
		// The HTTPS vhost presented our certificate.
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", cfg.HTTPSPort), &tls.Config{RootCAs: pool, ServerName: host})
		if err != nil {
			t.Fatalf("TLS handshake with our certificate: %v", err)
		}
		conn.Close()
	})

	t.Run("TailLog returns the project's own error lines", func(t *testing.T) {
		var lines []string
		for i := 0; i < 50; i++ {
			tl, err := sites.TailLog(ctx, &privdv1.TailLogRequest{Project: project, Lines: 10})
			if err != nil {
				t.Fatal(err)
			}
			lines = tl.GetLines()
			if strings.Contains(strings.Join(lines, "\n"), "opus-test-marker "+project) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("marker not in the project's log: %q", lines)
	})

	t.Run("mismatched key refused before Apache is touched", func(t *testing.T) {
		_, otherKey, err := selfSigned(host, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, managed.Dir)
		delete(before, managed.ErrorLog(project)) // written by live traffic
		delete(before, filepath.Join(managed.Logs(), "error.log"))
		tests, gracefuls := ctl.counts()
		bad := &privdv1.InstallSiteRequest{Project: project, Aliases: []string{"new.example.com"}, CertificatePem: certPEM, KeyPem: otherKey}
		if _, err := sites.Install(ctx, bad, env.route(project)); err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Fatalf("Install with a mismatched key = %v", err)
		}
		after := snapshot(t, managed.Dir)
		delete(after, managed.ErrorLog(project))
		delete(after, filepath.Join(managed.Logs(), "error.log"))
		sameSnapshot(t, before, after)
		if t2, g2 := ctl.counts(); t2 != tests || g2 != gracefuls {
			t.Errorf("Apache touched: configtests %d→%d, gracefuls %d→%d", tests, t2, gracefuls, g2)
		}
		if managed.Running() != int(pid) {
			t.Errorf("master pid changed from %d to %d", pid, managed.Running())
		}
		serving(t)
	})

	t.Run("configtest failure rolls back and Apache keeps serving", func(t *testing.T) {
		vhostBefore, _ := os.ReadFile(managed.Vhost(project))
		ctl.mu.Lock()
		ctl.broken = true
		ctl.mu.Unlock()
		changed := &privdv1.InstallSiteRequest{Project: project, Aliases: []string{"new.example.com"}, CertificatePem: certPEM, KeyPem: keyPEM}
		_, err := sites.Install(ctx, changed, env.route(project))
		ctl.mu.Lock()
		ctl.broken = false
		ctl.mu.Unlock()
		if err == nil || !strings.Contains(err.Error(), "BogusDirective") {
			t.Fatalf("Install = %v, want Apache's error naming BogusDirective", err)
		}
		if vhostAfter, _ := os.ReadFile(managed.Vhost(project)); !bytes.Equal(vhostBefore, vhostAfter) {
			t.Errorf("vhost not restored:\n%s", vhostAfter)
		}
		if r, err := sites.Reload(ctx, nil); err != nil || r.GetMasterPid() != pid {
			t.Fatalf("Reload after rollback = %v, %v", r, err)
		}
		serving(t)
	})

	t.Run("concurrent reloads share one graceful", func(t *testing.T) {
		logPath := filepath.Join(managed.Logs(), "error.log")
		count := func() int {
			b, _ := os.ReadFile(logPath)
			return bytes.Count(b, []byte("AH00493")) // "SIGUSR1 received.  Doing graceful restart"
		}
		// Let the previous graceful's log line land first.
		time.Sleep(500 * time.Millisecond)
		logBefore := count()
		_, gBefore := ctl.counts()
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r, err := sites.Reload(ctx, nil); err != nil || r.GetMasterPid() != pid {
					t.Errorf("Reload = %v, %v", r, err)
				}
			}()
		}
		wg.Wait()
		if _, g := ctl.counts(); g-gBefore != 1 {
			t.Errorf("%d gracefuls for 8 concurrent reloads, want 1", g-gBefore)
		}
		deadline := time.Now().Add(5 * time.Second)
		for count() < logBefore+1 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
		if n := count() - logBefore; n != 1 {
			t.Errorf("Apache logged %d graceful restarts, want 1", n)
		}
		serving(t)
	})

	t.Run("Remove drops the site", func(t *testing.T) {
		rr, err := sites.Remove(ctx, &privdv1.RemoveSiteRequest{Project: project})
		if err != nil || !rr.GetRemoved() {
			t.Fatalf("Remove = %v, %v", rr, err)
		}
		if _, err := sites.Reload(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if code, _ := get(httpClient, httpURL+"/", host, 404); code != 404 {
			t.Errorf("removed site answers %d, want 404", code)
		}
	})

	t.Run("Stop and RemoveBackend leave no Apache processes", func(t *testing.T) {
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := managed.Stop(sctx); err != nil {
			t.Fatal(err)
		}
		if r, err := env.backends.Remove(sctx, &privdv1.RemoveBackendRequest{Project: project}); err != nil || !r.GetRemoved() {
			t.Fatalf("RemoveBackend = %v, %v", r, err)
		}
		if _, err := os.Lstat(env.backends.paths.Backend(project)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the backend's directory is left: %v", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(livePids(apachePids(dir))) > 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if left := livePids(apachePids(dir)); len(left) > 0 {
			t.Errorf("Apache processes left after Stop: %v", left)
		}
	})
}

// livePids drops zombies (PID 1 here may be slow to reap).
func livePids(pids []int) []int {
	var live []int
	for _, pid := range pids {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
			continue
		}
		live = append(live, pid)
	}
	return live
}
