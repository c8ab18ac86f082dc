package e2e

import (
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/layout"
)

// Issue 20: several hosts, one Opus. The etcd host (needEtcdHost, "host
// a" here) and a second host on the same etcd and prefix ("host b"): two
// privd + opusd pairs with their own directories, users, uids and
// managed Apache.

// clusterPeerN is the run's host number of host b.
const clusterPeerN = 2

var (
	clusterPeer     *host
	clusterPeerErr  error
	clusterPeerOnce sync.Once
)

// needClusterPeer returns host b, sharing host a's etcd cluster and key
// prefix (with its own copies of the client certificate files),
// starting it on first use.
func needClusterPeer(t *testing.T) (a, b *host) {
	t.Helper()
	a = needEtcdHost(t)
	e := startEtcd(t)
	clusterPeerOnce.Do(func() {
		dir := filepath.Join(root, "hostb")
		configure, err := e.hostConfig(dir, a.cfg.EtcdPrefix, "hostb")
		if err != nil {
			clusterPeerErr = err
			return
		}
		clusterPeer, clusterPeerErr = startExtraHost(hostSpec{n: clusterPeerN, dir: dir, configure: configure})
	})
	if clusterPeerErr != nil {
		t.Fatalf("starting host b: %v", clusterPeerErr)
	}
	return a, clusterPeer
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
// applied by b; destroyed through a, nothing of it is left on either
// host.
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
		if _, err := user.Lookup(b.projUser(name)); err == nil {
			a.ctl(t, 0, "", "destroy", name, "--yes")
		}
		b.dumpLogs(t)
	})
	app := newGitApp(t, "cluster", "served by b")
	app.addVersion(t, "v2", "served by b, v2")
	a.mustCtl(t, 0, "create", name, "--host", "hostb", "--app", app.dir+"@v1")

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

	// Destroyed through a: b tears it down; nothing is left on either.
	a.mustCtl(t, 0, "destroy", name, "--yes")
	if _, err := user.Lookup(b.projUser(name)); err == nil {
		t.Errorf("b's project user is left after destroy")
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
