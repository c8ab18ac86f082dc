// Package testrun gives a test binary that changes the host (users, groups,
// files outside its temporary directories, processes) a marker unique to
// its run, so that it creates, judges and deletes only what it made: a real
// Opus, `make demo`'s stack or another package's tests may be running on
// the same host at the same time.
//
// A run is a directory under Root named by its ID and a lock on it held for
// the life of the test binary. Everything the run puts on the host is
// either under that directory, or named by the run (user and group names
// start with "t"+ID) and written down in the directory before it is made.
// A run that was killed leaves its lock free: the next Start of any run
// removes exactly what that run wrote down, kills only processes running
// as its users or naming its directory, and nothing else.
//
// What only its maker knows how to remove (a PostgreSQL database, say) a
// run writes down with Note under a kind, for the Cleaner of that kind to
// remove at End; a dead run is cleaned only by a Start that has a Cleaner
// for every kind it noted, and a run keeps its record while one fails, so
// nothing is orphaned.
//
// A package whose tests change the host calls Main from its TestMain and
// Need from each such test: Need skips under -short (`make unit` starts
// nothing and changes no account) and when not root.
//
// Like net/http/httptest, it is support code for tests only.
package testrun

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/names"
)

// Root holds one directory per run.
const Root = "/tmp/opus-test-runs"

// record files in a run's directory.
const (
	lockFile     = "lock"
	accountsFile = "accounts" // one user or group name per line, written before it is made
	pathsFile    = "paths"    // paths outside the run directory the run made, likewise
	notesFile    = "notes"    // "KIND VALUE" lines for a Cleaner, likewise
)

// Cleaner removes what a run noted under Kind (see Note) and only it can
// find, at the run's End or, for a dead run, at the next Start. Clean gets
// the run's id and the values it noted; an error keeps the run's record,
// so a later Start tries again.
type Cleaner struct {
	Kind  string
	Clean func(id string, values []string) error
}

// Run is one test binary's claim on the host.
type Run struct {
	// ID is 5 characters, a lowercase letter then lowercase letters and
	// digits.
	ID string
	// Dir is the run's directory: keep everything the run makes under it.
	Dir      string
	lock     *os.File
	cleaners []Cleaner
	// mu orders writes to the run's records: Clean rewrites the notes.
	mu sync.Mutex
}

// StartWith is Start with cleaners for what dead runs, and the new run
// itself at End, noted (see Note).
func StartWith(cleaners ...Cleaner) (*Run, error) { return start(cleaners) }

func start(cleaners []Cleaner) (*Run, error) {
	if err := os.MkdirAll(Root, 0o755); err != nil {
		return nil, fmt.Errorf("testrun: %w", err)
	}
	// The directory tree must be traversable by the unprivileged users
	// tests run daemons as.
	if err := os.Chmod(Root, 0o755); err != nil {
		return nil, fmt.Errorf("testrun: %w", err)
	}
	cleanDead(cleaners)
	for range 10 {
		id, err := newID()
		if err != nil {
			return nil, err
		}
		// The directory appears under its id already locked, so no other
		// run's CleanDead can take it for a dead one.
		tmp, err := os.MkdirTemp(Root, ".new-")
		if err != nil {
			return nil, fmt.Errorf("testrun: %w", err)
		}
		os.Chmod(tmp, 0o755)
		lock, err := os.OpenFile(filepath.Join(tmp, lockFile), os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o600)
		if err == nil {
			err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		}
		if err != nil {
			os.RemoveAll(tmp)
			return nil, fmt.Errorf("testrun: lock %s: %w", tmp, err)
		}
		fmt.Fprintf(lock, "%d\n", os.Getpid())
		dir := filepath.Join(Root, id)
		// Rename onto an existing directory fails unless it is empty; a
		// run's directory never is (it holds its lock file).
		if err := os.Rename(tmp, dir); err != nil {
			lock.Close()
			os.RemoveAll(tmp)
			continue
		}
		return &Run{ID: id, Dir: dir, lock: lock, cleaners: cleaners}, nil
	}
	return nil, errors.New("testrun: no free run id after 10 tries")
}

func newID() (string, error) {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	const alnum = letters + "0123456789"
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("testrun: %w", err)
	}
	id := []byte{letters[int(b[0])%len(letters)]}
	for _, c := range b[1:] {
		id = append(id, alnum[int(c)%len(alnum)])
	}
	return string(id), nil
}

// UserPrefix is the user_prefix of every Opus instance the run starts:
// project users are "t"+ID+"-"+project.
func (r *Run) UserPrefix() string { return "t" + r.ID + "-" }

// MaxHosts is how many Opus hosts one run may start: host 0 (UserPrefix,
// UIDs) and hosts 1 to 9 (HostUserPrefix, HostUIDs).
const MaxHosts = 10

// HostUserPrefix is the user_prefix of the run's Opus host n (0 to
// MaxHosts-1): UserPrefix for host 0, "t"+ID+n+"-" for the others, so two
// hosts of one run never take each other's users for their own, and every
// project user of every host carries the run's marker (Users finds them
// all). It panics on an n out of range: a test's mistake.
func (r *Run) HostUserPrefix(n int) string {
	if n == 0 {
		return r.UserPrefix()
	}
	if n < 0 || n >= MaxHosts {
		panic(fmt.Sprintf("testrun: host %d out of range 0-%d", n, MaxHosts-1))
	}
	return "t" + r.ID + strconv.Itoa(n) + "-"
}

// HostUIDs is the project_uids range of the run's Opus host n: UIDs for
// host 0; for the others 10,000 ids of their own, apart from every run's
// UIDs and AccountIDs (and from each other), below the largest uid a
// backend address can take (config's project_uids).
func (r *Run) HostUIDs(n int) config.UIDRange {
	if n == 0 {
		return r.UIDs()
	}
	if n < 0 || n >= MaxHosts {
		panic(fmt.Sprintf("testrun: host %d out of range 0-%d", n, MaxHosts-1))
	}
	h := fnv.New32a()
	h.Write([]byte(r.ID))
	first := 2000000 + uint32(n-1)*1000000 + (h.Sum32()%100)*10000
	return config.UIDRange{First: first, Last: first + 9999}
}

// Account returns the name of one of the run's own users or groups (the
// daemon user, a client, an admin group): "t"+ID+role. role is a few
// lowercase letters or digits.
func (r *Run) Account(role string) string { return "t" + r.ID + role }

// UIDs is a range of 10,000 project uids for the run's Opus instances
// (the load test alone makes hundreds of projects), in a part of the id
// space no default configuration uses, chosen by the run's id so two runs
// rarely share one (privd refuses an id in use anyway).
func (r *Run) UIDs() config.UIDRange {
	h := fnv.New32a()
	h.Write([]byte(r.ID))
	first := 400000 + (h.Sum32()%100)*10000
	return config.UIDRange{First: first, Last: first + 9999}
}

// AccountIDs is a range of 1,000 ids for the run's own accounts that need
// an id chosen by the test (a uid reused after userdel): apart from UIDs,
// which the run's Opus instances allocate from, and from the system range
// that `useradd --system` (any other test, any other package) draws from,
// so nothing else takes such an id while the test holds it free.
func (r *Run) AccountIDs() config.UIDRange {
	h := fnv.New32a()
	h.Write([]byte(r.ID))
	first := 1500000 + (h.Sum32()%100)*1000
	return config.UIDRange{First: first, Last: first + 999}
}

// FreeID returns an id of r that no user and no group of the host has,
// picked at random so that concurrent runs rarely meet (privd refuses an
// id in use anyway).
func FreeID(r config.UIDRange) (uint32, error) {
	for range 100 {
		id := r.First + uint32(mrand.IntN(int(r.Last-r.First+1)))
		s := strconv.FormatUint(uint64(id), 10)
		if exec.Command("getent", "passwd", s).Run() != nil && exec.Command("getent", "group", s).Run() != nil {
			return id, nil
		}
	}
	return 0, fmt.Errorf("testrun: no free id in %s after 100 tries", r)
}

// MustFreeID is FreeID for a test: it fails t when there is none.
func MustFreeID(t testing.TB, r config.UIDRange) uint32 {
	t.Helper()
	id, err := FreeID(r)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// AddUser writes name down, then creates it as a system user without a
// home and a login shell, with a group of the same name.
func (r *Run) AddUser(name string) error {
	if err := r.note(accountsFile, name); err != nil {
		return err
	}
	return runTool("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name)
}

// AddUserID is AddUser with uid and gid id (see AccountIDs).
func (r *Run) AddUserID(name string, id uint32) error {
	if err := r.note(accountsFile, name); err != nil {
		return err
	}
	n := strconv.FormatUint(uint64(id), 10)
	if err := runTool("groupadd", "--system", "--gid", n, name); err != nil {
		return err
	}
	return runTool("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--uid", n, "--gid", n, name)
}

// AddGroup writes name down, then creates it as a system group.
func (r *Run) AddGroup(name string) error {
	if err := r.note(accountsFile, name); err != nil {
		return err
	}
	return runTool("groupadd", "--system", name)
}

// NoteAccount writes down a user or group name (which must carry the run's
// marker, see Account) that something other than AddUser is about to
// make, so that it is removed with the run.
func (r *Run) NoteAccount(name string) error {
	if !belongs(r.ID, name) {
		return fmt.Errorf("testrun: %q does not carry the run's marker t%s", name, r.ID)
	}
	return r.note(accountsFile, name)
}

// NotePath writes down a path outside Dir that the run is about to make,
// so that it is removed when the run ends, or by the next run if this one
// dies.
func (r *Run) NotePath(path string) error { return r.note(pathsFile, path) }

// Note writes down value (one word) under kind before the run makes what
// it names outside the host's accounts and files, for the Cleaner of kind
// to remove if the run dies. A dead run with notes of a kind the starting
// run has no Cleaner for is left alone until one that has comes along.
func (r *Run) Note(kind, value string) error {
	if !validKind(kind) || value == "" || strings.ContainsAny(value, " \t") {
		return fmt.Errorf("testrun: bad note %q %q", kind, value)
	}
	return r.note(notesFile, kind+" "+value)
}

// Clean removes now, with the run's Cleaner for kind, what the run noted
// under kind, and forgets those notes once that worked: for what must go
// before the end of the run (databases in a cluster a test stops again,
// say).
func (r *Run) Clean(kind string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := slices.IndexFunc(r.cleaners, func(c Cleaner) bool { return c.Kind == kind })
	if i < 0 {
		return fmt.Errorf("testrun: the run has no cleaner for %q", kind)
	}
	if vals := notes(r.Dir)[kind]; len(vals) > 0 {
		if err := r.cleaners[i].Clean(r.ID, vals); err != nil {
			return fmt.Errorf("testrun: clean %s: %w", kind, err)
		}
	}
	// Keep every other line, written back whole before it replaces the
	// record, so a crash here loses no note.
	var keep strings.Builder
	for _, l := range readLines(filepath.Join(r.Dir, notesFile)) {
		if k, _, _ := strings.Cut(l, " "); k != kind {
			keep.WriteString(l + "\n")
		}
	}
	tmp := filepath.Join(r.Dir, notesFile+".new")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("testrun: %w", err)
	}
	_, err = f.WriteString(keep.String())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(r.Dir, notesFile))
	}
	if err != nil {
		return fmt.Errorf("testrun: %w", err)
	}
	return nil
}

func validKind(k string) bool {
	return k != "" && strings.Trim(k, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
}

// notes returns a run's notes by kind.
func notes(dir string) map[string][]string {
	out := map[string][]string{}
	for _, l := range readLines(filepath.Join(dir, notesFile)) {
		if k, v, ok := strings.Cut(l, " "); ok && validKind(k) {
			out[k] = append(out[k], v)
		}
	}
	return out
}

// TempDir makes a directory for t under the run's directory, which the
// run's users and daemons can traverse (0755), and removes it when t ends.
// Start daemons on files there: their command lines then name the run, so
// a dead run's daemons are found and killed.
func (r *Run) TempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp(r.Dir, "t-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatalf("testrun: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (r *Run) note(file, line string) error {
	if strings.ContainsAny(line, "\n\x00") || line == "" {
		return fmt.Errorf("testrun: bad name %q", line)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(r.Dir, file), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("testrun: %w", err)
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, line); err != nil {
		return fmt.Errorf("testrun: %w", err)
	}
	return f.Sync()
}

// Users returns the names of the users on the host that belong to the run:
// the ones it wrote down, and project users under its prefix that carry
// Opus's marker.
func (r *Run) Users() []string { return runUsers(r.ID, r.Dir) }

// End removes everything the run made and releases it. What it noted goes
// by the cleaners it was started with; while that is incomplete, its
// record stays for the next run to retry.
func (r *Run) End() {
	clean(r.ID, r.Dir, !cleanNoted(r.ID, r.Dir, r.cleaners))
	r.lock.Close()
}

// canClean reports whether cleaners cover every kind the run in dir noted.
func canClean(dir string, cleaners []Cleaner) bool {
	for kind := range notes(dir) {
		if !slices.ContainsFunc(cleaners, func(c Cleaner) bool { return c.Kind == kind }) {
			return false
		}
	}
	return true
}

// cleanNoted runs the cleaners on what run id noted in dir, and reports
// whether all of it is gone.
func cleanNoted(id, dir string, cleaners []Cleaner) bool {
	done := canClean(dir, cleaners)
	byKind := notes(dir)
	for _, c := range cleaners {
		if vals, ok := byKind[c.Kind]; ok {
			if err := c.Clean(id, vals); err != nil {
				fmt.Fprintf(os.Stderr, "testrun: run %s: %s: %v (its record is kept for a later run)\n", id, c.Kind, err)
				done = false
			}
		}
	}
	return done
}

// CleanDeadWith is CleanDead with cleaners for what dead runs noted: call
// it again once what they need is up (a PostgreSQL cluster the test has
// just started, say), for the runs Start had to leave.
func CleanDeadWith(cleaners ...Cleaner) { cleanDead(cleaners) }

func cleanDead(cleaners []Cleaner) {
	dead := func(id, dir string) {
		if !canClean(dir, cleaners) {
			// Only a test binary with a cleaner for every kind the run
			// noted can find those things: leave the whole run to it.
			return
		}
		clean(id, dir, !cleanNoted(id, dir, cleaners))
	}
	ents, err := os.ReadDir(Root)
	if err != nil {
		return
	}
	for _, e := range ents {
		dir := filepath.Join(Root, e.Name())
		if !e.IsDir() || !validID(e.Name()) {
			continue
		}
		lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|syscall.O_CLOEXEC, 0)
		if err != nil {
			// No lock file: the run died while starting, before it made
			// anything but its directory.
			if errors.Is(err, os.ErrNotExist) {
				dead(e.Name(), dir)
			}
			continue
		}
		if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			dead(e.Name(), dir)
		}
		lock.Close()
	}
}

func validID(s string) bool {
	if len(s) != 5 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// clean removes run id's processes, users, groups and paths, then its
// directory unless keep is set or something could not be removed.
func clean(id, dir string, keep bool) {
	users := runUsers(id, dir)
	uids := map[string]bool{}
	for _, u := range users {
		if f := passwdEntry(u); f != nil {
			uids[f[2]] = true
		}
	}
	// Processes first: userdel refuses a user that runs something, and a
	// daemon of the run could otherwise recreate what is removed.
	for range 3 {
		if killRun(dir, uids) == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	kept := keep
	for _, u := range users {
		if err := runTool("userdel", u); err != nil && passwdEntry(u) != nil {
			// Still running something (a daemon a system Apache keeps
			// respawning, say): keep the record, so a later run retries.
			kept = true
		}
	}
	for _, g := range readLines(filepath.Join(dir, accountsFile)) {
		if groupExists(g) && belongs(id, g) {
			runTool("groupdel", g)
		}
	}
	for _, u := range users {
		// A project user's private group, if userdel left it.
		if groupExists(u) {
			runTool("groupdel", u)
		}
	}
	for _, p := range readLines(filepath.Join(dir, pathsFile)) {
		if filepath.IsAbs(p) && filepath.Clean(p) == p && strings.Contains(p, id) {
			os.RemoveAll(p)
		}
	}
	if !kept {
		os.RemoveAll(dir)
	}
}

// belongs reports whether an account name carries run id's marker.
func belongs(id, name string) bool { return strings.HasPrefix(name, "t"+id) }

func runUsers(id, dir string) []string {
	var out []string
	seen := map[string]bool{}
	for _, u := range readLines(filepath.Join(dir, accountsFile)) {
		if belongs(id, u) && passwdEntry(u) != nil && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	for _, f := range passwdEntries() {
		prefix, ok := hostPrefix(id, f[0])
		if !ok {
			continue
		}
		if p, ok := names.ProjectOfUser(prefix, f[0]); ok && f[4] == names.Marker(p) && !seen[f[0]] {
			seen[f[0]] = true
			out = append(out, f[0])
		}
	}
	return out
}

// hostPrefix returns the user prefix of one of run id's hosts (see
// HostUserPrefix) that user starts with.
func hostPrefix(id, user string) (string, bool) {
	rest, ok := strings.CutPrefix(user, "t"+id)
	if !ok {
		return "", false
	}
	switch {
	case strings.HasPrefix(rest, "-"):
		return "t" + id + "-", true
	case len(rest) > 1 && rest[0] >= '1' && rest[0] <= '9' && rest[1] == '-':
		return "t" + id + rest[:2], true
	}
	return "", false
}

// killRun SIGKILLs every process running as one of uids or whose command
// line names dir, and returns how many it signalled.
func killRun(dir string, uids map[string]bool) int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		mine := false
		if cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && bytes.Contains(cmd, []byte(dir)) {
			mine = true
		}
		if !mine && len(uids) > 0 {
			if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status")); err == nil {
				for _, line := range strings.Split(string(st), "\n") {
					if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
						mine = uids[f[1]]
						break
					}
				}
			}
		}
		if mine && syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

func readLines(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func passwdEntries() [][]string {
	f, err := os.Open("/etc/passwd")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Split(sc.Text(), ":"); len(fs) == 7 {
			out = append(out, fs)
		}
	}
	return out
}

func passwdEntry(name string) []string {
	for _, f := range passwdEntries() {
		if f[0] == name {
			return f
		}
	}
	return nil
}

func groupExists(name string) bool {
	data, err := os.ReadFile("/etc/group")
	return err == nil && bytes.Contains(append([]byte("\n"), data...), []byte("\n"+name+":"))
}

func runTool(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
