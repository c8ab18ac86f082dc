package apache

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opus-hosting/opus/internal/excerpt"
	"github.com/opus-hosting/opus/internal/procs"
)

// ErrNotServing is wrapped by Control.Graceful's error when Apache was
// signalled or started and is not serving afterwards: the master exited
// (mod_ssl refusing a certificate at the restart ends it: "AH00020:
// Configuration Failed, exiting"), or it did not report a finished restart
// in time and was stopped. The previous configuration is then the one to
// restore; Sites does.
var ErrNotServing = errors.New("apache is not serving after the restart")

// DefaultRestartTimeout bounds the wait for Apache to report a finished
// graceful restart. A proxy-only front with 1,000 vhosts needs about 0.6 s
// (docs/performance.md); one that has not finished after this is stuck.
const DefaultRestartTimeout = 30 * time.Second

// exitTimeout bounds the wait for a failed master, and the processes of
// its generation, to go by themselves before Apache is started again on
// the same ports; killWait bounds each wait after a signal. With
// DefaultRestartTimeout, a failed restart is undone well within the
// Coalescer's two minutes.
const (
	exitTimeout = 15 * time.Second
	killWait    = 5 * time.Second
)

// maxLogScan bounds what one restart reads of the main error log.
const maxLogScan = 1 << 20

// restartWatch reads an error log from where it ended before a graceful
// restart or a start, for the master's own report of how it went. The main
// error log is written only by Apache's master and children (project
// daemons log to their own vhost's ErrorLog), in a directory only root can
// write. A project's own error log also holds what mod_ssl says about its
// site, and what the project's code writes to stderr: only its emergency
// lines are kept (emergOnly), and they are only ever shown to that
// project's owner. Either is read without following links, non-blocking,
// regular files only and at most maxLogScan bytes.
type restartWatch struct {
	path string
	off  int64 // where the unread part starts
	read int64 // bytes read so far
	buf  []byte
	// emergOnly keeps only emergency lines (a project's log).
	emergOnly bool
	// lines are the master's error lines seen so far (the reason).
	lines []string
}

// watchLog starts a watch at the current end of path. A missing log (a
// fresh instance) is read from its start once it appears.
func watchLog(path string) *restartWatch {
	w := &restartWatch{path: path}
	if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() {
		w.off = fi.Size()
	}
	return w
}

// outcome is what the master reported for the restart.
type outcome int

const (
	pending outcome = iota // nothing yet
	resumed                // "AH00489: ... configured -- resuming normal operations"
	failed                 // "AH00016/AH00020: Configuration Failed"
)

// poll reads what was appended since the last poll and returns the
// master's verdict, if any. pid is the master's pid: a line that names
// another process's pid is not its report.
func (w *restartWatch) poll(pid int) (outcome, error) {
	f, err := os.OpenFile(w.path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return pending, nil
	}
	if err != nil {
		return pending, fmt.Errorf("apache: read %s: %w", w.path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return pending, fmt.Errorf("apache: read %s: %w", w.path, err)
	}
	if !fi.Mode().IsRegular() {
		return pending, fmt.Errorf("apache: %s is not a regular file", w.path)
	}
	if fi.Size() < w.off { // rotated or truncated: the new file is all new
		w.off, w.buf = 0, nil
	}
	want := min(fi.Size()-w.off, maxLogScan-w.read)
	if want <= 0 {
		return pending, nil
	}
	chunk := make([]byte, want)
	n, err := io.ReadFull(io.NewSectionReader(f, w.off, want), chunk)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return pending, fmt.Errorf("apache: read %s: %w", w.path, err)
	}
	w.off += int64(n)
	w.read += int64(n)
	w.buf = append(w.buf, chunk[:n]...)
	verdict := pending
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if !fromPid(line, pid) {
			continue
		}
		switch {
		case strings.Contains(line, "AH00489:") || strings.Contains(line, "resuming normal operations"):
			if verdict == pending {
				verdict = resumed
			}
		case strings.Contains(line, "AH00016:") || strings.Contains(line, "AH00020:") || strings.Contains(line, "Configuration Failed"):
			verdict = failed
		case strings.Contains(line, ":emerg]") ||
			!w.emergOnly && (strings.Contains(line, ":alert]") || strings.Contains(line, ":crit]") || strings.Contains(line, ":error]")):
			if len(w.lines) < maxReasonLines {
				w.lines = append(w.lines, excerpt.Cut(logMessage(line), maxReasonLine))
			}
		}
	}
	return verdict, nil
}

// fromPid reports whether a log line may be pid's: Apache tags each line
// "[pid N:tid M]" (or "[pid N]"); a line without a tag (a custom
// ErrorLogFormat, or the bare "AH00016" printed at start-up) is taken.
func fromPid(line string, pid int) bool {
	i := strings.Index(line, "[pid ")
	if i < 0 || pid == 0 {
		return true
	}
	rest := line[i+len("[pid "):]
	end := strings.IndexAny(rest, ":]")
	return end > 0 && rest[:end] == strconv.Itoa(pid)
}

// Bounds on the reason a restart failed: lines kept, bytes of each.
const (
	maxReasonLines = 10
	maxReasonLine  = 300
)

// logMessage drops the timestamp and tags in front of Apache's message.
func logMessage(line string) string {
	if i := strings.LastIndex(line, "] "); i >= 0 {
		return strings.TrimSpace(line[i+2:])
	}
	return strings.TrimSpace(line)
}

// reason is the master's error lines, for the caller to read.
func (w *restartWatch) reason() string {
	if len(w.lines) == 0 {
		return "no error was logged in " + w.path
	}
	return strings.Join(w.lines, "; ")
}

// awaitRestart waits, for at most timeout, until the master pid reports a
// finished restart (nil) or fails: it exits, reports a failed
// configuration, or reports nothing in time. On failure it makes sure the
// master is gone (stopping it if need be), so that Apache can be started
// again, and returns an error wrapping ErrNotServing with Apache's own
// error lines. alive reports whether pid is still the running master (it
// must not depend on the pid file, which the master rewrites while it
// restarts); stop ends a failed master (stopPid). Without a readable log (system mode with ErrorLog to
// syslog) it can only watch the pid: a master still alive after 2 s is
// taken as restarted.
func awaitRestart(ctx context.Context, w *restartWatch, pid int, alive func(int) bool, stop func(int), timeout time.Duration) error {
	const tick = 50 * time.Millisecond
	settle := min(2*time.Second, timeout)
	start := time.Now()
	for {
		verdict, err := w.poll(pid)
		blind := err != nil
		up := alive(pid)
		switch {
		case verdict == resumed && up:
			return nil
		case verdict == failed || !up:
			if verdict != failed {
				w.poll(pid) // what it said on its way out
			}
			stop(pid)
			return fmt.Errorf("%w: the master (pid %d) exited: %s", ErrNotServing, pid, w.reason())
		case blind && time.Since(start) >= settle:
			return nil
		case time.Since(start) >= timeout:
			stop(pid)
			return fmt.Errorf("%w: the master (pid %d) did not report a finished restart within %s and was stopped: %s", ErrNotServing, pid, timeout, w.reason())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("apache: waiting for the restart to finish: %w", ctx.Err())
		case <-time.After(tick):
		}
	}
}

// gracefulMaster restarts the master pid of conf gracefully with SIGUSR1
// (what "apache2 -k graceful" sends, without its second parse of the
// configuration, which the caller just tested) and waits, at most timeout
// (DefaultRestartTimeout if 0), for it to report the restart in w's log;
// a master that fails it is stopped (see awaitRestart).
func gracefulMaster(ctx context.Context, pid int, conf string, w *restartWatch, timeout time.Duration) error {
	alive := sameMaster(pid, conf)
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		return fmt.Errorf("signal %d: %w", pid, err)
	}
	return awaitRestart(ctx, w, pid, alive, func(p int) { stopPid(p, alive) }, cmp.Or(timeout, DefaultRestartTimeout))
}

// stopPid waits up to exitTimeout for a failed master to exit by itself
// (it first lets its children finish), then sends it SIGTERM and, if that
// does not end it either, SIGKILL.
func stopPid(pid int, alive func(int) bool) {
	wait := func(d time.Duration) bool {
		for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if !alive(pid) {
				return true
			}
		}
		return !alive(pid)
	}
	if wait(exitTimeout) {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	if wait(killWait) {
		return
	}
	syscall.Kill(pid, syscall.SIGKILL)
	wait(killWait)
}

// pidAlive reports whether pid is a live (not zombie) process whose
// command line holds marker (empty: any).
func pidAlive(pid int, marker string) bool {
	if pid <= 1 {
		return false
	}
	if marker != "" {
		cmdline, err := procs.Table{}.Cmdline(pid)
		if err != nil || !bytes.Contains(cmdline, []byte(marker)) {
			return false
		}
	}
	state, _ := procStat(pid)
	return state != "" && state != "Z"
}

// procStat returns pid's state and start time (clock ticks after boot)
// from /proc/PID/stat, or "" and 0 when there is no such process.
func procStat(pid int) (state string, start uint64) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0
	}
	// The command name, in parentheses, may hold anything: fields start
	// after the last ')'. They are state (field 3) to starttime (22).
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return "", 0
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return "", 0
	}
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return f[0], start
}

// sameMaster returns alive for the master pid as it is now: true while
// that very process lives, false once it has exited, even if its pid is
// given to another process (its start time differs). Signals are only
// ever sent to a process alive says is the master.
func sameMaster(pid int, marker string) func(int) bool {
	_, start := procStat(pid)
	return func(p int) bool {
		if p != pid || !pidAlive(p, marker) {
			return false
		}
		_, s := procStat(p)
		return s == start
	}
}
