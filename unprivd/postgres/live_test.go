package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opus-hosting/opus/internal/pgtest"
	"github.com/opus-hosting/opus/internal/testrun"
)

// The live tests make roles and databases named by the test run
// (internal/testrun): each is written down before it is made, and dropped
// with the run even if it is killed (pgtest.Cleaner).
func TestMain(m *testing.M) { os.Exit(testrun.Main(m, pgtest.Cleaner)) }

// superSQL runs SQL as the postgres superuser in database db.
func superSQL(t *testing.T, db, sql string) (string, error) {
	t.Helper()
	return pgtest.SQL(t, db, sql)
}

func mustSuperSQL(t *testing.T, db, sql string) string {
	t.Helper()
	out, err := superSQL(t, db, sql)
	if err != nil {
		t.Fatalf("psql %s: %v\n%s", sql, err, out)
	}
	return out
}

// liveCluster makes sure the host's PostgreSQL cluster runs (starting it,
// and stopping it at the end, when it was down), and returns the test run,
// the cluster's port and its log file. It skips under -short and without
// root or a cluster.
func liveCluster(t *testing.T) (run *testrun.Run, port, logFile string) {
	t.Helper()
	run = testrun.Need(t, "runs SQL as the postgres superuser on the host's cluster, starting it if it is down")
	port, logFile = pgtest.Cluster(t)
	// Dead runs whose databases Need's start could not drop while the
	// cluster was down.
	testrun.CleanDeadWith(pgtest.Cleaner)
	// Registered after Cluster's clean-up, so it runs first: what the test
	// made goes while the cluster still runs (Cluster stops it again when
	// it found it down).
	t.Cleanup(func() {
		if err := pgtest.DropNoted(run); err != nil {
			t.Error(err)
		}
	})
	return run, port, logFile
}

// runName is the name of one of the run's own roles or databases,
// written down for the run with note (pgtest.NoteRole, NoteDatabase)
// before the test makes it.
func runName(t *testing.T, run *testrun.Run, note func(*testrun.Run, string) error, what string) string {
	t.Helper()
	name := "t" + run.ID + "_" + what
	if err := note(run, name); err != nil {
		t.Fatal(err)
	}
	return name
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// liveProject is a fresh project name carrying the run's id, and its role
// and database, written down for the run before the test makes them.
func liveProject(t *testing.T, run *testrun.Run) (project, role, db string) {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	project = "u" + run.ID
	for _, c := range b {
		project += string(rune('a' + c%26))
	}
	role, db = Names(project)
	if err := pgtest.NoteRole(run, role); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.NoteDatabase(run, db); err != nil {
		t.Fatal(err)
	}
	return project, role, db
}

// connectAs connects to db over TCP as role with password.
func connectAs(ctx context.Context, host string, port int, role, password, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable connect_timeout=10", host, port, role, db))
	if err != nil {
		return nil, err
	}
	cfg.Password = password
	return pgx.ConnectConfig(ctx, cfg)
}

// logSince returns what the server logged after offset.
func logSince(t *testing.T, file string, offset int64) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatalf("server log: %v", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(io.LimitReader(f, 64<<20))
	return string(b)
}

// TestAdminLive drives Admin against the host's real cluster: the project
// role logs in over TCP with the plain password while the server's log,
// with every statement of the admin logged, never holds that password; the
// verifier matches one the server computes; Drop clears objects a project
// role made in other databases; only an exact marker makes a role Opus's.
func TestAdminLive(t *testing.T) {
	run, port, logFile := liveCluster(t)
	ctx := context.Background()
	adminRole, adminPW := runName(t, run, pgtest.NoteRole, "admin"), randomHex(16)
	mustSuperSQL(t, "postgres", "CREATE ROLE "+adminRole+" LOGIN CREATEROLE CREATEDB PASSWORD '"+adminPW+"'")
	// Every statement the admin sends goes to the server log.
	mustSuperSQL(t, "postgres", "ALTER ROLE "+adminRole+" SET log_statement = 'all'")
	a, err := New("host=127.0.0.1 port=" + port + " user=" + adminRole + " password=" + adminPW + " dbname=postgres")
	if err != nil {
		t.Fatal(err)
	}
	host, pport := a.ProjectHost()

	t.Run("search_path", func(t *testing.T) {
		cctx, cancel, conn, err := a.connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		defer conn.Close(ctx)
		var sp string
		if err := conn.QueryRow(cctx, "SHOW search_path").Scan(&sp); err != nil || sp != "pg_catalog, pg_temp" {
			t.Errorf("admin session search_path = %q, %v; want pg_catalog, pg_temp", sp, err)
		}
	})

	t.Run("server verifier", func(t *testing.T) {
		role, pw := runName(t, run, pgtest.NoteRole, "vec"), randomHex(16)
		stored := mustSuperSQL(t, "postgres", "SET password_encryption = 'scram-sha-256'; CREATE ROLE "+role+" PASSWORD '"+pw+"'; SELECT rolpassword FROM pg_authid WHERE rolname = '"+role+"'; DROP ROLE "+role)
		salt, it := parseVerifier(t, stored)
		if got, err := scramVerifierSalt(pw, salt, it); err != nil || got != stored {
			t.Errorf("scramVerifierSalt = %s, %v\nserver stored       %s", got, err, stored)
		}
	})

	t.Run("password never in a statement", func(t *testing.T) {
		project, role, db := liveProject(t, run)
		pw := randomHex(16)
		for _, want := range []string{"created role " + role + ", created database " + db, "exist"} {
			st, err := os.Stat(logFile)
			if err != nil {
				t.Fatalf("server log: %v", err)
			}
			msg, err := a.Ensure(ctx, project, role, db, pw)
			if err != nil || !strings.Contains(msg, want) {
				t.Fatalf("Ensure = %q, %v; want %q", msg, err, want)
			}
			conn, err := connectAs(ctx, host, pport, role, pw, db)
			if err != nil {
				t.Fatalf("log in as %s with the password over TCP: %v", role, err)
			}
			conn.Close(ctx)
			if _, err := connectAs(ctx, host, pport, role, pw+"0", db); err == nil {
				t.Fatalf("a wrong password logs in as %s", role)
			}
			stored := mustSuperSQL(t, "postgres", "SELECT rolpassword FROM pg_authid WHERE rolname = '"+role+"'")
			if !strings.HasPrefix(stored, "SCRAM-SHA-256$4096:") {
				t.Errorf("stored password is %.20q..., want a SCRAM-SHA-256 verifier", stored)
			}
			// The log shows the statement, so logging works, but only
			// with the verifier the server stored.
			var logged string
			for i := 0; i < 50 && !strings.Contains(logged, stored); i++ {
				time.Sleep(100 * time.Millisecond)
				logged = logSince(t, logFile, st.Size())
			}
			if !strings.Contains(logged, stored) {
				t.Errorf("the server log does not show the statement with the verifier; log_statement did not take:\n%.2000s", logged)
			}
			if strings.Contains(logged, pw) {
				t.Errorf("the server log holds the project's password")
			}
		}
		if msg, err := a.Drop(ctx, role, db); err != nil || msg != "dropped database "+db+", dropped role "+role {
			t.Errorf("Drop = %q, %v", msg, err)
		}
	})

	t.Run("drop owned in other databases", func(t *testing.T) {
		project, role, db := liveProject(t, run)
		pw := randomHex(16)
		third := runName(t, run, pgtest.NoteDatabase, "third")
		mustSuperSQL(t, "postgres", "CREATE DATABASE "+third)
		if _, err := a.Ensure(ctx, project, role, db, pw); err != nil {
			t.Fatal(err)
		}
		// The project role owns tables in postgres and in a third
		// database, so DROP ROLE alone would fail. In the third it makes
		// its own, as PostgreSQL 14 and older let every role do in the
		// public schema; in postgres (whose public schema the test must not
		// open) the superuser hands it one.
		mustSuperSQL(t, third, "GRANT CREATE ON SCHEMA public TO PUBLIC")
		conn, err := connectAs(ctx, host, pport, role, pw, third)
		if err != nil {
			t.Fatalf("log in as %s to %s: %v", role, third, err)
		}
		_, err = conn.Exec(ctx, "CREATE TABLE public."+role+"_left (x int)")
		conn.Close(ctx)
		if err != nil {
			t.Fatalf("create a table in %s as %s: %v", third, role, err)
		}
		mustSuperSQL(t, "postgres", "CREATE TABLE public."+role+"_left (x int); ALTER TABLE public."+role+"_left OWNER TO "+role)
		if _, err := superSQL(t, "postgres", "DROP ROLE "+role); err == nil {
			t.Fatal("DROP ROLE succeeded with the tables in place: the test proves nothing")
		}
		if msg, err := a.Drop(ctx, role, db); err != nil || msg != "dropped database "+db+", dropped role "+role {
			t.Fatalf("Drop = %q, %v", msg, err)
		}
		if n := mustSuperSQL(t, "postgres", "SELECT count(*) FROM pg_roles WHERE rolname = '"+role+"'"); n != "0" {
			t.Errorf("role %s still exists", role)
		}
		for _, other := range []string{"postgres", third} {
			if got := mustSuperSQL(t, other, "SELECT to_regclass('public."+role+"_left') IS NULL"); got != "t" {
				t.Errorf("the project's table in %s survived", other)
			}
		}
	})

	t.Run("marker must match exactly", func(t *testing.T) {
		project, role, db := liveProject(t, run)
		for _, comment := range []string{marker + project + "x", marker, "x" + marker + project, marker + project + " "} {
			mustSuperSQL(t, "postgres", "CREATE ROLE "+role+" LOGIN")
			mustSuperSQL(t, "postgres", "COMMENT ON ROLE "+role+" IS '"+comment+"'")
			if _, err := a.Ensure(ctx, project, role, db, randomHex(16)); err == nil || !strings.Contains(err.Error(), "did not make") {
				t.Errorf("comment %q: Ensure over the role: %v, want refused", comment, err)
			}
			if msg, err := a.Drop(ctx, role, db); err != nil || !strings.Contains(msg, "left role "+role+" alone") {
				t.Errorf("comment %q: Drop = %q, %v; want the role left alone", comment, msg, err)
			}
			got := mustSuperSQL(t, "postgres", "SELECT shobj_description(oid, 'pg_authid') || '|' || rolcanlogin || '|' || (rolpassword IS NULL) || '|' || (SELECT count(*) FROM pg_database WHERE datname = '"+db+"') FROM pg_authid WHERE rolname = '"+role+"'")
			if want := comment + "|true|true|0"; got != want {
				t.Errorf("comment %q: after Ensure and Drop the server has %q, want %q (unchanged, no database)", comment, got, want)
			}
			mustSuperSQL(t, "postgres", "DROP ROLE "+role)
		}
	})
}
