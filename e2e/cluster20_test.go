package e2e

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/layout"
)

// Issue 20: several hosts, one Opus. The cluster tests' own etcd and host
// "etcdhost" (needClusterHost, "host a" here) and a second host on the same etcd and prefix ("host b"): two
// privd + opusd pairs with their own directories, users, uids and
// managed Apache.

// clusterPeerN is the run's host number of host b.
const clusterPeerN = 2

// clusterHostN and clusterPeerN are the run's host numbers of the cluster
// tests' hosts a and b.
const clusterHostN = 3

// clusterHost is the cluster tests' host a, on their own etcd
// (startClusterEtcd). It is named etcdhost, as the etcd tests' host on
// the other etcd is: each etcd is an Opus of its own.
var clusterHost = &runHost{etcd: clusterEtcd, n: clusterHostN, dir: "cluster/etcdhost", name: "etcdhost", key: "cluster"}

func needClusterHost(t *testing.T) *host { return clusterHost.need(t) }

var (
	hostbOnce      sync.Once
	hostbConfigure func(*config.Config)
	hostbErr       error
)

// needClusterPeer starts host b for t, sharing host a's etcd cluster and
// key prefix (with its own copies of the client certificate files), and
// stops it when t ends: b is one of the hosts only while a cluster test
// runs, so the other tests on host a find their projects placed on a.
// Stopped cleanly, its opusd leaves the hosts' list at once.
func needClusterPeer(t *testing.T) (a, b *host) {
	t.Helper()
	a = needClusterHost(t)
	e := startClusterEtcd(t)
	dir := filepath.Join(root, "cluster", "hostb")
	// One configuration for every start: the same ports, for the Apache
	// the last start left running.
	hostbOnce.Do(func() {
		configure, err := e.hostConfig(dir, a.cfg.EtcdPrefix, "hostb")
		if err != nil {
			hostbErr = err
			return
		}
		var ports [2]int
		for i := range ports {
			if ports[i], err = freePort(); err != nil {
				hostbErr = err
				return
			}
		}
		hostbConfigure = func(c *config.Config) {
			configure(c)
			c.HTTPPort, c.HTTPSPort = ports[0], ports[1]
		}
	})
	if hostbErr != nil {
		t.Fatalf("host b's configuration: %v", hostbErr)
	}
	b, err := startExtraHost(hostSpec{n: clusterPeerN, dir: dir, configure: hostbConfigure})
	if err != nil {
		t.Fatalf("starting host b: %v", err)
	}
	t.Cleanup(func() {
		b.stop()
		waitFor(t, 15*time.Second, "host b gone from the hosts' list", func() bool {
			return !strings.Contains(a.ctl(t, 0, "", "hosts").out, "hostb")
		})
	})
	return a, b
}

// killDaemons ends both daemons of h at once (SIGKILL), as a host that
// dies does; its Apache and the backends go on.
func (h *host) killDaemons(t *testing.T) {
	t.Helper()
	for _, c := range []*os.Process{h.opusd.Process, h.privd.Process} {
		_ = c.Signal(syscall.SIGKILL)
	}
	for _, c := range []*os.Process{h.opusd.Process, h.privd.Process} {
		for deadline := time.Now().Add(10 * time.Second); alive(c.Pid); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("pid %d still alive 10s after SIGKILL", c.Pid)
			}
		}
	}
}

// TestClusterTwoHosts: a project created through host a's socket with
// --host hostb is deployed on b alone and answers on b's front; both
// hosts list both hosts and the project's host; b killed, a shows the
// project UNREACHABLE and refuses changes to it (b's Apache keeps
// serving it); b restarted, it is READY again and a change through a is
// applied by b; moved to a with its data (database and media), b's copy
// answering until a's took over, then torn down; destroyed, nothing of
// it is left on either host.
func TestClusterTwoHosts(t *testing.T) {
	a, b := needClusterPeer(t)
	waitFor(t, 20*time.Second, "both hosts listed by each", func() bool {
		for _, h := range []*host{a, b} {
			out := h.ctl(t, 0, "", "hosts").out
			if !strings.Contains(out, "etcdhost") || !strings.Contains(out, "hostb") {
				return false
			}
		}
		return true
	})
	name := a.newProject(t)
	t.Cleanup(func() {
		_, onA := user.Lookup(a.projUser(name))
		_, onB := user.Lookup(b.projUser(name))
		if onA == nil || onB == nil {
			a.ctl(t, 0, "", "destroy", name, "--yes")
		}
		b.dumpLogs(t)
	})
	app := newGitApp(t, "cluster", "served by b")
	app.addVersion(t, "v2", "served by b, v2")
	if r := a.ctl(t, 0, adminPassword+"\n", "create", name, "--host", "hostb", "--app", app.dir+"@v1",
		"--admin", "--superuser", "mover", "--superuser-email", "mover@example.com", "--superuser-password-stdin"); r.code != 0 {
		t.Fatalf("create through a on hostb: exit %d: %s", r.code, r.err)
	}

	// On b, not on a.
	mustGet(t, webClient(), b.url(name, "https", "/cluster/"), "served by b")
	if code, _ := get(t, webClient(), a.url(name, "https", "/cluster/")); code == 200 {
		t.Errorf("host a's front serves b's project")
	}
	if _, err := user.Lookup(b.projUser(name)); err != nil {
		t.Errorf("b has no user for its project: %v", err)
	}
	if _, err := user.Lookup(a.projUser(name)); err == nil {
		t.Errorf("a made a user for b's project")
	}
	if exists(filepath.Join(a.cfg.BaseDir, "projects", name)) {
		t.Errorf("a has a project directory for b's project")
	}
	if out := a.mustCtl(t, 0, "ls"); !strings.Contains(out, name) || !strings.Contains(out, "hostb") {
		t.Errorf("ls through a does not show %s on hostb:\n%s", name, out)
	}
	if p := b.show(t, name); p.Phase != "PHASE_READY" {
		t.Errorf("show through b: phase %s, want READY", p.Phase)
	}

	// b dies: UNREACHABLE through a, changes refused, b's Apache serves on.
	b.killDaemons(t)
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			if err := b.startPrivd(); err != nil {
				t.Errorf("restarting b's privd: %v", err)
			}
			if err := b.startOpusd(); err != nil {
				t.Errorf("restarting b's opusd: %v", err)
			}
		}
	})
	waitFor(t, 30*time.Second, "b's project UNREACHABLE through a", func() bool {
		return a.show(t, name).Phase == "PHASE_UNREACHABLE"
	})
	before := a.show(t, name)
	r := a.ctl(t, 0, "", "set", name, "env.OPUS_CLUSTER=1")
	if r.code == 0 || !strings.Contains(r.err, "hostb, which is not answering") {
		t.Errorf("a change to b's project with b dead: exit %d, %q; want it refused naming hostb", r.code, r.err)
	}
	if after := a.show(t, name); after.Generation != before.Generation || after.Settings.Env["OPUS_CLUSTER"] != "" {
		t.Errorf("the refused change was recorded: generation %s → %s, env %v", before.Generation, after.Generation, after.Settings.Env)
	}
	mustGet(t, webClient(), b.url(name, "https", "/cluster/"), "served by b")

	// b back: READY, and a change through a is b's to apply.
	if err := b.startPrivd(); err != nil {
		t.Fatal(err)
	}
	if err := b.startOpusd(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	waitFor(t, 30*time.Second, "b's project READY through a", func() bool {
		return a.show(t, name).Phase == "PHASE_READY"
	})
	a.mustCtl(t, 0, "apps", "update", name, "cluster", "v2")
	mustGet(t, webClient(), b.url(name, "https", "/cluster/"), "served by b, v2")

	// Moved to a with its data (the database, a media file): a's copy
	// answers, then it is the project, and b's copy is torn down.
	media := filepath.Join(layout.For(b.cfg.BaseDir, name).Media(), "moved.txt")
	writeAs(t, b.projUser(name), media, "media that moves")
	stopProbe := pauseProbe(t, b.url(name, "http", "/cluster/"), "served by b, v2")
	out := b.mustCtl(t, 0, "move", name, "--to", "etcdhost")
	if longest, n := stopProbe(); longest > 10*time.Second {
		t.Errorf("b's copy did not answer for %s during the move (%d probes); it pauses only for the last copy", longest, n)
	}
	for _, step := range []string{"export data", "fetch data", "last copy"} {
		if !strings.Contains(out, step) {
			t.Errorf("move's progress shows no %q step:\n%s", step, out)
		}
	}
	if p := b.show(t, name); p.Phase != "PHASE_READY" || p.Host != "etcdhost" {
		t.Errorf("after the move, through b: phase %s, host %q; want READY on etcdhost", p.Phase, p.Host)
	}
	mustGet(t, webClient(), a.url(name, "https", "/cluster/"), "served by b, v2")
	if got := a.sqlite(t, name, "select username from auth_user"); got != "mover" {
		t.Errorf("a's copy of the database has users %q; want the superuser made on b, mover", got)
	}
	if data, err := os.ReadFile(filepath.Join(layout.For(a.cfg.BaseDir, name).Media(), "moved.txt")); err != nil || string(data) != "media that moves" {
		t.Errorf("a's media file: %q, %v; want b's", data, err)
	}
	waitFor(t, 90*time.Second, "b's copy torn down", func() bool {
		_, err := user.Lookup(b.projUser(name))
		return err != nil && !exists(filepath.Join(b.cfg.BaseDir, "projects", name))
	})
	if out := a.mustCtl(t, 0, "ops", name); !strings.Contains(strings.ToLower(out), "move") || !strings.Contains(strings.ToLower(out), "depart") {
		t.Errorf("the project's operations do not show the move and b's departure:\n%s", out)
	}

	// Destroyed through b: a tears it down; nothing is left on either.
	b.mustCtl(t, 0, "destroy", name, "--yes")
	for _, h := range []*host{a, b} {
		if _, err := user.Lookup(h.projUser(name)); err == nil {
			t.Errorf("%s is left after destroy", h.projUser(name))
		}
	}
	for _, h := range []*host{a, b} {
		if p := filepath.Join(h.cfg.BaseDir, "projects", name); exists(p) {
			t.Errorf("%s is left after destroy", p)
		}
		sites, _ := os.ReadDir(layout.Sites(h.cfg.ApacheDir))
		for _, s := range sites {
			if strings.Contains(s.Name(), name) {
				t.Errorf("site %s is left in %s after destroy", s.Name(), layout.Sites(h.cfg.ApacheDir))
			}
		}
	}
	if out := a.mustCtl(t, 0, "ls"); strings.Contains(out, name) {
		t.Errorf("ls through a still lists %s after destroy", name)
	}
}

// writeAs writes a file as root and gives it to user (a project's data is
// its user's).
func writeAs(t *testing.T, user, path, content string) {
	t.Helper()
	uid, gid, err := lookupIDs(user)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Dir(path), int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
}

// sqlite runs one query on a project's SQLite database as root
// (read-only) and returns its rows, one per line, columns tab-separated.
func (h *host) sqlite(t *testing.T, project, query string) string {
	t.Helper()
	db := filepath.Join(h.cfg.BaseDir, "projects", project, "data", "db.sqlite3")
	cmd := exec.Command("/usr/bin/python3", "-c", `import sqlite3, sys
c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
for row in c.execute(sys.argv[2]):
    print("\t".join(str(v) for v in row))`, db, query)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("query %s: %v\n%s", db, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestClusterMoveFailsLeavesNothing: a move whose copy cannot deploy on
// the target (the app refuses to start there) fails with the reason, and
// leaves the project where it was — serving on b, READY, its spec and
// generation as before — and nothing of the copy on a: no user, no
// directories, no site, no data snapshot; the project can be changed (and
// moved) again.
func TestClusterMoveFailsLeavesNothing(t *testing.T) {
	a, b := needClusterPeer(t)
	name := b.newProject(t)
	app := newGitApp(t, "picky", "picky on b")
	app.write(t, "apps.py", `import os

from django.apps import AppConfig
from django.conf import settings


class PickyConfig(AppConfig):
    name = "picky"
    default = True

    def ready(self):
        if "/etcdhost/" in str(settings.PROJECT_ROOT):
            raise RuntimeError("picky will not run on etcdhost")
`)
	app.git(t, "add", "-A")
	app.git(t, "commit", "-q", "-m", "picky")
	b.mustCtl(t, 0, "create", name, "--host", "hostb", "--app", app.dir)
	mustGet(t, webClient(), b.url(name, "https", "/picky/"), "picky on b")
	before := b.show(t, name)
	accounts := hostStateOf(t, a, b)

	r := b.ctl(t, 0, "", "move", name, "--to", "etcdhost")
	if r.code == 0 {
		t.Fatalf("move of an app that cannot run on the target succeeded:\n%s", r.out)
	}
	if !strings.Contains(r.out+r.err, "picky will not run on etcdhost") {
		t.Errorf("the failed move does not say why:\n%s%s", r.out, r.err)
	}
	// Where it was, as it was, serving, and changeable at once.
	b.mustCtl(t, 0, "set", name, "env.AFTER_MOVE=1")
	after := b.show(t, name)
	if after.Phase != "PHASE_READY" || after.Host != "hostb" || after.Generation == before.Generation {
		t.Errorf("after the failed move and a change: phase %s, host %q, generation %s; want READY on hostb past %s", after.Phase, after.Host, after.Generation, before.Generation)
	}
	mustGet(t, webClient(), b.url(name, "https", "/picky/"), "picky on b")
	// Nothing of the copy on a, once its teardown is through.
	waitFor(t, 60*time.Second, "a's copy torn down", func() bool {
		_, err := user.Lookup(a.projUser(name))
		return err != nil && !exists(filepath.Join(a.cfg.BaseDir, "projects", name))
	})
	if got := hostStateOf(t, a, b); got != accounts {
		t.Errorf("accounts changed by the failed move:\n%s\nwant\n%s", got, accounts)
	}
	sites, _ := os.ReadDir(layout.Sites(a.cfg.ApacheDir))
	for _, s := range sites {
		if strings.Contains(s.Name(), name) {
			t.Errorf("a kept site %s of the failed copy", s.Name())
		}
	}
	if exists(filepath.Join(a.cfg.BaseDir, "snapshots", name)) {
		entries, _ := os.ReadDir(filepath.Join(a.cfg.BaseDir, "snapshots", name))
		if len(entries) > 0 {
			t.Errorf("a kept %d data snapshot files of the failed copy", len(entries))
		}
	}
	// Not stuck: it may try to move again.
	again := b.ctl(t, 0, "", "move", name, "--to", "etcdhost", "--no-wait")
	if again.code != 0 {
		t.Fatalf("a second move was refused: %s", again.err)
	}
	b.ctl(t, 0, "", "wait", strings.TrimSpace(again.out))
}

// TestClusterTakeOverFromBackup: a project whose host died is restored on
// another host from its last backup, on request (restore --replace
// --take-over): it is that host's, READY, with the backup's data; the dead
// host, back, removes its own copy; nothing is left on it.
func TestClusterTakeOverFromBackup(t *testing.T) {
	a, b := needClusterPeer(t)
	name := b.newProject(t)
	t.Cleanup(func() {
		if _, err := user.Lookup(a.projUser(name)); err == nil {
			a.ctl(t, 0, "", "destroy", name, "--yes")
		}
	})
	app := newGitApp(t, "rescued", "rescued app")
	if r := b.ctl(t, 0, adminPassword+"\n", "create", name, "--host", "hostb", "--app", app.dir,
		"--admin", "--superuser", "keeper", "--superuser-email", "keeper@example.com", "--superuser-password-stdin"); r.code != 0 {
		t.Fatalf("create on b: %s", r.err)
	}
	file := filepath.Join(root, name+".opus")
	b.mustCtl(t, 0, "backup", name, "-o", file)

	// Refused while b answers: that is what move is for.
	if r := a.ctl(t, 0, "", "restore", file, "--replace", "--take-over"); r.code == 0 || !strings.Contains(r.err, "which is answering") {
		t.Errorf("take-over of a project whose host answers: exit %d, %q", r.code, r.err)
	}

	b.killDaemons(t)
	back := false
	t.Cleanup(func() {
		if !back {
			b.startPrivd()
			b.startOpusd()
		}
	})
	waitFor(t, 30*time.Second, "UNREACHABLE through a", func() bool { return a.show(t, name).Phase == "PHASE_UNREACHABLE" })
	out := a.mustCtl(t, 0, "restore", file, "--replace", "--take-over")
	if !strings.Contains(out, "restored data snapshot") {
		t.Errorf("the take-over's progress does not show the data restored:\n%s", out)
	}
	if p := a.show(t, name); p.Phase != "PHASE_READY" || p.Host != "etcdhost" {
		t.Errorf("after the take-over: phase %s on %q; want READY on etcdhost", p.Phase, p.Host)
	}
	mustGet(t, webClient(), a.url(name, "https", "/rescued/"), "rescued app")
	if got := a.sqlite(t, name, "select username from auth_user"); got != "keeper" {
		t.Errorf("a's database has users %q; want the backup's, keeper", got)
	}

	// b back: it removes its copy, and serves the project no more.
	if err := b.startPrivd(); err != nil {
		t.Fatal(err)
	}
	if err := b.startOpusd(); err != nil {
		t.Fatal(err)
	}
	back = true
	waitFor(t, 90*time.Second, "b's copy torn down", func() bool {
		_, err := user.Lookup(b.projUser(name))
		return err != nil && !exists(filepath.Join(b.cfg.BaseDir, "projects", name))
	})
	if p := b.show(t, name); p.Host != "etcdhost" || p.Phase != "PHASE_READY" {
		t.Errorf("through b once back: phase %s on %q; want READY on etcdhost", p.Phase, p.Host)
	}
	a.mustCtl(t, 0, "destroy", name, "--yes")
	if _, err := user.Lookup(a.projUser(name)); err == nil {
		t.Errorf("a's user is left after destroy")
	}
}

// pauseProbe fetches url until stopped, and tells the longest time it did
// not answer with want, and how many fetches it made.
func pauseProbe(t *testing.T, url, want string) (stop func() (longest time.Duration, n int)) {
	var (
		done    = make(chan struct{})
		wg      sync.WaitGroup
		longest time.Duration
		n       int
	)
	c := webClient()
	wg.Add(1)
	go func() {
		defer wg.Done()
		var badSince time.Time
		for {
			select {
			case <-done:
				return
			default:
			}
			code, body := get(t, c, url)
			n++
			now := time.Now()
			if code != 200 || !strings.Contains(body, want) {
				if badSince.IsZero() {
					badSince = now
				}
				longest = max(longest, now.Sub(badSince))
			} else {
				badSince = time.Time{}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() (time.Duration, int) {
		close(done)
		wg.Wait()
		return longest, n
	}
}

// TestClusterMoveKeepsWrites: what the old copy takes while the target
// deploys its copy (here slowed down) is in the project once it moved —
// the old copy stops taking writes only for the last copy, and that is
// what the new one serves.
func TestClusterMoveKeepsWrites(t *testing.T) {
	a, b := needClusterPeer(t)
	name := b.newProject(t)
	t.Cleanup(func() {
		if _, err := user.Lookup(a.projUser(name)); err == nil {
			a.ctl(t, 0, "", "destroy", name, "--yes")
		}
	})
	app := newGitApp(t, "slowmove", "slow to start on a")
	app.write(t, "apps.py", `import time

from django.apps import AppConfig
from django.conf import settings


class SlowmoveConfig(AppConfig):
    name = "slowmove"
    default = True

    def ready(self):
        if "/etcdhost/" in str(settings.PROJECT_ROOT):
            time.sleep(2)
`)
	app.git(t, "add", "-A")
	app.git(t, "commit", "-q", "-m", "slow on a")
	b.mustCtl(t, 0, "create", name, "--host", "hostb", "--app", app.dir)
	r := b.ctl(t, 0, "", "move", name, "--to", "etcdhost", "--no-wait")
	if r.code != 0 {
		t.Fatalf("move: %s", r.err)
	}
	op := strings.TrimSpace(r.out)
	// Once the first copy is taken (a's copy deploying from it), the old
	// copy takes a write.
	waitFor(t, 60*time.Second, "the first copy taken", func() bool {
		return strings.Contains(b.ctl(t, 0, "", "wait", op, "--timeout", "1s").out, "fetch data: done")
	})
	b.sqliteExec(t, name, "insert into auth_group(name) values ('written during the move')")
	b.mustCtl(t, 0, "wait", op)
	if got := a.sqlite(t, name, "select name from auth_group"); got != "written during the move" {
		t.Errorf("a's copy has groups %q; want the one written on b during the move", got)
	}
}

// sqliteExec runs one statement on a project's SQLite database as root.
func (h *host) sqliteExec(t *testing.T, project, stmt string) {
	t.Helper()
	db := filepath.Join(h.cfg.BaseDir, "projects", project, "data", "db.sqlite3")
	cmd := exec.Command("/usr/bin/python3", "-c", `import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute(sys.argv[2])
c.commit()`, db, stmt)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s on %s: %v\n%s", stmt, db, err, out)
	}
}
