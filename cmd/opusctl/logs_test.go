package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// lockedBuffer is a bytes.Buffer a running command writes while the
// test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// followCLI runs opusctl in the background until the returned stop is
// called (as Ctrl-C would end it) and returns its output so far and, from
// stop, its exit status.
func followCLI(t *testing.T, socket string, args ...string) (stdout, stderr *lockedBuffer, stop func() int) {
	t.Helper()
	e, _, _ := testEnv(socket, "")
	stdout, stderr = &lockedBuffer{}, &lockedBuffer{}
	e.stdout, e.stderr = stdout, stderr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, e) }()
	t.Cleanup(cancel)
	return stdout, stderr, func() int {
		cancel()
		select {
		case code := <-done:
			return code
		case <-time.After(10 * time.Second):
			t.Fatal("opusctl did not stop when interrupted")
			return -1
		}
	}
}

// waitFor waits until cond holds, or fails.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// appendOnce is a TailLog hook under which the log of project gains
// line once, on the first poll for what follows the tail.
func appendOnce(project, line string) func(context.Context, string, proto.Message) (proto.Message, error) {
	var once sync.Once
	return func(_ context.Context, p string, req proto.Message) (proto.Message, error) {
		after := req.(*privdv1.TailLogRequest).GetAfter()
		if p != project || after == nil {
			return nil, nil
		}
		res := &privdv1.TailLogResponse{Next: after}
		once.Do(func() {
			res.Lines = []string{line}
			res.Next = &privdv1.LogPosition{Offset: after.GetOffset() + int64(len(line)) + 1}
		})
		return res, nil
	}
}

// TestLogsFollow: logs -f (and --follow) prints the tail, then an
// appended line once, escaped, and exits 0 when interrupted; -n sets the
// tail's length.
func TestLogsFollow(t *testing.T) {
	for _, flag := range []string{"-f", "--follow"} {
		t.Run(flag, func(t *testing.T) {
			s := startOpusd(t)
			if r := runCLI(t, s.Socket, "", "create", "tfollow", "--empty"); r.code != 0 {
				t.Fatalf("create: %+v", r)
			}
			s.Privd.Set("TailLog", appendOnce("tfollow", "[wsgi:error] new \x1b[2J line"))
			out, errb, stop := followCLI(t, s.Socket, "logs", "tfollow", flag, "-n", "2")
			waitFor(t, "the new line", func() bool { return strings.Contains(out.String(), "new") })
			time.Sleep(2500 * time.Millisecond) // two more polls: nothing more
			if code := stop(); code != 0 || errb.String() != "" {
				t.Errorf("interrupted: exit %d, stderr %q; want 0 and nothing", code, errb.String())
			}
			want := "[wsgi:error] [pid 101] tfollow: log line 1\n[wsgi:error] [pid 102] tfollow: log line 2\n" +
				`[wsgi:error] new \x1b[2J line` + "\n"
			if got := out.String(); got != want {
				t.Errorf("stdout:\n%s\nwant:\n%s", got, want)
			}
			if got := s.CallsOf("FollowLogs")[0].Req.(*opusv1.FollowLogsRequest).GetLines(); got != 2 {
				t.Errorf("FollowLogs asked for %d lines, want 2", got)
			}
		})
	}
}

// TestLogsFollowJSON: with -o json each line is one JSON object.
func TestLogsFollowJSON(t *testing.T) {
	s := startOpusd(t)
	if r := runCLI(t, s.Socket, "", "create", "tfollow", "--empty"); r.code != 0 {
		t.Fatalf("create: %+v", r)
	}
	s.Privd.Set("TailLog", appendOnce("tfollow", `said "<hi>"`))
	out, _, stop := followCLI(t, s.Socket, "logs", "tfollow", "-f", "-n", "1", "-o", "json")
	waitFor(t, "the new line", func() bool { return strings.Contains(out.String(), "hi") })
	if code := stop(); code != 0 {
		t.Errorf("exit %d", code)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var v map[string]string
		if err := json.Unmarshal([]byte(l), &v); err != nil || len(v) != 1 {
			t.Fatalf("line %q is not one JSON object with a line: %v", l, err)
		}
		got = append(got, v["line"])
	}
	if want := []string{"[wsgi:error] [pid 101] tfollow: log line 1", `said "<hi>"`}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("lines %q, want %q", got, want)
	}
}

// TestLogsFollowRefused: a wrong -n is a usage error before anything is
// asked; an unknown project ends the follow at once with status 1.
func TestLogsFollowRefused(t *testing.T) {
	s := startOpusd(t)
	if r := runCLI(t, s.Socket, "", "logs", "tnone", "-f", "-n", "1001"); r.code != exitUsage || !strings.Contains(r.stderr, "-n must be 0 to 1000") {
		t.Errorf("-n 1001: %+v", r)
	}
	if n := len(s.CallsOf("FollowLogs")); n != 0 {
		t.Errorf("a usage error called FollowLogs %d times", n)
	}
	if r := runCLI(t, s.Socket, "", "logs", "tnone", "-f"); r.code != exitError || r.stderr != "opusctl: project \"tnone\" not found\n" {
		t.Errorf("unknown project: %+v", r)
	}
}

// TestLogsFollowEmpty: following a log that has no lines yet says so
// first, as logs without -f does (with -o json: nothing), then prints
// what is appended.
func TestLogsFollowEmpty(t *testing.T) {
	for _, c := range []struct {
		output, want string
	}{
		{"table", "The error log of project tfollow is empty so far; waiting for new lines (Ctrl-C to stop).\n[wsgi:error] appended here\n"},
		{"json", `{"line":"[wsgi:error] appended here"}` + "\n"},
	} {
		t.Run(c.output, func(t *testing.T) {
			s := startOpusd(t)
			if r := runCLI(t, s.Socket, "", "create", "tfollow", "--empty"); r.code != 0 {
				t.Fatalf("create: %+v", r)
			}
			appended := appendOnce("tfollow", "[wsgi:error] appended here")
			s.Privd.Set("TailLog", func(ctx context.Context, p string, req proto.Message) (proto.Message, error) {
				if req.(*privdv1.TailLogRequest).GetAfter() == nil {
					return &privdv1.TailLogResponse{Next: &privdv1.LogPosition{}}, nil // an empty log
				}
				return appended(ctx, p, req)
			})
			out, errb, stop := followCLI(t, s.Socket, "logs", "tfollow", "-f", "-o", c.output)
			waitFor(t, "the appended line", func() bool { return strings.Contains(out.String(), "appended here") })
			if code := stop(); code != 0 || errb.String() != "" {
				t.Errorf("interrupted: exit %d, stderr %q; want 0 and nothing", code, errb.String())
			}
			if got := out.String(); got != c.want {
				t.Errorf("stdout:\n%s\nwant:\n%s", got, c.want)
			}
		})
	}
}
