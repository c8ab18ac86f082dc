package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/pgtest"
	"github.com/opus-hosting/opus/internal/testrun"
)

// Fixed paths of the system-mode test, so a killed run is cleaned up by the
// next one. sysApacheDir is privd's apache_dir; sysConf is the one file an
// administrator adds to Debian's configuration; sysMods (inside
// sysApacheDir) records which modules the test enabled, so only those are
// disabled again, even by a later run after a kill.
const (
	sysApacheDir = "/etc/apache2/opus-e2e"
	sysConf      = "/etc/apache2/conf-enabled/opus-e2e.conf"
	sysMods      = sysApacheDir + "/enabled-by-e2e"
	sysCtl       = "/usr/sbin/apache2ctl"
	sysPidFile   = "/run/apache2/apache2.pid"
)

// sysRoot holds the system-mode test's own files (its second opusd's
// state and sockets).
func sysRoot() string { return root + "/sys" }

// sysCmd runs an administrator's command with a timeout.
func sysCmd(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
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

// systemApachePids returns the pids of Debian's own apache2 processes: the
// binary without "-f", so never the harness's managed instance, whose
// command line names its own httpd.conf under the run's directory.
func systemApachePids() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(cmd, "\x00"), []byte{0})
		if string(args[0]) != "/usr/sbin/apache2" || bytes.Contains(cmd, []byte(root)) {
			continue
		}
		managed := false
		for _, a := range args[1:] {
			managed = managed || string(a) == "-f"
		}
		if !managed {
			pids = append(pids, pid)
		}
	}
	return pids
}

// modsEnabled lists /etc/apache2/mods-enabled.
func modsEnabled(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/etc/apache2/mods-enabled")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// cleanSystem undoes everything the system-mode test does to Debian's
// Apache: it stops it, removes the include and privd's directory, and
// disables the modules the test enabled. It is safe to run when nothing is
// left over, and runs both before (after a killed run) and after the test.
func cleanSystem(t *testing.T) {
	t.Helper()
	// Projects a killed run left in system mode: their users can only be
	// deleted once Debian's Apache (and so their mod_wsgi daemons) is gone.
	vhosts, _ := filepath.Glob(filepath.Join(sysApacheDir, "sites", "*.conf"))
	if exists(sysConf) {
		_, _ = sysCmd(sysCtl, "stop")
	}
	// Leftovers "stop" did not reach (e.g. a stale pid file): wait a little
	// for the graceful exit, then kill.
	for i := 0; i < 50 && len(systemApachePids()) > 0 && exists(sysConf); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if exists(sysConf) {
		for _, pid := range systemApachePids() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// A killed run's project users: once Apache no longer runs their
	// daemons, testrun can delete them (it keeps a dead run's record
	// until it could).
	if len(vhosts) > 0 {
		testrun.CleanDeadWith(pgtest.Cleaner)
	}
	if err := os.Remove(sysConf); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("remove %s: %v", sysConf, err)
	}
	if data, err := os.ReadFile(sysMods); err == nil {
		for _, m := range strings.Fields(string(data)) {
			if out, err := sysCmd("a2dismod", "-q", m); err != nil {
				t.Errorf("a2dismod %s: %v %s", m, err, out)
			}
		}
	}
	if err := os.RemoveAll(sysApacheDir); err != nil {
		t.Errorf("remove %s: %v", sysApacheDir, err)
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
	cfg.ApacheDir = sysApacheDir
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
// against Debian's own apache2 (prepared as an administrator would and
// started with apache2ctl), the two-app project deploys, answers over http
// and https from a mod_wsgi daemon running as the project's user, and is
// destroyed without a trace.
func TestSystemApache(t *testing.T) {
	shared := needHost(t)
	if !exists(sysCtl) || !exists("/etc/apache2/envvars") {
		t.Skip("needs Debian's apache2ctl and /etc/apache2/envvars")
	}
	// Debian's Apache is one per host: one system-mode test at a time,
	// whatever run it belongs to.
	lock, err := os.OpenFile("/tmp/opus-system-e2e.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("lock /tmp/opus-system-e2e.lock: %v", err)
	}
	// Leftovers of a killed run first; then refuse to touch an Apache that
	// someone else runs.
	cleanSystem(t)
	if pids := systemApachePids(); len(pids) > 0 {
		t.Skipf("Debian's apache2 is already running (pids %v) and is not ours to stop", pids)
	}
	for _, port := range []string{"80", "443"} {
		l, err := net.Listen("tcp", ":"+port)
		if err != nil {
			t.Skipf("port %s is taken (%v); Debian's default configuration needs it", port, err)
		}
		l.Close()
	}
	modsBefore := modsEnabled(t)

	h := startSystemHost(t, shared)
	t.Cleanup(func() {
		h.stop()
		killMatching(sysRoot())
		cleanSystem(t)
		_ = os.RemoveAll(sysRoot())
		if after := modsEnabled(t); strings.Join(after, " ") != strings.Join(modsBefore, " ") {
			t.Errorf("mods-enabled changed:\nbefore %v\nafter  %v", modsBefore, after)
		}
		if pids := systemApachePids(); len(pids) > 0 {
			t.Errorf("Debian's apache2 still running after cleanup: %v", pids)
		}
	})

	// What an administrator does: enable ssl, headers and proxy_http (the
	// front routes to each project's backend; it loads no mod_wsgi),
	// include Opus's vhosts on Opus's ports, start Apache.
	if err := os.MkdirAll(sysApacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var enabled []string
	for _, m := range []string{"ssl", "headers", "proxy_http"} {
		if exists("/etc/apache2/mods-enabled/" + m + ".load") {
			continue
		}
		// Record before enabling, so a kill in between still disables it.
		enabled = append(enabled, m)
		if err := os.WriteFile(sysMods, []byte(strings.Join(enabled, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := sysCmd("a2enmod", "-q", m); err != nil {
			t.Fatalf("a2enmod %s: %v %s", m, err, out)
		}
		// a2enmod also enables what m depends on (ssl: socache_shmcb);
		// a2dismod does not undo that, so record those too, after m.
		for _, f := range modsEnabled(t) {
			mod, ok := strings.CutSuffix(f, ".load")
			if ok && !slices.Contains(modsBefore, f) && !slices.Contains(enabled, mod) {
				enabled = append(enabled, mod)
			}
		}
		if err := os.WriteFile(sysMods, []byte(strings.Join(enabled, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	include := fmt.Sprintf("# written by TestSystemApache\nListen %d\nListen %d https\nIncludeOptional %s/sites/*.conf\n", h.cfg.HTTPPort, h.cfg.HTTPSPort, sysApacheDir)
	if err := os.WriteFile(sysConf, []byte(include), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := sysCmd(sysCtl, "start"); err != nil {
		t.Fatalf("apache2ctl start: %v %s", err, out)
	}
	if err := h.startPrivd(); err != nil {
		t.Fatalf("system-mode privd: %v", err)
	}
	if err := h.startOpusd(); err != nil {
		t.Fatalf("system-mode opusd: %v", err)
	}
	data, err := os.ReadFile(sysPidFile)
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
	vhost := filepath.Join(sysApacheDir, "sites", name+".conf")
	key := filepath.Join(sysApacheDir, "tls", name+".key")
	crt := filepath.Join(sysApacheDir, "tls", name+".crt")
	for _, p := range []string{vhost, key, crt} {
		if !exists(p) {
			t.Errorf("%s missing after deploy", p)
		}
	}
	if data, err := os.ReadFile(sysPidFile); err != nil || strings.TrimSpace(string(data)) != masterBefore {
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
	if pids := systemApachePids(); len(pids) == 0 {
		t.Errorf("Debian's apache2 is gone after destroy")
	}
}
