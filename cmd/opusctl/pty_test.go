package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/reconcile"
)

// screen collects what opusctl writes to a terminal.
type screen struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// waitFor polls the screen until it shows want.
func (s *screen) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("terminal never showed %q:\n%q", want, s.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runOnTerminal runs opusctl in-process with stdin, stdout and stderr on
// a pseudo-terminal; type is called with the master side to answer
// prompts.
func runOnTerminal(t *testing.T, socket string, typ func(master io.Writer, scr *screen), args ...string) (int, string) {
	t.Helper()
	master, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer master.Close()
	if err := pty.Setsize(tty, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	scr := &screen{}
	copied := make(chan struct{})
	go func() {
		io.Copy(scr, master) // ends with EIO once tty is closed
		close(copied)
	}()
	if typ != nil {
		go typ(master, scr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, args, env{
		stdin: tty, stdout: tty, stderr: tty,
		getenv: func(string) string { return socket },
		dial:   func(ctx context.Context, s string) (*client.Client, error) { return client.Dial(ctx, s) },
	})
	tty.Close()
	select {
	case <-copied:
	case <-time.After(5 * time.Second):
		t.Fatal("terminal output did not drain")
	}
	return code, scr.String()
}

func TestCreateOnTerminalShowsLiveSteps(t *testing.T) {
	s := startOpusd(t)
	s.Privd.SlowDeploys(400 * time.Millisecond) // long enough for spinner frames
	steps := reconcile.DeploySteps()
	up := fmt.Sprintf("\x1b[%dA", len(steps)) // cursor up over the step lines
	const password = "s3cret-pw"
	answer := func(master io.Writer, scr *screen) {
		scr.waitFor(t, "Password for superuser admin: ")
		io.WriteString(master, password+"\r")
		scr.waitFor(t, "Repeat the password: ")
		io.WriteString(master, password+"\r")
	}
	code, out := runOnTerminal(t, s.Socket, answer, "create", "tlive", "--empty", "--superuser", "admin", "--superuser-email", "a@example.com")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{
		"Creating project tlive (operation " + onlyOp(t, s, "tlive") + ")",
		up,          // redrawn in place
		"\r\x1b[2K", // each line cleared before it is drawn again
		"⠋", "⠙",    // spinner frames while a step runs
		"✓",
		"https://tlive.opus.localhost:8443/",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, out)
		}
	}
	// The last frame shows every step done with its time.
	last := out[strings.LastIndex(out, up):]
	for _, step := range steps {
		if !containsLine(last, step.Name, "✓", "s") {
			t.Errorf("final frame has no done line for %s:\n%q", step.Name, last)
		}
	}
	if strings.Contains(out, "step user: done") {
		t.Error("plain progress lines on a terminal")
	}
	if strings.Contains(out, password) {
		t.Error("the password was echoed")
	}
	if got := s.CallsOf("CreateProject")[0].Req.(*opusv1.CreateProjectRequest).GetSuperuser().GetPassword(); got != password {
		t.Errorf("server got password %q, want %q", got, password)
	}
}

func containsLine(s string, parts ...string) bool {
	for _, line := range strings.Split(s, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}

func TestDestroyOnTerminalAsksForTheName(t *testing.T) {
	tests := []struct {
		name     string
		typed    string
		wantCode int
		wantGone bool
	}{
		{name: "wrong name keeps the project", typed: "nope", wantCode: 1},
		{name: "the name destroys it", typed: "tdel", wantCode: 0, wantGone: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startOpusd(t)
			if r := runCLI(t, s.Socket, "", "create", "tdel", "--empty"); r.code != 0 {
				t.Fatalf("create: %+v", r)
			}
			s.ForgetCalls()
			code, out := runOnTerminal(t, s.Socket, func(master io.Writer, scr *screen) {
				scr.waitFor(t, "Type the name to confirm: ")
				io.WriteString(master, tc.typed+"\r")
			}, "destroy", "tdel")
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.wantCode, out)
			}
			if gone := project(t, s, "tdel") == nil; gone != tc.wantGone {
				t.Fatalf("project gone = %v, want %v", gone, tc.wantGone)
			}
			if !tc.wantGone && len(s.CallsOf("DeleteProject")) != 0 {
				t.Fatal("DeleteProject was called without confirmation")
			}
		})
	}
}
