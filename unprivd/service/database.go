package service

import (
	"net"
	"regexp"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
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

// databaseFromProto validates the database of a CreateProject: SQLite (nil)
// or PostgreSQL given by its connection parameters. The values reach the
// host only as JSON (opus.json, and the password in secrets.json).
func databaseFromProto(db *opusv1.Database) (*store.Database, error) {
	switch db.GetEngine() {
	case "", engineSQLite:
		if db.GetHost() != "" || db.GetName() != "" || db.GetUser() != "" || db.GetPassword() != "" || db.GetPort() != 0 || db.GetProvision() {
			return nil, invalid("database", "connection parameters are for engine %q; SQLite needs none", enginePostgreSQL)
		}
		return nil, nil
	case enginePostgreSQL:
	default:
		return nil, invalid("database.engine", "%q is not %q or %q", trunc(db.GetEngine()), engineSQLite, enginePostgreSQL)
	}
	if db.GetProvision() {
		return nil, status.Error(codes.Unimplemented, "database.provision: Opus cannot create PostgreSQL databases on this host yet; create a database and a role yourself and give their connection parameters")
	}
	if !pgIdentRE.MatchString(db.GetName()) {
		return nil, invalid("database.name", "%q is not a database name of letters, digits and '_' (at most 63, not starting with a digit)", trunc(db.GetName()))
	}
	if !pgIdentRE.MatchString(db.GetUser()) {
		return nil, invalid("database.user", "%q is not a role name of letters, digits and '_' (at most 63, not starting with a digit)", trunc(db.GetUser()))
	}
	host := strings.ToLower(db.GetHost())
	if host != "" && net.ParseIP(host) == nil {
		if err := validateHostName(host); err != nil {
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

// toDatabase renders a project's database for the API, without its
// password.
func toDatabase(db *store.Database) *opusv1.Database {
	if db == nil {
		return &opusv1.Database{Engine: engineSQLite}
	}
	return &opusv1.Database{Engine: db.Engine, Host: db.Host, Port: int32(db.Port), Name: db.Name, User: db.User}
}
