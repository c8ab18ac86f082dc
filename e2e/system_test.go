package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
)

// The system-mode test runs Debian's apache2 as an instance of its own
// (Debian's multiple instances, README.multiple-instances): a copy of
// /etc/apache2 at /etc/apache2-opus-ID, with its own run, lock and log
// directories, driven by Debian's apache2ctl with APACHE_CONFDIR, on
// ports of the test. So it runs whatever the host's own Apache does (up,
// on ports 80 and 443), never touches it, and runs beside other runs.
const sysCtl = "/usr/sbin/apache2ctl"

// sysInstance is the run's Debian Apache instance name.
func sysInstance() string { return "opus-" + testRun.ID }

// sysEtc is the instance's configuration directory.
func sysEtc() string { return "/etc/apache2-" + sysInstance() }

// sysApacheDir is privd's apache_dir in system mode: the instance's vhost
// directory (sites/) and keys (tls/).
func sysApacheDir() string { return filepath.Join(sysEtc(), "opus") }

// sysPidFile is the instance's master pid file.
func sysPidFile() string { return "/run/apache2-" + sysInstance() + "/apache2.pid" }

// sysDirs are every directory of the instance: a killed run's are removed
// by the next run (noted paths).
func sysDirs() []string {
	return []string{sysEtc(), "/run/apache2-" + sysInstance(), "/var/lock/apache2-" + sysInstance(), "/var/log/apache2-" + sysInstance()}
}

// sysRoot holds the system-mode test's own files (its second opusd's
// state and sockets).
func sysRoot() string { return root + "/sys" }

// sysCmd runs an administrator's command on the run's instance, with a
// timeout.
func sysCmd(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "APACHE_CONFDIR=" + sysEtc()}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if len(out) > 4000 {
		out = out[len(out)-4000:]
	}
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// sysApachePids returns the pids of the run's instance (its command line
// names the instance's directory: apache2ctl passes -d for any instance
// but the default).
func sysApachePids() []int {
	return pidsWhere(func(cmd []byte) bool {
		return bytes.HasPrefix(cmd, []byte("/usr/sbin/apache2\x00")) && bytes.Contains(cmd, []byte("\x00"+sysEtc()+"\x00"))
	})
}

// stopSystem stops the run's instance and kills what is left of it.
func stopSystem() {
	if exists(sysEtc()) {
		_, _ = sysCmd(sysCtl, "stop")
	}
	for i := 0; i < 50 && len(sysApachePids()) > 0; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	for _, pid := range sysApachePids() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// setUpInstance makes the run's Debian Apache instance as an administrator
// would (a copy of /etc/apache2, Debian's default ports replaced by Opus's,
// ssl, headers and proxy_http enabled, Opus's vhosts included) and starts
// it with apache2ctl.
func setUpInstance(t *testing.T, h *host) {
	t.Helper()
	if err := testRun.Note(instanceKind, sysEtc()); err != nil {
		t.Fatal(err)
	}
	for _, d := range sysDirs() {
		if err := testRun.NotePath(d); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-a", "/etc/apache2", sysEtc()).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc/apache2: %v %s", err, out)
	}
	// Only Opus's ports: Debian's default site stays, never listened to.
	ports := fmt.Sprintf("# written by TestSystemApache\nListen %d\nListen %d https\n", h.cfg.HTTPPort, h.cfg.HTTPSPort)
	if err := os.WriteFile(filepath.Join(sysEtc(), "ports.conf"), []byte(ports), 0o644); err != nil {
		t.Fatal(err)
	}
	// Debian's envvars leave the log directory to the package.
	if err := os.MkdirAll("/var/log/apache2-"+sysInstance(), 0o750); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"ssl", "headers", "proxy_http"} {
		if out, err := sysCmd("a2enmod", "-q", m); err != nil {
			t.Fatalf("a2enmod %s: %v %s", m, err, out)
		}
	}
	include := fmt.Sprintf("# written by TestSystemApache\nIncludeOptional %s/sites/*.conf\n", sysApacheDir())
	if err := os.WriteFile(filepath.Join(sysEtc(), "conf-enabled", "opus.conf"), []byte(include), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := sysCmd(sysCtl, "start"); err != nil {
		t.Fatalf("apache2ctl start: %v %s", err, out)
	}
}

// startSystemHost starts a second, independent opus-privd + opusd pair in
// system mode, using the shared harness's binaries and daemon user.
func startSystemHost(t *testing.T, shared *host) *host {
	t.Helper()
	h := &host{bin: shared.bin, logs: filepath.Join(sysRoot(), "logs"), opusUID: shared.opusUID, opusGID: shared.opusGID, otherID: shared.otherID}
	_ = os.RemoveAll(sysRoot())
	for _, d := range []string{sysRoot(), h.logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.Default()
	cfg.BaseDir = filepath.Join(sysRoot(), "base")
	cfg.RunDir = filepath.Join(sysRoot(), "run")
	cfg.OpusUser = daemonUser
	cfg.AdminGroup = adminGroup
	cfg.ApacheMode = config.ApacheSystem
	cfg.ApacheInstance = sysInstance()
	cfg.ApacheDir = sysApacheDir()
	cfg.UserPrefix = testRun.UserPrefix()
	cfg.ProjectUIDs = testRun.UIDs()
	var err error
	if cfg.HTTPPort, err = freePort(); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPSPort, err = freePort(); err != nil {
		t.Fatal(err)
	}
	webPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	h.webAddr = fmt.Sprintf("127.0.0.1:%d", webPort)
	h.cfg = cfg
	h.conf = filepath.Join(sysRoot(), "opus.conf")
	conf := "# written by TestSystemApache\n" + cfg.Format()
	if err := os.WriteFile(h.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.RunDir, 0o775); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(cfg.RunDir, 0, int(h.opusGID)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg.RunDir, 0o775); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.BaseDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(cfg.BaseDir, int(h.opusUID), int(h.opusGID)); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestSystemApache is issue 4's last "Done when": with privd in system mode
// against Debian's own apache2 (an instance of its own, prepared as an
// administrator would and started with apache2ctl), the two-app project
// deploys, answers over http and https through Debian's Apache as the
// front, from a backend whose mod_wsgi daemon runs as the project's user,
// and is destroyed without a trace. It runs whatever the host's own Apache
// does (issue 15).
func TestSystemApache(t *testing.T) {
	shared := needHost(t)
	if !exists(sysCtl) || !exists("/etc/apache2/envvars") {
		t.Skip("needs Debian's apache2ctl and /etc/apache2/envvars")
	}
	h := startSystemHost(t, shared)
	t.Cleanup(func() {
		h.stop()
		stopSystem()
		killMatching(sysRoot())
		for _, d := range sysDirs() {
			_ = os.RemoveAll(d)
		}
		_ = os.RemoveAll(sysRoot())
		if pids := sysApachePids(); len(pids) > 0 {
			t.Errorf("the run's apache2 instance still runs after cleanup: %v", pids)
		}
	})
	setUpInstance(t, h)
	if err := h.startPrivd(); err != nil {
		t.Fatalf("system-mode privd: %v", err)
	}
	if err := h.startOpusd(); err != nil {
		t.Fatalf("system-mode opusd: %v", err)
	}
	data, err := os.ReadFile(sysPidFile())
	if err != nil {
		t.Fatalf("Debian's apache2 pid file: %v", err)
	}
	masterBefore := strings.TrimSpace(string(data))

	shop := newGitApp(t, "shop", "shop version one")
	shop.addVersion(t, "v2", "shop version two")
	hello := localApp(t, "hello")
	name := h.newProject(t)
	out := h.deploy(t, 0, name, hello, shop.dir+"@v1")
	if !strings.Contains(out, h.url(name, "https", "/")) {
		t.Errorf("create %s did not print its https URL:\n%s", name, out)
	}

	// Served by Debian's Apache: the vhost is in the system-mode directory,
	// and the master is still the one apache2ctl started.
	vhost := filepath.Join(sysApacheDir(), "sites", name+".conf")
	key := filepath.Join(sysApacheDir(), "tls", name+".key")
	crt := filepath.Join(sysApacheDir(), "tls", name+".crt")
	for _, p := range []string{vhost, key, crt} {
		if !exists(p) {
			t.Errorf("%s missing after deploy", p)
		}
	}
	if data, err := os.ReadFile(sysPidFile()); err != nil || strings.TrimSpace(string(data)) != masterBefore {
		t.Errorf("Debian's apache2 master changed: %q → %q (%v)", masterBefore, data, err)
	}
	c := webClient()
	for _, scheme := range []string{"http", "https"} {
		mustGet(t, c, h.url(name, scheme, "/hello/"), "Hello from Opus")
		mustGet(t, c, h.url(name, scheme, "/shop/"), "shop version one")
	}
	mustGet(t, c, h.url(name, "http", "/static/admin/css/base.css"), "")

	uid, _ := projectIDs(t, name)
	if uids := wsgiDaemons(name); len(uids) == 0 {
		t.Errorf("no (wsgi:%s) daemon process", name)
	} else {
		for _, u := range uids {
			if u != uid {
				t.Errorf("(wsgi:%s) runs as uid %d, want %d", name, u, uid)
			}
		}
	}

	h.mustCtl(t, 0, "destroy", name, "--yes")
	for _, p := range []string{vhost, key, crt, filepath.Join(h.cfg.BaseDir, "projects", name)} {
		if exists(p) {
			t.Errorf("%s survived destroy", p)
		}
	}
	if passwdLine(t, projUser(name)) != "" {
		t.Errorf("user opus-%s survived destroy", name)
	}
	if code, _ := get(t, c, h.url(name, "http", "/hello/")); code == 200 {
		t.Errorf("destroyed project %s still answers", name)
	}
	if pids := sysApachePids(); len(pids) == 0 {
		t.Errorf("Debian's apache2 is gone after destroy")
	}
}
