package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/testrun"
)

// TestDaemonLogsToJournal starts the real opusd (this test binary in main
// mode) as systemd would with StandardError=journal: JOURNAL_STREAM names
// its stderr. In a private mount namespace, /run/systemd/journal is a
// directory holding the test's own datagram socket, so opusd's records
// arrive there in the native protocol — with SYSLOG_IDENTIFIER, PRIORITY
// and its attributes as fields — and not as text on stderr.
func TestDaemonLogsToJournal(t *testing.T) {
	run := testrun.Need(t, "starts opusd in a private mount namespace with a stand-in journald socket")
	if _, err := os.Stat("/run/systemd"); err != nil {
		t.Skip("needs /run/systemd to mount over: ", err)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare(1)")
	}
	// opusd's command line names the run's directory, so an opusd a killed
	// run left is stopped by the next run.
	dir := run.TempDir(t)
	jdir := filepath.Join(dir, "journal")
	if err := os.Mkdir(jdir, 0o755); err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(jdir, "socket"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(stderr.Fd()), &st); err != nil {
		t.Fatal(err)
	}

	sock := filepath.Join(dir, "opusd.sock")
	// unshare(1) makes the namespace's mounts private: nothing here is
	// seen by the host. The shell execs opusd, which keeps its pid.
	script := `mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && mount --bind "$1" /run/systemd/journal && shift && exec "$@"`
	cmd := exec.Command(unshare, "--mount", "sh", "-c", script, "sh", jdir, os.Args[0],
		"--config", defaultsConf(t, dir), "--state-dir", filepath.Join(dir, "state"),
		"--socket", sock, "--privd-socket", filepath.Join(dir, "privd.sock"))
	cmd.Env = []string{"OPUSD_TEST_MAIN=1", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino)}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
	})
	errText := func() string { b, _ := os.ReadFile(stderr.Name()); return string(b) }

	// The record opusd logs once it serves, as journald would parse it.
	var serving map[string]string
	buf := make([]byte, 1<<16)
	for deadline := time.Now().Add(20 * time.Second); serving == nil; {
		conn.SetReadDeadline(deadline)
		n, _, err := conn.ReadFromUnix(buf)
		if err != nil {
			t.Fatalf("no \"opusd serving\" record on the journal socket: %v\nstderr:\n%s", err, errText())
		}
		fields := map[string]string{}
		for _, l := range strings.Split(string(buf[:n]), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				fields[k] = v
			}
		}
		if strings.HasPrefix(fields["MESSAGE"], "opusd serving") {
			serving = fields
		}
	}
	for k, v := range map[string]string{"SYSLOG_IDENTIFIER": "opusd", "PRIORITY": "6", "SOCKET": sock} {
		if serving[k] != v {
			t.Errorf("%s=%q, want %q (record %q)", k, serving[k], v, serving)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("opusd after SIGTERM: %v\n%s", err, errText())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("opusd still running 20s after SIGTERM")
	}
	if text := errText(); strings.Contains(text, "opusd serving") {
		t.Errorf("records went to stderr as text although the journal took them:\n%s", text)
	}
}
