package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// strayFiles are the files behind the descriptors the harness leaves open
// (not close-on-exec) in opus-privd, as fds 3 and 4. Two, because privd
// gives manage.py its progress file as fd 3, which would hide a leaked
// fd 3 there.
func strayFiles() []string {
	return []string{filepath.Join(root, "privd-stray-fd-3"), filepath.Join(root, "privd-stray-fd-4")}
}

// openStrayFiles opens the stray files for exec.Cmd.ExtraFiles.
func openStrayFiles() ([]*os.File, error) {
	var fs []*os.File
	for _, p := range strayFiles() {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			for _, o := range fs {
				o.Close()
			}
			return nil, err
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// fdListing is what the fd-listing app's ready() writes: the process's
// command line and, per descriptor, where it points.
type fdListing struct {
	Argv []string          `json:"argv"`
	FDs  map[string]string `json:"fds"`
}

// TestNoInheritedFDs: opus-privd was started with two stray descriptors
// (see startPrivd); nothing it execs — manage.py as the project user, and
// Apache, whose mod_wsgi daemon runs the tenant's code — has them. The
// tenant's ready() lists /proc/self/fd in each. manage.py has nothing
// beyond 0, 1, 2 but the progress file privd hands it on purpose.
func TestNoInheritedFDs(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	app := hostileApp(t, "fdlist", `
    import json
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink("/proc/self/fd/" + fd)
        except OSError as e:
            fds[fd] = "unreadable: " + str(e)
    out = PROJECT_ROOT / "data" / ("fds-%d.json" % os.getpid())
    out.write_text(json.dumps({"argv": sys.argv, "fds": fds}))
`)
	h.mustCtl(t, 0, "create", name, "--app", app)
	// The mod_wsgi daemon imports the app at its first request.
	mustGet(t, webClient(), h.url(name, "http", "/fdlist/"), "hostile fdlist")

	files, err := filepath.Glob(filepath.Join(h.cfg.BaseDir, "projects", name, "data", "fds-*.json"))
	if err != nil {
		t.Fatal(err)
	}
	stray := strayFiles()
	var manage, daemon int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var l fdListing
		if err := json.Unmarshal(b, &l); err != nil {
			t.Fatalf("%s: %v: %q", f, err, b)
		}
		isManage := len(l.Argv) > 0 && strings.HasSuffix(l.Argv[0], "manage.py")
		if isManage {
			manage++
		} else {
			daemon++
		}
		for fd, target := range l.FDs {
			for _, s := range stray {
				if target == s {
					t.Errorf("%v has privd's inherited descriptor as fd %s (%s)", l.Argv, fd, target)
				}
			}
			n, err := strconv.Atoi(fd)
			if err != nil {
				t.Errorf("%v lists fd %q", l.Argv, fd)
				continue
			}
			// In manage.py: 0-2, the progress file (fd 3), and the
			// directory the listing itself read (closed by the time
			// of readlink, or still pointing at /proc).
			if isManage && n > 2 && !(n == 3 && strings.Contains(target, "opus-manage-status-")) &&
				!strings.HasPrefix(target, "unreadable:") && !strings.HasPrefix(target, "/proc/") {
				t.Errorf("manage.py (%v) has fd %d → %s, which privd did not mean to give it", l.Argv, n, target)
			}
		}
		t.Logf("%v: %v", l.Argv, l.FDs)
	}
	if manage == 0 || daemon == 0 {
		t.Fatalf("listings from %d manage.py runs and %d daemons (%v); want both", manage, daemon, files)
	}
	h.mustCtl(t, 0, "destroy", name, "--yes")
}

// secondRefused runs second, a daemon started by mistake beside first on
// the same socket, and checks that it exits 1 by itself saying
// "another NAME is already serving SOCKET", and that it disturbed
// nothing: the socket is the same inode, first still runs.
func secondRefused(t *testing.T, daemon string, first, second *exec.Cmd, sock string) {
	t.Helper()
	var before syscall.Stat_t
	if err := syscall.Stat(sock, &before); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	second.Stdout, second.Stderr = &out, &out
	second.WaitDelay = 5 * time.Second
	err := second.Run()
	t.Logf("second %s said:\n%s", daemon, out.String())
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("second %s: %v, want it to exit 1 by itself", daemon, err)
	}
	if !strings.Contains(out.String(), "another "+daemon+" is already serving "+sock) {
		t.Errorf("second %s does not say why it stopped", daemon)
	}
	var after syscall.Stat_t
	if err := syscall.Stat(sock, &after); err != nil || after.Ino != before.Ino || after.Dev != before.Dev {
		t.Errorf("the socket was replaced: inode %d → %d (%v)", before.Ino, after.Ino, err)
	}
	if err := first.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the first %s is gone: %v", daemon, err)
	}
}

// TestSecondPrivdRefused: an opus-privd started by mistake beside the
// running one (same configuration, so the same socket) exits 1 at once
// saying so, and disturbs nothing: the socket is still the running one's,
// which still answers a new connection, and no account changed.
func TestSecondPrivdRefused(t *testing.T) {
	h := needHost(t)
	sock := h.cfg.PrivdSocket()
	accounts := hostState(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	secondRefused(t, "opus-privd", h.privd, exec.CommandContext(ctx, filepath.Join(h.bin, "opus-privd"), "--config", h.conf), sock)
	// A new connection to the socket path reaches a serving privd.
	name := h.newProject(t)
	if ans := asUID(t, h.opusUID, h.opusGID, privdCall{Socket: sock, Method: "RemoveTree", Project: name}); ans.Code != "OK" {
		t.Errorf("privd call after the refused start: %s %s %s", ans.Code, ans.Message, ans.DialError)
	}
	if hostState(t) != accounts {
		t.Errorf("users or groups changed")
	}
}

// TestSecondOpusdRefused: the same for opusd. One with the same
// configuration is stopped by the state store's lock; this one has its
// own state directory and only the socket in common, which it must not
// take: it exits 1 saying so, and the running opusd keeps the socket and
// answers on a new connection.
func TestSecondOpusdRefused(t *testing.T) {
	h := needHost(t)
	state := filepath.Join(root, "second-opusd-"+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(state, 0o750); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	if err := os.Chown(state, int(h.opusUID), int(h.opusGID)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, filepath.Join(h.bin, "opusd"), "--config", h.conf, "--state-dir", state)
	second.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: h.opusUID, Gid: h.opusGID, Groups: []uint32{}}}
	secondRefused(t, "opusd", h.opusd, second, h.cfg.OpusdSocket())
	// opusctl dials anew: it must reach the running opusd.
	h.mustCtl(t, 0, "ls")
}

// terminalSafe says what in out a terminal would act on, other than line
// breaks ("" when nothing).
func terminalSafe(out string) string {
	if !utf8.ValidString(out) {
		return "bytes that are not UTF-8"
	}
	for _, r := range out {
		if r != '\n' && !strconv.IsGraphic(r) {
			return fmt.Sprintf("a raw %U", r)
		}
	}
	return ""
}

// TestOutputEscapesTenantText: what a tenant controls reaches an admin's
// terminal escaped. An upload's origin (the directory path opusctl sends,
// here with an OSC title sequence and colours in it) in show and apps ls;
// in logs, what the app's code writes to its stderr in its mod_wsgi
// daemon, through sys.stderr and straight to fd 2: escapes, a carriage
// return and erase-line followed by a forged Apache-style line, bidi
// overrides, a C1 control, bytes that are not UTF-8; and a failing app's
// message in the error opusctl prints, ops and show.
func TestOutputEscapesTenantText(t *testing.T) {
	h := needHost(t)
	owner := h.otherID
	name := h.newProject(t)
	const forged = "[Tue Jan 01 00:00:00 2030] [core:crit] [pid 1] AH00000: FORGED"
	app := hostileApp(t, "noisy", `
    msg = "\x1b]0;pwned\x07\x1b[31m\x1b[2K\r`+forged+`-STDERR \u202eevil\u2066 \u009b2J\n"
    sys.stderr.write(msg)
    sys.stderr.flush()
    os.write(2, b"\x1b[2K\r`+forged+`-FD\n")
    os.write(2, b"\xff\xfe `+forged+`-BYTES\n")
`)
	// The origin is the absolute directory path opusctl uploads from.
	escDir := filepath.Join(root, "esc-\x1b]0;pwned\x07\x1b[31m-"+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(escDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(escDir) })
	if err := os.CopyFS(filepath.Join(escDir, "noisy"), os.DirFS(app)); err != nil {
		t.Fatal(err)
	}
	// Readable by the owner, who packs it with their own rights.
	if err := filepath.Walk(escDir, func(p string, fi os.FileInfo, err error) error {
		mode := os.FileMode(0o644)
		if fi != nil && fi.IsDir() {
			mode = 0o755
		}
		if err == nil {
			err = os.Chmod(p, mode)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h.mustCtl(t, owner, "create", name, "--app", filepath.Join(escDir, "noisy"))
	// The daemon imports the app (and so writes) at its first request.
	mustGet(t, webClient(), h.url(name, "http", "/noisy/"), "hostile noisy")

	// opusd records the origin as printable text (excerpt.Line: each
	// control character a "?"), so what opusctl escapes never reaches it.
	wantOrigin := `esc-?]0;pwned??[31m-`
	for _, args := range [][]string{{"show", name}, {"apps", "ls", name}} {
		out := h.mustCtl(t, 0, args...)
		if bad := terminalSafe(out); bad != "" {
			t.Errorf("opusctl %v prints %s:\n%q", args, bad, out)
		}
		if !strings.Contains(out, wantOrigin) {
			t.Errorf("opusctl %v does not show the origin made printable (%s):\n%s", args, wantOrigin, out)
		}
	}
	logs := h.mustCtl(t, 0, "logs", name)
	if bad := terminalSafe(logs); bad != "" {
		t.Errorf("opusctl logs prints %s:\n%q", bad, logs)
	}
	// Through sys.stderr, mod_wsgi hands each line to Apache, which
	// escapes it itself (\x1b, \r as text); a write to fd 2 lands raw in
	// the log, and opusctl escapes it. Either way the same text shows.
	for _, want := range []string{
		`\x1b[2K\r` + forged + `-STDERR`,
		`\x1b[2K\r` + forged + `-FD`,
		forged + `-BYTES`,
	} {
		found := false
		for _, l := range strings.Split(logs, "\n") {
			// Visibly escaped: the forged text sits after the escapes on
			// a line of its own; it does not start one.
			if strings.Contains(l, want) && !strings.HasPrefix(l, forged) {
				found = true
			}
		}
		if !found {
			t.Errorf("opusctl logs does not show %q escaped:\n%s", want, logs)
		}
	}

	// A failing app's message: the error opusctl prints, ops, show.
	failing := hostileApp(t, "failing", `
    raise RuntimeError("\x1b]0;pwned\x07\x1b[2K\r`+forged+`-ERROR \u202eevil")
`)
	r := h.ctl(t, 0, "", "apps", "add", name, failing)
	if r.code == 0 {
		t.Fatalf("adding an app that raises in ready() succeeded")
	}
	if bad := terminalSafe(r.out + r.err); bad != "" || !strings.Contains(r.err, `\x1b[2K\r`+forged+`-ERROR`) {
		t.Errorf("opusctl apps add (failing) prints %s, or not the error escaped:\n%q", bad, r.out+r.err)
	}
	for _, args := range [][]string{{"ops", name}, {"show", name}} {
		out := h.mustCtl(t, 0, args...)
		if bad := terminalSafe(out); bad != "" {
			t.Errorf("opusctl %v prints %s:\n%q", args, bad, out)
		}
	}
	h.mustCtl(t, 0, "destroy", name, "--yes")
}
