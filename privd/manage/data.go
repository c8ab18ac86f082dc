package manage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/limitio"
	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/privd/confine"
)

// DataTimeout bounds one copy of a project's SQLite database, out or in.
const DataTimeout = 5 * time.Minute

// Refusals of a data copy, before anything runs (server maps them).
var (
	// ErrNoDatabase: the project has no SQLite database file.
	ErrNoDatabase = errors.New("the project has no SQLite database file")
	// ErrNotDatabaseFile: what is at the database's path is not a plain
	// file (a link, a FIFO, a device, a directory, a hard-linked file).
	ErrNotDatabaseFile = errors.New("not a plain file")
	// ErrDataTooLarge: the database is larger than the bound.
	ErrDataTooLarge = errors.New("the database is larger than the bound")
	// ErrDatabaseDamaged: the file is not a SQLite database SQLite can
	// read (overwritten, cut short): there is nothing to copy.
	ErrDatabaseDamaged = errors.New("the SQLite database is damaged")
)

// exitTooLarge is the copy programs' exit status for a database past the
// bound (they check the file and the copy themselves too).
const exitTooLarge = 3

// exitDamaged is the dump program's exit status for a file SQLite cannot
// read as a database (ErrDatabaseDamaged); its last error line says why.
const exitDamaged = 5

// dumpProgram copies the database at argv[1] with SQLite's online backup
// (a consistent copy while the app writes) into memory and writes it to
// stdout, refusing more than argv[2] bytes. It runs as the project's user,
// so whatever it opens is the tenant's own; it still refuses a link or a
// non-regular file, as privd's check before it did.
const dumpProgram = `
import os, sqlite3, stat, sys, urllib.parse
path, limit = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
st = os.fstat(fd)
os.close(fd)
if not stat.S_ISREG(st.st_mode):
    sys.exit("opus: %s is not a regular file" % path)
if st.st_size > limit:
    sys.exit(3)
src = sqlite3.connect("file:" + urllib.parse.quote(path) + "?mode=rw", uri=True, timeout=30)
mem = sqlite3.connect(":memory:")
try:
    src.backup(mem)
except sqlite3.DatabaseError as e:
    if isinstance(e, sqlite3.OperationalError):
        raise  # locked, busy, I/O: not the file's content
    print("sqlite3.DatabaseError: %s" % e, file=sys.stderr)
    sys.exit(5)
src.close()
data = mem.serialize()
if len(data) > limit:
    sys.exit(3)
sys.stdout.buffer.write(data)
sys.stdout.flush()
`

// loadProgram reads a SQLite database of at most argv[2] bytes from stdin,
// checks it, and replaces the content of the database at argv[1] with it
// by SQLite's backup, one write transaction. A file there that SQLite
// cannot read as a database (damaged) is emptied first: a restore is
// how it is repaired.
const loadProgram = `
import os, sqlite3, stat, sys
path, limit = sys.argv[1], int(sys.argv[2])
data = sys.stdin.buffer.read(limit + 1)
if len(data) > limit:
    sys.exit(3)
try:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
except FileNotFoundError:
    pass
else:
    st = os.fstat(fd)
    os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        sys.exit("opus: %s is not a regular file" % path)
mem = sqlite3.connect(":memory:")
mem.deserialize(data)
ok = mem.execute("pragma quick_check").fetchone()[0]
if ok != "ok":
    sys.exit("opus: the snapshot is not a sound SQLite database: %s" % ok)
dst = sqlite3.connect(path, timeout=30)
try:
    mem.backup(dst)
except sqlite3.DatabaseError as e:
    if isinstance(e, sqlite3.OperationalError):
        raise  # locked, busy, I/O: not the file's content
    # What is there is not a database SQLite can read (damaged): the
    # snapshot replaces it whole.
    dst.close()
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    st = os.fstat(fd)
    os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        sys.exit("opus: %s is not a regular file" % path)
    dst = sqlite3.connect(path, timeout=30)
    mem.backup(dst)
dst.close()
`

// CheckDatabase looks at the project's SQLite database file without
// opening it: the data directory is reached from base by descriptor,
// never through a link, and the file must be a regular one with one link
// and at most max bytes. A missing file is ErrNoDatabase.
func CheckDatabase(base, project string, max int64) (size int64, err error) {
	if err := names.ValidateProject(project); err != nil {
		return 0, err
	}
	bfd, err := unix.Open(base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open base directory: %w", err)
	}
	defer unix.Close(bfd)
	rel := filepath.Join(filepath.Base(layout.ProjectsDir(base)), project, layout.DataDir)
	dfd, err := unix.Openat2(bfd, rel, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if errors.Is(err, unix.ENOENT) {
		return 0, ErrNoDatabase
	}
	if err != nil {
		return 0, fmt.Errorf("data directory: %w", err)
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	err = unix.Fstatat(dfd, layout.SQLiteFile, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return 0, ErrNoDatabase
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", layout.SQLiteFile, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return 0, fmt.Errorf("data/%s: %w (%s)", layout.SQLiteFile, ErrNotDatabaseFile, fileKind(st.Mode))
	case st.Nlink > 1:
		return 0, fmt.Errorf("data/%s: %w (it has %d hard links)", layout.SQLiteFile, ErrNotDatabaseFile, st.Nlink)
	case st.Size > max:
		return st.Size, fmt.Errorf("data/%s is %d bytes: %w of %d bytes", layout.SQLiteFile, st.Size, ErrDataTooLarge, max)
	}
	return st.Size, nil
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	case unix.S_IFDIR:
		return "a directory"
	}
	return "not a regular file"
}

// DumpSQLite writes a consistent copy of the project's SQLite database to
// w: at most max bytes, made as the project's user (confined, like
// manage.py) with SQLite's online backup. The caller has checked that the
// project's user is Opus's. It returns the bytes written; when it fails,
// what w got is incomplete and must be thrown away.
func (r *Runner) DumpSQLite(ctx context.Context, project string, max int64, w io.Writer) (int64, error) {
	if _, err := CheckDatabase(r.Base, project, max); err != nil {
		return 0, fmt.Errorf("dump data of %s: %w", project, err)
	}
	out := &limitio.Writer{W: w, Max: max, Err: ErrDataTooLarge}
	if err := r.runData(ctx, project, dumpProgram, layout.For(r.Base, project).SQLite(), max, nil, out); err != nil {
		if out.Over {
			err = ErrDataTooLarge
		}
		return out.N, fmt.Errorf("dump data of %s: %w", project, err)
	}
	return out.N, nil
}

// LoadSQLite replaces the content of the project's SQLite database with
// the database read from src (at most max bytes), as the project's user.
// What is at the database's path must be a plain file or nothing.
func (r *Runner) LoadSQLite(ctx context.Context, project string, max int64, src io.Reader) error {
	if _, err := CheckDatabase(r.Base, project, max); err != nil && !errors.Is(err, ErrNoDatabase) && !errors.Is(err, ErrDataTooLarge) {
		// The database it replaces may be larger than the bound: only
		// what comes in is bounded.
		return fmt.Errorf("load data of %s: %w", project, err)
	}
	if err := r.runData(ctx, project, loadProgram, layout.For(r.Base, project).SQLite(), max, src, io.Discard); err != nil {
		return fmt.Errorf("load data of %s: %w", project, err)
	}
	return nil
}

// runData runs one of the copy programs as the project's user, on path.
func (r *Runner) runData(ctx context.Context, project, program, path string, max int64, stdin io.Reader, stdout io.Writer, extra ...string) error {
	cred, err := r.credential(project)
	if err != nil {
		return err
	}
	release, err := r.acquire(ctx)
	if err != nil {
		return fmt.Errorf("waiting for a turn: %w", err)
	}
	defer release()
	ctx, cancel := context.WithTimeout(ctx, DataTimeout)
	defer cancel()
	self := r.Self
	if self == "" {
		self = "/proc/self/exe"
	}
	// -I: no PYTHON* variable, no user site, not the working directory
	// on sys.path: nothing of the tenant's is imported.
	cmd, err := confine.Command(ctx, self, confine.Spec{UID: cred.Uid, GID: cred.Gid, Path: r.Python,
		Args: append([]string{r.Python, "-I", "-c", program, path, strconv.FormatInt(max, 10)}, extra...),
		Env:  []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}, Dir: "/", Keep: []string{r.Base}, Limits: r.Limits})
	if err != nil {
		return err
	}
	stderr := &tail{max: 4 << 10}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("stopped after %s: %w", DataTimeout, ctx.Err())
	case errors.As(err, &exit) && exit.ExitCode() == exitTooLarge:
		return ErrDataTooLarge
	case errors.As(err, &exit) && exit.ExitCode() == exitDamaged && program == dumpProgram:
		return fmt.Errorf("%w: %s", ErrDatabaseDamaged, tailLine(stderr.String()))
	case errors.As(err, &exit) && exit.ExitCode() == exitRefused:
		return fmt.Errorf("%w: %s", ErrMediaRefused, tailLine(stderr.String()))
	case errors.As(err, &exit):
		return fmt.Errorf("%s exited with %d: %s", r.Python, exit.ExitCode(), tailLine(stderr.String()))
	}
	return fmt.Errorf("run %s: %w", r.Python, err)
}

// tailLine is the last line of a program's error output: Python's
// exception line.
func tailLine(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	return s
}
