package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/layout"
)

// Issue 20 attacks: a tenant's code on the hosts of one Opus on etcd.

// hex64 matches a SHA-256 in hex (a peer certificate's fingerprint).
var hex64 = regexp.MustCompile(`[0-9a-f]{64}`)

// gitHostileApp is hostileApp (AppConfig.ready() runs attack as the
// project user at every manage.py call and in the daemon) in a git
// repository, tagged "attack": a move carries apps from git only.
func gitHostileApp(t *testing.T, name, attack string) *gitApp {
	t.Helper()
	src := hostileApp(t, name, attack)
	g := newGitApp(t, name, "hostile "+name)
	for _, f := range []string{"apps.py", "views.py", "urls.py"} {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		g.write(t, f, string(data))
	}
	g.git(t, "add", "-A")
	g.git(t, "commit", "-q", "-m", "attack")
	g.git(t, "tag", "attack")
	return g
}

// attack20Probe is Python (a hostileApp body) that tries, as the project
// user, everything a tenant on a host of the cluster could reach of it,
// and writes what happened to data/attack20-<uid>.json: etcd's client
// port without a client certificate (a range read of every key), the
// other hosts' peer listeners with a guessed token, and opusd's own files
// on both hosts (the exports and fetched data under moves/, the etcd
// client key, the data snapshots). Each entry is "read: ..." if the
// attack got something, else "refused: why".
func attack20Probe(etcdHostPort string, peers, files []string) string {
	return fmt.Sprintf(`
    import json, socket, ssl, urllib.request
    res = {}
    def attempt(key, fn):
        try:
            res[key] = "read: " + repr(fn())[:300]
        except Exception as e:
            res[key] = "refused: " + type(e).__name__ + ": " + str(e)[:200]
    def nocheck():
        c = ssl.create_default_context()
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE
        return c
    def etcd():
        host, port = %q.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            with nocheck().wrap_socket(s) as t:
                body = b'{"key":"AA==","range_end":"AA=="}'
                t.sendall(b"POST /v3/kv/range HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: %%d\r\nConnection: close\r\n\r\n" %% len(body) + body)
                data = b""
                while len(data) < 1 << 20:
                    chunk = t.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        if b" 200 " not in data.split(b"\r\n", 1)[0]:
            raise RuntimeError("etcd answered " + repr(data[:100]))
        return data[:300]
    attempt("etcd", etcd)
    # The control: the project's own directory, which it may read; it
    # shows the probe can tell a read from a refusal.
    attempt("own", lambda: os.listdir(PROJECT_ROOT))
    for p in %s:
        def peer(p=p):
            req = urllib.request.Request("https://" + p + "/v1/transfers/x", headers={"Authorization": "Bearer " + "00" * 32})
            return urllib.request.urlopen(req, timeout=5, context=nocheck()).read(100)
        attempt("peer " + p, peer)
    for f in %s:
        def look(f=f):
            if os.path.isdir(f):
                return os.listdir(f)
            with open(f, "rb") as fh:
                return fh.read(100)
        attempt("file " + f, look)
    out = PROJECT_ROOT / "data" / ("attack20-%%d.json" %% os.getuid())
    out.write_text(json.dumps(res))
`, etcdHostPort, pyList(peers), pyList(files))
}

// pyList is ss as a Python list of strings.
func pyList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// TestAttack20TenantOnCluster: a tenant's code running on host b, then on
// host a while a move brings the project there (the incoming copy's
// manage.py runs as the data is being restored), reaches neither etcd
// (no client certificate), nor a peer listener's files (no token), nor
// opusd's exports, fetched data, etcd key or snapshots on either host.
// Then the tenant puts a link to host a's etcd key and a FIFO in its
// media and asks for a move back to b: the export refuses them, the move
// fails with a reason, the project serves on on a, and nothing of the
// move is left on either host (no user, directory, snapshot or export on
// b; no export on a).
func TestAttack20TenantOnCluster(t *testing.T) {
	a, b := needClusterPeer(t)
	waitFor(t, 20*time.Second, "both hosts listed", func() bool {
		out := a.ctl(t, 0, "", "hosts").out
		return strings.Contains(out, "etcdhost") && strings.Contains(out, "hostb")
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
	eu, err := url.Parse(startClusterEtcd(t).clientURL)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, h := range []*host{a, b} {
		files = append(files,
			filepath.Join(h.cfg.BaseDir, "moves"),
			filepath.Dir(h.cfg.EtcdKeyFile), h.cfg.EtcdKeyFile,
			filepath.Join(h.cfg.BaseDir, layout.SnapshotsDir, name))
	}
	probe := attack20Probe(eu.Host, []string{a.cfg.PeerListen, b.cfg.PeerListen}, files)
	app := gitHostileApp(t, "hostile20", probe)
	if r := a.ctl(t, 0, "", "create", name, "--host", "hostb", "--app", app.dir+"@attack"); r.code != 0 {
		t.Fatalf("create on hostb: exit %d: %s", r.code, r.err)
	}
	mustGet(t, webClient(), b.url(name, "https", "/hostile20/"), "hostile hostile20")

	// checkProbe reads what the tenant's code got on h.
	checkProbe := func(h *host, where string) {
		t.Helper()
		uid, _, err := lookupIDs(h.projUser(name))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(h.cfg.BaseDir, "projects", name, "data", fmt.Sprintf("attack20-%d.json", uid))
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%s: the attack left no results (%v): did it run?", where, err)
		}
		var res map[string]string
		if err := json.Unmarshal(data, &res); err != nil {
			t.Fatalf("%s: %s: %v", where, p, err)
		}
		if v := res["own"]; !strings.HasPrefix(v, "read: ") || !strings.Contains(v, "data") {
			t.Errorf("%s: the control (the project's own directory): %s; want it read", where, v)
		}
		delete(res, "own")
		if want := 1 + 2 + len(files); len(res) != want {
			t.Errorf("%s: %d attempts recorded, want %d: %v", where, len(res), want, res)
		}
		for k, v := range res {
			if !strings.HasPrefix(v, "refused: ") {
				t.Errorf("%s: the tenant's %s: %s", where, k, v)
			}
			if strings.HasPrefix(k, "peer ") && !strings.Contains(v, "404") {
				t.Errorf("%s: the tenant's %s: %s; want 404 (no such transfer, or a wrong token)", where, k, v)
			}
		}
		t.Logf("%s: %v", where, res)
	}
	checkProbe(b, "on b")

	// Moved to a: the tenant's code runs there while the move's data is
	// on a's disk.
	b.mustCtl(t, 0, "move", name, "--to", "etcdhost")
	mustGet(t, webClient(), a.url(name, "https", "/hostile20/"), "hostile hostile20")
	checkProbe(a, "on a, during and after the move")
	waitFor(t, 90*time.Second, "b's copy torn down", func() bool {
		_, err := user.Lookup(b.projUser(name))
		return err != nil && !exists(filepath.Join(b.cfg.BaseDir, "projects", name))
	})

	// A link out of media (to a's etcd key) and a FIFO: the move back
	// to b is refused whole.
	media := layout.For(a.cfg.BaseDir, name).Media()
	writeAs(t, a.projUser(name), filepath.Join(media, "ok.txt"), "fine")
	uid, gid, err := lookupIDs(a.projUser(name))
	if err != nil {
		t.Fatal(err)
	}
	link, fifo := filepath.Join(media, "key.pem"), filepath.Join(media, "pipe")
	if err := os.Symlink(a.cfg.EtcdKeyFile, link); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, fifo} {
		if err := os.Lchown(p, int(uid), int(gid)); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan result, 1)
	go func() { done <- a.ctl(t, 0, "", "move", name, "--to", "hostb") }()
	var r result
	select {
	case r = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("the move of a project with a FIFO in its media still runs after 3 minutes")
	}
	if r.code == 0 {
		t.Fatalf("move with a link and a FIFO in media: exit 0: %s", r.out)
	}
	t.Logf("move refused: %s", r.err)
	if p := a.show(t, name); p.Phase != "PHASE_READY" || p.Host != "etcdhost" {
		t.Errorf("after the failed move: phase %s on %q; want READY on etcdhost", p.Phase, p.Host)
	}
	mustGet(t, webClient(), a.url(name, "https", "/hostile20/"), "hostile hostile20")
	if _, err := user.Lookup(b.projUser(name)); err == nil {
		t.Errorf("b made %s for the failed move", b.projUser(name))
	}
	for _, p := range []string{
		filepath.Join(b.cfg.BaseDir, "projects", name),
		filepath.Join(b.cfg.BaseDir, layout.SnapshotsDir, name),
	} {
		if exists(p) {
			t.Errorf("%s is left after the failed move", p)
		}
	}
	waitFor(t, 30*time.Second, "no export or fetched file left on either host", func() bool {
		for _, h := range []*host{a, b} {
			es, _ := os.ReadDir(filepath.Join(h.cfg.BaseDir, "moves"))
			if len(es) != 0 {
				return false
			}
		}
		return true
	})
	// Nothing of the key went anywhere: the link is still a link, and
	// the project may move again once its media is plain.
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the tenant's link: %v, %v", fi, err)
	}
	os.Remove(link)
	os.Remove(fifo)
	a.mustCtl(t, 0, "move", name, "--to", "hostb")
	mustGet(t, webClient(), b.url(name, "https", "/hostile20/"), "hostile hostile20")
	if data, err := os.ReadFile(filepath.Join(layout.For(b.cfg.BaseDir, name).Media(), "ok.txt")); err != nil || string(data) != "fine" {
		t.Errorf("b's media after the move: %q, %v", data, err)
	}
}

// TestAttack20FailedDeployOnTarget: a tenant's code that fails only on
// the move's target (its ready() raises when its path is under host a's
// base directory) fails the move there: the project serves on on b,
// unchanged, no longer moving; host a keeps nothing of it (no user,
// project directory, data snapshots, site or move file); and a plain
// user cannot move another's project at all.
func TestAttack20FailedDeployOnTarget(t *testing.T) {
	a, b := needClusterPeer(t)
	waitFor(t, 20*time.Second, "both hosts listed", func() bool {
		out := a.ctl(t, 0, "", "hosts").out
		return strings.Contains(out, "etcdhost") && strings.Contains(out, "hostb")
	})
	name := b.newProject(t)
	app := gitHostileApp(t, "picky20", fmt.Sprintf(`
    if str(PROJECT_ROOT).startswith(%q):
        raise RuntimeError("issue 20 attack: not on this host")
`, a.cfg.BaseDir+"/"))
	if r := b.ctl(t, 0, "", "create", name, "--host", "hostb", "--app", app.dir+"@attack"); r.code != 0 {
		t.Fatalf("create on hostb: exit %d: %s", r.code, r.err)
	}
	mustGet(t, webClient(), b.url(name, "https", "/picky20/"), "hostile picky20")
	before := b.show(t, name)

	// A plain user's view of the hosts names no peer listener, its
	// certificate or anything of etcd.
	for _, h := range []*host{a, b} {
		for _, args := range [][]string{{"hosts"}, {"hosts", "-o", "json"}} {
			r := h.ctl(t, h.otherID, "", args...)
			if r.code != 0 {
				t.Fatalf("%v as a plain user: exit %d: %s", args, r.code, r.err)
			}
			if !strings.Contains(r.out, "etcdhost") || !strings.Contains(r.out, "hostb") {
				t.Fatalf("opusctl %v as a plain user does not list both hosts:\n%s", args, r.out)
			}
			for _, secret := range []string{a.cfg.PeerListen, b.cfg.PeerListen, "peer", "fingerprint", "etcd_", "2379", startClusterEtcd(t).clientURL} {
				if strings.Contains(r.out, secret) {
					t.Errorf("opusctl %v as a plain user shows %q:\n%s", args, secret, r.out)
				}
			}
			if hex64.MatchString(r.out) {
				t.Errorf("opusctl %v as a plain user shows a SHA-256:\n%s", args, r.out)
			}
		}
	}

	// A plain user of either host cannot move root's project.
	for _, h := range []*host{a, b} {
		if r := h.ctl(t, h.otherID, "", "move", name, "--to", "etcdhost"); r.code == 0 {
			t.Errorf("a plain user moved root's project through %s: %s", h.cfg.HostName, r.out)
		}
	}
	if p := b.show(t, name); p.Host != "hostb" || p.Generation != before.Generation {
		t.Fatalf("after the refused moves: host %q, generation %s (was %s)", p.Host, p.Generation, before.Generation)
	}

	r := b.ctl(t, 0, "", "move", name, "--to", "etcdhost")
	if r.code == 0 {
		t.Fatalf("move to a host where the app fails: exit 0: %s", r.out)
	}
	t.Logf("move failed: %s", r.err)
	waitFor(t, 60*time.Second, "the failed move cleared, a's copy gone", func() bool {
		p := b.show(t, name)
		_, err := user.Lookup(a.projUser(name))
		return p.Phase == "PHASE_READY" && p.Host == "hostb" && !strings.Contains(b.mustCtl(t, 0, "show", name, "-o", "json"), `"moving_to": "etcdhost"`) && err != nil
	})
	mustGet(t, webClient(), b.url(name, "https", "/picky20/"), "hostile picky20")
	if p := b.show(t, name); p.Generation != before.Generation {
		t.Errorf("the failed move changed the project: generation %s → %s", before.Generation, p.Generation)
	}
	for _, p := range []string{
		filepath.Join(a.cfg.BaseDir, "projects", name),
		filepath.Join(a.cfg.BaseDir, layout.SnapshotsDir, name),
	} {
		if exists(p) {
			t.Errorf("%s is left on a after the failed move", p)
		}
	}
	sites, _ := os.ReadDir(layout.Sites(a.cfg.ApacheDir))
	for _, s := range sites {
		if strings.Contains(s.Name(), name) {
			t.Errorf("site %s is left on a after the failed move", s.Name())
		}
	}
	waitFor(t, 30*time.Second, "no export or fetched file left on either host", func() bool {
		for _, h := range []*host{a, b} {
			es, _ := os.ReadDir(filepath.Join(h.cfg.BaseDir, "moves"))
			if len(es) != 0 {
				return false
			}
		}
		return true
	})
	// It may try again (the copy the failed move made is gone): it fails
	// again the same way, rather than "still has a copy".
	if r := b.ctl(t, 0, "", "move", name, "--to", "etcdhost"); r.code == 0 || strings.Contains(r.err, "still has a copy") {
		t.Errorf("second move: exit %d: %s", r.code, r.err)
	}
}
