package apache

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/procs"
)

// Lines as Apache 2.4 (mpm_event, Debian 12) writes them to the main error
// log around a graceful restart.
const (
	logGraceful = "[Fri Dec 04 22:16:13.408493 2026] [mpm_event:notice] [pid 100:tid 100] AH00493: SIGUSR1 received.  Doing graceful restart\n"
	logResumed  = "[Fri Dec 04 22:16:13.553253 2026] [mpm_event:notice] [pid 100:tid 100] AH00489: Apache/2.4.71 (Debian) OpenSSL/3.0.19 configured -- resuming normal operations\n"
	logRefused  = "[Fri Dec 04 22:16:13.411218 2026] [ssl:emerg] [pid 100:tid 100] AH02562: Failed to configure certificate blog.opus.test:443:0 (with chain), check /x/tls/blog.crt\n" +
		"[Fri Dec 04 22:16:13.411235 2026] [ssl:emerg] [pid 100:tid 100] SSL Library Error: error:0A00018F:SSL routines::ee key too small\n" +
		"[Fri Dec 04 22:16:13.411239 2026] [:emerg] [pid 100:tid 100] AH00020: Configuration Failed, exiting\n"
	logOtherResumed = "[Fri Dec 04 22:16:13.553253 2026] [mpm_event:notice] [pid 200:tid 200] AH00489: Apache/2.4.71 (Debian) configured -- resuming normal operations\n"
)

func TestAwaitRestart(t *testing.T) {
	tests := []struct {
		name    string
		before  string // in the log before the restart
		after   string // appended 100 ms into the restart
		diesAt  time.Duration
		symlink bool
		shrink  bool // the log is replaced by a shorter one (rotated)
		want    string
		stopped bool
	}{
		{name: "restart done", before: logResumed, after: logGraceful + logResumed},
		{name: "restart done after rotation", before: strings.Repeat(logGraceful, 20), after: logResumed, shrink: true},
		{name: "the old run's report does not count", before: logGraceful + logResumed, after: logGraceful, diesAt: 300 * time.Millisecond,
			want: "the master (pid 100) exited", stopped: true},
		{name: "another master's report does not count", after: logGraceful + logOtherResumed, diesAt: 300 * time.Millisecond,
			want: "exited: no error was logged", stopped: true},
		{name: "certificate refused", after: logGraceful + logRefused,
			want: "exited: AH02562: Failed to configure certificate blog.opus.test:443:0 (with chain), check /x/tls/blog.crt; SSL Library Error: error:0A00018F:SSL routines::ee key too small", stopped: true},
		{name: "master killed without a word", diesAt: 200 * time.Millisecond, want: "exited", stopped: true},
		{name: "silent and alive", want: "did not report a finished restart within 1s and was stopped", stopped: true},
		{name: "log is a link: not followed, the pid alone decides", symlink: true, after: logGraceful + logRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "error.log")
			target := path
			if tt.symlink {
				target = filepath.Join(dir, "elsewhere.log")
				if err := os.Symlink(target, path); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(target, []byte(tt.before), 0o640); err != nil {
				t.Fatal(err)
			}
			w := watchLog(path)
			start := time.Now()
			var stopped atomic.Bool
			alive := func(pid int) bool {
				return pid == 100 && !stopped.Load() && (tt.diesAt == 0 || time.Since(start) < tt.diesAt)
			}
			go func() {
				time.Sleep(100 * time.Millisecond)
				if tt.shrink {
					os.WriteFile(target, []byte(tt.after), 0o640)
					return
				}
				f, err := os.OpenFile(target, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Error(err)
					return
				}
				f.WriteString(tt.after)
				f.Close()
			}()
			err := awaitRestart(context.Background(), w, 100, alive, func(int) { stopped.Store(true) }, time.Second)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("awaitRestart = %v, want done", err)
				}
			} else if err == nil || !errors.Is(err, ErrNotServing) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("awaitRestart = %v, want ErrNotServing containing %q", err, tt.want)
			}
			if stopped.Load() != tt.stopped {
				t.Errorf("stopped = %v, want %v", stopped.Load(), tt.stopped)
			}
		})
	}
}

// TestRestartWatchBounded: a restart never reads more than maxLogScan of
// the log, however much is written.
func TestRestartWatchBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "error.log")
	if err := os.WriteFile(path, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	w := watchLog(path)
	big := strings.Repeat(strings.Repeat("x", 1023)+"\n", 2*maxLogScan/1024)
	if err := os.WriteFile(path, []byte(big+logResumed), 0o640); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if v, err := w.poll(100); err != nil || v != pending {
			t.Fatalf("poll = %v, %v; want pending (the report lies past the bound)", v, err)
		}
	}
	if w.read != maxLogScan {
		t.Errorf("read %d bytes, want %d", w.read, maxLogScan)
	}
}

func TestFromPid(t *testing.T) {
	for _, tc := range []struct {
		line string
		pid  int
		want bool
	}{
		{"[x] [mpm_event:notice] [pid 100:tid 100] AH00489: resuming", 100, true},
		{"[x] [mpm_event:notice] [pid 1000:tid 1000] AH00489: resuming", 100, false},
		{"[x] [mpm_prefork:notice] [pid 100] AH00489: resuming", 100, true},
		{"[x] [mpm_prefork:notice] [pid 10] AH00489: resuming", 100, false},
		{"AH00016: Configuration Failed", 100, true},
		{"[x] [pid 5:tid 5] anything", 0, true},
	} {
		if got := fromPid(tc.line, tc.pid); got != tc.want {
			t.Errorf("fromPid(%q, %d) = %v, want %v", tc.line, tc.pid, got, tc.want)
		}
	}
}

// TestSameMaster: the liveness a failed restart's stop relies on follows
// one process, not its pid, and never a process without the marker.
func TestSameMaster(t *testing.T) {
	cmd := exec.Command("/bin/sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer cmd.Process.Kill()
	// Start returns once the child is forked, maybe before it has run
	// exec: until then its command line is this test binary's.
	for deadline := time.Now().Add(10 * time.Second); !pidAlive(pid, "sleep"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the child never became /bin/sleep")
		}
	}
	alive := sameMaster(pid, "sleep")
	if !alive(pid) || alive(os.Getpid()) {
		t.Fatalf("alive(child) = %v, alive(self) = %v; want true, false", alive(pid), alive(os.Getpid()))
	}
	if sameMaster(pid, "apache2")(pid) {
		t.Error("a process without the marker is taken for the master")
	}
	if state, start := procStat(pid); state == "" || start == 0 {
		t.Errorf("procStat = %q, %d", state, start)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if alive(pid) {
		t.Error("an exited process is alive")
	}
	if state, _ := procStat(pid); state != "" {
		t.Errorf("procStat of an exited process = %q", state)
	}
}

// TestCmdlineReadIsBounded: privd reads every process's command line when
// it looks for Apache's, and a tenant's process writes its own, MiBs of
// it if it likes: privd reads at most maxCmdline of one, and still finds
// a marker near its start.
func TestCmdlineReadIsBounded(t *testing.T) {
	big := strings.Repeat("x", 128<<10-1) // the kernel's limit on one argument
	args := []string{"-c", "sleep 30; :", "opus-cmdline-test"}
	for range 12 {
		args = append(args, big)
	}
	cmd := exec.Command("/bin/sh", args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := cmd.Process.Pid
	// Until the child has exec'd, its command line is the test binary's.
	for deadline := time.Now().Add(5 * time.Second); !pidAlive(pid, "opus-cmdline-test"); {
		if time.Now().After(deadline) {
			t.Fatalf("the child %d never showed its command line", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	found := pidAlive(pid, "no such marker")
	runtime.ReadMemStats(&after)
	if found {
		t.Error("pidAlive found a marker that is not in the command line")
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 2*procs.MaxCmdline {
		t.Errorf("looking at a command line of %d bytes allocated %d bytes; want at most %d", 12*len(big), got, 2*procs.MaxCmdline)
	}
}
