package apache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

func tempSites(t *testing.T) (*Sites, *fakeControl, config.Config) {
	t.Helper()
	cfg := testConfig()
	dir := t.TempDir()
	cfg.ApacheDir = filepath.Join(dir, "apache")
	cfg.BaseDir = filepath.Join(dir, "base")
	fake := &fakeControl{}
	return NewSites(cfg, fake, Options{ReloadWindow: 10 * time.Millisecond}), fake, cfg
}

func installReq(t *testing.T, project string, aliases ...string) *privdv1.InstallSiteRequest {
	t.Helper()
	cert, key, err := selfSigned(project+".opus.example.com", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &privdv1.InstallSiteRequest{Project: project, Aliases: aliases, CertificatePem: cert, KeyPem: key}
}

// snapshot returns every file under dir with its mode and content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		fi, _ := d.Info()
		m[p] = fmt.Sprintf("%v %x", fi.Mode(), b)
		return nil
	})
	return m
}

func sameSnapshot(t *testing.T, before, after map[string]string) {
	t.Helper()
	if len(before) != len(after) {
		t.Errorf("files changed: %d before, %d after", len(before), len(after))
	}
	for p, v := range before {
		if after[p] != v {
			t.Errorf("%s changed", p)
		}
	}
}

func TestInstallWritesAndIsIdempotent(t *testing.T) {
	s, fake, _ := tempSites(t)
	ctx := context.Background()
	req := installReq(t, "blog", "www.blog.org")
	r, err := s.Install(ctx, req, testBackend)
	if err != nil || !r.GetChanged() {
		t.Fatalf("Install = %v, %v; want changed", r, err)
	}
	p := s.Paths()
	for path, mode := range map[string]os.FileMode{p.Vhost("blog"): 0o644, p.Cert("blog"): 0o644, p.Key("blog"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	if fi, _ := os.Stat(p.TLS()); fi.Mode().Perm() != 0o700 {
		t.Errorf("tls dir mode %v, want 0700", fi.Mode().Perm())
	}
	vhost, _ := os.ReadFile(p.Vhost("blog"))
	if !bytes.Contains(vhost, []byte("ServerAlias www.blog.org")) {
		t.Errorf("vhost lacks the alias:\n%s", vhost)
	}
	before := snapshot(t, p.Dir)
	r, err = s.Install(ctx, req, testBackend)
	if err != nil || r.GetChanged() {
		t.Fatalf("second Install = %v, %v; want unchanged", r, err)
	}
	sameSnapshot(t, before, snapshot(t, p.Dir))
	if tests, _ := fake.counts(); tests != 1 {
		t.Errorf("%d configtests, want 1 (none for an unchanged site)", tests)
	}
	// A changed alias is a change.
	req.Aliases = []string{"blog.org"}
	if r, err = s.Install(ctx, req, testBackend); err != nil || !r.GetChanged() {
		t.Fatalf("Install with new alias = %v, %v; want changed", r, err)
	}
}

func TestInstallRollsBack(t *testing.T) {
	tests := []struct {
		name     string
		previous bool // a working site was installed before
	}{{"new site removed", false}, {"previous site restored", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fake, _ := tempSites(t)
			ctx := context.Background()
			if tt.previous {
				if _, err := s.Install(ctx, installReq(t, "blog"), testBackend); err != nil {
					t.Fatal(err)
				}
			} else if err := s.Paths().ensureDirs(); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, s.Paths().Dir)
			fake.testErr = errors.New("AH00526: Syntax error on line 3: Invalid command 'Bogus'")
			_, err := s.Install(ctx, installReq(t, "blog", "new.example.com"), testBackend)
			if err == nil || !strings.Contains(err.Error(), "Invalid command 'Bogus'") || !strings.Contains(err.Error(), "rolled back") {
				t.Fatalf("Install = %v, want the configtest error", err)
			}
			sameSnapshot(t, before, snapshot(t, s.Paths().Dir))
		})
	}
}

func TestInstallRefusesBeforeTouchingAnything(t *testing.T) {
	_, otherKey, err := selfSigned("x.example.com", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(*privdv1.InstallSiteRequest)
		want   string
	}{
		{"mismatched key", func(r *privdv1.InstallSiteRequest) { r.KeyPem = otherKey }, "does not match"},
		{"bad alias", func(r *privdv1.InstallSiteRequest) { r.Aliases = []string{"evil\nInclude /x"} }, "alias"},
		{"bad project", func(r *privdv1.InstallSiteRequest) { r.Project = "../etc" }, "project name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fake, _ := tempSites(t)
			ctx := context.Background()
			if _, err := s.Install(ctx, installReq(t, "blog"), testBackend); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, s.Paths().Dir)
			testsBefore, _ := fake.counts()
			req := installReq(t, "blog", "changed.example.com")
			tt.mutate(req)
			if _, err := s.Install(ctx, req, testBackend); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Install = %v, want error containing %q", err, tt.want)
			}
			sameSnapshot(t, before, snapshot(t, s.Paths().Dir))
			if tests, _ := fake.counts(); tests != testsBefore {
				t.Error("Apache was configtested for a refused request")
			}
		})
	}
}

func TestRemove(t *testing.T) {
	s, fake, _ := tempSites(t)
	ctx := context.Background()
	if _, err := s.Install(ctx, installReq(t, "blog"), testBackend); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Install(ctx, installReq(t, "shop"), testBackend); err != nil {
		t.Fatal(err)
	}
	r, err := s.Remove(ctx, &privdv1.RemoveSiteRequest{Project: "blog"})
	if err != nil || !r.GetRemoved() {
		t.Fatalf("Remove = %v, %v", r, err)
	}
	p := s.Paths()
	for _, f := range []string{p.Vhost("blog"), p.Cert("blog"), p.Key("blog")} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists", f)
		}
	}
	if _, err := os.Stat(p.Vhost("shop")); err != nil {
		t.Errorf("other project's vhost gone: %v", err)
	}
	tests, _ := fake.counts()
	if r, err = s.Remove(ctx, &privdv1.RemoveSiteRequest{Project: "blog"}); err != nil || r.GetRemoved() {
		t.Fatalf("second Remove = %v, %v; want removed=false", r, err)
	}
	if after, _ := fake.counts(); after != tests {
		t.Error("removing an absent site ran configtest")
	}
	if _, err := s.Remove(ctx, &privdv1.RemoveSiteRequest{Project: "a/b"}); err == nil {
		t.Error("Remove accepted a bad name")
	}
}

func TestTailLog(t *testing.T) {
	s, _, _ := tempSites(t)
	ctx := context.Background()
	if err := s.Paths().ensureDirs(); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for i := 1; i <= 1500; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if err := os.WriteFile(s.Paths().ErrorLog("blog"), []byte(b.String()), 0o640); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		project    string
		lines      int32
		wantN      int
		wantLast   string
		wantErr    bool
		wantFirstN string
	}{
		{"blog", 0, 100, "line 1500", false, "line 1401"},
		{"blog", 3, 3, "line 1500", false, "line 1498"},
		{"blog", 5000, 1000, "line 1500", false, "line 501"},
		{"blog", -1, 0, "", true, ""},
		{"nolog", 10, 0, "", false, ""},
		{"Bad", 10, 0, "", true, ""},
	}
	for _, tt := range tests {
		r, err := s.TailLog(ctx, &privdv1.TailLogRequest{Project: tt.project, Lines: tt.lines})
		if (err != nil) != tt.wantErr {
			t.Errorf("TailLog(%s, %d) err = %v", tt.project, tt.lines, err)
			continue
		}
		if err != nil {
			continue
		}
		l := r.GetLines()
		if len(l) != tt.wantN {
			t.Errorf("TailLog(%s, %d) = %d lines, want %d", tt.project, tt.lines, len(l), tt.wantN)
			continue
		}
		if tt.wantN > 0 && (l[len(l)-1] != tt.wantLast || l[0] != tt.wantFirstN) {
			t.Errorf("TailLog(%s, %d) = %q..%q", tt.project, tt.lines, l[0], l[len(l)-1])
		}
	}
}

// TestTailFileNotUTF8: a log line that is not UTF-8 (the project's code
// wrote raw bytes to its stderr) comes back as valid UTF-8.
func TestTailFileNotUTF8(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("ok\n\xff\xfe raw ü\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lines, err := tailFile(path, 10, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[1] != "\uFFFD raw ü" {
		t.Errorf("lines = %q, want the second as %q", lines, "\uFFFD raw ü")
	}
}

func TestTailFileBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	// 300 lines of 100 bytes; read only the last 1000 bytes.
	var b strings.Builder
	for i := range 300 {
		fmt.Fprintf(&b, "%-99d\n", i)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	lines, err := tailFile(path, 1000, 1050, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 10 || !strings.HasPrefix(lines[0], "290 ") {
		t.Errorf("got %d lines starting %q; want the 10 whole lines in the window", len(lines), lines[0])
	}
}

// TestReloadRestoresSitesApacheDoesNotSurvive: when Apache's master does
// not survive a graceful restart, the sites installed since the last
// restart it survived are put back as they were then (new ones removed),
// Apache is started again, and the answer names them; a removed site is
// not brought back, and without a failed restart nothing is touched.
func TestReloadRestoresSitesApacheDoesNotSurvive(t *testing.T) {
	down := fmt.Errorf("apache graceful: %w: the master (pid 7) exited: SSL Library Error: ee key too small", ErrNotServing)
	// What the restart writes to blog's own error log: mod_ssl's report
	// (the master is pid 4242), an older master's, and the project's own
	// code posing as mod_ssl.
	blogLog := "[t] [ssl:emerg] [pid 4242:tid 4242] AH02562: Failed to configure certificate blog.opus.example.com:443:0 (with chain), check /x/blog.crt\n" +
		"[t] [ssl:emerg] [pid 4242:tid 4242] SSL Library Error: error:0A00018F:SSL routines::ee key too small\n" +
		"[t] [ssl:emerg] [pid 17:tid 17] an older master's line\n" +
		"[t] [wsgi:error] [pid 99:tid 99] [remote 127.0.0.1:1] [ssl:emerg] posing as Apache\n"
	blogReason := "Apache could not load this project's site: AH02562: Failed to configure certificate blog.opus.example.com:443:0 (with chain), check /x/blog.crt; SSL Library Error: error:0A00018F:SSL routines::ee key too small"
	shopReason := "Apache did not survive the graceful restart after this project's site changed, and named no site in this project's error log"
	tests := []struct {
		name         string
		results      []error // of the gracefuls after the changes
		remove       string  // a site removed after the changes
		wantErr      string
		wantRolled   map[string]string
		wantRestored bool // the files are as after the last good restart
		wantGraceful int
	}{
		{name: "restored and started again", results: []error{down}, wantRolled: map[string]string{"blog": blogReason, "shop": shopReason}, wantRestored: true, wantGraceful: 2},
		{name: "a removed site stays removed", results: []error{down}, remove: "shop", wantRolled: map[string]string{"blog": blogReason}, wantRestored: true, wantGraceful: 2},
		{name: "configtest refusal touches nothing", results: []error{errors.New("apache configtest: AH00526: Syntax error")}, wantErr: "Syntax error", wantGraceful: 1},
		{name: "restored but Apache stays down", results: []error{down, errors.New("apache start: address in use")},
			wantErr:    "the previous sites of blog, shop were restored, but Apache did not start with them either: apache start: address in use",
			wantRolled: map[string]string{"blog": blogReason, "shop": shopReason}, wantRestored: true, wantGraceful: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fake, _ := tempSites(t)
			ctx := context.Background()
			if _, err := s.Install(ctx, installReq(t, "blog"), testBackend); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Reload(ctx, nil); err != nil {
				t.Fatal(err)
			}
			// An earlier line, not of this restart.
			os.WriteFile(s.Paths().ErrorLog("blog"), []byte("[t] [ssl:emerg] [pid 4242:tid 4242] from an earlier restart\n"), 0o640)
			good := snapshot(t, s.Paths().Dir)
			// Changed since the last good restart: blog twice (the first
			// state is what goes back), shop new.
			for _, req := range []*privdv1.InstallSiteRequest{installReq(t, "blog", "a.example.com"), installReq(t, "blog", "b.example.com"), installReq(t, "shop")} {
				if _, err := s.Install(ctx, req, testBackend); err != nil {
					t.Fatal(err)
				}
			}
			if tt.remove != "" {
				if _, err := s.Remove(ctx, &privdv1.RemoveSiteRequest{Project: tt.remove}); err != nil {
					t.Fatal(err)
				}
			}
			_, g0 := fake.counts()
			fake.mu.Lock()
			fake.gracefulErrs = tt.results
			fake.during = func() {
				if f, err := os.OpenFile(s.Paths().ErrorLog("blog"), os.O_APPEND|os.O_WRONLY, 0); err == nil {
					f.WriteString(blogLog)
					f.Close()
				}
				fake.during = nil
			}
			fake.mu.Unlock()
			changed := snapshot(t, s.Paths().Dir)

			r, err := s.Reload(ctx, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Reload = %v, %v; want an error containing %q", r, err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatalf("Reload: %v", err)
			} else {
				if !maps.Equal(r.GetRolledBack(), tt.wantRolled) || !r.GetStarted() {
					t.Errorf("Reload = %v, want started, rolled back %v", r, tt.wantRolled)
				}
			}
			if _, g := fake.counts(); g-g0 != tt.wantGraceful {
				t.Errorf("%d gracefuls, want %d", g-g0, tt.wantGraceful)
			}
			after := snapshot(t, s.Paths().Dir)
			delete(after, s.Paths().ErrorLog("blog")) // Apache wrote to it
			delete(good, s.Paths().ErrorLog("blog"))
			delete(changed, s.Paths().ErrorLog("blog"))
			if tt.wantRestored {
				// blog as it was; shop, new since, gone (and when it was
				// removed, not brought back).
				sameSnapshot(t, good, after)
			} else {
				sameSnapshot(t, changed, after)
			}
			// Until a rolled-back site is installed again, every answer
			// names it (its own project's reload may come after the one
			// that rolled it back); the restart itself starts from what is
			// installed and has nothing to put back.
			_, g1 := fake.counts()
			r, err = s.Reload(ctx, nil)
			if err != nil || !maps.Equal(r.GetRolledBack(), tt.wantRolled) {
				t.Errorf("next Reload = %v, %v; want rolled back %v still named", r, err, tt.wantRolled)
			}
			if _, g := fake.counts(); g-g1 != 1 {
				t.Errorf("next Reload made %d gracefuls, want 1", g-g1)
			}
			if _, err := s.Install(ctx, installReq(t, "blog", "c.example.com"), testBackend); err != nil {
				t.Fatal(err)
			}
			if r, err := s.Reload(ctx, nil); err != nil || r.GetRolledBack()["blog"] != "" {
				t.Errorf("Reload after blog was installed again = %v, %v; want blog no longer named", r, err)
			}
		})
	}
}

// TestReloadWithNothingToRestore: a restart Apache does not survive with
// no site changed since the last good one is an error naming Apache's
// reason, and nothing is written.
func TestReloadWithNothingToRestore(t *testing.T) {
	s, fake, _ := tempSites(t)
	ctx := context.Background()
	if _, err := s.Install(ctx, installReq(t, "blog"), testBackend); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reload(ctx, nil); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s.Paths().Dir)
	fake.mu.Lock()
	fake.gracefulErrs = []error{fmt.Errorf("apache graceful: %w: the master (pid 7) exited: killed", ErrNotServing)}
	fake.mu.Unlock()
	if _, err := s.Reload(ctx, nil); err == nil || !errors.Is(err, ErrNotServing) || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Reload = %v, want Apache's error", err)
	}
	sameSnapshot(t, before, snapshot(t, s.Paths().Dir))
}

// TestServerNotices: the backend Apache's notices about itself are not
// the project's log lines; the project's own lines stay, also where they
// quote such a notice or pose as one without Apache's form.
func TestServerNotices(t *testing.T) {
	for _, tc := range []struct {
		line   string
		notice bool
	}{
		{"[Sat Dec 05 05:22:01.123456 2026] [mpm_event:notice] [pid 4242:tid 4242] AH00489: Apache/2.4.71 (Debian) configured -- resuming normal operations", true},
		{"[Sat Dec 05 05:22:01.123456 2026] [core:notice] [pid 4242:tid 4242] AH00094: Command line: 'apache2-backend-blog -d /x'", true},
		{"[Sat Dec 05 05:22:01 2026] [mpm_prefork:notice] [pid 7] AH00492: caught SIGWINCH, shutting down gracefully", true},
		{"[Sat Dec 05 05:22:01.1 2026] [wsgi:error] [pid 99:tid 99] [remote 127.0.0.1:1] Traceback (most recent call last):", false},
		{"[Sat Dec 05 05:22:01.1 2026] [wsgi:error] [pid 99:tid 99] [remote 127.0.0.1:1] [core:notice] [pid 1] AH00489: posing", false},
		{"[core:notice] [pid 1] AH00489: raw on fd 2 without a time", false},
		{"[Sat Dec 05 05:22:01.1 2026] [core:error] [pid 4242:tid 4242] AH00045: child process 5 still did not exit", false},
		{"RuntimeError: boom", false},
	} {
		if got := serverNotice.MatchString(tc.line); got != tc.notice {
			t.Errorf("%.60q: notice = %v, want %v", tc.line, got, tc.notice)
		}
	}
}

// TestTailLogLeavesOutServerNotices: a project whose log holds only its
// backend's start-up notices has no lines; its own lines come back, the
// last n of them.
func TestTailLogLeavesOutServerNotices(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	log := "[t1] [mpm_event:notice] [pid 1:tid 1] AH00489: resuming normal operations\n" +
		"[t1] [core:notice] [pid 1:tid 1] AH00094: Command line: 'apache2-backend-blog'\n"
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	keep := func(l string) bool { return !serverNotice.MatchString(l) }
	if lines, err := tailFile(path, 10, 1000, keep); err != nil || len(lines) != 0 {
		t.Fatalf("only notices: %q, %v; want no lines", lines, err)
	}
	log += "[t2] [wsgi:error] [pid 9:tid 9] first\n[t3] [wsgi:error] [pid 9:tid 9] second\n" +
		"[t4] [mpm_event:notice] [pid 1:tid 1] AH00493: SIGUSR1 received.  Doing graceful restart\n"
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	lines, err := tailFile(path, 1, 1000, keep)
	if err != nil || len(lines) != 1 || !strings.HasSuffix(lines[0], "second") {
		t.Errorf("last 1 line: %q, %v; want the project's last line", lines, err)
	}
}
