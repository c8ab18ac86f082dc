// Package pgtest gives tests the host's PostgreSQL cluster (Debian's
// postgresql package): it starts the cluster for a test and stops it again
// when the test found it down, and runs SQL as the postgres superuser. A
// test run (internal/testrun) writes down each role and database it is
// about to make (NoteRole, NoteDatabase), so that Cleaner drops exactly
// those when the run dies. It is for tests only, as net/http/httptest is,
// and shared by the unprivd/postgres and end-to-end tests.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/testrun"
)

// Files beside the test runs (testrun.Root) by which tests share the
// cluster: every test using it holds clusterLock shared; clusterStarted
// says the tests started it (the cluster's version, name and postmaster
// pid), so that the last one out stops it again, even when the one that
// started it was killed.
var (
	clusterLock    = filepath.Join(testrun.Root, "postgres.lock")
	clusterStarted = filepath.Join(testrun.Root, "postgres.started")
)

// toolTimeout bounds each PostgreSQL tool the tests run.
const toolTimeout = 2 * time.Minute

// tool runs a PostgreSQL tool with a timeout and returns its output.
func tool(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// cluster is the host's first cluster as pg_lsclusters shows it.
type cluster struct{ ver, name, port, state, dataDir, logFile string }

func firstCluster() (cluster, bool, error) {
	out, err := tool("pg_lsclusters", "-h")
	if err != nil {
		return cluster{}, false, err
	}
	// Ver Cluster Port Status Owner Data-directory Log-file
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) >= 7 {
			return cluster{ver: f[0], name: f[1], port: f[2], state: f[3], dataDir: f[5], logFile: f[6]}, true, nil
		}
	}
	return cluster{}, false, nil
}

// postmasterPid is the running cluster's postmaster pid, from the first
// line of postmaster.pid (the server's own file, not a tenant's).
func (c cluster) postmasterPid() string {
	data, err := os.ReadFile(filepath.Join(c.dataDir, "postmaster.pid"))
	if err != nil {
		return ""
	}
	pid, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSpace(pid)
}

// Cluster makes sure the host's first PostgreSQL cluster runs, starting it
// when it is down, and returns its port and log file. A cluster the tests
// started is stopped again by the last test using it, or, if that one was
// killed, by the next one's end. It skips the test where there is no
// PostgreSQL. Starting PostgreSQL is not for -short runs: a caller must
// skip first (testrun.Need does), and one that did not fails here.
func Cluster(t testing.TB) (port, logFile string) {
	t.Helper()
	if testing.Short() {
		t.Fatal("pgtest.Cluster would start PostgreSQL under -short: skip first (testrun.Need)")
	}
	if _, err := exec.LookPath("pg_lsclusters"); err != nil {
		t.Skip("needs postgresql (run `make deps` as root)")
	}
	if err := os.MkdirAll(testrun.Root, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(clusterLock, os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	// Shared while in use; blocks only while another test's end stops it.
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_SH); err != nil {
		lock.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { release(lock) })
	c, ok, err := firstCluster()
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Skip("no PostgreSQL cluster on this host")
	}
	if c.state != "online" {
		if _, err := tool("pg_ctlcluster", c.ver, c.name, "start"); err != nil {
			t.Fatalf("start PostgreSQL: %v", err)
		}
		mark := fmt.Sprintf("%s %s %s\n", c.ver, c.name, c.postmasterPid())
		if err := os.WriteFile(clusterStarted, []byte(mark), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c.port, c.logFile
}

// release gives up a test's use of the cluster; the last user stops the
// cluster if the tests started it and it still runs as they started it
// (the same postmaster: not restarted by someone else meanwhile).
func release(lock *os.File) {
	defer lock.Close()
	if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return // others still use it
	}
	data, err := os.ReadFile(clusterStarted)
	if err != nil {
		return
	}
	os.Remove(clusterStarted)
	f := strings.Fields(string(data))
	c, ok, err := firstCluster()
	if len(f) != 3 || !ok || err != nil || c.ver != f[0] || c.name != f[1] || c.state != "online" || c.postmasterPid() != f[2] {
		return
	}
	if _, err := tool("pg_ctlcluster", c.ver, c.name, "stop"); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
	}
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
	c, ok, err := firstCluster()
	return ok && err == nil && c.state == "online"
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
