package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const adminPassword = "correct-horse-battery-9"

// deploy creates project name with the given --app arguments, an admin and
// a superuser, and fails the test unless it ends deployed.
func (h *host) deploy(t *testing.T, uid uint32, name string, apps ...string) string {
	t.Helper()
	args := []string{"create", name, "--admin", "--superuser", "admin", "--superuser-email", "admin@example.com", "--superuser-password-stdin"}
	for _, a := range apps {
		args = append(args, "--app", a)
	}
	r := h.ctl(t, uid, adminPassword+"\n", args...)
	if r.code != 0 {
		h.dumpLogs(t)
		t.Fatalf("create %s failed (exit %d): %s", name, r.code, r.err)
	}
	return r.out
}

// wsgiDaemons returns the uids of the mod_wsgi daemon processes of project.
func wsgiDaemons(project string) []uint32 {
	var uids []uint32
	for _, pid := range wsgiPids(project) {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(status), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
				u, _ := strconv.Atoi(f[1])
				uids = append(uids, uint32(u))
			}
		}
	}
	return uids
}

// canRead reports whether uid (with only its primary group gid) can read path.
func canRead(uid, gid uint32, path string) bool {
	cmd := exec.Command("/bin/cat", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	return cmd.Run() == nil
}

func (h *host) apachePid(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.cfg.ApacheDir, "run", "httpd.pid"))
	if err != nil {
		t.Fatalf("apache pid: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// prober requests url in a loop until stopped, counting what is not a 200.
type prober struct {
	stop  chan struct{}
	done  sync.WaitGroup
	n     atomic.Int64
	fails atomic.Int64
	mu    sync.Mutex
	last  string
}

func probe(t *testing.T, url, want string) *prober {
	p := &prober{stop: make(chan struct{})}
	c := webClient()
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			code, body := get(t, c, url)
			p.n.Add(1)
			if code != 200 || !strings.Contains(body, want) {
				p.fails.Add(1)
				p.mu.Lock()
				p.last = fmt.Sprintf("%d %.200q", code, body)
				p.mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return p
}

// end stops the prober and fails the test if any request was not a 200.
func (p *prober) end(t *testing.T, what string) {
	t.Helper()
	close(p.stop)
	p.done.Wait()
	if p.n.Load() == 0 || p.fails.Load() > 0 {
		t.Errorf("%s: %d of %d probe requests failed (last: %s)", what, p.fails.Load(), p.n.Load(), p.last)
	}
}

// TestDeployTwoProjects deploys two projects at once, each with an app from
// a local directory and one from git at a tag, and checks what a user and an
// attacker on the host would see; then destroys them one after the other.
func TestDeployTwoProjects(t *testing.T) {
	h := needHost(t)
	shop := newGitApp(t, "shop", "shop version one")
	shop.addVersion(t, "v2", "shop version two")
	hello := localApp(t, "hello")
	a, b := h.newProject(t), h.newProject(t)

	var wg sync.WaitGroup
	for _, n := range []string{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := h.deploy(t, 0, n, hello, shop.dir+"@v1")
			if !strings.Contains(out, h.url(n, "https", "/")) {
				t.Errorf("create %s did not print its https URL:\n%s", n, out)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	c := webClient()
	for _, n := range []string{a, b} {
		for _, scheme := range []string{"http", "https"} {
			mustGet(t, c, h.url(n, scheme, "/hello/"), "Hello from Opus")
			mustGet(t, c, h.url(n, scheme, "/shop/"), "shop version one")
		}
		mustGet(t, c, h.url(n, "http", "/admin/login/"), "csrfmiddlewaretoken")
	}
	adminLogin(t, webClient(), h.url(a, "https", ""), "admin", adminPassword)

	// The project's certificate names its host.
	leaf, err := tlsDial(h, a)
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname(a + h.cfg.ServerSuffix); err != nil || leaf.IsCA {
		t.Errorf("certificate for %v (CA %v): %v", leaf.DNSNames, leaf.IsCA, err)
	}

	// show records the resolved commit of the git app.
	var p struct {
		Apps []struct {
			Name           string `json:"name"`
			ResolvedCommit string `json:"resolved_commit"`
		} `json:"apps"`
	}
	if err := json.Unmarshal([]byte(h.mustCtl(t, 0, "show", a, "-o", "json")), &p); err != nil {
		t.Fatal(err)
	}
	v1 := shop.git(t, "rev-parse", "v1^{commit}")
	found := false
	for _, app := range p.Apps {
		if app.Name == "shop" {
			found = app.ResolvedCommit == v1
		}
	}
	if !found {
		t.Errorf("show %s: shop not at commit %s: %+v", a, v1, p.Apps)
	}

	// The mod_wsgi daemons run as the project's user.
	auid, agid := projectIDs(t, a)
	buid, bgid := projectIDs(t, b)
	if uids := wsgiDaemons(a); len(uids) == 0 {
		t.Errorf("no (wsgi:%s) daemon process", a)
	} else {
		for _, u := range uids {
			if u != auid {
				t.Errorf("(wsgi:%s) runs as uid %d, want %d", a, u, auid)
			}
		}
	}

	// The file policy, tried as each kind of user.
	www, wwwg, err := lookupIDs("www-data")
	if err != nil {
		t.Fatal(err)
	}
	proj := filepath.Join(h.cfg.BaseDir, "projects", a)
	checks := []struct {
		path                      string
		own, other, wwwdata, nobd bool
	}{
		{filepath.Join(proj, "secrets", "secrets.json"), true, false, false, false},
		{filepath.Join(proj, "data", "db.sqlite3"), true, false, false, false},
		{filepath.Join(proj, "code", "opus_project", "settings.py"), true, false, false, false},
		{filepath.Join(h.cfg.ApacheDir, "tls", a+".key"), false, false, false, false},
		{filepath.Join(proj, "static", "admin", "css", "base.css"), true, true, true, true},
	}
	for _, c := range checks {
		for _, who := range []struct {
			what     string
			uid, gid uint32
			want     bool
		}{{"own user", auid, agid, c.own}, {"other project", buid, bgid, c.other}, {"www-data", www, wwwg, c.wwwdata}, {"nobody", 65534, 65534, c.nobd}} {
			if got := canRead(who.uid, who.gid, c.path); got != who.want {
				t.Errorf("%s reading %s: %v, want %v", who.what, c.path, got, who.want)
			}
		}
	}
	mustGet(t, c, h.url(a, "http", "/static/admin/css/base.css"), "")

	// Destroy a: everything of it goes; b keeps answering throughout.
	pb := probe(t, h.url(b, "http", "/hello/"), "Hello from Opus")
	h.mustCtl(t, 0, "destroy", a, "--yes")
	pb.end(t, "project "+b+" while "+a+" was destroyed")
	for _, p := range []string{proj, filepath.Join(h.cfg.ApacheDir, "sites", a+".conf"), filepath.Join(h.cfg.ApacheDir, "tls", a+".key"), filepath.Join(h.cfg.ApacheDir, "tls", a+".crt")} {
		if exists(p) {
			t.Errorf("%s survived destroy", p)
		}
	}
	if passwdLine(t, projUser(a)) != "" {
		t.Errorf("user opus-%s survived destroy", a)
	}
	if code, _ := get(t, c, h.url(a, "http", "/hello/")); code == 200 {
		t.Errorf("destroyed project %s still answers", a)
	}
	mustGet(t, c, h.url(b, "https", "/shop/"), "shop version one")
	h.mustCtl(t, 0, "destroy", b, "--yes")
}

// TestBrokenAppsFailAlone: a SyntaxError in urls.py and a failing migration
// each fail their own create with the Python error, leaving no project, and
// another project answers 200 all along.
func TestBrokenAppsFailAlone(t *testing.T) {
	h := needHost(t)
	good := h.newProject(t)
	h.deploy(t, 0, good, localApp(t, "hello"))
	pb := probe(t, h.url(good, "http", "/hello/"), "Hello from Opus")

	syntax := newGitApp(t, "broken", "never")
	syntax.write(t, "urls.py", "from django.urls import path\nurlpatterns = [path('', \n")
	syntax.git(t, "commit", "-q", "-am", "break")
	migr := newGitApp(t, "badmig", "never")
	migr.write(t, "migrations/__init__.py", "")
	migr.write(t, "migrations/0001_boom.py", "from django.db import migrations\n\n\ndef boom(apps, schema_editor):\n    raise RuntimeError('opus-test-migration-boom')\n\n\nclass Migration(migrations.Migration):\n    operations = [migrations.RunPython(boom)]\n")
	migr.git(t, "add", "-A")
	migr.git(t, "commit", "-q", "-m", "boom")

	for _, c := range []struct {
		app  *gitApp
		want string
	}{{syntax, "SyntaxError"}, {migr, "opus-test-migration-boom"}} {
		name := h.newProject(t)
		r := h.ctl(t, 0, "", "create", name, "--app", c.app.dir+"@main")
		if r.code == 0 {
			t.Errorf("create with app %s succeeded", c.app.name)
		}
		if !strings.Contains(r.err+r.out, c.want) {
			t.Errorf("create with app %s: output lacks %q:\n%s%s", c.app.name, c.want, r.out, r.err)
		}
		// A failed first deploy leaves no project: the error is the
		// operation's, and the name is free again.
		h.mustBeGone(t, name)
	}
	pb.end(t, "project "+good+" while others failed")
}

// tlsDial returns the certificate a project's HTTPS vhost presents.
func tlsDial(h *host, project string) (*x509Cert, error) {
	return peerCert(fmt.Sprintf("127.0.0.1:%d", h.cfg.HTTPSPort), project+h.cfg.ServerSuffix)
}
