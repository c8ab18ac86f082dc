package drift

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeHost lays out a host: users in a passwd file, vhosts, project
// directories and certificates.
type fakeHost struct {
	users  []string // passwd lines
	vhosts []string // file names in the sites dir
	dirs   []string // entries of BASE/projects
	certs  []string // file names in BASE/tls
	acme   []string // file names in BASE/acme/certs
	// backends have a backend directory with a live master; down ones a
	// directory whose pid file names no live master.
	backends, down []string
}

func (f fakeHost) make(t *testing.T) Host {
	t.Helper()
	root := t.TempDir()
	h := Host{BaseDir: filepath.Join(root, "base"), SitesDir: filepath.Join(root, "apache", "sites"), PasswdPath: filepath.Join(root, "passwd"),
		BackendsDir: filepath.Join(root, "apache", "backends"), ProcDir: filepath.Join(root, "proc")}
	write := func(p, data string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(h.PasswdPath, "root:x:0:0:root:/root:/bin/bash\n"+strings.Join(f.users, "\n")+"\n")
	for _, v := range f.vhosts {
		write(filepath.Join(h.SitesDir, v), "<VirtualHost *:80>\n</VirtualHost>\n")
	}
	for _, d := range f.dirs {
		if err := os.MkdirAll(filepath.Join(h.BaseDir, "projects", d, "code"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range f.certs {
		write(filepath.Join(h.BaseDir, "tls", c), "PEM")
	}
	for _, c := range f.acme {
		write(filepath.Join(h.BaseDir, "acme", "certs", c), "PEM")
	}
	for i, b := range append(f.backends, f.down...) {
		pid := strconv.Itoa(4000 + i)
		conf := filepath.Join(h.BackendsDir, b, "httpd.conf")
		write(conf, "Listen 127.1.0.1:1023\n")
		write(filepath.Join(h.BackendsDir, b, "run", "httpd.pid"), pid+"\n")
		if i < len(f.backends) {
			write(filepath.Join(h.ProcDir, pid, "cmdline"), "/usr/sbin/apache2\x00-d\x00"+filepath.Dir(conf)+"\x00-f\x00"+conf+"\x00")
		}
	}
	return h
}

func user(project string) string {
	return "opus-" + project + ":x:990:990:Opus project " + project + ":/srv/opus/projects/" + project + ":/usr/sbin/nologin"
}

// whole is everything a deployed project has on the host.
func whole(p string) fakeHost {
	return fakeHost{users: []string{user(p)}, vhosts: []string{p + ".conf"}, dirs: []string{p}, certs: []string{p + ".crt", p + ".key"}, backends: []string{p}}
}

func merge(hs ...fakeHost) fakeHost {
	var m fakeHost
	for _, h := range hs {
		m.users = append(m.users, h.users...)
		m.vhosts = append(m.vhosts, h.vhosts...)
		m.dirs = append(m.dirs, h.dirs...)
		m.certs = append(m.certs, h.certs...)
		m.backends = append(m.backends, h.backends...)
		m.down = append(m.down, h.down...)
	}
	return m
}

type found struct{ kind, project string }

func TestCheck(t *testing.T) {
	deployed := func(names ...string) []Project {
		var ps []Project
		for _, n := range names {
			ps = append(ps, Project{Name: n, Deployed: true})
		}
		return ps
	}
	tests := []struct {
		name          string
		host          fakeHost
		before, after []Project
		want          []found
	}{
		{"clean empty host", fakeHost{}, nil, nil, nil},
		{"clean deployed projects", merge(whole("blog"), whole("shop")), deployed("blog", "shop"), deployed("blog", "shop"), nil},
		{"project in flight lacks parts", fakeHost{users: []string{user("blog")}}, []Project{{Name: "blog"}}, []Project{{Name: "blog"}}, nil},
		{"orphans of every kind", whole("gone"), nil, nil,
			[]found{{KindBackend, "gone"}, {KindCertificate, "gone"}, {KindDirectory, "gone"}, {KindUser, "gone"}, {KindVhost, "gone"}}},
		{"deployed project missing everything but its record", fakeHost{}, deployed("blog"), deployed("blog"),
			[]found{{KindBackend, "blog"}, {KindDirectory, "blog"}, {KindUser, "blog"}, {KindVhost, "blog"}}},
		{"deployed project whose backend is down", merge(fakeHost{users: []string{user("blog")}, vhosts: []string{"blog.conf"}, dirs: []string{"blog"}, down: []string{"blog"}}, whole("shop")),
			deployed("blog", "shop"), deployed("blog", "shop"), []found{{KindBackend, "blog"}}},
		{"a backend naming no project", fakeHost{down: []string{"Bad-Name"}}, nil, nil, []found{{KindBackend, ""}}},
		{"a user without the marker is not Opus's", fakeHost{users: []string{"opus-x:x:991:991:someone else:/:/bin/sh", "opus-y:x:992:992:Opus project z:/:/bin/sh"}}, nil, nil, nil},
		{"files naming no project", fakeHost{vhosts: []string{"000-default.conf", "notes.txt", ".blog.conf.tmp123"}, dirs: []string{"Bad-Name"}, certs: []string{"x-y.crt"}}, nil, nil,
			[]found{{KindCertificate, ""}, {KindDirectory, ""}, {KindVhost, ""}, {KindVhost, ""}}},
		{"created during the check is no orphan", whole("new"), nil, []Project{{Name: "new"}}, nil},
		{"a certificate from the ACME CA of no project", fakeHost{acme: []string{"gone.crt", "x_y.crt"}}, nil, nil,
			[]found{{KindCertificate, ""}, {KindCertificate, "gone"}}},
		{"a failing renewal, as the store says it last", merge(whole("blog"), whole("shop")),
			[]Project{{Name: "blog", Deployed: true}, {Name: "shop", Deployed: true, CertificateError: "old news"}},
			[]Project{{Name: "blog", Deployed: true, CertificateError: "the CA is down", CertificateErrorSince: time.Now(), CertificateNotAfter: time.Now().Add(time.Hour)}, {Name: "shop", Deployed: true}},
			[]found{{KindCertificate, "blog"}}},
		{"destroyed during the check is not missing", fakeHost{}, deployed("old"), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.host.make(t)
			calls := 0
			got, checked, err := h.Check(context.Background(), func(context.Context) ([]Project, error) {
				calls++
				if calls == 1 {
					return tt.before, nil
				}
				return tt.after, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			var kinds []found
			for _, f := range got {
				kinds = append(kinds, found{f.Kind, f.Project})
				if f.Detail == "" {
					t.Errorf("finding %+v has no detail", f)
				}
			}
			if !reflect.DeepEqual(kinds, tt.want) {
				t.Errorf("findings %+v, want %+v", got, tt.want)
			}
			if calls != 2 {
				t.Errorf("store read %d times, want 2", calls)
			}
			names := map[string]bool{}
			for _, p := range append(tt.before, tt.after...) {
				names[p.Name] = true
			}
			if checked != len(names) {
				t.Errorf("checked %d, want %d", checked, len(names))
			}
		})
	}
}

func TestCheckStoreError(t *testing.T) {
	h := fakeHost{}.make(t)
	boom := errors.New("boom")
	_, _, err := h.Check(context.Background(), func(context.Context) ([]Project, error) { return nil, boom })
	if !errors.Is(err, boom) {
		t.Errorf("err = %v, want %v wrapped", err, boom)
	}
}

func TestCheckUnreadablePasswd(t *testing.T) {
	h := fakeHost{}.make(t)
	h.PasswdPath = filepath.Join(t.TempDir(), "missing")
	if _, _, err := h.Check(context.Background(), func(context.Context) ([]Project, error) { return nil, nil }); err == nil {
		t.Error("a missing passwd file was not an error")
	}
}
