package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// followOutput is what a backgrounded opusctl wrote so far, read while
// it runs.
type followOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *followOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *followOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// TestLogsFollow: `opusctl logs -f` run by the project's owner (a plain
// user) prints the log's last lines, then each line the project's code
// writes afterwards, once, as it comes, and exits 0 quietly when
// interrupted (SIGINT, as Ctrl-C); another plain user following the same
// project is refused at once, is shown nothing, and nothing on the host
// changes.
func TestLogsFollow(t *testing.T) {
	h := needHost(t)
	owner := h.otherID
	name := h.newProject(t)
	h.mustCtl(t, owner, "create", name, "--app", serveGit(t, noisyApp(t))+"@main")
	c := webClient()
	mark := func() string { return fmt.Sprintf("f%08x", rand.Uint32()) }
	before := mark()
	mustGet(t, c, h.url(name, "http", "/noisy/?m="+before), "noisy "+before)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.bin, "opusctl"), "--socket", h.cfg.OpusdSocket(), "logs", name, "-f")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: credOf(owner)}
	var out, errb followOutput
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitOut := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), want); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("opusctl logs -f did not print %q within 30s; so far:\n%s\nstderr: %s", want, out.String(), errb.String())
			}
		}
	}
	// The tail first: the line written before following started.
	waitOut("stderr-" + before)
	var after []string
	for range 2 {
		m := mark()
		mustGet(t, c, h.url(name, "http", "/noisy/?m="+m), "noisy "+m)
		after = append(after, "stderr-"+m, "wsgierrors-"+m)
	}
	for _, w := range after {
		waitOut(w)
	}
	time.Sleep(2500 * time.Millisecond) // a few more polls, which must add nothing
	cancel()
	// Wait answers ctx's error for a cancelled command that exited 0:
	// the exit status is in ProcessState.
	if err := cmd.Wait(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 0 {
		t.Errorf("interrupted opusctl logs -f: %v (%v), want exit status 0", err, cmd.ProcessState)
	}
	if errb.String() != "" {
		t.Errorf("interrupted opusctl logs -f wrote to stderr: %q", errb.String())
	}
	got := out.String()
	t.Logf("opusctl logs -f %s:\n%s", name, got)
	for _, w := range append([]string{"stderr-" + before, "wsgierrors-" + before}, after...) {
		if n := strings.Count(got, w); n != 1 {
			t.Errorf("%q printed %d times, want once", w, n)
		}
	}
	// In the order written.
	if i, j := strings.Index(got, after[0]), strings.Index(got, after[2]); i < 0 || j < i {
		t.Errorf("%q is not before %q", after[0], after[2])
	}

	// Another user: refused at once (a follow that went on would end
	// only at --timeout, with status 0), shown nothing.
	_, stranger := addUser(t, "f")
	state := hostState(t)
	r := h.ctl(t, stranger, "", "--timeout", "20s", "logs", name, "-f")
	if r.code != 1 || r.out != "" || !strings.Contains(r.err, "not found") || strings.Contains(r.err, "noisy") || strings.Contains(r.err, before) {
		t.Errorf("another user's logs -f: exit %d, stdout %q, stderr %q; want 1, nothing, not found", r.code, r.out, r.err)
	}
	if hostState(t) != state {
		t.Error("a refused follow changed the host")
	}
}
