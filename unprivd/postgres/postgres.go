// Package postgres creates and drops the PostgreSQL role and database that
// Opus provisions for a project, over the admin connection of the host's
// configuration (postgres_admin).
//
// Both operations are idempotent and safe to run again after a crash
// halfway: they look at pg_roles and pg_database first and do only what is
// missing. Like the project users privd deletes (DESIGN.md rule 6), the
// roles Drop removes are roles Ensure made: Ensure marks a role with a
// comment in the same transaction that creates it, and a database counts as
// Opus's only when that marked role owns it. Anything else of the same name
// is refused by Ensure and left alone by Drop.
//
// The project's password never travels in a statement: Ensure sends the
// SCRAM-SHA-256 verifier it computes (scram.go), because the server may
// log statements (log_min_error_statement, log_statement=ddl) or keep them
// (pg_stat_statements).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultTimeout bounds one Ensure or Drop, connection included, when
// Admin.Timeout is 0.
const DefaultTimeout = 30 * time.Second

// marker is the comment on every role Ensure creates; Drop removes only
// roles that carry it.
const marker = "made by Opus for project "

// identRE is a plain PostgreSQL identifier: what Names makes and the only
// form Ensure and Drop accept, so a name can never need more than quoting.
var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// passwordRE is the password alphabet: ASCII letters and digits, for which
// SASLprep (RFC 4013), which SCRAM applies to the password, is the
// identity, so scramVerifier needs no Unicode normalization.
var passwordRE = regexp.MustCompile(`^[A-Za-z0-9]{16,128}$`)

// Names returns the role and database name of a project: both
// "opus_<project>". A valid project name (internal/names) makes a plain
// identifier of at most 29 characters.
func Names(project string) (role, db string) {
	n := "opus_" + project
	return n, n
}

// Admin creates and drops project roles and databases. Make one with New;
// it connects only while an operation runs.
type Admin struct {
	cfg *pgx.ConnConfig
	// passwordInDSN: the connection string itself holds a password.
	passwordInDSN bool
	// Timeout bounds one Ensure or Drop; 0 means DefaultTimeout.
	Timeout time.Duration
}

// New parses the admin connection string (libpq key=value or URL form). It
// does not connect: a database that is down fails the operations that need
// it, not opusd's start.
func New(dsn string) (*Admin, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, errors.New("postgres_admin: empty connection string")
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's error may quote the string, password included.
		return nil, errors.New("postgres_admin: not a valid libpq connection string")
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	// Project roles can create objects in the admin's database (the public
	// schema before PostgreSQL 15, or where someone granted it): with only
	// pg_catalog (and pg_temp last) on the path, none of them can shadow a
	// function or table the admin session uses.
	cfg.RuntimeParams["search_path"] = "pg_catalog, pg_temp"
	return &Admin{cfg: cfg, passwordInDSN: dsnHasPassword(dsn)}, nil
}

// notAllowedRE finds the key pgconn names when a connection string has a
// key outside ParseConfigOptions.ConnStringAllowedKeys.
var notAllowedRE = regexp.MustCompile(`connection string key "([a-z_]+)" is not in ConnStringAllowedKeys`)

// dsnHasPassword reports whether the connection string itself holds a
// password (password=, or the URL's user:password@), as opposed to one
// from PGPASSWORD or a .pgpass file. pgconn parses it: every key but
// password is allowed as pgconn names it, until the string parses or
// pgconn names password. pgconn checks the keys before reading any file.
func dsnHasPassword(dsn string) bool {
	var allowed []string
	for range 100 {
		_, err := pgconn.ParseConfigWithOptions(dsn, pgconn.ParseConfigOptions{ConnStringAllowedKeys: append([]string{"host"}, allowed...)})
		if err == nil {
			return false
		}
		m := notAllowedRE.FindStringSubmatch(err.Error())
		if m == nil {
			return false // not about keys: New reports a bad string
		}
		if m[1] == "password" {
			return true
		}
		allowed = append(allowed, m[1])
	}
	return false
}

// PasswordInConfig reports whether the connection string holds a password,
// which opusd warns about: opus.conf is readable by every local user.
func (a *Admin) PasswordInConfig() bool { return a.passwordInDSN }

// ProjectHost is where a provisioned project connects: the admin
// connection's server. When that is a Unix socket directory the project
// uses TCP to localhost on the same port instead, because Debian's
// pg_hba.conf authenticates local socket connections by peer (the project's
// Linux user is not its role) and TCP ones by password.
func (a *Admin) ProjectHost() (host string, port int) {
	host, port = a.cfg.Host, int(a.cfg.Port)
	if strings.HasPrefix(host, "/") || host == "" {
		host = "localhost"
	}
	return host, port
}

// String names the server and admin role, never the password.
func (a *Admin) String() string {
	return fmt.Sprintf("postgresql %s@%s:%d/%s", a.cfg.User, a.cfg.Host, a.cfg.Port, a.cfg.Database)
}

func (a *Admin) connect(ctx context.Context) (context.Context, context.CancelFunc, *pgx.Conn, error) {
	d := a.Timeout
	if d <= 0 {
		d = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	conn, err := pgx.ConnectConfig(ctx, a.cfg)
	if err != nil {
		cancel()
		return nil, nil, nil, fmt.Errorf("connect to %s (postgres_admin): %w", a, err)
	}
	return ctx, cancel, conn, nil
}

func checkNames(role, db string) error {
	if !identRE.MatchString(role) {
		return fmt.Errorf("role name %q is not a plain identifier", role)
	}
	if !identRE.MatchString(db) {
		return fmt.Errorf("database name %q is not a plain identifier", db)
	}
	return nil
}

// projectOf is the project whose role Names made role, or "" when Names
// cannot have made it. Drop gets only the role, and a role is Opus's only
// when its comment is exactly the marker for this project.
func projectOf(role string) string {
	p, ok := strings.CutPrefix(role, "opus_")
	if !ok || !identRE.MatchString(p) {
		return ""
	}
	if r, _ := Names(p); r != role {
		return ""
	}
	return p
}

// state is what the server has under a project's names.
type state struct {
	roleExists, roleMarked bool
	dbExists               bool
	dbOwner                string
}

// lookup reads what the server has under role and db. The role counts as
// Opus's only when its comment is exactly marker+project: a prefix match
// would accept any comment that merely starts with the marker, such as a
// hand-made one or one naming another project.
func lookup(ctx context.Context, conn *pgx.Conn, project, role, db string) (state, error) {
	var s state
	var comment *string
	err := conn.QueryRow(ctx, `SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1`, role).Scan(&comment)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return s, fmt.Errorf("look up role %s: %w", role, err)
	default:
		s.roleExists = true
		s.roleMarked = project != "" && comment != nil && *comment == marker+project
	}
	err = conn.QueryRow(ctx, `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1`, db).Scan(&s.dbOwner)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return s, fmt.Errorf("look up database %s: %w", db, err)
	default:
		s.dbExists = true
	}
	return s, nil
}

// Ensure makes sure role exists, may log in with password, and owns
// database db, which only it (and superusers) may connect to. project is
// written into the role's marker. It returns a note of what it did.
func (a *Admin) Ensure(ctx context.Context, project, role, db, password string) (string, error) {
	if err := checkNames(role, db); err != nil {
		return "", err
	}
	if !identRE.MatchString(project) {
		return "", fmt.Errorf("project name %q is not a plain identifier", project)
	}
	// Drop knows a role's project only by its name.
	if wr, wd := Names(project); role != wr || db != wd {
		return "", fmt.Errorf("role %s and database %s are not project %s's names (%s, %s)", role, db, project, wr, wd)
	}
	if !passwordRE.MatchString(password) {
		return "", errors.New("the generated database password has an unexpected form")
	}
	ctx, cancel, conn, err := a.connect(ctx)
	if err != nil {
		return "", err
	}
	defer cancel()
	defer conn.Close(context.WithoutCancel(ctx))
	s, err := lookup(ctx, conn, project, role, db)
	if err != nil {
		return "", err
	}
	r, d := pgx.Identifier{role}.Sanitize(), pgx.Identifier{db}.Sanitize()
	// The verifier, never the password: statements may be logged. A fresh
	// salt each time, as the server would do itself.
	verifier, err := scramVerifier(password)
	if err != nil {
		return "", err
	}
	pw := "'" + verifier + "'" // base64, '$' and ':': nothing to escape
	var did []string
	switch {
	case s.roleExists && !s.roleMarked:
		return "", fmt.Errorf("PostgreSQL role %s exists but Opus did not make it; drop or rename it, or give the database by its connection parameters", role)
	case s.roleExists:
		// The stored password wins: the role may have been changed by
		// hand, or made by a run that crashed before storing anything.
		if _, err := conn.Exec(ctx, "ALTER ROLE "+r+" WITH LOGIN PASSWORD "+pw); err != nil {
			return "", fmt.Errorf("set the password of role %s: %w", role, err)
		}
	default:
		// One transaction: a role without its marker would never be
		// Opus's again. The GRANT lets the admin role (CREATEROLE, not a
		// superuser) create a database owned by the new role and end its
		// sessions on drop.
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, q := range []string{
				"CREATE ROLE " + r + " WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD " + pw,
				"COMMENT ON ROLE " + r + " IS '" + marker + project + "'",
				"GRANT " + r + " TO CURRENT_USER",
			} {
				if _, err := tx.Exec(ctx, q); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("create role %s: %w", role, err)
		}
		did = append(did, "created role "+role)
	}
	switch {
	case s.dbExists && s.dbOwner != role:
		return "", fmt.Errorf("PostgreSQL database %s exists and belongs to %s, not to Opus's role %s; drop or rename it", db, s.dbOwner, role)
	case !s.dbExists:
		// CREATE DATABASE cannot run in a transaction; ownership is its
		// marker, so a crash right after it leaves a database that the
		// next run recognizes as its own.
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+d+" OWNER "+r+" ENCODING 'UTF8' TEMPLATE template0"); err != nil {
			return "", fmt.Errorf("create database %s: %w", db, err)
		}
		did = append(did, "created database "+db)
	}
	// Other projects' roles must not even connect.
	if _, err := conn.Exec(ctx, "REVOKE ALL ON DATABASE "+d+" FROM PUBLIC"); err != nil {
		return "", fmt.Errorf("restrict database %s: %w", db, err)
	}
	if len(did) == 0 {
		return fmt.Sprintf("PostgreSQL role and database %s exist", db), nil
	}
	return strings.Join(did, ", "), nil
}

// Drop removes database db (ending its sessions) and then role, when Opus
// made them; either missing is not an error. A role or database of the same
// name that is not Opus's is left alone and named in the returned note.
func (a *Admin) Drop(ctx context.Context, role, db string) (string, error) {
	if err := checkNames(role, db); err != nil {
		return "", err
	}
	ctx, cancel, conn, err := a.connect(ctx)
	if err != nil {
		return "", err
	}
	defer cancel()
	defer conn.Close(context.WithoutCancel(ctx))
	s, err := lookup(ctx, conn, projectOf(role), role, db)
	if err != nil {
		return "", err
	}
	var did, left []string
	if s.dbExists {
		if s.roleMarked && s.dbOwner == role {
			// FORCE (PostgreSQL 13+) ends the project's sessions first; the
			// admin may, as a member of the owning role.
			if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)"); err != nil {
				return "", fmt.Errorf("drop database %s: %w", db, err)
			}
			did = append(did, "dropped database "+db)
		} else {
			left = append(left, fmt.Sprintf("database %s (owned by %s)", db, s.dbOwner))
		}
	}
	if s.roleExists {
		if s.roleMarked {
			if err := a.dropOwned(ctx, conn, role); err != nil {
				return "", err
			}
			if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize()); err != nil {
				return "", fmt.Errorf("drop role %s: %w", role, err)
			}
			did = append(did, "dropped role "+role)
		} else {
			left = append(left, "role "+role)
		}
	}
	var msg string
	switch {
	case len(did) > 0:
		msg = strings.Join(did, ", ")
	case len(left) == 0:
		msg = "no PostgreSQL role or database " + db
	}
	if len(left) > 0 {
		if msg != "" {
			msg += "; "
		}
		msg += "warning: left " + strings.Join(left, " and ") + " alone: Opus did not make it"
	}
	return msg, nil
}

// dropOwned drops what role owns, and revokes what was granted to it, in
// every database where it has any (pg_shdepend), so DROP ROLE does not fail
// and teardown retry forever. Project roles may CONNECT to postgres and
// template1 (PUBLIC may), and create objects there where the public schema
// lets them (PostgreSQL 14 and older) or someone granted it. The admin may
// drop them as a member of the role (Ensure's GRANT). A database the admin
// cannot connect to fails Drop with an error naming it.
func (a *Admin) dropOwned(ctx context.Context, conn *pgx.Conn, role string) error {
	q := "DROP OWNED BY " + pgx.Identifier{role}.Sanitize()
	// The admin's own database first, always: cheap, and it covers the
	// common case without a second connection.
	if _, err := conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("drop what role %s owns in %s: %w", role, a.cfg.Database, err)
	}
	rows, err := conn.Query(ctx, `SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
		WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)
		AND d.datname <> current_database() ORDER BY 1`, role)
	if err != nil {
		return fmt.Errorf("find the databases where role %s owns objects: %w", role, err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("find the databases where role %s owns objects: %w", role, err)
	}
	for _, db := range dbs {
		cfg := a.cfg.Copy()
		cfg.Database = db
		other, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return fmt.Errorf("role %s owns objects in database %s, and the admin cannot connect there to drop them: %w", role, db, err)
		}
		_, err = other.Exec(ctx, q)
		other.Close(context.WithoutCancel(ctx))
		if err != nil {
			return fmt.Errorf("drop what role %s owns in %s: %w", role, db, err)
		}
	}
	return nil
}
