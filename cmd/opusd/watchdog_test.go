package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// notifySocket is a real unixgram socket standing in for systemd's
// NOTIFY_SOCKET; notes carries each datagram.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// Whoever the daemon runs as may send to it.
	os.Chmod(filepath.Dir(path), 0o755)
	os.Chmod(path, 0o777)
	notes := make(chan string, 256)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(notes)
				return
			}
			notes <- string(buf[:n])
		}
	}()
	return path, notes
}

// count counts the notes equal to want that arrive within d.
func count(notes <-chan string, want string, d time.Duration) int {
	n := 0
	timeout := time.After(d)
	for {
		select {
		case note, ok := <-notes:
			if !ok {
				return n
			}
			for _, l := range strings.Split(note, "\n") {
				if l == want {
					n++
				}
			}
		case <-timeout:
			return n
		}
	}
}

func TestWatchdog(t *testing.T) {
	ok := healthCheck{"ok", func(context.Context) error { return nil }}
	failing := healthCheck{"store", func(context.Context) error { return errors.New("disk gone") }}
	hanging := healthCheck{"api", func(ctx context.Context) error { select {} }}
	tests := []struct {
		name   string
		usec   string // WATCHDOG_USEC; "" leaves it unset
		pid    string // WATCHDOG_PID; "" leaves it unset
		checks []healthCheck
		// min and max pings within 1 s.
		min, max int
		log      string // in the log when set
	}{
		// 200 ms watchdog: a ping at start and every 100 ms.
		{"healthy pings at half the interval", "200000", "", []healthCheck{ok, ok}, 7, 12, "watchdog enabled"},
		{"a failing check stops the pings", "200000", "", []healthCheck{ok, failing}, 0, 0, "disk gone"},
		{"a hanging check stops the pings", "200000", "", []healthCheck{hanging}, 0, 0, "did not finish"},
		{"no watchdog set", "", "", []healthCheck{ok}, 0, 0, ""},
		{"watchdog meant for another process", "200000", "1", []healthCheck{ok}, 0, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, notes := notifySocket(t)
			t.Setenv("NOTIFY_SOCKET", path)
			for k, v := range map[string]string{"WATCHDOG_USEC": tc.usec, "WATCHDOG_PID": tc.pid} {
				t.Setenv(k, v)
				if v == "" {
					os.Unsetenv(k)
				}
			}
			var logs syncBuffer
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				watchdog(ctx, slog.New(slog.NewTextHandler(&logs, nil)), tc.checks...)
				close(done)
			}()
			n := count(notes, "WATCHDOG=1", time.Second)
			cancel()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				t.Fatal("watchdog did not return after its context ended")
			}
			if n < tc.min || n > tc.max {
				t.Errorf("%d pings in 1s, want %d-%d\n%s", n, tc.min, tc.max, logs.String())
			}
			if tc.log != "" && !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, logs.String())
			}
		})
	}
}

// TestDaemonWatchdog starts the real opusd (this test binary in main
// mode) with systemd's watchdog environment: it says READY=1, pings
// WATCHDOG=1 at half of WATCHDOG_USEC while its store and API work, and
// says STOPPING=1 on SIGTERM.
func TestDaemonWatchdog(t *testing.T) {
	dir := t.TempDir()
	notify, notes := notifySocket(t)
	sock := filepath.Join(dir, "opusd.sock")
	cmd := exec.Command(os.Args[0], "--config", filepath.Join(dir, "absent.conf"), "--state-dir", filepath.Join(dir, "state"),
		"--socket", sock, "--privd-socket", filepath.Join(dir, "privd.sock"))
	var logs syncBuffer
	cmd.Stderr = &logs
	// WATCHDOG_PID is the pid systemd started; the test binary re-executed
	// keeps its pid through exec, so the variable can be left unset.
	cmd.Env = []string{"OPUSD_TEST_MAIN=1", "NOTIFY_SOCKET=" + notify, "WATCHDOG_USEC=" + strconv.Itoa(400000)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// The exit status is read once, by whoever gets it first.
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
	})

	ready := false
	timeout := time.After(20 * time.Second)
	for !ready {
		select {
		case n := <-notes:
			ready = strings.Contains(n, "READY=1")
		case err := <-exited:
			t.Fatalf("opusd exited: %v\n%s", err, logs.String())
		case <-timeout:
			t.Fatalf("no READY=1 within 20s\n%s", logs.String())
		}
	}
	// 400 ms watchdog: a ping every 200 ms, so 5-7 in 1.2 s.
	if n := count(notes, "WATCHDOG=1", 1200*time.Millisecond); n < 4 || n > 8 {
		t.Errorf("%d WATCHDOG=1 in 1.2s, want about 6\n%s", n, logs.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("opusd after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("opusd still running 20s after SIGTERM\n%s", logs.String())
	}
	// Everything sent before the exit is queued by now.
	stopping := false
	for len(notes) > 0 {
		stopping = stopping || strings.Contains(<-notes, "STOPPING=1")
	}
	if !stopping {
		t.Errorf("no STOPPING=1\n%s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
