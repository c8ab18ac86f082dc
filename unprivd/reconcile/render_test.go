package reconcile

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/logtest"
	"github.com/opus-hosting/opus/unprivd/django"
	"github.com/opus-hosting/opus/unprivd/store"
)

// The render step's secrets: the truth is the store; the project's
// secrets directory, which its user (the tenant) can write, is written
// and never read, except once, safely, to take over the key of a project
// made before the store kept it.

// renderRun is one run of the render step over a fresh copy of the
// project's record, as the reconciler makes it.
type renderRun struct {
	msg     string
	changed bool // the step asks for the project's daemon to restart
	err     error
	log     string
}

// render runs the directories and render steps of project name within a
// time bound. When the bound passes (the step hangs on a FIFO), it opens
// every FIFO in the secrets directory for writing, which lets a reader
// blocked in open go on, and fails the test.
func (e *env) render(t *testing.T, name string) renderRun {
	t.Helper()
	var logs logtest.Buffer
	opt := e.options(1)
	task := &Task{Project: e.project(t, name), Layout: layout.For(e.base, name), Privd: e.privd, Clock: e.clock,
		Log: slog.New(slog.NewTextHandler(&logs, nil)), st: e.st, opt: &opt}
	if err := os.MkdirAll(e.base, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := stepDirectories(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	done := make(chan renderRun, 1)
	go func() {
		msg, err := stepRender(context.Background(), task)
		done <- renderRun{msg: msg, changed: task.codeChanged, err: err}
	}()
	select {
	case r := <-done:
		r.log = logs.String()
		return r
	case <-time.After(10 * time.Second):
		unblockFIFOs(task.Layout.Secrets)
		t.Fatalf("the render step did not finish within 10s (blocked on a FIFO in the secrets directory?)")
		return renderRun{}
	}
}

func unblockFIFOs(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, ent := range ents {
		if ent.Type()&fs.ModeNamedPipe != 0 {
			if fd, err := syscall.Open(filepath.Join(dir, ent.Name()), syscall.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				syscall.Write(fd, []byte("not json"))
				syscall.Close(fd)
			}
		}
	}
}

// guardMemory stops the test binary when its resident memory passes max:
// a step reading /dev/zero without a bound would otherwise take the host's
// memory before any timeout fires. It returns the peak it saw.
func guardMemory(t *testing.T, max int64) (peak func() int64) {
	t.Helper()
	var mu sync.Mutex
	var top int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			rss := residentBytes()
			mu.Lock()
			top = maxInt64(top, rss)
			mu.Unlock()
			if rss > max {
				panic("the render step read without a bound: resident memory " + strconv.FormatInt(rss>>20, 10) + " MiB")
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return func() int64 { mu.Lock(); defer mu.Unlock(); return top }
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// residentBytes is VmRSS of this process.
func residentBytes() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func secretsOf(t *testing.T, path string) map[string]string {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() {
		t.Fatalf("%s is %v, not a regular file", path, fi.Mode())
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(readFile(t, path)), &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

func sha(t *testing.T, path string) string {
	sum := sha256.Sum256([]byte(readFile(t, path)))
	return hex.EncodeToString(sum[:])
}

// victim makes another project's tree under the same base with its own
// secrets file (as a deployed project has), and returns the file's path
// and its secret key.
func (e *env) victim(t *testing.T) (string, string) {
	t.Helper()
	l := layout.For(e.base, "victim")
	if err := os.MkdirAll(l.Secrets, 0o770); err != nil {
		t.Fatal(err)
	}
	key, _ := django.NewSecretKey()
	data, _ := django.SecretsJSON(django.Secrets{SecretKey: key})
	p := filepath.Join(l.Secrets, django.SecretsFile)
	if err := os.WriteFile(p, data, 0o640); err != nil {
		t.Fatal(err)
	}
	return p, key
}

// noneHolds fails when any file under root holds s.
func noneHolds(t *testing.T, root, s string) {
	t.Helper()
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		// As written in JSON too: encoding/json escapes a key's '&'.
		quoted, _ := json.Marshal(s)
		if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(s)) || bytes.Contains(b, quoted[1:len(quoted)-1]) {
			t.Errorf("%s holds another project's secret key", p)
		}
		return nil
	})
}

// TestRenderSecretsFromStore: the first render makes the key and keeps it
// in the project's record; later renders write the file again from the
// record, restarting the daemon only when its content changes (a new
// database password) and never rotating the key; no message shows it.
func TestRenderSecretsFromStore(t *testing.T) {
	e := newEnv(t)
	e.createSpec(t, "blog", store.Spec{})
	file := filepath.Join(layout.For(e.base, "blog").Secrets, django.SecretsFile)

	r := e.render(t, "blog")
	if r.err != nil || !strings.Contains(r.msg, "new secret key") || !strings.Contains(r.msg, "secrets written, changed") || !r.changed {
		t.Fatalf("first render: %q, changed %v, %v", r.msg, r.changed, r.err)
	}
	rec := e.project(t, "blog").Secrets
	if rec == nil || len(rec.SecretKey) != 50 {
		t.Fatalf("the store keeps no secret key: %+v", rec)
	}
	if got := secretsOf(t, file); got["secret_key"] != rec.SecretKey || got["db_password"] != "" {
		t.Fatalf("secrets file %v, store key %q", got, rec.SecretKey)
	}
	if rec.Written != sha(t, file) {
		t.Errorf("the store's digest of the written file is %q, the file's %q", rec.Written, sha(t, file))
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != secretsMode {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	key := rec.SecretKey

	steps := []struct {
		name        string
		change      func(*store.Spec)
		wantChanged bool
		wantMsg     string
		wantPW      string
	}{
		{"nothing changed", func(*store.Spec) {}, false, "project files unchanged; secrets written, unchanged", ""},
		{"database password set", func(s *store.Spec) {
			s.Database = &store.Database{Engine: django.EnginePostgreSQL, Name: "blog", User: "blog", Password: "pw-1"}
		}, true, "secrets written, changed", "pw-1"},
		{"database password unchanged", func(*store.Spec) {}, false, "project files unchanged; secrets written, unchanged", "pw-1"},
		{"database password changed", func(s *store.Spec) { s.Database.Password = "pw-2" }, true, "secrets written, changed", "pw-2"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			e.change(t, "blog", store.OpUpdateSettings, s.change)
			r := e.render(t, "blog")
			if r.err != nil || r.changed != s.wantChanged || !strings.HasSuffix(r.msg, s.wantMsg) {
				t.Fatalf("render: %q, changed %v, %v; want %q, changed %v", r.msg, r.changed, r.err, s.wantMsg, s.wantChanged)
			}
			got := secretsOf(t, file)
			if got["secret_key"] != key || got["db_password"] != s.wantPW {
				t.Errorf("secrets file %v, want key %q and password %q", got, key, s.wantPW)
			}
			if rec := e.project(t, "blog").Secrets; rec.SecretKey != key || rec.Written != sha(t, file) {
				t.Errorf("store %+v", rec)
			}
			if strings.Contains(r.msg, key) || strings.Contains(r.log, key) {
				t.Errorf("the step's message or log shows the secret key: %q", r.msg)
			}
		})
	}
}

// TestRenderSecretsNeverReadBack: whatever the tenant's code put in place
// of its secrets file between two runs, the next render finishes quickly,
// writes the store's key, and neither reads nor changes what a planted
// link points to: another project's key never lands in this project's
// tree (the old step read the file and, its database password differing,
// wrote the other project's key back), a FIFO does not hang the run, and
// a link to /dev/zero is not read.
func TestRenderSecretsNeverReadBack(t *testing.T) {
	cases := []struct {
		name  string
		plant func(t *testing.T, file, victim string)
	}{
		{"link to another project's secrets", func(t *testing.T, file, victim string) { mustSymlink(t, victim, file) }},
		{"relative link to another project's secrets", func(t *testing.T, file, victim string) {
			mustSymlink(t, "../../victim/secrets/"+django.SecretsFile, file)
		}},
		{"hard link to another project's secrets", func(t *testing.T, file, victim string) {
			if err := os.Link(victim, file); err != nil {
				t.Fatal(err)
			}
		}},
		{"FIFO", func(t *testing.T, file, _ string) {
			if err := syscall.Mkfifo(file, 0o660); err != nil {
				t.Fatal(err)
			}
		}},
		{"link to /dev/zero", func(t *testing.T, file, _ string) { mustSymlink(t, "/dev/zero", file) }},
		{"a copy with another key", func(t *testing.T, file, victim string) {
			if err := os.WriteFile(file, []byte(readFile(t, victim)), 0o640); err != nil {
				t.Fatal(err)
			}
		}},
		{"huge file", func(t *testing.T, file, _ string) {
			if err := os.WriteFile(file, bytes.Repeat([]byte(" "), 8<<20), 0o640); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			peak := guardMemory(t, 1<<30)
			e := newEnv(t)
			// The attacker's database password differs from the victim's
			// (none), which is what made the old step write.
			e.createSpec(t, "attacker", store.Spec{Database: &store.Database{Engine: django.EnginePostgreSQL, Name: "a", User: "a", Password: "attacker-pw"}})
			l := layout.For(e.base, "attacker")
			file := filepath.Join(l.Secrets, django.SecretsFile)
			if r := e.render(t, "attacker"); r.err != nil {
				t.Fatal(r.err)
			}
			own := secretsOf(t, file)["secret_key"]
			victim, victimKey := e.victim(t)
			before := readFile(t, victim)

			if err := os.Remove(file); err != nil {
				t.Fatal(err)
			}
			c.plant(t, file, victim)
			e.change(t, "attacker", store.OpUpdateSettings, func(s *store.Spec) { s.Settings.Debug = true })
			start := time.Now()
			r := e.render(t, "attacker")
			if r.err != nil {
				t.Fatalf("render: %v", r.err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("the render step took %v", took)
			}
			if got := secretsOf(t, file); got["secret_key"] != own || got["db_password"] != "attacker-pw" {
				t.Errorf("secrets file %v, want the project's own key %q", got, own)
			}
			if fi, _ := os.Lstat(file); fi.Sys().(*syscall.Stat_t).Nlink != 1 {
				t.Errorf("the secrets file still shares its inode")
			}
			if readFile(t, victim) != before {
				t.Errorf("the other project's secrets changed")
			}
			if rec := e.project(t, "attacker").Secrets; rec == nil || rec.SecretKey != own {
				t.Errorf("the store's secrets are %+v, want the key %q", rec, own)
			}
			noneHolds(t, l.Root, victimKey)
			if p := peak(); p > 512<<20 {
				t.Errorf("resident memory peaked at %d MiB", p>>20)
			}
		})
	}
}

// TestRenderSecretsTakeOver: a project made before the store kept its key
// has it only in its secrets file. The first render takes it over when the
// file is a plain, small regular file holding one; anything else a tenant
// may have planted there gives a new key (quickly, without reading through
// a link or blocking), with a warning in the step's message and the log.
// Either way the key is then the store's: the file is never read again.
func TestRenderSecretsTakeOver(t *testing.T) {
	legacy, _ := django.NewSecretKey()
	legacyFile, _ := django.SecretsJSON(django.Secrets{SecretKey: legacy, DBPassword: "old"})
	cases := []struct {
		name     string
		plant    func(t *testing.T, file, victim string)
		wantKey  string // "" means a new key
		wantNote string
	}{
		{"the file of an older opusd", func(t *testing.T, file, _ string) { mustWrite(t, file, legacyFile) }, legacy, "took over the secret key"},
		{"no file", func(*testing.T, string, string) {}, "", "new secret key"},
		{"link to another project's secrets", func(t *testing.T, file, victim string) { mustSymlink(t, victim, file) }, "", "symbolic link"},
		{"hard link to another project's secrets", func(t *testing.T, file, victim string) {
			if err := os.Link(victim, file); err != nil {
				t.Fatal(err)
			}
		}, "", "2 hard links"},
		{"FIFO", func(t *testing.T, file, _ string) {
			if err := syscall.Mkfifo(file, 0o660); err != nil {
				t.Fatal(err)
			}
		}, "", "FIFO"},
		{"link to /dev/zero", func(t *testing.T, file, _ string) { mustSymlink(t, "/dev/zero", file) }, "", "symbolic link"},
		{"huge file", func(t *testing.T, file, _ string) { mustWrite(t, file, bytes.Repeat([]byte(" "), 8<<20)) }, "", "more than 4096"},
		{"not JSON", func(t *testing.T, file, _ string) { mustWrite(t, file, []byte("SECRET_KEY = 'x'")) }, "", "invalid character"},
		{"no key", func(t *testing.T, file, _ string) { mustWrite(t, file, []byte(`{"db_password": "x"}`)) }, "", "secret key is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			peak := guardMemory(t, 1<<30)
			e := newEnv(t)
			victim, victimKey := e.victim(t)
			victimBefore := readFile(t, victim)
			e.createSpec(t, "legacy", store.Spec{})
			l := layout.For(e.base, "legacy")
			file := filepath.Join(l.Secrets, django.SecretsFile)
			if err := os.MkdirAll(l.Secrets, 0o770); err != nil {
				t.Fatal(err)
			}
			c.plant(t, file, victim)
			r := e.render(t, "legacy")
			if r.err != nil || !strings.Contains(r.msg, c.wantNote) {
				t.Fatalf("render: %q, %v; want a note with %q", r.msg, r.err, c.wantNote)
			}
			rec := e.project(t, "legacy").Secrets
			switch {
			case c.wantKey != "" && rec.SecretKey != c.wantKey:
				t.Fatalf("store key %q, want the file's %q", rec.SecretKey, c.wantKey)
			case c.wantKey == "" && (rec.SecretKey == legacy || rec.SecretKey == victimKey || len(rec.SecretKey) != 50):
				t.Fatalf("store key %q, want a new one", rec.SecretKey)
			}
			if refused := c.wantKey == "" && c.name != "no file"; refused != strings.Contains(r.msg, "warning") || refused != strings.Contains(r.log, "level=WARN") {
				t.Errorf("warning in message %q / log %q: want %v", r.msg, r.log, refused)
			}
			if got := secretsOf(t, file); got["secret_key"] != rec.SecretKey || got["db_password"] != "" {
				t.Errorf("secrets file %v, want the store's key and the spec's (empty) password", got)
			}
			if readFile(t, victim) != victimBefore {
				t.Errorf("the other project's secrets changed")
			}
			noneHolds(t, l.Root, victimKey)
			if p := peak(); p > 512<<20 {
				t.Errorf("resident memory peaked at %d MiB", p>>20)
			}

			// Taken over once: a key the tenant writes there later is
			// overwritten, never taken.
			other, _ := django.NewSecretKey()
			planted, _ := django.SecretsJSON(django.Secrets{SecretKey: other})
			mustWrite(t, file, planted)
			e.change(t, "legacy", store.OpUpdateSettings, func(s *store.Spec) { s.Settings.Debug = true })
			if r := e.render(t, "legacy"); r.err != nil || strings.Contains(r.msg, "secret key") {
				t.Fatalf("second render: %q, %v", r.msg, r.err)
			}
			if got := secretsOf(t, file); got["secret_key"] != rec.SecretKey {
				t.Errorf("second render wrote key %q, want the store's %q", got["secret_key"], rec.SecretKey)
			}
		})
	}
}

// TestRenderSecretsKeptBeforeWritten: a new key is in the store before
// the file is written, so a run that fails to write it (here: the tenant
// made the name a directory, which a rename cannot replace) loses nothing:
// the next run writes the same key.
func TestRenderSecretsKeptBeforeWritten(t *testing.T) {
	e := newEnv(t)
	e.createSpec(t, "blog", store.Spec{})
	l := layout.For(e.base, "blog")
	file := filepath.Join(l.Secrets, django.SecretsFile)
	if err := os.MkdirAll(file, 0o770); err != nil {
		t.Fatal(err)
	}
	r := e.render(t, "blog")
	if r.err == nil || !strings.Contains(r.err.Error(), "secrets") {
		t.Fatalf("render over a directory: %q, %v; want a secrets error", r.msg, r.err)
	}
	kept := e.project(t, "blog").Secrets
	if kept == nil || len(kept.SecretKey) != 50 || kept.Written != "" {
		t.Fatalf("store after the failed write: %+v; want a key and nothing written", kept)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if r = e.render(t, "blog"); r.err != nil || strings.Contains(r.msg, "secret key") || !r.changed {
		t.Fatalf("second render: %q, changed %v, %v", r.msg, r.changed, r.err)
	}
	if got := secretsOf(t, file); got["secret_key"] != kept.SecretKey {
		t.Fatalf("second render wrote %v, want the kept key %q", got, kept.SecretKey)
	}
}

// TestReconcileReplacesPlantedSecrets: through whole runs of the
// reconciler, a link planted in place of the secrets file is replaced and
// the run succeeds; the project's daemon is not restarted for secrets that
// did not change.
func TestReconcileReplacesPlantedSecrets(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, 1)
	id := e.createSpec(t, "blog", store.Spec{Apps: []store.AppSpec{{Name: "hello", Upload: uploaded(digestHello)}}})
	r.Kick("blog")
	op := e.wait(t, id)
	mustSucceed(t, op)
	if msg := stepMessage(op, "render"); !strings.Contains(msg, "new secret key") {
		t.Errorf("render: %q", msg)
	}
	l := layout.For(e.base, "blog")
	file := filepath.Join(l.Secrets, django.SecretsFile)
	key := e.project(t, "blog").Secrets.SecretKey
	victim, victimKey := e.victim(t)
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	mustSymlink(t, victim, file)

	id = e.change(t, "blog", store.OpUpdateSettings, func(s *store.Spec) { s.Settings.Env = map[string]string{"A": "b"} })
	r.Kick("blog")
	op = e.wait(t, id)
	mustSucceed(t, op)
	if msg := stepMessage(op, "render"); !strings.HasSuffix(msg, "secrets written, unchanged") {
		t.Errorf("render: %q", msg)
	}
	if got := secretsOf(t, file); got["secret_key"] != key {
		t.Errorf("secrets file %v, want key %q", got, key)
	}
	noneHolds(t, l.Root, victimKey)
}

func mustSymlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o640); err != nil {
		t.Fatal(err)
	}
}
