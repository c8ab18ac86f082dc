package e2e

import (
	"bytes"
	"context"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
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
			accounts := hostState(t)
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
			if hostState(t) != accounts {
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
			if hostState(t) != accounts {
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
	// opusd says which store it uses, and that plain etcd serves anyone.
	data, err := os.ReadFile(filepath.Join(h.logs, "opusd.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`state="etcd ` + e.clientURL + ` prefix ` + h.cfg.EtcdPrefix + `"`, "etcd without a client certificate"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("opusd's log lacks %q", want)
		}
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
	if pids := pidsWhere(func(cmd []byte) bool {
		return bytes.HasPrefix(cmd, []byte(etcdtest.Binary+"\x00")) && bytes.Contains(cmd, []byte(root))
	}); len(pids) != 1 {
		t.Errorf("etcd processes whose command line names the run's directory %s: %v, want the run's one", root, pids)
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
