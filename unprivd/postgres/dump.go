package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opus-hosting/opus/internal/subprocess"
)

// DumpTimeout bounds one pg_dump, or one restore, of a project's database.
const DumpTimeout = 10 * time.Minute

// Conn is how opusd reaches a project's database for a data snapshot: as
// the project's own role, with the project's password, so a snapshot sees
// and restores exactly what the project itself may.
type Conn struct {
	Host     string
	Port     int
	Name     string
	User     string
	Password string
}

// args are the connection options of pg_dump and psql, each as
// "--opt=value" so that no value can be read as an option. The password is
// not among them: it travels in the environment (env), never on argv.
func (c Conn) args() []string {
	args := []string{"--dbname=" + c.Name, "--username=" + c.User}
	if c.Host != "" {
		args = append(args, "--host="+c.Host)
	}
	if c.Port != 0 {
		args = append(args, "--port="+strconv.Itoa(c.Port))
	}
	return args
}

// env is the whole environment of pg_dump, pg_restore and psql: nothing of
// opusd's own (no PG* variable, no HOME with a .pgpass or .psqlrc).
func (c Conn) env() []string {
	env := []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "PGCONNECT_TIMEOUT=15", "PGAPPNAME=opus-snapshot", "PGPASSFILE=/dev/null"}
	if c.Password != "" {
		env = append(env, "PGPASSWORD="+c.Password)
	}
	return env
}

func (c Conn) check() error {
	for _, v := range []string{c.Name, c.User, c.Host} {
		if strings.ContainsAny(v, "\x00\n") {
			return errors.New("database connection parameter holds a NUL or newline")
		}
	}
	if c.Name == "" || c.User == "" {
		return errors.New("database name and user are required")
	}
	return nil
}

// Dump writes a custom-format pg_dump of the database to w (which bounds
// it), without owners or privileges, so that it restores as the project's
// role. A failure leaves w incomplete: the caller throws it away.
func Dump(ctx context.Context, c Conn, w io.Writer) error {
	if err := c.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, DumpTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "pg_dump", append([]string{"--format=custom", "--no-owner", "--no-privileges", "--no-password"}, c.args()...)...)
	cmd.Env = c.env()
	errs := &subprocess.Tail{Max: 8 << 10}
	cmd.Stdout, cmd.Stderr = w, errs
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("pg_dump: stopped after %s: %w", DumpTimeout, ctx.Err())
		}
		return fmt.Errorf("pg_dump: %w: %s", err, lastLine(errs.String()))
	}
	return nil
}

// restorePrefix empties the database's public schema first, in the same
// transaction as the restore: tables a later migration made must go too,
// or the migrations the restored state has not applied could not run
// again.
const restorePrefix = "DROP SCHEMA IF EXISTS public CASCADE;\nCREATE SCHEMA public;\n"

// Restore puts a Dump back: pg_restore turns it into SQL, which psql runs
// in one transaction after restorePrefix, stopping at the first error
// (nothing changes then).
func Restore(ctx context.Context, c Conn, dump io.Reader) error {
	if err := c.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, DumpTimeout)
	defer cancel()
	// pg_restore without a database writes the SQL script to stdout.
	conv := exec.CommandContext(ctx, "pg_restore", "--no-owner", "--no-privileges", "--file=-")
	conv.Env = c.env()
	conv.Stdin = dump
	convErr := &subprocess.Tail{Max: 8 << 10}
	conv.Stderr = convErr
	sql, err := conv.StdoutPipe()
	if err != nil {
		return fmt.Errorf("pg_restore: %w", err)
	}
	conv.WaitDelay = 5 * time.Second
	if err := conv.Start(); err != nil {
		return fmt.Errorf("pg_restore: %w", err)
	}
	// psql commits at the end of its input unless a statement failed: a
	// pg_restore that fails midway must not end the script at a statement
	// boundary, so its outcome is the script's last statement.
	var once sync.Once
	var convWait error
	waitConv := func() error {
		once.Do(func() { convWait = conv.Wait() })
		return convWait
	}
	guard := &lazyReader{make: func() io.Reader {
		if waitConv() != nil {
			return strings.NewReader("\nSELECT 'pg_restore failed' :: integer;\n")
		}
		return strings.NewReader("")
	}}
	run := exec.CommandContext(ctx, "psql", append([]string{"--no-psqlrc", "--single-transaction", "--set=ON_ERROR_STOP=1", "--quiet", "--no-password"}, c.args()...)...)
	run.Env = c.env()
	run.Stdin = io.MultiReader(strings.NewReader(restorePrefix), sql, guard)
	runOut := &subprocess.Tail{Max: 8 << 10}
	run.Stdout, run.Stderr = runOut, runOut
	run.WaitDelay = 5 * time.Second
	runErr := run.Run()
	// Whatever psql did not read: pg_restore gets EPIPE rather than
	// blocking.
	sql.Close()
	convErrv := waitConv()
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("restore: stopped after %s: %w", DumpTimeout, ctx.Err())
	case convErrv != nil:
		return fmt.Errorf("pg_restore: %w: %s", convErrv, lastLine(convErr.String()))
	case runErr != nil:
		return fmt.Errorf("psql: %w: %s", runErr, lastLine(runOut.String()))
	}
	return nil
}

// lazyReader reads what make returns, called at the first Read.
type lazyReader struct {
	make func() io.Reader
	r    io.Reader
}

func (l *lazyReader) Read(p []byte) (int, error) {
	if l.r == nil {
		l.r = l.make()
	}
	return l.r.Read(p)
}

// lastLine is the last non-empty line of a tool's error output.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
