package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/daemon/notifytest"
	"github.com/opus-hosting/opus/internal/logtest"
)

// TestDaemonWatchdog starts the real opusd (this test binary in main
// mode) with systemd's watchdog environment: it says READY=1, pings
// WATCHDOG=1 again and again while its store and API work, never logs
// itself unhealthy, and says STOPPING=1 on SIGTERM. Timing is left loose
// (a 4 s WATCHDOG_USEC, so each round of checks has 2 s): this runs the
// whole daemon on a possibly busy machine; TestWatchdog checks the timing.
func TestDaemonWatchdog(t *testing.T) {
	dir := daemonDir(t, "starts opusd")
	notify, notes := notifytest.Socket(t)
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
			pings += notifytest.Count(strings.Split(n, "\n"), "WATCHDOG=1")
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
	if notifytest.Count(notifytest.Drain(t, notify, notes), "STOPPING=1") != 1 {
		t.Errorf("no STOPPING=1\n%s", logs.String())
	}
	if l := logs.String(); strings.Contains(l, "unhealthy") || !strings.Contains(l, "watchdog enabled") {
		t.Errorf("log should say the watchdog is enabled and never unhealthy:\n%s", l)
	}
}
