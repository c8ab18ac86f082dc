package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/opus-hosting/opus/client"
)

// usingIt returns the command lines of README's "Using it" block: the first
// ```sh block under that heading, comments stripped.
func usingIt(t *testing.T) [][]string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sect, ok := strings.Cut(string(readme), "\n## Using it\n")
	if !ok {
		t.Fatal(`README has no "## Using it" section`)
	}
	sect, _, _ = strings.Cut(sect, "\n## ")
	_, block, ok := strings.Cut(sect, "```sh\n")
	if !ok {
		t.Fatal(`README's "Using it" has no sh block`)
	}
	block, _, _ = strings.Cut(block, "```")
	var lines [][]string
	for _, l := range strings.Split(block, "\n") {
		if i := strings.Index(l, " #"); i >= 0 {
			l = l[:i]
		}
		if strings.TrimSpace(l) == "" {
			continue
		}
		// Plain words only: the test runs them without a shell.
		if strings.ContainsAny(l, "'\"$|;&<>`\\*?") {
			t.Fatalf("README line %q needs a shell; keep the Using it lines to plain words", l)
		}
		words := strings.Fields(l)
		if words[0] != "opusctl" {
			t.Fatalf("README line %q does not run opusctl", l)
		}
		lines = append(lines, words)
	}
	return lines
}

// TestReadmeUsingIt runs every line of README's "Using it" block against
// the real stack, as written, as a plain user, from a directory holding
// the repository's examples/ (as "in this directory" says). One thing is
// replaced: the project name "blog" becomes one of this run's, so the test
// owns what it makes. Prompts (the superuser's password) are answered on a
// terminal, as a person would. Each line must exit 0, and what it claims
// is checked: the project answers after create, the added app after apps
// add, debug is on after set, and nothing is left after destroy.
func TestReadmeUsingIt(t *testing.T) {
	h := needHost(t)
	lines := usingIt(t)
	var verbs []string
	for _, l := range lines {
		verbs = append(verbs, strings.Join(l[1:min(3, len(l))], " "))
	}
	for _, want := range []string{"create blog", "destroy blog"} {
		if !strings.Contains(strings.Join(verbs, ","), want) {
			t.Fatalf("README's Using it has no %q line: %v", want, verbs)
		}
	}
	name := h.newProject(t)
	user, uid := addUser(t, "readme")
	// The run's directory is traversable by its users (its bin/ is theirs
	// to run); a test's TempDir is not.
	parent, err := os.MkdirTemp(root, "readme")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	dir := filepath.Join(parent, "opus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-r", "../examples", filepath.Join(dir, "examples")).CombinedOutput(); err != nil {
		t.Fatalf("cp examples: %v %s", err, out)
	}
	if out, err := exec.Command("chown", "-R", user+":", parent).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}

	for _, words := range lines {
		args := make([]string, 0, len(words)-1)
		for _, w := range words[1:] {
			if w == "blog" {
				w = name
			}
			args = append(args, w)
		}
		code, out := h.ctlOnTerminal(t, uid, dir, args)
		if code != 0 {
			h.dumpLogs(t)
			t.Fatalf("README line %q (as %s): exit %d\n%s", strings.Join(words, " "), user, code, out)
		}
		switch strings.Join(words[1:min(3, len(words))], " ") {
		case "create blog":
			mustGet(t, webClient(), h.url(name, "https", "/hello/"), "Hello from Opus")
		case "apps add":
			mustGet(t, webClient(), h.url(name, "https", "/notes/"), "notes")
		case "set blog":
			if p := h.show(t, name); !p.Settings.Debug || p.Phase != "PHASE_READY" {
				t.Errorf("after %q: %+v", strings.Join(words, " "), p)
			}
		case "destroy blog":
			if r := h.ctl(t, 0, "", "show", name); r.code == 0 || passwdLine(t, projUser(name)) != "" {
				t.Errorf("after destroy: show exit %d, user %q", r.code, passwdLine(t, projUser(name)))
			}
		}
	}
}

// ctlOnTerminal runs opusctl as uid in dir with args, on a terminal,
// answering password prompts; it returns the exit status and what the
// terminal showed.
func (h *host) ctlOnTerminal(t *testing.T, uid uint32, dir string, args []string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.bin, "opusctl"), args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/", "TERM=dumb", client.SocketEnv + "=" + h.cfg.OpusdSocket()}
	master, err := pty.StartWithAttrs(cmd, &pty.Winsize{Rows: 50, Cols: 160},
		&syscall.SysProcAttr{Setsid: true, Setctty: true, Credential: credOf(uid)})
	if err != nil {
		t.Fatalf("opusctl on a terminal: %v", err)
	}
	defer master.Close()
	var (
		mu  sync.Mutex
		buf bytes.Buffer
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 4096)
		answered := 0
		for {
			n, err := master.Read(b)
			mu.Lock()
			buf.Write(b[:n])
			screen := buf.String()
			mu.Unlock()
			// Each prompt is answered once, when it shows.
			for _, p := range []string{"Password for superuser ", "Repeat the password: "}[answered:] {
				if !strings.Contains(screen, p) {
					break
				}
				io.WriteString(master, "opus-readme-Pw-1\r")
				answered++
			}
			if err != nil {
				return
			}
		}
	}()
	err = cmd.Wait()
	<-done
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	t.Logf("opusctl %s (uid %d, on a terminal) →\n%s", strings.Join(args, " "), uid, out)
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), out
	case err != nil:
		t.Fatalf("opusctl %v: %v", args, err)
	}
	return 0, out
}
