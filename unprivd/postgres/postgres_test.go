package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/names"
)

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		dsn      string
		ok       bool
		host     string
		port     int
		noSecret string // must not appear in any error or String
		password bool   // PasswordInConfig
	}{
		{dsn: "host=/var/run/postgresql user=opus dbname=postgres", ok: true, host: "localhost", port: 5432},
		{dsn: "host=/var/run/postgresql port=5433 user=opus dbname=postgres", ok: true, host: "localhost", port: 5433},
		{dsn: "host=db.example.com port=6432 user=opus password=hunter2 dbname=postgres", ok: true, host: "db.example.com", port: 6432, noSecret: "hunter2", password: true},
		{dsn: "postgresql://opus:hunter2@127.0.0.1:5432/postgres", ok: true, host: "127.0.0.1", port: 5432, noSecret: "hunter2", password: true},
		{dsn: "postgresql://opus@127.0.0.1:5432/postgres?password=hunter2&sslmode=disable", ok: true, host: "127.0.0.1", port: 5432, noSecret: "hunter2", password: true},
		{dsn: "host=127.0.0.1 user=opus dbname=password application_name=password sslmode=disable connect_timeout=5 options='-c x=1'", ok: true, host: "127.0.0.1", port: 5432},
		{dsn: "postgresql://opus@127.0.0.1/postgres?sslmode=disable&application_name=opus", ok: true, host: "127.0.0.1", port: 5432},
		{dsn: ""},
		{dsn: "   "},
		{dsn: "postgresql://opus:hunter2@127.0.0.1:notaport/postgres", noSecret: "hunter2"},
		{dsn: "host=x password=hunter2 sslmode=bogus", noSecret: "hunter2"},
	} {
		a, err := New(tc.dsn)
		if !tc.ok {
			if err == nil {
				t.Errorf("New(%q) accepted", tc.dsn)
			} else if tc.noSecret != "" && strings.Contains(err.Error(), tc.noSecret) {
				t.Errorf("New(%q) error shows the password: %v", tc.dsn, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("New(%q): %v", tc.dsn, err)
			continue
		}
		if h, p := a.ProjectHost(); h != tc.host || p != tc.port {
			t.Errorf("New(%q).ProjectHost() = %s:%d, want %s:%d", tc.dsn, h, p, tc.host, tc.port)
		}
		if a.PasswordInConfig() != tc.password {
			t.Errorf("New(%q).PasswordInConfig() = %v, want %v", tc.dsn, a.PasswordInConfig(), tc.password)
		}
		if tc.noSecret != "" && strings.Contains(a.String(), tc.noSecret) {
			t.Errorf("String() shows the password: %s", a)
		}
	}
}

// TestRefusedBeforeConnecting: names and passwords that could carry SQL
// are refused before any connection; the admin points at a closed port so
// a call that got past the checks would fail with a connection error.
func TestRefusedBeforeConnecting(t *testing.T) {
	a, err := New("host=127.0.0.1 port=1 user=opus dbname=postgres connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	a.Timeout = 2 * time.Second
	const pw = "0123456789abcdef0123"
	ctx := context.Background()
	for _, tc := range []struct {
		name                     string
		project, role, db, passw string
		want                     string
	}{
		{"quoted role", "blog", `opus_blog"; DROP ROLE x; --`, "opus_blog", pw, "role name"},
		{"upper role", "blog", "Opus_blog", "opus_blog", pw, "role name"},
		{"empty db", "blog", "opus_blog", "", pw, "database name"},
		{"long db", "blog", "opus_blog", strings.Repeat("a", 64), pw, "database name"},
		{"quote in password", "blog", "opus_blog", "opus_blog", "0123456789abcdef'; DROP", "password"},
		{"short password", "blog", "opus_blog", "opus_blog", "abc", "password"},
		{"quote in project", "b'log", "opus_blog", "opus_blog", pw, "project name"},
		{"role of another project", "blog", "opus_blogs", "opus_blog", pw, "not project blog's names"},
		{"database of another project", "blog", "opus_blog", "opus_blo", pw, "not project blog's names"},
		{"valid gets to connect", "blog", "opus_blog", "opus_blog", pw, "connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Ensure(ctx, tc.project, tc.role, tc.db, tc.passw)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Ensure: %v, want %q", err, tc.want)
			}
			if tc.want != "connect" && strings.Contains(err.Error(), "connect") {
				t.Fatalf("Ensure connected before refusing: %v", err)
			}
			if tc.want == "role name" || tc.want == "database name" || tc.want == "connect" {
				if _, err := a.Drop(ctx, tc.role, tc.db); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Drop: %v, want %q", err, tc.want)
				}
			}
		})
	}
}

// FuzzNames: every valid project name makes role and database names that
// Ensure and Drop accept (plain identifiers within PostgreSQL's 63 bytes).
func FuzzNames(f *testing.F) {
	for _, s := range []string{"blog", "a", "e" + strings.Repeat("z", names.MaxProject-1), "blog2", "Blog", "a-b", "1a", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, project string) {
		if names.ValidateProject(project) != nil {
			return
		}
		role, db := Names(project)
		if err := checkNames(role, db); err != nil {
			t.Fatalf("Names(%q) = %q, %q: %v", project, role, db, err)
		}
		if !identRE.MatchString(project) {
			t.Fatalf("project %q is valid but Ensure would refuse it in the marker", project)
		}
	})
}

// TestProjectOf: Drop finds a role's project only for names Names makes, so
// the exact marker it compares is the one Ensure wrote.
func TestProjectOf(t *testing.T) {
	for _, tc := range []struct{ role, want string }{
		{"opus_blog", "blog"},
		{"opus_a1_b", "a1_b"},
		{"opus_", ""},
		{"blog", ""},
		{"opus_Blog", ""},
		{"xopus_blog", ""},
	} {
		if got := projectOf(tc.role); got != tc.want {
			t.Errorf("projectOf(%q) = %q, want %q", tc.role, got, tc.want)
		}
	}
}
