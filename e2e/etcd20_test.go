package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Issue 20: opusd's state in etcd. The etcd host (needEtcdHost) is a
// second privd + opusd pair of the run whose store is the run's etcd.

// TestCrashOpusdAfterEachStepEtcd is TestCrashOpusdAfterEachStep on the
// etcd state store.
func TestCrashOpusdAfterEachStepEtcd(t *testing.T) { crashOpusdAfterEachStep(t, needEtcdHost(t)) }

// TestCrashEveryOperationKindEtcd is TestCrashEveryOperationKind on the
// etcd state store.
func TestCrashEveryOperationKindEtcd(t *testing.T) { crashEveryOperationKind(t, needEtcdHost(t)) }

// TestEtcdPartition: with etcd unreachable (paused, as across a partition:
// connections hang; then killed: connections are refused), a change
// through opusctl fails within a bounded time with a message saying the
// state store (etcd) cannot be reached and changes are refused, exit code
// non-zero; show and ls still answer; the project keeps answering over
// HTTP the whole time; nothing changed on the host, and the project's
// generation and settings are as before once etcd is back (the refused
// change does not land late). With etcd back, the same change succeeds.
func TestEtcdPartition(t *testing.T) {
	h := needEtcdHost(t)
	e := startEtcd(t)
	name := h.newProject(t)
	h.deploy(t, 0, name, localApp(t, "hello"))
	mustGet(t, webClient(), h.url(name, "https", "/hello/"), "Hello from Opus")
	h.checkApart(t, e, name)
	stopProbe := steadyProbe(t, h.url(name, "http", "/hello/"), "Hello from Opus")

	for _, tc := range []struct {
		how       string
		cut, heal func(*testing.T)
	}{
		{"paused", e.pause, e.resume},
		{"killed", e.kill, e.restart},
	} {
		t.Run(tc.how, func(t *testing.T) {
			before := h.show(t, name)
			accounts := hostStateOf(t, h)
			change := []string{"set", name, "env.OPUS_PARTITION=" + tc.how}

			tc.cut(t)
			start := time.Now()
			r := h.ctl(t, 0, "", change...)
			took := time.Since(start)
			if r.code == 0 {
				t.Errorf("opusctl set with etcd %s: exit 0, want the change refused", tc.how)
			}
			for _, want := range []string{"state store (etcd)", "changes are refused", "projects keep serving"} {
				if !strings.Contains(r.err, want) {
					t.Errorf("opusctl set with etcd %s says %q; want it to say %q", tc.how, r.err, want)
				}
			}
			// The store's request timeout is 5 s; opusctl's call must not
			// hang on the partition.
			if took > 20*time.Second {
				t.Errorf("opusctl set with etcd %s took %s to fail, want under 20s", tc.how, took.Round(time.Millisecond))
			}
			// Reads answer from what opusd last saw.
			if p := h.show(t, name); p.Generation != before.Generation || !maps.Equal(p.Settings.Env, before.Settings.Env) || p.Phase != "PHASE_READY" {
				t.Errorf("show with etcd %s: generation %s, env %v, phase %s; want generation %s, env %v, READY", tc.how, p.Generation, p.Settings.Env, p.Phase, before.Generation, before.Settings.Env)
			}
			if out := h.mustCtl(t, 0, "ls"); !strings.Contains(out, name) {
				t.Errorf("ls with etcd %s lacks %s:\n%s", tc.how, name, out)
			}
			mustGet(t, webClient(), h.url(name, "https", "/hello/"), "Hello from Opus")
			if hostStateOf(t, h) != accounts {
				t.Errorf("the refused change changed the run's accounts")
			}

			tc.heal(t)
			// The refused change must not land once etcd answers again
			// (a commit sent before the timeout and applied later would):
			// watch the project for a while.
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
				if p := h.show(t, name); p.Generation != before.Generation || !maps.Equal(p.Settings.Env, before.Settings.Env) {
					t.Fatalf("after etcd came back, the refused change landed: generation %s (was %s), env %v (was %v)", p.Generation, before.Generation, p.Settings.Env, before.Settings.Env)
				}
			}
			if hostStateOf(t, h) != accounts {
				t.Errorf("the run's accounts changed after etcd came back")
			}

			// The same change now succeeds (opusd may need a moment to
			// reconnect).
			var last result
			for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
				if last = h.ctl(t, 0, "", change...); last.code == 0 {
					break
				}
				if time.Now().After(deadline) {
					h.dumpLogs(t)
					t.Fatalf("opusctl set still fails a minute after etcd came back: %s", last.err)
				}
			}
			p := h.show(t, name)
			gen, _ := strconv.ParseInt(before.Generation, 10, 64)
			if p.Settings.Env["OPUS_PARTITION"] != tc.how || p.Generation != strconv.FormatInt(gen+1, 10) || p.Phase != "PHASE_READY" {
				t.Errorf("after the change: generation %s, env %v, phase %s; want generation %d with OPUS_PARTITION=%s, READY", p.Generation, p.Settings.Env, p.Phase, gen+1, tc.how)
			}
		})
	}
	if n, outages, last := stopProbe(); n == 0 || outages > 0 {
		t.Errorf("project %s while etcd was unreachable: %d outages in %d requests (last failure: %s)", name, outages, n, last)
	}
	mustGet(t, webClient(), h.url(name, "https", "/hello/"), "Hello from Opus")
}

// checkApart asserts that project name of the etcd host h is its own: its
// user under h's prefix with a uid of h's range, not the shared host's;
// its state in etcd under h's prefix, and no bbolt file beside it; and
// opusd's log says so.
func (h *host) checkApart(t *testing.T, e *etcdServer, name string) {
	t.Helper()
	u, err := user.Lookup(h.projUser(name))
	if err != nil {
		t.Fatalf("project %s's user %s: %v", name, h.projUser(name), err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	if !h.cfg.ProjectUIDs.Contains(uint32(uid)) || testRun.UIDs().Contains(uint32(uid)) {
		t.Errorf("project %s's uid %d: want one of the etcd host's %s, none of the shared host's %s", name, uid, h.cfg.ProjectUIDs, testRun.UIDs())
	}
	if _, err := user.Lookup(projUser(name)); err == nil {
		t.Errorf("the shared host's prefix names a user %s too", projUser(name))
	}
	if exists(filepath.Join(h.cfg.BaseDir, "opusd.db")) {
		t.Errorf("the etcd host has a bbolt state file")
	}
	if n := e.countKeys(t, h.cfg.EtcdPrefix); n == 0 {
		t.Errorf("etcd holds no key under %s", h.cfg.EtcdPrefix)
	}
	// Its commits carry its host_name.
	if got := e.get(t, h.cfg.EtcdPrefix+"meta/commit"); got != h.cfg.HostName {
		t.Errorf("etcd's last commit under %s is by %q, want the etcd host's host_name %q", h.cfg.EtcdPrefix, got, h.cfg.HostName)
	}
	// opusd says which store it uses.
	data, err := os.ReadFile(filepath.Join(h.logs, "opusd.log"))
	if err != nil {
		t.Fatal(err)
	}
	if want := `state="etcd ` + e.clientURL + ` prefix ` + h.cfg.EtcdPrefix + `"`; !strings.Contains(string(data), want) {
		t.Errorf("opusd's log lacks %q", want)
	}
}

// countKeys is how many keys etcd holds under prefix.
func (e *etcdServer) countKeys(t *testing.T, prefix string) int {
	t.Helper()
	var n int64
	if err := e.call(5*time.Second, func(ctx context.Context, c *clientv3.Client) error {
		resp, err := c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil {
			n = resp.Count
		}
		return err
	}); err != nil {
		t.Fatalf("etcd: keys under %s: %v", prefix, err)
	}
	return int(n)
}

// TestEtcdHarness: the run's etcd answers; paused it does not, and
// answers again resumed; killed it refuses connections, and restarted on
// the same data and ports it still holds what was written before. Its
// command line names the run's directory, so the next run kills it after
// a killed one.
func TestEtcdHarness(t *testing.T) {
	e := startEtcd(t)
	if err := e.health(); err != nil {
		t.Fatal(err)
	}
	// Its data directory is its group's, in the run's directory.
	dir := filepath.Join(root, groupEtcd.dir) + "/"
	if pids := pidsWhere(func(cmd []byte) bool {
		return bytes.HasPrefix(cmd, []byte(etcdtest.Binary+"\x00")) && bytes.Contains(cmd, []byte(dir))
	}); len(pids) != 1 {
		t.Errorf("etcd processes whose command line names %s: %v, want the one", dir, pids)
	}
	key := "/opus-e2e-harness-" + testRun.ID + "/k"
	e.put(t, key, "kept")

	e.pause(t)
	if err := e.health(); err == nil {
		t.Errorf("paused etcd answers its health check")
	}
	e.resume(t)
	if err := e.health(); err != nil {
		t.Errorf("resumed etcd: %v", err)
	}

	e.kill(t)
	if err := e.health(); err == nil {
		t.Errorf("killed etcd answers")
	}
	e.restart(t)
	if n := e.countKeys(t, key); n != 1 {
		t.Errorf("after the restart etcd holds %d keys %s, want 1", n, key)
	}
}

// get is the value of key in etcd ("" if none).
func (e *etcdServer) get(t *testing.T, key string) string {
	t.Helper()
	var v string
	if err := e.call(5*time.Second, func(ctx context.Context, c *clientv3.Client) error {
		resp, err := c.Get(ctx, key)
		if err == nil && len(resp.Kvs) == 1 {
			v = string(resp.Kvs[0].Value)
		}
		return err
	}); err != nil {
		t.Fatalf("etcd: get %s: %v", key, err)
	}
	return v
}

// put writes key=value into etcd.
func (e *etcdServer) put(t *testing.T, key, value string) {
	t.Helper()
	if err := e.call(5*time.Second, func(ctx context.Context, c *clientv3.Client) error {
		_, err := c.Put(ctx, key, value)
		return err
	}); err != nil {
		t.Fatalf("etcd: put %s: %v", key, err)
	}
}

// TestEtcdRefusesClientsWithoutCertificate: the run's etcd, like the
// cluster Opus requires, serves only clients with a certificate its CA
// signed. A client with only the CA, one with a certificate of another
// CA, and one speaking plain http can neither read nor write the etcd
// host's keys, while the same calls with the client certificate succeed,
// and the state is unchanged after them. A tenant's code on the etcd host
// cannot read opusd's copies of the certificate and key (0400, the
// daemon user's, in a directory of its own), nor read or write etcd over
// https without a certificate or over http.
func TestEtcdRefusesClientsWithoutCertificate(t *testing.T) {
	h := needEtcdHost(t)
	e := startEtcd(t)
	prefix := h.cfg.EtcdPrefix
	// Its opusd registers itself just after it answers on its socket
	// (an earlier test may have just restarted it): the state to keep is
	// the one with its registration.
	waitFor(t, 30*time.Second, "the etcd host registered", func() bool {
		return e.get(t, prefix+"hosts/"+h.cfg.HostName) != ""
	})
	before := e.snapshot(t, prefix)
	if len(before) == 0 {
		t.Fatalf("etcd holds nothing under %s: nothing to protect", prefix)
	}

	caPEM, err := os.ReadFile(e.srv.ClientCert.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("the run's etcd CA: no certificate")
	}
	otherCrt, otherKey, err := cert.SelfSigned([]string{"localhost"}, time.Now(), time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tls.X509KeyPair(otherCrt, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	plainURL := "http://" + strings.TrimPrefix(e.clientURL, "https://")
	for _, tc := range []struct {
		how, url string
		tls      *tls.Config
	}{
		{"only the CA", e.clientURL, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
		{"a certificate of another CA", e.clientURL, &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{other}, MinVersion: tls.VersionTLS12}},
		{"plain http", plainURL, nil},
	} {
		t.Run(tc.how, func(t *testing.T) {
			key := prefix + "tenant-was-here-" + strings.ReplaceAll(tc.how, " ", "-")
			err := etcdCall(tc.url, tc.tls, func(ctx context.Context, c *clientv3.Client) error {
				if _, err := c.Get(ctx, prefix, clientv3.WithPrefix()); err == nil {
					t.Errorf("a client with %s read the etcd host's keys", tc.how)
				}
				if _, err := c.Put(ctx, key, tc.how); err == nil {
					t.Errorf("a client with %s wrote %s", tc.how, key)
				}
				return nil
			})
			if err != nil {
				t.Logf("a client with %s: %v", tc.how, err)
			}
			if got := e.get(t, key); got != "" {
				t.Errorf("etcd holds %s = %q, written by a client with %s", key, got, tc.how)
			}
			if after := e.snapshot(t, prefix); !maps.Equal(after, before) {
				t.Errorf("the etcd host's keys changed after a client with %s tried:\nbefore %v\nafter  %v", tc.how, before, after)
			}
		})
	}
	// The same requests with the client certificate succeed: the refusals
	// above are for want of it. etcd's JSON gateway too, which the
	// tenant's code below tries.
	if n := e.countKeys(t, prefix); n != len(before) {
		t.Errorf("with the client certificate: %d keys under %s, want %d", n, prefix, len(before))
	}
	tc, err := e.srv.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	if status, err := etcdGateway(e.clientURL, tc, prefix); err != nil || status != http.StatusOK {
		t.Fatalf("etcd's JSON gateway with the client certificate: %d %v, want 200", status, err)
	}

	// opusd's copies: the daemon user's, 0400, in a 0700 directory of its.
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{filepath.Dir(h.cfg.EtcdKeyFile), os.ModeDir | 0o700}, {h.cfg.EtcdCAFile, 0o400}, {h.cfg.EtcdCertFile, 0o400}, {h.cfg.EtcdKeyFile, 0o400}} {
		fi, err := os.Lstat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != h.opusUID || fi.Mode() != f.mode {
			t.Errorf("%s: uid %d mode %s, want the daemon user's %d and %s", f.path, st.Uid, fi.Mode(), h.opusUID, f.mode)
		}
	}

	// A tenant's code on the etcd host tries the key file and etcd itself.
	name := h.newProject(t)
	port := strings.TrimPrefix(e.clientURL, "https://127.0.0.1:")
	tenantKey := prefix + "tenant-code-was-here"
	attack := fmt.Sprintf(`
    import base64, json, ssl, urllib.request
    out = {}
    for what, path in (("key", %q), ("dir", %q)):
        try:
            if what == "dir":
                os.listdir(path)
            else:
                with open(path, "rb") as f:
                    f.read()
            out[what] = "read"
        except OSError as e:
            out[what] = type(e).__name__
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for scheme in ("https", "http"):
        for op, body in (("range", {"key": b64(%q), "range_end": b64(%q)}), ("put", {"key": b64(%q), "value": b64("tenant")})):
            req = urllib.request.Request(scheme + "://127.0.0.1:%s/v3/kv/" + op, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=5, context=ctx if scheme == "https" else None) as r:
                    out[scheme + " " + op] = "ok %%d %%s" %% (r.status, r.read(200))
            except Exception as e:
                out[scheme + " " + op] = type(e).__name__ + ": " + str(e)[:200]
    (PROJECT_ROOT / "data" / "etcd-attack.json").write_text(json.dumps(out))
`, h.cfg.EtcdKeyFile, filepath.Dir(h.cfg.EtcdKeyFile), prefix, clientv3.GetPrefixRangeEnd(prefix), tenantKey, port)
	h.mustCtl(t, 0, "create", name, "--app", hostileApp(t, "etcdthief", attack))
	data, err := os.ReadFile(filepath.Join(h.cfg.BaseDir, "projects", name, "data", "etcd-attack.json"))
	if err != nil {
		t.Fatalf("the tenant's attack left no result: %v", err)
	}
	var got map[string]string
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("the tenant's attack result %q: %v", data, err)
	}
	t.Logf("the tenant's attempts: %v", got)
	// Its sandbox may hide the host's directory (FileNotFoundError); the
	// file's mode must keep it out regardless, as checked below.
	for _, what := range []string{"key", "dir"} {
		if got[what] != "PermissionError" && got[what] != "FileNotFoundError" {
			t.Errorf("the tenant's code opening opusd's etcd %s: %q, want PermissionError or FileNotFoundError", what, got[what])
		}
	}
	// The project's user outside any sandbox: the mode refuses it.
	puid, pgid, err := lookupIDs(h.projUser(name))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{h.cfg.EtcdKeyFile, filepath.Dir(h.cfg.EtcdKeyFile)} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `if [ -d "$1" ]; then ls -- "$1"; else head -c 100 -- "$1"; fi`, "sh", p)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: puid, Gid: pgid, Groups: []uint32{}}}
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), "Permission denied") {
			t.Errorf("project user %s reading %s: %v\n%s\nwant Permission denied", h.projUser(name), p, err, out)
		}
	}
	for _, what := range []string{"https range", "https put", "http range", "http put"} {
		if r, ok := got[what]; !ok || strings.HasPrefix(r, "ok ") {
			t.Errorf("the tenant's code, etcd %s without a certificate: %q, want refused", what, r)
		}
	}
	if v := e.get(t, tenantKey); v != "" {
		t.Errorf("etcd holds %s = %q, written by the tenant's code", tenantKey, v)
	}
}

// snapshot is every key etcd holds under prefix with its value and the
// revision that last changed it.
func (e *etcdServer) snapshot(t *testing.T, prefix string) map[string]string {
	t.Helper()
	m := map[string]string{}
	if err := e.call(5*time.Second, func(ctx context.Context, c *clientv3.Client) error {
		resp, err := c.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			m[string(kv.Key)] = fmt.Sprintf("%d %q", kv.ModRevision, kv.Value)
		}
		return nil
	}); err != nil {
		t.Fatalf("etcd: keys under %s: %v", prefix, err)
	}
	return m
}

// etcdCall runs fn with a client of the etcd at url with tc (nil: no
// TLS) and a context that ends after 5 seconds.
func etcdCall(url string, tc *tls.Config, fn func(context.Context, *clientv3.Client) error) error {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 2 * time.Second, TLS: tc, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return fn(ctx, c)
}

// etcdGateway asks etcd's JSON gateway at url, with tc, for the keys
// under prefix, and returns the HTTP status.
func etcdGateway(url string, tc *tls.Config, prefix string) (int, error) {
	b64 := base64.StdEncoding.EncodeToString
	body, err := json.Marshal(map[string]any{"key": b64([]byte(prefix)), "range_end": b64([]byte(clientv3.GetPrefixRangeEnd(prefix))), "count_only": true})
	if err != nil {
		return 0, err
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	resp, err := c.Post(url+"/v3/kv/range", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, nil
}
