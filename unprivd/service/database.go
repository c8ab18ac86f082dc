package service

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"regexp"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/excerpt"
	"github.com/opus-hosting/opus/internal/names"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/postgres"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Database engines of the API.
const (
	engineSQLite     = "sqlite"
	enginePostgreSQL = "postgresql"
)

// pgIdentRE is what Opus accepts as a PostgreSQL database or role name: a
// plain identifier, so it never needs quoting anywhere.
var pgIdentRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

const maxDBPassword = 1024

// Provisioning is where the projects whose PostgreSQL Opus provisions
// connect (opusd derives it from postgres_admin, see unprivd/postgres).
type Provisioning struct {
	// Host and Port of the server; Port 0 is libpq's default.
	Host string
	Port int
}

// provisionedPasswordBytes is the entropy of a generated database
// password (hex-encoded in the secrets).
const provisionedPasswordBytes = 32

// databaseFromProto validates the database of a CreateProject: SQLite (nil),
// PostgreSQL given by its connection parameters, or PostgreSQL that Opus
// provisions for project (prov nil: provisioning is off). The values reach
// the host only as JSON (opus.json, and the password in secrets.json).
func databaseFromProto(db *opusv1.Database, project string, prov *Provisioning) (*store.Database, error) {
	switch db.GetEngine() {
	case "", engineSQLite:
		if db.GetHost() != "" || db.GetName() != "" || db.GetUser() != "" || db.GetPassword() != "" || db.GetPort() != 0 || db.GetProvision() {
			return nil, invalid("database", "connection parameters are for engine %q; SQLite needs none", enginePostgreSQL)
		}
		return nil, nil
	case enginePostgreSQL:
	default:
		return nil, invalid("database.engine", "%q is not %q or %q", excerpt.Short(db.GetEngine()), engineSQLite, enginePostgreSQL)
	}
	if db.GetProvision() {
		return provisionedDatabase(db, project, prov)
	}
	if !pgIdentRE.MatchString(db.GetName()) {
		return nil, invalid("database.name", "%q is not a database name of letters, digits and '_' (at most 63, not starting with a digit)", excerpt.Short(db.GetName()))
	}
	if !pgIdentRE.MatchString(db.GetUser()) {
		return nil, invalid("database.user", "%q is not a role name of letters, digits and '_' (at most 63, not starting with a digit)", excerpt.Short(db.GetUser()))
	}
	host := strings.ToLower(db.GetHost())
	if host != "" && net.ParseIP(host) == nil {
		if err := names.ValidateHostName(host); err != nil {
			return nil, invalid("database.host", "%v", err)
		}
	}
	if p := db.GetPort(); p < 0 || p > 65535 {
		return nil, invalid("database.port", "%d is not a TCP port", p)
	}
	pw := db.GetPassword()
	if len(pw) > maxDBPassword || strings.ContainsRune(pw, 0) || !utf8.ValidString(pw) {
		return nil, invalid("database.password", "must be valid UTF-8 without NUL, at most %d bytes", maxDBPassword)
	}
	return &store.Database{Engine: enginePostgreSQL, Host: host, Port: int(db.GetPort()), Name: db.GetName(), User: db.GetUser(), Password: pw}, nil
}

// provisionedDatabase is the spec of a database Opus provisions: role and
// database are named after the project only (so nothing the caller sends
// reaches SQL), the password is generated and kept like a given one.
func provisionedDatabase(db *opusv1.Database, project string, prov *Provisioning) (*store.Database, error) {
	for _, f := range []struct {
		field string
		set   bool
	}{
		{"database.host", db.GetHost() != ""}, {"database.port", db.GetPort() != 0},
		{"database.name", db.GetName() != ""}, {"database.user", db.GetUser() != ""},
		{"database.password", db.GetPassword() != ""},
	} {
		if f.set {
			return nil, invalid(f.field, "must be empty with provision: Opus names the role and the database after the project and generates the password")
		}
	}
	if prov == nil {
		return nil, fieldError(codes.FailedPrecondition, "database.provision", "this host does not provision PostgreSQL; the host administrator must set postgres_admin in opus.conf (a connection whose role has CREATEROLE and CREATEDB) and restart opusd, or give the database by its connection parameters")
	}
	role, name := postgres.Names(project)
	b := make([]byte, provisionedPasswordBytes)
	if _, err := rand.Read(b); err != nil {
		return nil, status.Errorf(codes.Internal, "generate a database password: %v", err)
	}
	return &store.Database{Engine: enginePostgreSQL, Host: prov.Host, Port: prov.Port, Name: name, User: role,
		Password: hex.EncodeToString(b), Provisioned: true}, nil
}

// toDatabase renders a project's database for the API, without its
// password.
func toDatabase(db *store.Database) *opusv1.Database {
	if db == nil {
		return &opusv1.Database{Engine: engineSQLite}
	}
	return &opusv1.Database{Engine: db.Engine, Host: db.Host, Port: int32(db.Port), Name: db.Name, User: db.User, Provision: db.Provisioned}
}
