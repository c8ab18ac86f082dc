package e2e

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
)

// Regression tests of holes the attack review of issue 14 found in its
// first fixes (each failed then; see the comments).

// privdElsewhere writes a configuration for a second opus-privd of the
// harness's settings with its own run, base and Apache directories under
// the run's directory (named what), makes the run and base directories
// (0755) and returns the configuration and its path.
func (h *host) privdElsewhere(t *testing.T, what string) (config.Config, string) {
	t.Helper()
	dir := filepath.Join(root, what+"-"+strconv.Itoa(os.Getpid()))
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := h.cfg
	cfg.RunDir = filepath.Join(dir, "run")
	cfg.BaseDir = filepath.Join(dir, "base")
	cfg.ApacheDir = filepath.Join(dir, "apache")
	for _, d := range []string{dir, cfg.RunDir, cfg.BaseDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "opus.conf")
	if err := os.WriteFile(conf, []byte(cfg.Format()), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, conf
}

// TestPrivdLockNotHeldByOthers (from the attack review): privd's lock file
// (RUN_DIR/privd.sock.lock) lies where every local user can reach it (the
// run directory is 0755: opusctl must reach opusd's socket in it), and
// flock(2) needs only a descriptor. When the file was 0644, a local user
// holding a read-only lock on it made every later opus-privd start (a
// restart, an upgrade, every socket activation) exit 1. It is 0600 now: no
// one else can open it, and privd starts again.
func TestPrivdLockNotHeldByOthers(t *testing.T) {
	h := needHost(t)
	// The run directory as systemd's opus-privd.socket makes it: root,
	// DirectoryMode=0755.
	cfg, conf := h.privdElsewhere(t, "lock")
	sock := cfg.PrivdSocket()
	lockPath := sock + ".lock"

	startPrivd := func() (*exec.Cmd, *bytes.Buffer) {
		var out bytes.Buffer
		cmd := exec.Command(filepath.Join(h.bin, "opus-privd"), "--config", conf)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &out
	}
	// The first privd runs, makes its socket and lock file, and stops.
	first, firstOut := startPrivd()
	if err := waitSocket(sock, first); err != nil {
		t.Fatalf("first privd: %v\n%s", err, firstOut)
	}
	_ = first.Process.Signal(syscall.SIGTERM)
	time.Sleep(2 * time.Second)
	var st syscall.Stat_t
	if err := syscall.Stat(lockPath, &st); err != nil {
		t.Fatalf("lock file: %v", err)
	}
	t.Logf("lock file %s: uid %d mode %#o", lockPath, st.Uid, st.Mode&0o7777)

	// A plain local user (not opus, not admin) takes the lock, read-only.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	holder := exec.CommandContext(ctx, "/usr/bin/flock", "--shared", lockPath, "sleep", "90")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: credOf(h.otherID)}
	var holderOut bytes.Buffer
	holder.Stdout, holder.Stderr = &holderOut, &holderOut
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-holder.Process.Pid, syscall.SIGKILL); _ = holder.Wait() })
	held := false
	for i := 0; i < 50 && !held; i++ {
		time.Sleep(100 * time.Millisecond)
		held = exec.Command("/usr/bin/flock", "--exclusive", "--nonblock", lockPath, "true").Run() != nil
	}
	if held {
		t.Errorf("a plain user (uid %d) holds a lock on %s (mode %#o)", h.otherID, lockPath, st.Mode&0o7777)
	}
	if st.Mode&0o077 != 0 {
		t.Errorf("lock file %s has mode %#o; want no access for group and others", lockPath, st.Mode&0o7777)
	}

	// privd is started again (restart, upgrade, socket activation).
	second, secondOut := startPrivd()
	done := make(chan error, 1)
	go func() { done <- second.Wait() }()
	select {
	case err := <-done:
		t.Errorf("opus-privd cannot start after a plain user (uid %d) tried to lock %s: %v\n%s",
			h.otherID, lockPath, err, secondOut)
	case <-time.After(15 * time.Second):
		// Still running: it started despite the user's lock. (Not
		// waitSocket: it would Wait for the process too, and a second
		// Wait beside the goroutine's never returns.)
		if c, err := net.DialTimeout("unix", sock, 5*time.Second); err != nil {
			t.Errorf("second privd does not serve its socket: %v\n%s", err, secondOut)
		} else {
			c.Close()
		}
		_ = second.Process.Signal(syscall.SIGTERM)
		<-done
	}
}

// TestPrivdSocketNotChownedThroughLink (from the attack review): a privd
// started by hand (make demo, a by-hand install, the e2e harness: the run
// directory is root:opus 0775) binds its socket, then gives it its group
// and mode. Done by path (os.Chown, os.Chmod), both followed a link: the
// opus user (a compromised opusd) swapped the fresh socket for a link
// between the bind and the chown, and root gave any file of the host (here
// a root-only file of the test; /etc/shadow on a real host) to group opus,
// mode 0660, within 30 starts. They are set on the socket itself now: the
// target is never touched, however often the race is run.
func TestPrivdSocketNotChownedThroughLink(t *testing.T) {
	h := needHost(t)
	cfg, conf := h.privdElsewhere(t, "sockrace")
	dir := filepath.Dir(conf)
	// As scripts/demo.sh makes /run/opus: install -d -o root -g opus -m 0775.
	if err := os.Chown(cfg.RunDir, 0, int(h.opusGID)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg.RunDir, 0o775); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(dir, "root-only")
	if err := os.WriteFile(victim, []byte("root's secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := cfg.PrivdSocket()

	swapper := exec.Command("/usr/bin/python3", "-c", socketSwapper, sock, victim)
	swapper.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: h.opusUID, Gid: h.opusGID, Groups: []uint32{}}}
	if err := swapper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = swapper.Process.Kill(); _ = swapper.Wait() })

	won, chmodOnly := 0, 0
	var st syscall.Stat_t
	for i := 0; i < 200 && won == 0; i++ {
		os.Remove(sock)
		os.Remove(sock + ".moved")
		privd := exec.Command(filepath.Join(h.bin, "opus-privd"), "--config", conf)
		if err := privd.Start(); err != nil {
			t.Fatal(err)
		}
		// It binds within a moment; give it that, then stop it.
		for j := 0; j < 40; j++ {
			time.Sleep(5 * time.Millisecond)
			if _, err := os.Lstat(sock + ".moved"); err == nil {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		_ = privd.Process.Kill()
		_ = privd.Wait()
		if err := syscall.Stat(victim, &st); err != nil {
			t.Fatal(err)
		}
		switch {
		case st.Gid == h.opusGID:
			won = i + 1
		case st.Mode&0o777 != 0o600:
			// Only the chmod followed the link: put it back, try again.
			chmodOnly++
			_ = os.Chmod(victim, 0o600)
		}
	}
	if chmodOnly > 0 {
		t.Errorf("the chmod followed the opus user's link %d times", chmodOnly)
	}
	t.Logf("%s after the race: uid %d gid %d mode %#o (the chmod alone followed the link %d times before)", victim, st.Uid, st.Gid, st.Mode&0o7777, chmodOnly)
	if won > 0 {
		data, err := readAs(h.opusUID, h.opusGID, victim)
		t.Errorf("on privd start %d, root chowned and chmodded through the opus user's link target: %s is now gid %d (opus) mode %#o; read as the opus user: %q %v",
			won, victim, st.Gid, st.Mode&0o7777, data, err)
	}
}

// socketSwapper is the opus user's side of TestPrivdSocketNotChownedThroughLink:
// it waits for privd's socket to appear and at once moves it aside and puts
// a link to the target in its place, once per socket, until killed.
const socketSwapper = `
import os, stat, sys
p, target = sys.argv[1], sys.argv[2]
while True:
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        continue
    if not stat.S_ISSOCK(st.st_mode):
        continue
    try:
        os.rename(p, p + ".moved")
        os.symlink(target, p)
    except OSError:
        pass
`

// readAs reads path as uid:gid (cat in a child with those credentials).
func readAs(uid, gid uint32, path string) (string, error) {
	cmd := exec.Command("/bin/cat", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestConsoleOwnPasswordStarvesNoOne (from the attack review): the console
// runs at most credential.PasswordHashers (2) argon2id checks at once and
// answers 503 beyond that. A local user signing in with their own correct
// password in a loop, from a few connections, used to keep both slots
// busy, and every other user's correct password was answered 503. Now
// an account has at most one check under way: the other slot stays free.
func TestConsoleOwnPasswordStarvesNoOne(t *testing.T) {
	h := needHost(t)
	nameA, _ := h.passwordUser(t, "ha", "console password of attacker A")
	nameB, _ := h.passwordUser(t, "hb", "console password of victim B")
	h.mustSignIn(t, consoleClient(), nameB, "console password of victim B")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// A fresh client each time: a signed-in one is sent away
				// from the sign-in page.
				c := consoleClient()
				page := consoleDo(t, c, "GET", h.consoleBase()+"/login", nil)
				m := consoleCSRF.FindStringSubmatch(page.body)
				if m == nil {
					continue
				}
				a := consoleDo(t, c, "POST", h.consoleBase()+"/login", url.Values{"csrf": {m[1]}, "user": {nameA}, "password": {"console password of attacker A"}})
				mu.Lock()
				codes[a.code]++
				if a.code != http.StatusSeeOther && codes[a.code] < 3 {
					t.Logf("attacker got %d: %.200s", a.code, a.body)
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(2 * time.Second)
	refused := 0
	const tries = 10
	for i := 0; i < tries; i++ {
		a := h.consoleSignIn(t, consoleClient(), nameB, "console password of victim B")
		t.Logf("victim sign-in %d: %d", i, a.code)
		if a.code == http.StatusServiceUnavailable {
			refused++
		}
		time.Sleep(500 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("attacker's own sign-ins by answer: %v; victim's correct password refused %d of %d times", codes, refused, tries)
	if refused > tries/2 {
		t.Errorf("while uid A signs in with its own correct password in a loop (never limited), B's correct password is answered 503 %d of %d times", refused, tries)
	}
}
