// Package pgtest gives tests the host's PostgreSQL cluster (Debian's
// postgresql package): it starts the cluster for a test and stops it again
// when the test found it down, and runs SQL as the postgres superuser. It
// is for tests only, as net/http/httptest is, and shared by the
// unprivd/postgres and end-to-end tests.
package pgtest

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Cluster makes sure the host's first PostgreSQL cluster runs, starting it
// (and stopping it when the test ends) when it is down, and returns its
// port and log file. It skips the test where there is no PostgreSQL.
func Cluster(t testing.TB) (port, logFile string) {
	t.Helper()
	if _, err := exec.LookPath("pg_lsclusters"); err != nil {
		t.Skip("needs postgresql (run `make deps` as root)")
	}
	out, err := exec.Command("pg_lsclusters", "-h").Output()
	if err != nil {
		t.Fatalf("pg_lsclusters: %v", err)
	}
	// Ver Cluster Port Status Owner Data-directory Log-file
	var f []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f = strings.Fields(l); len(f) >= 7 {
			break
		}
	}
	if len(f) < 7 {
		t.Skip("no PostgreSQL cluster on this host")
	}
	ver, name, state := f[0], f[1], f[3]
	if state != "online" {
		if out, err := exec.Command("pg_ctlcluster", ver, name, "start").CombinedOutput(); err != nil {
			t.Fatalf("start PostgreSQL %s/%s: %v\n%s", ver, name, err, out)
		}
		t.Cleanup(func() { exec.Command("pg_ctlcluster", ver, name, "stop").Run() })
	}
	return f[2], f[6]
}

// SQL runs sql in database db as the postgres superuser and returns psql's
// unaligned output, trimmed.
func SQL(t testing.TB, db, sql string) (string, error) {
	t.Helper()
	return Query(db, sql)
}

// Online reports whether the host's first PostgreSQL cluster runs; it
// starts nothing.
func Online() bool {
	out, err := exec.Command("pg_lsclusters", "-h").Output()
	if err != nil {
		return false
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) >= 7 {
			return f[3] == "online"
		}
	}
	return false
}

// Query is SQL outside a test (clean-up in TestMain).
func Query(db, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA", "-d", db, "-c", sql)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
