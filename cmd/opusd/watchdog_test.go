package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opus-hosting/opus/internal/logtest"
	"github.com/opus-hosting/opus/unprivd/store"
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

// drain returns the lines of every note that reached the socket at path
// before this call. It sends a marker datagram of its own and reads up to
// it: a unix datagram socket keeps order, so no note sent earlier is
// missed however slowly the reader runs, and none is waited for that will
// never come.
func drain(t *testing.T, path string, notes <-chan string) []string {
	t.Helper()
	const marker = "TEST_DRAIN_MARKER=1"
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(marker)); err != nil {
		t.Fatal(err)
	}
	var lines []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case note, ok := <-notes:
			if !ok {
				t.Fatal("notify socket closed before the marker arrived")
			}
			if note == marker {
				return lines
			}
			lines = append(lines, strings.Split(note, "\n")...)
		case <-timeout:
			t.Fatal("own marker did not come back through the notify socket within 10s")
		}
	}
}

// count counts the lines equal to want.
func count(lines []string, want string) int {
	n := 0
	for _, l := range lines {
		if l == want {
			n++
		}
	}
	return n
}

// TestWatchdog runs the watchdog on synctest's fake clock (so counts are
// exact whatever the load) against a real notify socket: a 200 ms
// WATCHDOG_USEC means a round of checks at start and every 100 ms, and a
// ping after each round that passes. It runs for 950 ms of fake time.
func TestWatchdog(t *testing.T) {
	ok := healthCheck{"ok", func(context.Context) error { return nil }}
	failing := healthCheck{"store", func(context.Context) error { return errors.New("disk gone") }}
	hanging := healthCheck{"api", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}
	// slow passes, 60 ms after it is asked: within the 100 ms limit.
	slow := healthCheck{"slow", func(ctx context.Context) error {
		select {
		case <-time.After(60 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	// recovering fails its first three rounds (0, 100, 200 ms), then passes.
	var calls atomic.Int32
	recovering := healthCheck{"store", func(context.Context) error {
		if calls.Add(1) <= 3 {
			return errors.New("not yet")
		}
		return nil
	}}
	tests := []struct {
		name   string
		usec   string // WATCHDOG_USEC; "" leaves it unset
		pid    string // WATCHDOG_PID; "" leaves it unset
		checks []healthCheck
		pings  int    // exactly
		log    string // in the log when set
	}{
		{"healthy pings at half the interval", "200000", "", []healthCheck{ok, ok}, 10, "watchdog enabled"},
		{"a slow check pings when it passes", "200000", "", []healthCheck{ok, slow}, 9, "watchdog enabled"},
		{"a failing check stops the pings", "200000", "", []healthCheck{ok, failing}, 0, "disk gone"},
		{"a hanging check stops the pings", "200000", "", []healthCheck{hanging}, 0, "did not finish"},
		{"pings resume once the checks pass", "200000", "", []healthCheck{ok, recovering}, 7, "not yet"},
		{"no watchdog set", "", "", []healthCheck{ok}, 0, ""},
		{"watchdog meant for another process", "200000", "1", []healthCheck{ok}, 0, ""},
		{"unreadable WATCHDOG_USEC", "soon", "", []healthCheck{ok}, 0, "bad WATCHDOG_USEC"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The socket's reader runs outside the bubble: a goroutine
			// waiting on the network never lets fake time advance.
			path, notes := notifySocket(t)
			t.Setenv("NOTIFY_SOCKET", path)
			for k, v := range map[string]string{"WATCHDOG_USEC": tc.usec, "WATCHDOG_PID": tc.pid} {
				t.Setenv(k, v)
				if v == "" {
					os.Unsetenv(k)
				}
			}
			var logs logtest.Buffer
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := make(chan struct{})
				go func() {
					watchdog(ctx, slog.New(slog.NewTextHandler(&logs, nil)), tc.checks...)
					close(done)
				}()
				time.Sleep(950 * time.Millisecond)
				cancel()
				select {
				case <-done:
				case <-time.After(time.Minute):
					t.Fatal("watchdog did not return after its context ended")
				}
			})
			lines := drain(t, path, notes)
			if n := count(lines, "WATCHDOG=1"); n != tc.pings {
				t.Errorf("%d pings in 950ms, want %d\nnotes: %q\n%s", n, tc.pings, lines, logs.String())
			}
			if tc.log != "" && !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, logs.String())
			}
		})
	}
}

// TestStoreWorking checks the store health check against a real state
// file: a write transaction held open does not fail it (reads still go
// through) until it has lasted longer than the stall limit, and it passes
// again once the write has ended.
func TestStoreWorking(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "opusd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	patient, strict := storeWorking(st, time.Hour), storeWorking(st, time.Millisecond)
	if err := strict.check(ctx); err != nil {
		t.Fatalf("idle store: %v", err)
	}
	inside, release := make(chan struct{}), make(chan struct{})
	result := make(chan error, 1)
	go func() {
		result <- st.Update(ctx, func(*store.Tx) error { close(inside); <-release; return nil })
	}()
	<-inside
	if err := patient.check(ctx); err != nil {
		t.Errorf("write held for less than the limit: %v", err)
	}
	// Real time must pass the 1 ms limit; poll rather than guess a sleep.
	var stalled error
	for deadline := time.Now().Add(10 * time.Second); stalled == nil && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		stalled = strict.check(ctx)
	}
	if stalled == nil || !strings.Contains(stalled.Error(), "write transaction has been in progress") {
		t.Errorf("write held past the limit: check = %v, want a stalled write", stalled)
	}
	close(release)
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	if err := strict.check(ctx); err != nil {
		t.Errorf("after the write ended: %v", err)
	}
}

// TestDaemonWatchdog starts the real opusd (this test binary in main
// mode) with systemd's watchdog environment: it says READY=1, pings
// WATCHDOG=1 again and again while its store and API work, never logs
// itself unhealthy, and says STOPPING=1 on SIGTERM. Timing is left loose
// (a 4 s WATCHDOG_USEC, so each round of checks has 2 s): this runs the
// whole daemon on a possibly busy machine; TestWatchdog checks the timing.
func TestDaemonWatchdog(t *testing.T) {
	dir := daemonDir(t, "starts opusd")
	notify, notes := notifySocket(t)
	sock := filepath.Join(dir, "opusd.sock")
	cmd := exec.Command(os.Args[0], "--config", defaultsConf(t, dir), "--state-dir", filepath.Join(dir, "state"),
		"--socket", sock, "--privd-socket", filepath.Join(dir, "privd.sock"))
	var logs logtest.Buffer
	cmd.Stderr = &logs
	// WATCHDOG_PID is the pid systemd started; the test binary re-executed
	// keeps its pid through exec, so the variable can be left unset.
	cmd.Env = []string{"OPUSD_TEST_MAIN=1", "NOTIFY_SOCKET=" + notify, "WATCHDOG_USEC=" + strconv.Itoa(4000000)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed once waitErr holds the exit status.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
	})

	ready, pings := false, 0
	timeout := time.After(20 * time.Second)
	for !ready {
		select {
		case n := <-notes:
			ready = strings.Contains(n, "READY=1")
		case <-exited:
			t.Fatalf("opusd exited: %v\n%s", waitErr, logs.String())
		case <-timeout:
			t.Fatalf("no READY=1 within 20s\n%s", logs.String())
		}
	}
	// The first ping follows READY at once, the next 2 s later.
	timeout = time.After(15 * time.Second)
	for pings < 2 {
		select {
		case n := <-notes:
			pings += count(strings.Split(n, "\n"), "WATCHDOG=1")
		case <-exited:
			t.Fatalf("opusd exited: %v\n%s", waitErr, logs.String())
		case <-timeout:
			t.Fatalf("%d WATCHDOG=1 within 15s after READY=1, want 2\n%s", pings, logs.String())
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("opusd after SIGTERM: %v\n%s", waitErr, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("opusd still running 20s after SIGTERM\n%s", logs.String())
	}
	if count(drain(t, notify, notes), "STOPPING=1") != 1 {
		t.Errorf("no STOPPING=1\n%s", logs.String())
	}
	if l := logs.String(); strings.Contains(l, "unhealthy") || !strings.Contains(l, "watchdog enabled") {
		t.Errorf("log should say the watchdog is enabled and never unhealthy:\n%s", l)
	}
}
