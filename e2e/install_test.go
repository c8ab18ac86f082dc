package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/names"
)

// The install test's fixed names, so that a run killed halfway is found and
// undone by the next one (a host has one /usr/local: one install test at a
// time, under /tmp/opus-install.lock). Its project is named and its user
// prefixed by the e2e run, like every other test project.
const (
	installRoot   = "/tmp/opus-install-e2e"
	installPrefix = "/usr/local" // the Makefile's default PREFIX
	// installState is written before `make install` and removed after
	// `make uninstall`: finding it at start means a run was killed in
	// between, and the host must be restored first.
	installState = installRoot + "/before.json"
	// installProject holds the user name of the project the run deploys,
	// written before it is created, so that a later run deletes that
	// project's user and no other.
	installProject = installRoot + "/project"
)

// installedPaths are what `make install` puts onto the host (PREFIX
// default), and what the host had there before is compared after uninstall.
var installedPaths = []string{
	installPrefix + "/bin/opusctl",
	installPrefix + "/sbin/opusd",
	installPrefix + "/sbin/opus-privd",
	installPrefix + "/share/doc/opus",
	"/etc/systemd/system/opusd.service",
	"/etc/systemd/system/opusd.socket",
	"/etc/systemd/system/opus-privd.service",
	"/etc/systemd/system/opus-privd.socket",
}

// hostAccounts are the accounts `make install` creates when missing.
var hostAccounts = []string{"opus", "opus-admin"}

// hostSnapshot is the part of the host `make install` may change.
type hostSnapshot struct {
	// Paths maps a path to "absent" or its type, mode and owner (and for a
	// regular file, its size).
	Paths map[string]string
	// Accounts are the passwd, group, shadow and gshadow lines of hostAccounts.
	Accounts string
}

func snapshotHost(t *testing.T) hostSnapshot {
	t.Helper()
	s := hostSnapshot{Paths: map[string]string{}}
	paths := append(slices.Clone(installedPaths), "/etc/opus", "/etc/opus/opus.conf", "/var/lib/opus")
	for _, p := range paths {
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			s.Paths[p] = "absent"
		case err != nil:
			t.Fatal(err)
		default:
			st := fi.Sys().(*syscall.Stat_t)
			s.Paths[p] = fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
			if fi.Mode().IsRegular() {
				s.Paths[p] += fmt.Sprintf(" %d bytes", fi.Size())
			}
		}
	}
	var b strings.Builder
	for _, f := range []string{"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"} {
		data, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(data), "\n") {
			if name, _, _ := strings.Cut(l, ":"); slices.Contains(hostAccounts, name) {
				fmt.Fprintf(&b, "%s: %s\n", f, l)
			}
		}
	}
	s.Accounts = b.String()
	return s
}

// diff describes how after differs from s, or returns "".
func (s hostSnapshot) diff(after hostSnapshot) string {
	var b strings.Builder
	for p, v := range s.Paths {
		if after.Paths[p] != v {
			fmt.Fprintf(&b, "%s: before %q, after %q\n", p, v, after.Paths[p])
		}
	}
	if s.Accounts != after.Accounts {
		fmt.Fprintf(&b, "accounts before:\n%safter:\n%s", s.Accounts, after.Accounts)
	}
	return b.String()
}

// makeTarget runs `make TARGET` in the checkout with PREFIX left to the
// Makefile's default and no DESTDIR: onto this machine.
func makeTarget(t *testing.T, target string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "--no-print-directory", target)
	cmd.Dir = ".."
	var env []string
	for _, e := range os.Environ() {
		// Only the defaults: an exported PREFIX or DESTDIR would install
		// somewhere the test does not look.
		if !strings.HasPrefix(e, "PREFIX=") && !strings.HasPrefix(e, "DESTDIR=") && !strings.HasPrefix(e, "MAKEFLAGS=") {
			env = append(env, e)
		}
	}
	cmd.Env = env
	out := &cappedBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		t.Fatalf("make %s: %v\n%s", target, err, out)
	}
	return out.String()
}

// installedDaemons are the daemons (and their Apache) the test started.
type installedDaemons struct {
	conf   string
	cfg    config.Config
	logs   string
	privd  *exec.Cmd
	opusd  *exec.Cmd
	exited map[*exec.Cmd]chan error
}

func (d *installedDaemons) start(t *testing.T) {
	t.Helper()
	uid, gid, err := lookupIDs(d.cfg.OpusUser)
	if err != nil {
		t.Fatal(err)
	}
	open := func(name string) *os.File {
		f, err := os.OpenFile(filepath.Join(d.logs, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	// By hand, as an administrator would without systemd: privd as root,
	// opusd as the installed opus user with no supplementary groups.
	d.privd = exec.Command(installPrefix+"/sbin/opus-privd", "--config", d.conf)
	d.privd.Stdout = open("privd.log")
	d.privd.Stderr = d.privd.Stdout
	if err := d.privd.Start(); err != nil {
		t.Fatal(err)
	}
	d.watch(d.privd)
	if err := d.waitSocket(d.cfg.PrivdSocket(), d.privd); err != nil {
		t.Fatalf("%v\n%s", err, d.log("privd.log"))
	}
	d.opusd = exec.Command(installPrefix+"/sbin/opusd", "--config", d.conf)
	d.opusd.Stdout = open("opusd.log")
	d.opusd.Stderr = d.opusd.Stdout
	d.opusd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	if err := d.opusd.Start(); err != nil {
		t.Fatal(err)
	}
	d.watch(d.opusd)
	if err := d.waitSocket(d.cfg.OpusdSocket(), d.opusd); err != nil {
		t.Fatalf("%v\n%s", err, d.log("opusd.log"))
	}
}

func (d *installedDaemons) watch(c *exec.Cmd) {
	ch := make(chan error, 1)
	d.exited[c] = ch
	go func() { ch <- c.Wait() }()
}

func (d *installedDaemons) waitSocket(path string, c *exec.Cmd) error {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if conn, err := net.Dial("unix", path); err == nil {
			conn.Close()
			return nil
		}
		select {
		case err := <-d.exited[c]:
			d.exited[c] <- err
			return fmt.Errorf("%s exited before listening on %s: %v", c.Path, path, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not listen on %s within 20s", c.Path, path)
}

// stop sends SIGTERM to opusd, then privd, and fails the test unless each
// exits cleanly in time.
func (d *installedDaemons) stop(t *testing.T) {
	t.Helper()
	for _, c := range []*exec.Cmd{d.opusd, d.privd} {
		if c == nil || c.Process == nil {
			continue
		}
		_ = c.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-d.exited[c]:
			if err != nil {
				t.Errorf("%s after SIGTERM: %v", c.Path, err)
			}
		case <-time.After(40 * time.Second):
			_ = c.Process.Kill()
			t.Errorf("%s still running 40s after SIGTERM", c.Path)
		}
	}
	d.opusd, d.privd = nil, nil
}

func (d *installedDaemons) log(name string) string {
	data, _ := os.ReadFile(filepath.Join(d.logs, name))
	if len(data) > 6000 {
		data = data[len(data)-6000:]
	}
	return fmt.Sprintf("--- %s ---\n%s", name, data)
}

// ctl runs the installed opusctl as root against the installed opusd.
func (d *installedDaemons) ctl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, installPrefix+"/bin/opusctl", args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/", "OPUS_SOCKET=" + d.cfg.OpusdSocket()}
	cmd.Dir = ".."
	out := &cappedBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	t.Logf("opusctl %s → %v\n%s", strings.Join(args, " "), err, out)
	if err != nil {
		t.Fatalf("opusctl %v: %v\n%s\n%s", args, err, d.log("opusd.log"), d.log("privd.log"))
	}
	return out.String()
}

// apachePidFile is the managed Apache's pid file under the test's apache_dir.
func (d *installedDaemons) apachePidFile() string {
	return filepath.Join(d.cfg.ApacheDir, "run", "httpd.pid")
}

// apachePid is the managed Apache's master pid, or 0 when it is not running.
func (d *installedDaemons) apachePid() int {
	data, err := os.ReadFile(d.apachePidFile())
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return 0
	}
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); !bytes.Contains(cmdline, []byte(installRoot)) {
		return 0
	}
	return pid
}

// waitOK polls url until it answers 200 with want, for up to limit.
func (d *installedDaemons) waitOK(t *testing.T, url, want string, limit time.Duration) bool {
	t.Helper()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if code, body := get(t, webClient(), url); code == 200 && strings.Contains(body, want) {
			return true
		}
	}
	return false
}

// killBackends kills every process of the projects' backends the test's
// privd started (as a reboot would), and waits until they are gone.
func (d *installedDaemons) killBackends(t *testing.T) {
	t.Helper()
	mark := []byte(filepath.Join(d.cfg.ApacheDir, "backends") + "/")
	find := func() []int { return pidsWhere(func(cmd []byte) bool { return bytes.Contains(cmd, mark) }) }
	pids := find()
	if len(pids) == 0 {
		t.Fatal("no backend process to kill")
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for deadline := time.Now().Add(10 * time.Second); len(find()) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("backend processes %v survived SIGKILL", find())
		}
	}
}

// stopApache stops the managed Apache the test's privd started, if running.
func (d *installedDaemons) stopApache(t *testing.T) {
	t.Helper()
	pid := d.apachePid()
	if pid == 0 {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for deadline := time.Now().Add(20 * time.Second); ; {
		// Gone, or a zombie (empty command line) waiting to be reaped.
		if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); !bytes.Contains(cmdline, []byte(installRoot)) {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("managed Apache (pid %d) still running 20s after SIGTERM", pid)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cleanInstallLeftovers undoes a run killed halfway: its daemons, Apache
// and project users, then `make uninstall` (which removes only what the
// killed run's install recorded as created), and checks the host is back
// to what that run saw before installing.
func cleanInstallLeftovers(t *testing.T) {
	t.Helper()
	data, err := os.ReadFile(installState)
	if errors.Is(err, fs.ErrNotExist) {
		_ = os.RemoveAll(installRoot)
		return
	}
	t.Logf("a previous install test was interrupted; restoring the host first")
	killMatching(installRoot)
	time.Sleep(200 * time.Millisecond)
	if name, err := os.ReadFile(installProject); err == nil {
		deleteProjectUser(string(name))
	}
	makeTarget(t, "uninstall")
	var before hostSnapshot
	if err := json.Unmarshal(data, &before); err == nil {
		if d := before.diff(snapshotHost(t)); d != "" {
			t.Errorf("after cleaning up the interrupted run, the host differs from before it:\n%s", d)
		}
	}
	if err := os.RemoveAll(installRoot); err != nil {
		t.Fatal(err)
	}
}

// deleteProjectUser deletes a project user and its group if Opus made them
// (the GECOS marker says so).
func deleteProjectUser(userName string) {
	u, err := user.Lookup(userName)
	if err != nil || !strings.HasPrefix(u.Name, names.Marker("")) {
		return
	}
	_ = exec.Command("userdel", u.Username).Run()
	_ = exec.Command("groupdel", u.Username).Run()
}

// TestInstallOnHost is issue 7's "on the CI machine `make install`
// followed by starting both daemons by hand with the installed config
// deploys the sample project": the real `make install` (default PREFIX,
// no DESTDIR), the installed opus-privd and opusd started by hand as root
// and as the installed opus user, the README's sample app deployed with
// the installed opusctl and answering over HTTP; the daemons restarted
// (a running Apache is left alone) and, as after a reboot, restarted with
// Apache stopped (privd brings it back for the installed vhosts with no
// project change); the project destroyed, everything stopped, `make
// uninstall`, and the host exactly as before.
//
// The daemons read the installed /etc/opus/opus.conf's settings, but
// through a copy in the test's directory with the host-specific keys
// appended (a later line wins): base_dir, run_dir, apache_dir and the
// ports. The installed defaults (/var/lib/opus, /run/opus, 8080/8443) may
// already be in use on a CI host — by `make demo`'s state and Apache, or
// by another service — and the test must neither disturb nor depend on
// them; the copy keeps /etc/opus exactly as `make install` left it, so
// `make uninstall` is tested on the real installed file.
//
// Accounts and /etc/opus the host had before (for example the demo's opus
// user) are kept: install.sh records what it created and uninstall removes
// only that; the test compares passwd/group/shadow/gshadow lines and the
// paths before and after. If Opus is already installed under PREFIX (not
// by an interrupted run of this test), the test skips rather than replace
// it. The whole package holds the e2e lock, so no other e2e test runs at
// the same time.
func TestInstallOnHost(t *testing.T) {
	// Beside the etcd tests, after the others (see joinGroup): it
	// touches none of the run's hosts.
	t.Parallel()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("needs make")
	}
	// Other packages' tests run `make install` into a DESTDIR at the same
	// time (go test runs packages in parallel) and check that no opus
	// account appears on the host meanwhile: they wait on this lock
	// (systemd/units_test.go spells the same path).
	lock, err := os.OpenFile("/tmp/opus-install.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so released last: after the cleanup below.
	t.Cleanup(func() { lock.Close() })
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("lock /tmp/opus-install.lock: %v", err)
	}
	cleanInstallLeftovers(t)
	before := snapshotHost(t)
	for _, p := range installedPaths {
		if before.Paths[p] != "absent" {
			t.Skipf("Opus is already installed on this host (%s exists); this test would replace it", p)
		}
	}
	if err := os.MkdirAll(filepath.Join(installRoot, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(installRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	state, _ := json.Marshal(before)
	if err := os.WriteFile(installState, state, 0o600); err != nil {
		t.Fatal(err)
	}
	d := &installedDaemons{logs: filepath.Join(installRoot, "logs"), exited: map[*exec.Cmd]chan error{}}
	uninstalled, name := false, ""
	t.Cleanup(func() {
		// The safety net when the test failed midway; a passing run
		// has done all of this in order already.
		for _, c := range []*exec.Cmd{d.opusd, d.privd} {
			if c != nil && c.Process != nil {
				_ = c.Process.Kill()
				// Gone before userdel opus, which refuses a user with processes.
				select {
				case <-d.exited[c]:
				case <-time.After(5 * time.Second):
				}
			}
		}
		d.stopApache(t)
		if name != "" {
			deleteProjectUser(projUser(name))
		}
		if !uninstalled {
			makeTarget(t, "uninstall")
		}
		if df := before.diff(snapshotHost(t)); df != "" {
			t.Errorf("the host is not as it was before the test:\n%s", df)
		}
		_ = os.RemoveAll(installRoot)
	})

	start := time.Now()
	t.Logf("make install:\n%s", makeTarget(t, "install"))
	for _, p := range installedPaths {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("after make install: %v", err)
		}
	}
	if _, err := user.Lookup("opus"); err != nil {
		t.Fatalf("make install did not leave an opus user: %v", err)
	}
	if _, err := user.LookupGroup("opus-admin"); err != nil {
		t.Fatalf("make install did not leave an opus-admin group: %v", err)
	}

	// The installed configuration, with this host's non-colliding places.
	installed, err := os.ReadFile(config.DefaultPath)
	if err != nil {
		t.Fatalf("make install did not leave %s: %v", config.DefaultPath, err)
	}
	httpPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	httpsPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	var conf bytes.Buffer
	conf.Write(installed)
	fmt.Fprintf(&conf, "\n# TestInstallOnHost: the installed settings above, on places of its own\n"+
		"opus_user opus\nadmin_group opus-admin\napache_mode managed\nserver_suffix .opus.localhost\n"+
		"base_dir %s\nrun_dir %s\napache_dir %s\nhttp_port %d\nhttps_port %d\nuser_prefix %s\nproject_uids %s\n",
		filepath.Join(installRoot, "base"), filepath.Join(installRoot, "run"), filepath.Join(installRoot, "apache"), httpPort, httpsPort,
		testRun.UserPrefix(), testRun.UIDs())
	d.conf = filepath.Join(installRoot, "opus.conf")
	if err := os.WriteFile(d.conf, conf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if d.cfg, err = config.Load(d.conf, false); err != nil {
		t.Fatalf("the installed config with the test's places: %v", err)
	}
	// What an administrator makes by hand without systemd (the socket
	// units' DirectoryMode and opusd.service's ReadWritePaths otherwise).
	uid, gid, err := lookupIDs("opus")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []struct {
		path     string
		uid, gid int
		mode     os.FileMode
	}{{d.cfg.BaseDir, int(uid), int(gid), 0o755}, {d.cfg.RunDir, 0, int(gid), 0o775}} {
		if err := os.MkdirAll(dir.path, dir.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir.path, dir.uid, dir.gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir.path, dir.mode); err != nil {
			t.Fatal(err)
		}
	}

	d.start(t)
	name = projPrefix
	for i := 0; i < 3; i++ {
		name += string(rune('a' + rand.IntN(26)))
	}
	if err := os.WriteFile(installProject, []byte(projUser(name)), 0o600); err != nil {
		t.Fatal(err)
	}
	d.ctl(t, "create", name, "--app", "examples/hello")
	pu, err := user.Lookup(projUser(name))
	if err != nil {
		t.Fatalf("deployed %s has no project user: %v", name, err)
	}
	url := fmt.Sprintf("http://%s%s:%d/hello/", name, d.cfg.ServerSuffix, d.cfg.HTTPPort)
	want := "Hello from Opus: project served as uid " + pu.Uid + " "
	mustGet(t, webClient(), url, want)

	// Restarting the daemons leaves a running Apache alone (a graceful
	// restart would restart every project's daemons for nothing).
	apachePid := d.apachePid()
	d.stop(t)
	d.start(t)
	time.Sleep(500 * time.Millisecond)
	if pid := d.apachePid(); pid == 0 || pid != apachePid {
		t.Errorf("managed Apache master pid %d after restarting the daemons, want %d untouched", pid, apachePid)
	}
	mustGet(t, webClient(), url, want)
	// As after a reboot: daemons, the front Apache and every backend
	// stopped, the daemons started by hand; the front and the project's
	// backend come back without any project change.
	d.stop(t)
	d.stopApache(t)
	d.killBackends(t)
	if code, _ := get(t, webClient(), url); code == 200 {
		t.Fatalf("GET %s answered 200 with Apache stopped", url)
	}
	d.start(t)
	if !d.waitOK(t, url, want, 30*time.Second) {
		t.Errorf("Apache did not serve %s within 30s of the daemons' start\n%s", url, d.log("privd.log"))
	}
	for _, line := range []string{"started the managed Apache for the installed sites", "backend was down and is started again"} {
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(d.log("privd.log"), line) && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(d.log("privd.log"), line) {
			t.Errorf("privd did not log %q\n%s", line, d.log("privd.log"))
		}
	}

	d.ctl(t, "destroy", name, "--yes")
	if _, err := user.Lookup(projUser(name)); err == nil {
		t.Errorf("project user %s still exists after destroy", projUser(name))
	}
	if code, body := get(t, webClient(), url); code == 200 {
		t.Errorf("GET %s after destroy: %d %.200q", url, code, body)
	}
	d.stop(t)
	d.stopApache(t)
	if t.Failed() {
		t.Logf("%s\n%s", d.log("privd.log"), d.log("opusd.log"))
	}

	t.Logf("make uninstall:\n%s", makeTarget(t, "uninstall"))
	uninstalled = true
	if df := before.diff(snapshotHost(t)); df != "" {
		t.Errorf("after make uninstall the host differs from before make install:\n%s", df)
	}
	if err := os.Remove(installState); err != nil {
		t.Error(err)
	}
	t.Logf("install, deploy, destroy, uninstall: %s", time.Since(start).Round(time.Millisecond))
}
