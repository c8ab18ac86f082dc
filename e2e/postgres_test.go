package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pgPrefix starts the names of the roles and databases the tests make, so
// a killed run's leftovers are found and dropped.
const pgPrefix = "opuse2e_"

// psql runs SQL as the postgres superuser and returns its unaligned output.
func psql(t *testing.T, db, sql string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA", "-d", db, "-c", sql)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// postgres makes sure a local PostgreSQL cluster runs (starting it, and
// stopping it at the end, when it was down) and returns its port. It skips
// the test when PostgreSQL or psycopg2 is missing.
func postgres(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("pg_lsclusters"); err != nil {
		t.Skip("needs postgresql (run `make deps` as root)")
	}
	if exec.Command("/usr/bin/python3", "-c", "import psycopg2").Run() != nil {
		t.Skip("needs python3-psycopg2 for /usr/bin/python3 (run `make deps` as root)")
	}
	out, err := exec.Command("pg_lsclusters", "-h").Output()
	if err != nil {
		t.Fatalf("pg_lsclusters: %v", err)
	}
	var f []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f = strings.Fields(l); len(f) >= 4 {
			break
		}
	}
	if len(f) < 4 {
		t.Skip("no PostgreSQL cluster on this host")
	}
	ver, name, port, state := f[0], f[1], f[2], f[3]
	if state != "online" {
		if out, err := exec.Command("pg_ctlcluster", ver, name, "start").CombinedOutput(); err != nil {
			t.Fatalf("start PostgreSQL %s/%s: %v\n%s", ver, name, err, out)
		}
		t.Cleanup(func() { exec.Command("pg_ctlcluster", ver, name, "stop").Run() })
	}
	// A killed earlier run's leftovers.
	stale, _ := psql(t, "postgres", "SELECT datname FROM pg_database WHERE datname LIKE '"+pgPrefix+"%'")
	for _, db := range strings.Fields(stale) {
		psql(t, "postgres", "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
	}
	stale, _ = psql(t, "postgres", "SELECT rolname FROM pg_roles WHERE rolname LIKE '"+pgPrefix+"%'")
	for _, r := range strings.Fields(stale) {
		psql(t, "postgres", "DROP ROLE IF EXISTS "+r)
	}
	return port
}

// TestPostgreSQLByParameters deploys a project whose data lives in a
// PostgreSQL database given by its connection parameters: the migrations
// land there, no SQLite file is made, and the password is only in the
// project's secrets.
func TestPostgreSQLByParameters(t *testing.T) {
	h := needHost(t)
	port := postgres(t)
	name := h.newProject(t)
	db := pgPrefix + name
	b := make([]byte, 16)
	rand.Read(b)
	password := hex.EncodeToString(b)
	if out, err := psql(t, "postgres", "CREATE ROLE "+db+" LOGIN PASSWORD '"+password+"'"); err != nil {
		t.Fatalf("create role: %v %s", err, out)
	}
	if out, err := psql(t, "postgres", "CREATE DATABASE "+db+" OWNER "+db); err != nil {
		t.Fatalf("create database: %v %s", err, out)
	}
	// Runs before the project's own cleanup (LIFO) would; FORCE ends the
	// project daemon's connections.
	t.Cleanup(func() {
		if p := filepath.Join(h.cfg.BaseDir, "projects", name); exists(p) {
			h.ctl(t, 0, "", "destroy", name, "--yes")
		}
		psql(t, "postgres", "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
		psql(t, "postgres", "DROP ROLE IF EXISTS "+db)
	})
	pwFile := filepath.Join(t.TempDir(), "dbpw")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	out := h.mustCtl(t, 0, "create", name, "--app", localApp(t, "notes"),
		"--database", "postgresql://"+db+"@127.0.0.1:"+port+"/"+db, "--database-password-file", pwFile)
	if strings.Contains(out, password) {
		t.Errorf("create printed the database password")
	}
	mustGet(t, webClient(), h.url(name, "http", "/notes/"), "notes: 0")
	if got, err := psql(t, db, "SELECT to_regclass('public.notes_note') IS NOT NULL"); err != nil || got != "t" {
		t.Errorf("notes_note in PostgreSQL: %q %v", got, err)
	}
	proj := filepath.Join(h.cfg.BaseDir, "projects", name)
	if exists(filepath.Join(proj, "data", "db.sqlite3")) {
		t.Errorf("a SQLite database was made for a PostgreSQL project")
	}
	show := h.mustCtl(t, 0, "show", name, "-o", "json")
	if !strings.Contains(show, `"engine": "postgresql"`) || strings.Contains(show, password) {
		t.Errorf("show: database not postgresql, or the password shows:\n%s", show)
	}
	if data, err := os.ReadFile(filepath.Join(proj, "code", "opus_project", "opus.json")); err != nil || strings.Contains(string(data), password) {
		t.Errorf("opus.json holds the password (%v)", err)
	}
	secrets := filepath.Join(proj, "secrets", "secrets.json")
	if data, err := os.ReadFile(secrets); err != nil || !strings.Contains(string(data), password) {
		t.Errorf("the secrets lack the database password (%v)", err)
	}
	if canRead(h.otherID, h.otherID, secrets) || canRead(65534, 65534, secrets) {
		t.Errorf("another user can read the secrets with the database password")
	}
	h.mustCtl(t, 0, "destroy", name, "--yes")
}
