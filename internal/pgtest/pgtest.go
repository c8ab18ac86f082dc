// Package pgtest gives tests the host's PostgreSQL cluster (Debian's
// postgresql package): it starts the cluster for a test and stops it again
// when the test found it down, and runs SQL as the postgres superuser. A
// test run (internal/testrun) writes down each role and database it is
// about to make (NoteRole, NoteDatabase), so that Cleaner drops exactly
// those when the run dies. It is for tests only, as net/http/httptest is,
// and shared by the unprivd/postgres and end-to-end tests.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/testrun"
)

// Cluster makes sure the host's first PostgreSQL cluster runs, starting it
// (and stopping it when the test ends) when it is down, and returns its
// port and log file. It skips the test where there is no PostgreSQL.
// Starting PostgreSQL is not for -short runs: a caller must skip first
// (testrun.Need does), and one that did not fails here.
func Cluster(t testing.TB) (port, logFile string) {
	t.Helper()
	if testing.Short() {
		t.Fatal("pgtest.Cluster would start PostgreSQL under -short: skip first (testrun.Need)")
	}
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

// kind is what a run's notes of its PostgreSQL roles and databases are
// filed under (testrun.Note).
const kind = "postgres"

// Cleaner drops the roles and databases dead runs noted; pass it to
// testrun.Main or testrun.StartWith.
var Cleaner = testrun.Cleaner{Kind: kind, Clean: dropNoted}

// NoteRole writes role down for run before the test creates it. The name
// must carry the run's id and be a plain lower-case identifier.
func NoteRole(run *testrun.Run, role string) error { return note(run, "role", role) }

// NoteDatabase writes database db down for run before the test creates it;
// the name must carry the run's id, as for NoteRole.
func NoteDatabase(run *testrun.Run, db string) error { return note(run, "database", db) }

// DropNoted drops now the roles and databases run noted, and forgets them.
// Call it from a cleanup registered after Cluster's, so that it runs while
// the cluster is still up.
func DropNoted(run *testrun.Run) error { return run.Clean(kind) }

func note(run *testrun.Run, what, name string) error {
	if !ownedName(run.ID, name) {
		return fmt.Errorf("pgtest: %s %q is not a plain identifier carrying run id %s", what, name, run.ID)
	}
	return run.Note(kind, what+":"+name)
}

// ownedName: what a record may name for run id. A forged or stale line
// naming anything else is ignored, and the name is safe in SQL unquoted.
func ownedName(id, name string) bool {
	return len(name) <= 63 && strings.Contains(name, id) && strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") == "" &&
		name[0] >= 'a' && name[0] <= 'z'
}

// dropNoted drops the databases, then the roles (with what they own in the
// postgres database, where tests hand them tables), that run id noted.
// Where PostgreSQL is not installed there is nothing to drop; where the
// cluster is down the record is kept (an error) for a later run.
func dropNoted(id string, values []string) error {
	if _, err := exec.LookPath("pg_lsclusters"); err != nil {
		return nil
	}
	if !Online() {
		return errors.New("the PostgreSQL cluster is down")
	}
	var dbs, roles []string
	for _, v := range values {
		what, name, _ := strings.Cut(v, ":")
		if !ownedName(id, name) {
			continue
		}
		switch what {
		case "database":
			dbs = append(dbs, name)
		case "role":
			roles = append(roles, name)
		}
	}
	var errs []error
	for _, db := range dbs {
		if out, err := Query("postgres", "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
			errs = append(errs, fmt.Errorf("drop database %s: %w: %s", db, err, out))
		}
	}
	for _, r := range roles {
		if n, err := Query("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = '"+r+"'"); err != nil || n != "1" {
			if err != nil {
				errs = append(errs, fmt.Errorf("look up role %s: %w: %s", r, err, n))
			}
			continue
		}
		if out, err := Query("postgres", "DROP OWNED BY "+r+"; DROP ROLE "+r); err != nil {
			errs = append(errs, fmt.Errorf("drop role %s: %w: %s", r, err, out))
		}
	}
	return errors.Join(errs...)
}
