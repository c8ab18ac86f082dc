package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/logtest"
	"github.com/opus-hosting/opus/internal/socklock"
)

// activatedEnv, set in a child of the test binary, makes TestMain listen
// as a socket-activated daemon and print what it got (see
// TestListenActivated).
const activatedEnv = "DAEMON_TEST_ACTIVATED"

func TestMain(m *testing.M) {
	if os.Getenv(activatedEnv) != "" {
		listenActivatedChild()
		return
	}
	os.Exit(m.Run())
}

// listenActivatedChild is the socket-activated daemon: systemd would set
// LISTEN_PID to its pid before exec; the parent cannot know it, so the
// child does.
func listenActivatedChild() {
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	d := &Daemon{Name: "testd", Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	l, lock, err := d.Listen(Socket{Path: os.Getenv(activatedEnv), Mode: 0o600, Group: -1})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(0)
	}
	fmt.Printf("listener %s %s lock=%v\n", l.Addr().Network(), l.Addr().String(), lock != nil)
}

// unixListener listens on a fresh socket in dir.
func unixListener(t *testing.T, dir, name string) *net.UnixListener {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, name), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestListen: with no socket from systemd the daemon binds its own, with
// its mode, after taking the lock; from systemd exactly one Unix socket
// is taken, locked only when asked; everything else is refused, and a
// lock another daemon holds stops this one with a message saying so.
func TestListen(t *testing.T) {
	dir := t.TempDir()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	passed := unixListener(t, dir, "passed.sock")
	held := filepath.Join(dir, "held.sock")
	heldLock, err := socklock.Acquire(held, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer heldLock.Release()
	heldPassed := unixListener(t, dir, "held-passed.sock")
	heldPassedLock, err := socklock.Acquire(heldPassed.Addr().String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer heldPassedLock.Release()

	tests := []struct {
		name      string
		socket    Socket
		activated []net.Listener
		actErr    error
		want      net.Listener // the listener systemd passed that must come back
		own       bool         // a socket of its own at socket.Path
		locked    string       // the path whose lock must be held; "" none
		err       string
	}{
		{"own socket", Socket{Path: filepath.Join(dir, "own.sock"), Mode: 0o640, Group: -1}, nil, nil, nil, true, filepath.Join(dir, "own.sock"), ""},
		{"own socket, lock held", Socket{Path: held, Mode: 0o600, Group: -1}, nil, nil, nil, false, "", "another testd is already serving " + held},
		{"from systemd", Socket{Path: filepath.Join(dir, "unused.sock")}, []net.Listener{passed}, nil, passed, false, "", ""},
		{"from systemd, locked", Socket{Path: filepath.Join(dir, "unused.sock"), LockActivated: true}, []net.Listener{passed}, nil, passed, false, passed.Addr().String(), ""},
		{"from systemd, lock held", Socket{Path: filepath.Join(dir, "unused.sock"), LockActivated: true}, []net.Listener{heldPassed}, nil, nil, false, "", "another testd is already serving " + heldPassed.Addr().String()},
		{"two sockets", Socket{Path: filepath.Join(dir, "two.sock")}, []net.Listener{passed, passed}, nil, nil, false, "", "systemd passed 2 sockets"},
		{"not a listener", Socket{Path: filepath.Join(dir, "nil.sock")}, []net.Listener{nil}, nil, nil, false, "", "not a listening socket"},
		{"TCP", Socket{Path: filepath.Join(dir, "tcp.sock")}, []net.Listener{tcp}, nil, nil, false, "", "systemd passed a tcp socket"},
		{"activation broken", Socket{Path: filepath.Join(dir, "broken.sock")}, nil, errors.New("bad LISTEN_FDS"), nil, false, "", "systemd socket activation: bad LISTEN_FDS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs logtest.Buffer
			d := &Daemon{Name: "testd", Log: slog.New(slog.NewTextHandler(&logs, nil))}
			l, lock, err := d.listen(tc.socket, func() ([]net.Listener, error) { return tc.activated, tc.actErr })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if l != nil || lock != nil {
					t.Errorf("listener %v, lock %v with the error", l, lock)
				}
				if _, err := os.Lstat(tc.socket.Path); err == nil && tc.socket.Path != held {
					t.Errorf("%s made although refused", tc.socket.Path)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer lock.Release()
			if tc.want != nil && l != tc.want {
				t.Errorf("listener %v, want the one systemd passed", l.Addr())
			}
			if tc.own {
				defer l.Close()
				fi, err := os.Lstat(tc.socket.Path)
				if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != tc.socket.Mode {
					t.Errorf("own socket %v, %v; want a socket of mode %v", fi, err, tc.socket.Mode)
				}
				if !strings.Contains(logs.String(), "listening") {
					t.Errorf("log lacks listening:\n%s", logs.String())
				}
			} else if _, err := os.Lstat(tc.socket.Path); err == nil {
				t.Errorf("bound %s although systemd passed a socket", tc.socket.Path)
			}
			if (lock != nil) != (tc.locked != "") {
				t.Fatalf("lock %v, want one on %q", lock, tc.locked)
			}
			if tc.locked != "" {
				if lock.Path() != socklock.Path(tc.locked) {
					t.Errorf("lock on %s, want %s", lock.Path(), socklock.Path(tc.locked))
				}
				if again, err := socklock.Acquire(tc.locked, 0); !errors.Is(err, socklock.ErrHeld) {
					again.Release()
					t.Errorf("lock on %s not held: %v", tc.locked, err)
				}
			}
		})
	}
}

// TestListenActivated passes a socket the way systemd does (fd 3,
// LISTEN_FDS=1, LISTEN_PID) to a child daemon: a Unix socket is what it
// serves, and binds nothing of its own; a TCP socket is refused.
func TestListenActivated(t *testing.T) {
	dir := t.TempDir()
	unixL := unixListener(t, dir, "activated.sock")
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	for _, tc := range []struct {
		name string
		l    interface{ File() (*os.File, error) }
		want string
	}{
		{"unix", unixL, "listener unix " + unixL.Addr().String() + " lock=false"},
		{"tcp", tcp.(*net.TCPListener), "error: systemd passed a tcp socket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := tc.l.File()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			own := filepath.Join(dir, tc.name+"-own.sock")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0])
			cmd.Env = []string{activatedEnv + "=" + own, "LISTEN_FDS=1"}
			cmd.ExtraFiles = []*os.File{f}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, stderr.String())
			}
			if !strings.HasPrefix(string(out), tc.want) {
				t.Errorf("child said %q, want %q\n%s", out, tc.want, stderr.String())
			}
			if _, err := os.Lstat(own); err == nil {
				t.Errorf("the socket-activated child bound %s", own)
			}
		})
	}
}
