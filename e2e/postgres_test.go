package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/pgtest"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	pgadmin "github.com/opus-hosting/opus/unprivd/postgres"
)

// pgPrefix starts the names of the roles and databases the tests make by
// hand; it holds the run's id.
func pgPrefix() string { return "t" + testRun.ID + "_" }

// notePG writes down, before a test creates them, roles and databases of
// these names (each carries the run's id): postgres's cleanup drops them
// while the cluster is up, and the next run drops them if this one dies.
func notePG(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := pgtest.NoteRole(testRun, n); err != nil {
			t.Fatal(err)
		}
		if err := pgtest.NoteDatabase(testRun, n); err != nil {
			t.Fatal(err)
		}
	}
}

// psql runs SQL as the postgres superuser and returns its unaligned output.
func psql(t *testing.T, db, sql string) (string, error) {
	t.Helper()
	return pgtest.SQL(t, db, sql)
}

// postgres makes sure a local PostgreSQL cluster runs (starting it, and
// stopping it at the end, when it was down) and returns its port. It skips
// the test when PostgreSQL or psycopg2 is missing.
func postgres(t *testing.T) string {
	t.Helper()
	if exec.Command("/usr/bin/python3", "-c", "import psycopg2").Run() != nil {
		t.Skip("needs python3-psycopg2 for /usr/bin/python3 (run `make deps` as root)")
	}
	port, _ := pgtest.Cluster(t)
	// Registered after Cluster's own cleanup, so it runs first, while the
	// cluster is up.
	t.Cleanup(func() {
		if err := pgtest.DropNoted(testRun); err != nil {
			t.Errorf("drop the test's PostgreSQL roles and databases: %v", err)
		}
	})
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
	dbURL, pwFile, password := ownerDatabase(t, h, port, name)
	db := pgPrefix() + name
	out := h.mustCtl(t, 0, "create", name, "--app", localApp(t, "notes"), "--database", dbURL, "--database-password-file", pwFile)
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
	if canRead(h.otherID, h.otherGID, secrets) || canRead(65534, 65534, secrets) {
		t.Errorf("another user can read the secrets with the database password")
	}
	h.mustCtl(t, 0, "destroy", name, "--yes")
	// The owner's database is the owner's: destroy never drops it.
	if got, err := psql(t, "postgres", "SELECT count(*) FROM pg_database WHERE datname = '"+db+"'"); err != nil || got != "1" {
		t.Errorf("destroy dropped a database Opus did not provision: %q %v", got, err)
	}
}

// ownerDatabase makes a role and a database for project name on the
// cluster at port as its owner would (run-marked, dropped when the test
// ends, after the project is destroyed) and returns what create takes:
// the --database URL, a --database-password-file, and the password.
func ownerDatabase(t *testing.T, h *host, port, name string) (dbURL, pwFile, password string) {
	t.Helper()
	db := pgPrefix() + name
	notePG(t, db)
	b := make([]byte, 16)
	rand.Read(b)
	password = hex.EncodeToString(b)
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
	pwFile = filepath.Join(t.TempDir(), "dbpw")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return "postgresql://" + db + "@127.0.0.1:" + port + "/" + db, pwFile, password
}

// dropProvisioned drops the roles and databases the run noted so far.
func dropProvisioned(t *testing.T) {
	t.Helper()
	if err := pgtest.DropNoted(testRun); err != nil {
		t.Errorf("drop the test's PostgreSQL roles and databases: %v", err)
	}
}

// provisioningRole makes the PostgreSQL admin role for opusd's user (peer
// authentication over the local socket, as the shipped opus.conf
// suggests), dropped with what was provisioned when the test ends.
func provisioningRole(t *testing.T) {
	t.Helper()
	dropProvisioned(t)
	notePG(t, daemonUser)
	psql(t, "postgres", "DROP ROLE IF EXISTS "+daemonUser)
	if out, err := psql(t, "postgres", "CREATE ROLE "+daemonUser+" LOGIN CREATEROLE CREATEDB"); err != nil {
		t.Fatalf("create admin role: %v %s", err, out)
	}
	t.Cleanup(func() {
		dropProvisioned(t)
		if out, err := psql(t, "postgres", "DROP ROLE IF EXISTS "+daemonUser); err != nil {
			t.Errorf("drop admin role: %v %s", err, out)
		}
	})
}

// pgExists reports whether PostgreSQL has a role and a database called
// name, and who owns the database.
func pgExists(t *testing.T, name string) (role bool, dbOwner string) {
	t.Helper()
	r, err := psql(t, "postgres", "SELECT count(*) FROM pg_roles WHERE rolname = '"+name+"'")
	if err != nil {
		t.Fatalf("pg_roles: %v %s", err, r)
	}
	o, err := psql(t, "postgres", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '"+name+"'")
	if err != nil {
		t.Fatalf("pg_database: %v %s", err, o)
	}
	return r == "1", o
}

// TestPostgreSQLProvisioned: with postgres_admin set, Opus creates a role
// and a database for a project that asks, the project serves and writes
// through Django's admin into that database, and destroy drops both.
// Without the key the same request is refused and nothing is made.
func TestPostgreSQLProvisioned(t *testing.T) {
	h := needHost(t)
	port := postgres(t)
	provisioningRole(t)

	// The harness's opusd has no postgres_admin: refused, nothing made.
	refused := h.newProject(t)
	notePG(t, "opus_"+refused)
	c := h.rootClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	_, err := c.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: refused,
		Database: &opusv1.Database{Engine: "postgresql", Provision: true}})
	cancel()
	c.Close()
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "postgres_admin") {
		t.Errorf("provision without postgres_admin: %v, want FailedPrecondition naming postgres_admin", err)
	}
	if r := h.ctl(t, 0, "", "create", refused, "--empty", "--database", "provision"); r.code == 0 || !strings.Contains(r.err, "postgres_admin") {
		t.Errorf("opusctl create --database provision without postgres_admin: exit %d %s", r.code, r.err)
	}
	if r := h.ctl(t, 0, "", "show", refused); r.code == 0 {
		t.Errorf("a refused project was recorded:\n%s", r.out)
	}
	if role, owner := pgExists(t, "opus_"+refused); role || owner != "" {
		t.Errorf("a refused project got PostgreSQL objects: role %v, database owner %q", role, owner)
	}
	if _, err := user.Lookup(projUser(refused)); err == nil || exists(filepath.Join(h.cfg.BaseDir, "projects", refused)) {
		t.Errorf("a refused project got a user or a tree")
	}

	// opusd again, with postgres_admin; the harness's own comes back at the
	// end, after the project's cleanup destroyed it.
	admin := "host=/var/run/postgresql port=" + port + " user=" + daemonUser + " dbname=postgres"
	h.opusdWith(t, "postgres", "postgres_admin "+admin+"\n")

	name := h.newProject(t)
	dbName := "opus_" + name
	notePG(t, dbName)
	r := h.ctl(t, 0, adminPassword+"\n", "create", name, "--app", localApp(t, "notes"), "--admin",
		"--superuser", "admin", "--superuser-email", "admin@example.com", "--superuser-password-stdin",
		"--database", "provision")
	if r.code != 0 {
		h.dumpLogs(t)
		t.Fatalf("create --database provision: exit %d %s", r.code, r.err)
	}
	if role, owner := pgExists(t, dbName); !role || owner != dbName {
		t.Fatalf("after create: role %v, database owner %q; want both %s", role, owner, dbName)
	}
	if got, _ := psql(t, "postgres", "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = '"+dbName+"'"); got != "f" {
		t.Errorf("the project's role has more than LOGIN: %q", got)
	}
	mustGet(t, webClient(), h.url(name, "http", "/notes/"), "notes: 0")

	// A row written through the admin lands in the provisioned database.
	web := webClient()
	siteURL := h.url(name, "https", "")
	adminLogin(t, web, siteURL, "admin", adminPassword)
	addURL := siteURL + "/admin/notes/note/add/"
	code, body := get(t, web, addURL)
	m := csrfField.FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("GET %s: %d, no CSRF token in %.200q", addURL, code, body)
	}
	text := "written-through-admin-" + name
	form := url.Values{"csrfmiddlewaretoken": {m[1]}, "text": {text}, "_save": {"Save"}}
	req, _ := http.NewRequest("POST", addURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Referer", addURL)
	resp, err := web.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "was added successfully") {
		t.Fatalf("admin add note: %d at %s, page %.300q", resp.StatusCode, resp.Request.URL, page)
	}
	if got, err := psql(t, dbName, "SELECT text FROM notes_note"); err != nil || got != text {
		t.Errorf("notes_note in %s: %q %v, want %q", dbName, got, err, text)
	}
	mustGet(t, webClient(), h.url(name, "http", "/notes/"), text)

	// The generated password is in the project's secrets only.
	proj := filepath.Join(h.cfg.BaseDir, "projects", name)
	secrets := filepath.Join(proj, "secrets", "secrets.json")
	data, err := os.ReadFile(secrets)
	if err != nil {
		t.Fatal(err)
	}
	var sec struct {
		DBPassword string `json:"db_password"`
	}
	if err := json.Unmarshal(data, &sec); err != nil || len(sec.DBPassword) < 32 {
		t.Fatalf("secrets lack a generated database password (%v)", err)
	}
	show := h.mustCtl(t, 0, "show", name, "-o", "json")
	if !strings.Contains(show, `"provision": true`) || strings.Contains(show, sec.DBPassword) {
		t.Errorf("show: not provisioned, or the password shows:\n%s", show)
	}
	if data, err := os.ReadFile(filepath.Join(proj, "code", "opus_project", "opus.json")); err != nil || strings.Contains(string(data), sec.DBPassword) {
		t.Errorf("opus.json holds the password (%v)", err)
	}
	if canRead(h.otherID, h.otherGID, secrets) || canRead(65534, 65534, secrets) {
		t.Errorf("another user can read the secrets with the database password")
	}
	if exists(filepath.Join(proj, "data", "db.sqlite3")) {
		t.Errorf("a SQLite database was made for a PostgreSQL project")
	}

	h.mustCtl(t, 0, "destroy", name, "--yes")
	if role, owner := pgExists(t, dbName); role || owner != "" {
		t.Errorf("after destroy: role %v, database owner %q; want both gone", role, owner)
	}
}

// TestPostgreSQLAdminRepairs drives unprivd/postgres against the real
// cluster through the states a crash or a person can leave: a role without
// its database, a changed password, a database gone before its role, a
// session still open at drop, and objects of the same name that Opus did
// not make (refused by Ensure, left alone by Drop).
func TestPostgreSQLAdminRepairs(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	port := postgres(t)
	dropProvisioned(t)
	adminRole := pgPrefix() + "admin"
	notePG(t, adminRole)
	b := make([]byte, 16)
	rand.Read(b)
	adminPW := hex.EncodeToString(b)
	if out, err := psql(t, "postgres", "CREATE ROLE "+adminRole+" LOGIN CREATEROLE CREATEDB PASSWORD '"+adminPW+"'"); err != nil {
		t.Fatalf("create admin role: %v %s", err, out)
	}
	t.Cleanup(func() {
		dropProvisioned(t)
		psql(t, "postgres", "DROP ROLE IF EXISTS "+adminRole)
	})
	a, err := pgadmin.New("host=127.0.0.1 port=" + port + " user=" + adminRole + " password=" + adminPW + " dbname=postgres")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	project := projPrefix
	for _, c := range b[:6] {
		project += string(rune('a' + c%26))
	}
	role, db := pgadmin.Names(project)
	notePG(t, role, db)
	rand.Read(b)
	pw := hex.EncodeToString(b)
	canLogin := func(password string) bool {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, "psql", "-X", "-h", "127.0.0.1", "-p", port, "-U", role, "-d", db, "-tAc", "SELECT 1")
		cmd.Env = []string{"PATH=/usr/bin:/bin", "PGPASSWORD=" + password}
		out, err := cmd.CombinedOutput()
		return err == nil && strings.TrimSpace(string(out)) == "1"
	}
	ensure := func(want string) {
		t.Helper()
		msg, err := a.Ensure(ctx, project, role, db, pw)
		if err != nil || !strings.Contains(msg, want) {
			t.Fatalf("Ensure = %q, %v; want %q", msg, err, want)
		}
		if r, owner := pgExists(t, db); !r || owner != role || !canLogin(pw) {
			t.Fatalf("after Ensure: role %v, owner %q, login with the password failed", r, owner)
		}
	}

	ensure("created role " + role + ", created database " + db)
	ensure("exist")
	// Another project's role may not even connect.
	if got, _ := psql(t, "postgres", "SELECT has_database_privilege('public', '"+db+"', 'CONNECT')"); got != "f" {
		t.Errorf("PUBLIC may connect to %s: %q", db, got)
	}
	// A crash after the role, before the database.
	psql(t, "postgres", "DROP DATABASE "+db)
	ensure("created database " + db)
	// A password changed by hand: the stored one wins again.
	psql(t, "postgres", "ALTER ROLE "+role+" PASSWORD 'changed-by-hand'")
	if canLogin(pw) {
		t.Fatal("the old password still works after ALTER ROLE")
	}
	ensure("exist")

	// Drop with the project still connected (FORCE ends its session).
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	session := exec.CommandContext(cctx, "psql", "-X", "-h", "127.0.0.1", "-p", port, "-U", role, "-d", db, "-c", "SELECT pg_sleep(50)")
	session.Env = []string{"PATH=/usr/bin:/bin", "PGPASSWORD=" + pw}
	if err := session.Start(); err != nil {
		t.Fatal(err)
	}
	connected := false
	for i := 0; i < 100 && !connected; i++ {
		n, _ := psql(t, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = '"+db+"'")
		if connected = n == "1"; !connected {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !connected {
		t.Fatalf("the project role's session did not show in pg_stat_activity")
	}
	msg, err := a.Drop(ctx, role, db)
	session.Wait()
	if err != nil || msg != "dropped database "+db+", dropped role "+role {
		t.Fatalf("Drop = %q, %v", msg, err)
	}
	if r, owner := pgExists(t, db); r || owner != "" {
		t.Fatalf("after Drop: role %v, owner %q", r, owner)
	}
	if msg, err := a.Drop(ctx, role, db); err != nil || !strings.Contains(msg, "no PostgreSQL role or database") {
		t.Fatalf("second Drop = %q, %v", msg, err)
	}
	// A crash after the database went, before the role.
	ensure("created role")
	psql(t, "postgres", "DROP DATABASE "+db)
	if msg, err := a.Drop(ctx, role, db); err != nil || msg != "dropped role "+role {
		t.Fatalf("Drop of a role alone = %q, %v", msg, err)
	}

	// Not Opus's: a role made by hand, and a database owned by another.
	psql(t, "postgres", "CREATE ROLE "+role+" LOGIN")
	psql(t, "postgres", "CREATE DATABASE "+db+" OWNER "+adminRole)
	if _, err := a.Ensure(ctx, project, role, db, pw); err == nil || !strings.Contains(err.Error(), "did not make") {
		t.Errorf("Ensure over a foreign role: %v", err)
	}
	msg, err = a.Drop(ctx, role, db)
	if err != nil || !strings.Contains(msg, "left database "+db) || !strings.Contains(msg, "role "+role) {
		t.Errorf("Drop of foreign objects = %q, %v", msg, err)
	}
	if r, owner := pgExists(t, db); !r || owner != adminRole {
		t.Errorf("Drop touched objects Opus did not make: role %v, owner %q", r, owner)
	}
	psql(t, "postgres", "DROP DATABASE "+db)
	psql(t, "postgres", "COMMENT ON ROLE "+role+" IS 'made by Opus for project "+project+"'")
	psql(t, "postgres", "CREATE DATABASE "+db+" OWNER "+adminRole)
	if _, err := a.Ensure(ctx, project, role, db, pw); err == nil || !strings.Contains(err.Error(), "belongs to "+adminRole) {
		t.Errorf("Ensure over a foreign database: %v", err)
	}
}
