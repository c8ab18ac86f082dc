package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/unprivd/store"
)

// Rule 7 of DESIGN.md against tenant code: nothing is read back from where
// a tenant writes. A project's user owns its secrets directory, so its code
// can put anything in place of secrets.json: a link to another project's
// secrets (which opusd, in group opus, could read), a FIFO (whose open
// blocks), a link to /dev/zero (endless). opusd keeps the secret key in its
// store and only ever writes the file.

// secretsAttack is the hostile app's attack: once OPUS_SECRETS_ATTACK is
// set (opusctl set NAME env.OPUS_SECRETS_ATTACK=...), the project's
// mod_wsgi daemon replaces secrets.json with a link ("link:TARGET") or a
// FIFO ("fifo"), once, and leaves a mark in data/. Only in the daemon: it
// has read its settings already, whereas a manage.py process planting it
// would leave the project's own daemon unable to start.
const secretsAttack = `
    kind = os.environ.get("OPUS_SECRETS_ATTACK", "")
    planted = PROJECT_ROOT / "data" / "secrets-attack-planted"
    if kind and "mod_wsgi" in sys.modules and not planted.exists():
        secrets = PROJECT_ROOT / "secrets"
        tmp = secrets / "planting"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if kind == "fifo":
            os.mkfifo(tmp)
            # Readable by opusd: its group is not opus's.
            os.chmod(tmp, 0o666)
        else:
            os.symlink(kind[len("link:"):], tmp)
        os.replace(tmp, secrets / "secrets.json")
        planted.write_text(kind)
`

func secretsPath(h *host, name string) string {
	return filepath.Join(h.cfg.BaseDir, "projects", name, "secrets", "secrets.json")
}

// projectSecrets reads a project's secrets file as root; it must be a
// regular file.
func projectSecrets(t *testing.T, h *host, name string) map[string]string {
	t.Helper()
	p := secretsPath(h, name)
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() {
		t.Fatalf("%s is %v, not a regular file", p, fi.Mode().Type())
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(data, &m); err != nil || m["secret_key"] == "" {
		t.Fatalf("%s: %v %q", p, err, data)
	}
	return m
}

// victimProject creates a project whose secrets carry a database password
// (a PostgreSQL database given by parameters, made on the test's cluster
// as its owner would), which is what made the
// old render step, reading through a link to them from a project without
// one, write the victim's key back. It returns the name, the secrets
// file's content and the victim's key.
func victimProject(t *testing.T, h *host) (string, []byte, string) {
	t.Helper()
	name := h.newProject(t)
	dbURL, pw, password := ownerDatabase(t, h, postgres(t), name)
	h.mustCtl(t, 0, "create", name, "--app", localApp(t, "notes"), "--database", dbURL, "--database-password-file", pw)
	s := projectSecrets(t, h, name)
	if s["db_password"] != password {
		t.Fatalf("victim's secrets lack its database password: %v", s)
	}
	data, _ := os.ReadFile(secretsPath(h, name))
	return name, data, s["secret_key"]
}

// attackerProject creates a project with the hostile app and returns its
// name and its own secret key.
func attackerProject(t *testing.T, h *host) (string, string) {
	t.Helper()
	name := h.newProject(t)
	h.mustCtl(t, 0, "create", name, "--app", hostileApp(t, "plant", secretsAttack))
	return name, projectSecrets(t, h, name)["secret_key"]
}

// arm sets the attack on project name and waits until its daemon planted
// it; it fails the test unless secrets.json is then what the attack made.
func arm(t *testing.T, h *host, name, kind string) {
	t.Helper()
	h.mustCtl(t, 0, "set", name, "env.OPUS_SECRETS_ATTACK="+kind)
	mark := filepath.Join(h.cfg.BaseDir, "projects", name, "data", "secrets-attack-planted")
	deadline := time.Now().Add(60 * time.Second)
	for !exists(mark) {
		if time.Now().After(deadline) {
			t.Fatalf("the attack %q was not planted within 60s (its daemon did not run ready()?)", kind)
		}
		get(t, webClient(), h.url(name, "http", "/plant/"))
		time.Sleep(200 * time.Millisecond)
	}
	fi, err := os.Lstat(secretsPath(h, name))
	if err != nil {
		t.Fatal(err)
	}
	switch target, isLink := strings.CutPrefix(kind, "link:"); {
	case isLink:
		if got, err := os.Readlink(secretsPath(h, name)); err != nil || got != target {
			t.Fatalf("planted %v → %q (%v), want a link to %s", fi.Mode().Type(), got, err, target)
		}
	case kind == "fifo":
		if fi.Mode().Type() != fs.ModeNamedPipe {
			t.Fatalf("planted %v, want a FIFO", fi.Mode().Type())
		}
	}
	t.Logf("planted in %s's secrets: %s", name, kind)
}

// trigger makes a change on project name (setting, e.g. debug=true),
// which runs the render step, and returns opusctl's result and the render
// step's message.
func trigger(t *testing.T, h *host, name, setting string) (result, string) {
	t.Helper()
	r := h.ctl(t, 0, "", "set", name, setting, "--timeout", "150s", "-o", "json")
	var op struct {
		State string `json:"state"`
		Steps []struct {
			Name    string `json:"name"`
			Message string `json:"message"`
		} `json:"steps"`
	}
	json.Unmarshal([]byte(r.out), &op)
	msg := ""
	for _, s := range op.Steps {
		if s.Name == "render" {
			msg = s.Message
		}
	}
	return r, msg
}

// noFileHolds fails when a file under dir (read as root) holds secret,
// as it is or as encoding/json writes it ('&' escaped).
func noFileHolds(t *testing.T, dir, secret string) {
	t.Helper()
	quoted, _ := json.Marshal(secret)
	forms := [][]byte{[]byte(secret), quoted[1 : len(quoted)-1]}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if fi, err := d.Info(); err != nil || fi.Size() > 64<<20 {
			return nil
		}
		data, _ := os.ReadFile(p)
		for _, f := range forms {
			if bytes.Contains(data, f) {
				t.Errorf("%s holds another project's secret key", p)
				return nil
			}
		}
		return nil
	})
}

// TestSecretsLinkToAnotherProject: the attacker's code replaces its
// secrets.json with a link to the victim's; the next change on the
// attacker does not read through it (the old render step did, and, the
// database passwords differing, wrote the victim's SECRET_KEY into the
// attacker's secrets), leaves the victim's secrets as they were, and the
// attacker keeps its own key.
func TestSecretsLinkToAnotherProject(t *testing.T) {
	h := needHost(t)
	victim, victimSecrets, victimKey := victimProject(t, h)
	attacker, ownKey := attackerProject(t, h)
	arm(t, h, attacker, "link:"+secretsPath(h, victim))

	r, msg := trigger(t, h, attacker, "debug=true")
	if r.code != 0 {
		t.Fatalf("the change on the attacker failed (exit %d): %s", r.code, r.err)
	}
	t.Logf("render: %s", msg)
	if got := projectSecrets(t, h, attacker); got["secret_key"] != ownKey || got["db_password"] != "" {
		t.Errorf("the attacker's secrets hold key %q (victim's: %v), want its own", got["secret_key"], got["secret_key"] == victimKey)
	}
	noFileHolds(t, filepath.Join(h.cfg.BaseDir, "projects", attacker), victimKey)
	if now, _ := os.ReadFile(secretsPath(h, victim)); !bytes.Equal(now, victimSecrets) {
		t.Errorf("the victim's secrets changed")
	}
	if fi, err := os.Lstat(secretsPath(h, victim)); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("the victim's secrets file is no longer a regular file: %v %v", fi, err)
	}
	mustGet(t, webClient(), h.url(attacker, "http", "/plant/"), "hostile plant")
}

// TestSecretsFIFO: a FIFO in place of secrets.json does not hang the next
// change (the old render step blocked in open forever, holding the
// project's run, so that a destroy queued behind it never ran); the change
// ends, the project keeps its key, and a destroy then finishes within a
// minute.
func TestSecretsFIFO(t *testing.T) {
	h := needHost(t)
	attacker, ownKey := attackerProject(t, h)
	arm(t, h, attacker, "fifo")
	// Should the run block anyway, let it go on (a reader blocked in open
	// proceeds once a writer opens), so the test's cleanup can destroy.
	t.Cleanup(func() {
		if fd, err := syscall.Open(secretsPath(h, attacker), syscall.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			syscall.Write(fd, []byte("unblocked by the test"))
			syscall.Close(fd)
		}
	})

	start := time.Now()
	r, msg := trigger(t, h, attacker, "debug=true")
	if r.code != 0 {
		t.Fatalf("the change on the attacker did not end well within 150s (exit %d after %v): %s", r.code, time.Since(start).Round(time.Second), r.err)
	}
	t.Logf("render: %s", msg)
	if got := projectSecrets(t, h, attacker); got["secret_key"] != ownKey {
		t.Errorf("the attacker's key changed")
	}
	start = time.Now()
	if r := h.ctl(t, 0, "", "destroy", attacker, "--yes", "--timeout", "60s"); r.code != 0 {
		t.Fatalf("destroy after the FIFO attack failed (exit %d): %s", r.code, r.err)
	}
	t.Logf("destroy took %v", time.Since(start).Round(time.Millisecond))
}

// vmKiB reads a VmXXX: line of /proc/PID/status, in KiB.
func vmKiB(pid int, field string) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}

// TestSecretsLinkToDevZero: a link to /dev/zero in place of secrets.json
// is not read (the old render step read it without end, growing opusd's
// memory until the kernel killed it): the change ends and opusd's memory
// stays small. A watchdog kills opusd (this run's own) past 512 MiB, so a
// regression fails the test instead of taking the host's memory.
func TestSecretsLinkToDevZero(t *testing.T) {
	h := needHost(t)
	attacker, ownKey := attackerProject(t, h)
	arm(t, h, attacker, "link:/dev/zero")

	pid := h.opusd.Process.Pid
	const limitKiB = 512 << 10
	hwmBefore := vmKiB(pid, "VmHWM")
	var killed atomic.Bool
	var peak atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for ctx.Err() == nil {
			rss := vmKiB(pid, "VmRSS")
			if rss > peak.Load() {
				peak.Store(rss)
			}
			if rss > limitKiB {
				syscall.Kill(pid, syscall.SIGKILL)
				killed.Store(true)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	r, msg := trigger(t, h, attacker, "debug=true")
	stop()
	<-watched
	if killed.Load() {
		// Put a regular file back and start opusd again, or its resumed
		// run would read /dev/zero again.
		os.Remove(secretsPath(h, attacker))
		os.WriteFile(secretsPath(h, attacker), []byte(`{"secret_key": "restored-by-the-test"}`), 0o640)
		h.stopOpusd(t)
		if err := h.startOpusd(); err != nil {
			t.Errorf("restarting opusd: %v", err)
		}
		t.Fatalf("opusd read without a bound: its resident memory passed %d MiB during the change, and the test killed it", limitKiB>>10)
	}
	if r.code != 0 {
		t.Fatalf("the change on the attacker failed (exit %d): %s", r.code, r.err)
	}
	t.Logf("render: %s", msg)
	hwmAfter := vmKiB(pid, "VmHWM")
	t.Logf("opusd VmHWM %d → %d KiB, VmRSS peak %d KiB", hwmBefore, hwmAfter, peak.Load())
	if hwmAfter-hwmBefore > 128<<10 {
		t.Errorf("opusd's peak memory grew by %d MiB during the change", (hwmAfter-hwmBefore)>>10)
	}
	if got := projectSecrets(t, h, attacker); got["secret_key"] != ownKey {
		t.Errorf("the attacker's key changed")
	}
}

// forgetSecretKeys stops opusd, removes what its store keeps of the
// projects' secrets, as for projects made before opusd kept them, and
// starts opusd again.
func forgetSecretKeys(t *testing.T, h *host, projects ...string) {
	t.Helper()
	h.stopOpusd(t)
	t.Cleanup(func() {
		if h.opusd == nil {
			if err := h.startOpusd(); err != nil {
				t.Errorf("restarting opusd: %v", err)
			}
		}
	})
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(h.cfg.BaseDir, "opusd.db"), store.Options{LockTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range projects {
		if _, err := st.UpdateProject(ctx, name, func(p *store.Project) error {
			if p.Secrets == nil || p.Secrets.SecretKey == "" {
				return fmt.Errorf("the store keeps no secret key for %s", name)
			}
			p.Secrets = nil
			return nil
		}); err != nil {
			st.Close()
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.startOpusd(); err != nil {
		t.Fatal(err)
	}
}

// TestSecretsTakenOverOnce: projects made before opusd kept their secret
// key have it only in their secrets file. The first change after the
// upgrade takes it over when the file is a plain regular file (signed-in
// users stay signed in); when the tenant planted a link to another
// project's secrets there, it is not read through: the project gets a new
// key, says so, and the victim's key lands nowhere.
func TestSecretsTakenOverOnce(t *testing.T) {
	h := needHost(t)
	victim, victimSecrets, victimKey := victimProject(t, h)
	attacker, attackerKey := attackerProject(t, h)
	plain, plainKey := attackerProject(t, h)
	arm(t, h, attacker, "link:"+secretsPath(h, victim))
	forgetSecretKeys(t, h, attacker, plain)

	r, msg := trigger(t, h, plain, "debug=true")
	if r.code != 0 || !strings.Contains(msg, "took over the secret key") {
		t.Fatalf("change on a project made before: exit %d, render %q: %s", r.code, msg, r.err)
	}
	if got := projectSecrets(t, h, plain); got["secret_key"] != plainKey {
		t.Errorf("the key was not taken over")
	}

	r, msg = trigger(t, h, attacker, "debug=true")
	if r.code != 0 || !strings.Contains(msg, "warning") || !strings.Contains(msg, "symbolic link") || !strings.Contains(msg, "new secret key") {
		t.Fatalf("change on the attacker: exit %d, render %q: %s", r.code, msg, r.err)
	}
	got := projectSecrets(t, h, attacker)["secret_key"]
	if got == victimKey || got == attackerKey {
		t.Errorf("the attacker's key is the victim's (%v) or its planted-over old one (%v), want a new one", got == victimKey, got == attackerKey)
	}
	noFileHolds(t, filepath.Join(h.cfg.BaseDir, "projects", attacker), victimKey)
	if now, _ := os.ReadFile(secretsPath(h, victim)); !bytes.Equal(now, victimSecrets) {
		t.Errorf("the victim's secrets changed")
	}

	// Taken over once: from now on the store is the truth.
	r, msg = trigger(t, h, plain, "debug=false")
	if r.code != 0 || strings.Contains(msg, "secret key") {
		t.Fatalf("second change: exit %d, render %q", r.code, msg)
	}
}
