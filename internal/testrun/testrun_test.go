package testrun

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/names"
)

// The test binary doubles as a run of its own in a child process
// (helperEnv names what it does), so that a run can really die: its lock
// is freed by the kernel when the child exits without End.
const (
	helperEnv  = "OPUS_TESTRUN_HELPER"
	helperKind = "OPUS_TESTRUN_HELPER_KIND"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	os.Exit(Main(m))
}

// made is what a helper run made and reports to the test.
type made struct {
	ID, Dir              string
	User, Group, Project string // a written-down user and group; a marked project user, not written down
	HostProject          string // a marked project user of the run's second host, not written down
	Path                 string // a written-down path outside the run's directory
	Pids                 []int  // a sleep as User, a sleep naming Dir as root
}

// helperMain starts a run, makes one of everything (made), reports it on
// stdout, waits for stdin to close and exits without End: a dead run. In
// "live" mode it ends the run properly instead.
func helperMain() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 2 }
	kind := os.Getenv(helperKind)
	// What it notes of kind goes at End (the live run) or by the test's
	// cleaner (a dead run).
	r, err := StartWith(Cleaner{Kind: kind, Clean: func(string, []string) error { return nil }})
	if err != nil {
		return fail(err)
	}
	m := made{ID: r.ID, Dir: r.Dir, User: r.Account("u"), Group: r.Account("g"), Project: r.UserPrefix() + "proj",
		HostProject: r.HostUserPrefix(1) + "proj", Path: "/tmp/opus-testrun-" + r.ID + "-left"}
	if err := r.Note(kind, "w1"); err != nil {
		return fail(err)
	}
	if err := r.AddUser(m.User); err != nil {
		return fail(err)
	}
	if err := r.AddGroup(m.Group); err != nil {
		return fail(err)
	}
	for _, u := range []string{m.Project, m.HostProject} {
		if err := runTool("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
			"--comment", names.Marker("proj"), "--user-group", u); err != nil {
			return fail(err)
		}
	}
	if err := r.NotePath(m.Path); err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(filepath.Join(m.Path, "sub"), 0o755); err != nil {
		return fail(err)
	}
	if os.Getenv(helperEnv) == "dead" {
		pids, err := startSleeps(r.Dir, m.User)
		if err != nil {
			return fail(err)
		}
		m.Pids = pids
	}
	if err := json.NewEncoder(os.Stdout).Encode(m); err != nil {
		return fail(err)
	}
	io.Copy(io.Discard, os.Stdin)
	if os.Getenv(helperEnv) == "live" {
		r.End()
	}
	return 0
}

// startSleeps starts, in their own sessions so that they outlive their
// parent, `sleep` as user and a copy of sleep in dir as root.
func startSleeps(dir, userName string) ([]int, error) {
	u, err := user.Lookup(userName)
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	bin, err := exec.LookPath("sleep")
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	copied := filepath.Join(dir, "sleep")
	if err := os.WriteFile(copied, data, 0o755); err != nil {
		return nil, err
	}
	asUser := exec.Command(bin, "600")
	asUser.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	asRoot := exec.Command(copied, "600")
	asRoot.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var pids []int
	for _, c := range []*exec.Cmd{asUser, asRoot} {
		if err := c.Start(); err != nil {
			return nil, err
		}
		pids = append(pids, c.Process.Pid)
	}
	return pids, nil
}

// child is a helper run in its own process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	made  made
}

// startChild starts a helper run (mode "dead" or "live") that notes kind,
// and waits until it has made everything.
func startChild(t *testing.T, mode, kind string) *child {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperKind+"="+kind)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		cmd.Wait()
		t.Fatalf("%s run: %v\n%s", mode, err, stderr.String())
	}
	if err := json.Unmarshal(line, &c.made); err != nil {
		t.Fatalf("%s run said %q: %v", mode, line, err)
	}
	return c
}

// exit closes the child's stdin and waits for it to exit.
func (c *child) exit(t *testing.T) {
	t.Helper()
	c.stdin.Close()
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("helper run %s: %v", c.made.ID, err)
	}
}

// running reports whether pid runs (and is not a zombie nobody reaped).
func running(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(st, ')')
	return i < 0 || i+2 >= len(st) || st[i+2] != 'Z'
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// state is what of m is on the host, for comparisons.
func state(m made) string {
	var b strings.Builder
	for _, u := range []string{m.User, m.Project, m.HostProject} {
		fmt.Fprintf(&b, "user %s: %v\n", u, passwdEntry(u) != nil)
	}
	for _, g := range []string{m.Group, m.User, m.Project, m.HostProject} {
		fmt.Fprintf(&b, "group %s: %v\n", g, groupExists(g))
	}
	fmt.Fprintf(&b, "path: %v\ndir: %v\n", exists(m.Path), exists(m.Dir))
	for _, p := range m.Pids {
		fmt.Fprintf(&b, "pid %d: %v\n", p, running(p))
	}
	return b.String()
}

// all is the state of m when everything is there.
func all(m made) string {
	var b strings.Builder
	for _, u := range []string{m.User, m.Project, m.HostProject} {
		fmt.Fprintf(&b, "user %s: true\n", u)
	}
	for _, g := range []string{m.Group, m.User, m.Project, m.HostProject} {
		fmt.Fprintf(&b, "group %s: true\n", g)
	}
	fmt.Fprintf(&b, "path: true\ndir: true\n")
	for _, p := range m.Pids {
		fmt.Fprintf(&b, "pid %d: true\n", p)
	}
	return b.String()
}

// none is the state of m when everything is gone.
func none(m made) string {
	return strings.ReplaceAll(all(m), ": true\n", ": false\n")
}

// waitState polls until m's state is want (processes take a moment to go).
func waitState(t *testing.T, m made, want string) {
	t.Helper()
	got := state(m)
	for deadline := time.Now().Add(10 * time.Second); got != want && time.Now().Before(deadline); got = state(m) {
		time.Sleep(50 * time.Millisecond)
	}
	if got != want {
		t.Errorf("run %s:\n%swant\n%s", m.ID, got, want)
	}
}

// TestEndRemovesWhatTheRunMade: a run's written-down user, group and path,
// its marked project user (not written down), a process running as its
// user and one naming its directory are all gone after End, and so is its
// directory.
func TestEndRemovesWhatTheRunMade(t *testing.T) {
	Need(t, "creates users and groups and runs processes as them")
	r, err := StartWith()
	if err != nil {
		t.Fatal(err)
	}
	m := made{ID: r.ID, Dir: r.Dir, User: r.Account("u"), Group: r.Account("g"), Project: r.UserPrefix() + "proj",
		HostProject: r.HostUserPrefix(1) + "proj", Path: "/tmp/opus-testrun-" + r.ID + "-left"}
	ended := false
	t.Cleanup(func() {
		if !ended {
			r.End()
		}
	})
	if err := r.AddUser(m.User); err != nil {
		t.Fatal(err)
	}
	if err := r.AddGroup(m.Group); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{m.Project, m.HostProject} {
		if err := runTool("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
			"--comment", names.Marker("proj"), "--user-group", u); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.NotePath(m.Path); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(m.Path, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The sleeps are this process's children: Wait reaps them.
	m.Pids, err = startSleeps(r.Dir, m.User)
	if err != nil {
		t.Fatal(err)
	}
	var reaped []chan syscall.WaitStatus
	for _, pid := range m.Pids {
		ch := make(chan syscall.WaitStatus, 1)
		reaped = append(reaped, ch)
		go func() {
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, 0, nil)
			ch <- ws
		}()
	}
	if got := state(m); got != all(m) {
		t.Fatalf("before End:\n%swant\n%s", got, all(m))
	}
	if us := r.Users(); !slices.Contains(us, m.User) || !slices.Contains(us, m.Project) || !slices.Contains(us, m.HostProject) || len(us) != 3 {
		t.Errorf("Users() = %v, want %s, %s and %s", us, m.User, m.Project, m.HostProject)
	}

	r.End()
	ended = true
	for i, ch := range reaped {
		select {
		case ws := <-ch:
			if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Errorf("sleep %d ended with %v, want killed", m.Pids[i], ws)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("sleep %d still runs after End", m.Pids[i])
		}
	}
	waitState(t, m, none(m))
}

// TestDeadRunsAreCleanedPrecisely: runs that died (their processes
// exited without End) are cleaned by the next start, which hands each
// one's notes to their kind's cleaner and removes exactly what it made; a live run (its
// lock held) is untouched even when there is a cleaner for what it noted;
// a forged record naming an account or a path without the dead run's
// marker removes neither; a run that noted a kind the starting run has no
// cleaner for is left alone, and kept while its cleaner fails.
func TestDeadRunsAreCleanedPrecisely(t *testing.T) {
	own := Need(t, "creates users and groups and runs processes as them")
	// Kinds only this test has cleaners for, so that no other test binary
	// on the host cleans these runs in the meantime.
	kindA, kindB, kindLive := "a-"+own.ID, "b-"+own.ID, "l-"+own.ID
	live := startChild(t, "live", kindLive)
	a := startChild(t, "dead", kindA)
	b := startChild(t, "dead", kindB)
	for _, c := range []*child{live, a, b} {
		if got := state(c.made); got != all(c.made) {
			t.Fatalf("run %s made:\n%swant\n%s", c.made.ID, got, all(c.made))
		}
	}

	// A forged record: run a's lists name one of this run's users and
	// paths, which do not carry a's marker.
	victim := own.Account("v")
	if err := own.AddUser(victim); err != nil {
		t.Fatal(err)
	}
	victimPath := "/tmp/opus-testrun-" + own.ID + "-victim"
	if err := own.NotePath(victimPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(victimPath, 0o755); err != nil {
		t.Fatal(err)
	}
	appendLine(t, filepath.Join(a.made.Dir, accountsFile), victim)
	appendLine(t, filepath.Join(a.made.Dir, pathsFile), victimPath)

	a.exit(t)
	b.exit(t)
	// Dead, but their kinds have no cleaner here: nothing happens.
	cleanDead(nil)
	for _, c := range []*child{live, a, b} {
		waitState(t, c.made, all(c.made))
	}

	// The next start with a cleaner for a's kind (and the live run's).
	seen := map[string][]string{}
	record := func(id string, values []string) error { seen[id] = values; return nil }
	next, err := StartWith(Cleaner{Kind: kindA, Clean: record}, Cleaner{Kind: kindLive, Clean: record})
	if err != nil {
		t.Fatal(err)
	}
	next.End()
	if !slices.Equal(seen[a.made.ID], []string{"w1"}) || len(seen[live.made.ID]) != 0 {
		t.Errorf("cleaners saw %v; want the dead run's note w1 and nothing of the live run", seen)
	}
	waitState(t, a.made, none(a.made))
	waitState(t, b.made, all(b.made))
	waitState(t, live.made, all(live.made))
	if passwdEntry(victim) == nil || !exists(victimPath) {
		t.Errorf("a forged record removed %s (user there: %v) or %s (there: %v)", victim, passwdEntry(victim) != nil, victimPath, exists(victimPath))
	}

	// b's cleaner fails: its record stays for a later run; then it works.
	CleanDeadWith(Cleaner{Kind: kindB, Clean: func(string, []string) error { return errors.New("not now") }})
	if !exists(filepath.Join(b.made.Dir, notesFile)) {
		t.Errorf("the record of run %s went although its cleaner failed", b.made.ID)
	}
	CleanDeadWith(Cleaner{Kind: kindB, Clean: record})
	if !slices.Equal(seen[b.made.ID], []string{"w1"}) {
		t.Errorf("b's cleaner saw %v, want [w1]", seen[b.made.ID])
	}
	waitState(t, b.made, none(b.made))

	// The live run ends itself.
	live.exit(t)
	waitState(t, live.made, none(live.made))
}

func appendLine(t *testing.T, path, line string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, line); err != nil {
		t.Fatal(err)
	}
}

// TestCleanForgetsOnlyWhatWorked: Run.Clean hands the run's notes of one
// kind to its cleaner and forgets them once that worked, keeping the
// others; a failing cleaner keeps them.
func TestCleanForgetsOnlyWhatWorked(t *testing.T) {
	Need(t, "starts a run")
	fail := true
	var got []string
	r, err := StartWith(
		Cleaner{Kind: "x", Clean: func(_ string, v []string) error {
			got = v
			if fail {
				return errors.New("not now")
			}
			return nil
		}},
		Cleaner{Kind: "y", Clean: func(string, []string) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer r.End()
	for _, n := range [][2]string{{"x", "1"}, {"y", "2"}, {"x", "3"}} {
		if err := r.Note(n[0], n[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range [][2]string{{"", "v"}, {"X", "v"}, {"x", "two words"}, {"x", ""}, {"x", "a\nb"}} {
		if err := r.Note(bad[0], bad[1]); err == nil {
			t.Errorf("Note(%q, %q) accepted", bad[0], bad[1])
		}
	}
	if err := r.Clean("x"); err == nil || !slices.Equal(got, []string{"1", "3"}) {
		t.Errorf("failing Clean = %v, cleaner saw %v", err, got)
	}
	if n := notes(r.Dir); len(n["x"]) != 2 || len(n["y"]) != 1 {
		t.Errorf("after a failed Clean, notes = %v", n)
	}
	fail = false
	if err := r.Clean("x"); err != nil {
		t.Fatal(err)
	}
	if n := notes(r.Dir); len(n["x"]) != 0 || !slices.Equal(n["y"], []string{"2"}) {
		t.Errorf("after Clean(x), notes = %v, want only y 2", n)
	}
	if err := r.Clean("z"); err == nil {
		t.Error("Clean of a kind without a cleaner succeeded")
	}
}

// TestTestSupportIsNotLinked: no package of the module but tests imports
// the test support packages (testrun, pgtest, servicetest, ...), so no
// daemon or client carries them.
func TestTestSupportIsNotLinked(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go tool: ", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Without -test, go list reports the imports of the packages' non-test
	// files only.
	cmd := exec.CommandContext(ctx, goBin, "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "github.com/opus-hosting/opus/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, stderr.String())
	}
	const mod = "github.com/opus-hosting/opus"
	support := []string{mod + "/internal/testrun", mod + "/internal/pgtest", mod + "/internal/logtest", mod + "/internal/cert/certtest", mod + "/internal/gitsrc/gitsrctest", mod + "/internal/names/namestest", mod + "/unprivd/service/servicetest", mod + "/internal/daemon/notifytest", mod + "/internal/pack/packtest"}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || slices.Contains(support, f[0]) {
			continue
		}
		seen++
		for _, imp := range f[1:] {
			if slices.Contains(support, imp) {
				t.Errorf("%s imports %s outside its tests", f[0], imp)
			}
		}
	}
	if seen < 20 {
		t.Errorf("go list reported only %d packages; the fence checks nothing", seen)
	}
}

// TestHostRanges: each host of a run has a user prefix config accepts,
// which no other host's prefix starts, and a uid range config accepts,
// apart from every other host's, every run's UIDs and AccountIDs.
func TestHostRanges(t *testing.T) {
	r := &Run{ID: "a0b1c"}
	for n := range MaxHosts {
		p, ids := r.HostUserPrefix(n), r.HostUIDs(n)
		c := config.Default()
		c.UserPrefix, c.ProjectUIDs = p, ids
		if err := c.Validate(); err != nil {
			t.Errorf("host %d: %v", n, err)
		}
		if got, ok := hostPrefix(r.ID, p+"blog"); !ok || got != p {
			t.Errorf("host %d: prefix of %sblog = %q, %v", n, p, got, ok)
		}
		if ids.Last-ids.First != 9999 || ids.Last >= 2000000 && ids.First < 2000000 {
			t.Errorf("host %d: %s", n, ids)
		}
		// Every run's UIDs lie in 400000-1399999, AccountIDs in
		// 1500000-1599999.
		if n > 0 && ids.First < 2000000 {
			t.Errorf("host %d: %s meets the runs' UIDs or AccountIDs", n, ids)
		}
		for m := range n {
			q, other := r.HostUserPrefix(m), r.HostUIDs(m)
			if strings.HasPrefix(p, q) || strings.HasPrefix(q, p) || ids.Contains(other.First) || other.Contains(ids.First) {
				t.Errorf("hosts %d (%s %s) and %d (%s %s) meet", n, p, ids, m, q, other)
			}
		}
	}
	for _, u := range []string{"tzzzzz-blog", "ta0b1cx-blog", "ta0b1c10-blog", "ta0b1c0-blog", "ta0b1c"} {
		if p, ok := hostPrefix(r.ID, u); ok {
			t.Errorf("hostPrefix(%q) = %q: not a host of run %s", u, p, r.ID)
		}
	}
}
