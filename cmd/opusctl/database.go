package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// databaseHelp is the --database part of create's help.
const databaseHelp = `A project keeps its data in SQLite in its own data directory unless
--database names a PostgreSQL database you made (with its role):
  --database postgresql://USER@HOST[:PORT]/NAME --database-password-file FILE
The password is read from FILE (never from the command line, where other
users could read it), kept in the project's secrets and never shown again.
Or let Opus make one, when the host administrator has set postgres_admin:
  --database provision
Opus then creates a role and a database opus_NAME with a generated password
(kept in the project's secrets), and drops both when the project is
destroyed. A database you gave by its parameters is never dropped.`

// provisionDatabase is the --database value that asks Opus to provision
// PostgreSQL for the project.
const provisionDatabase = "provision"

// parseDatabase reads --database: postgresql://USER@HOST[:PORT]/NAME, or
// "provision". A password in the URL is refused: it would be visible in
// the process list.
func parseDatabase(raw string) (*opusv1.Database, error) {
	if raw == provisionDatabase {
		return &opusv1.Database{Engine: "postgresql", Provision: true}, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, usagef("--database %q: %v", raw, err)
	}
	if u.Scheme != "postgresql" && u.Scheme != "postgres" {
		return nil, usagef("--database %q: give postgresql://USER@HOST[:PORT]/NAME or %q", raw, provisionDatabase)
	}
	if _, has := u.User.Password(); has {
		return nil, usagef("--database: do not put the password in the URL (others can read command lines); use --database-password-file")
	}
	db := &opusv1.Database{Engine: "postgresql", User: u.User.Username(), Host: u.Hostname(), Name: strings.TrimPrefix(u.Path, "/")}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return nil, usagef("--database %q: port %q is not a TCP port", raw, p)
		}
		db.Port = int32(n)
	}
	if db.User == "" || db.Name == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, usagef("--database %q: give postgresql://USER@HOST[:PORT]/NAME", raw)
	}
	return db, nil
}

// readDatabasePassword reads the first line of a password file with the
// caller's own rights.
func readDatabasePassword(path string) (string, error) {
	data, err := readSmallFile(path)
	if err != nil {
		return "", fmt.Errorf("--database-password-file: %w", err)
	}
	pw, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSuffix(pw, "\r"), nil
}
