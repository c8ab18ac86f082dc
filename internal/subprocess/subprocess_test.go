package subprocess

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTailKeepsTheEnd(t *testing.T) {
	tl := Tail{Max: 4}
	tl.Write([]byte("abc"))
	tl.Write([]byte("defg"))
	if got := tl.String(); got != "defg" {
		t.Errorf("Tail = %q, want the last 4 bytes %q", got, "defg")
	}
}

func TestRun(t *testing.T) {
	ctx := context.Background()
	out, err := Run(ctx, 10*time.Second, []string{"A=1"}, "/bin/sh", "-c", "echo $A; echo to-stderr >&2")
	if err != nil || out != "1\nto-stderr" {
		t.Errorf("Run = %q, %v; want both streams, only the given environment", out, err)
	}
	_, err = Run(ctx, 10*time.Second, nil, "/bin/sh", "-c", "echo why; exit 3")
	if err == nil || !strings.Contains(err.Error(), "why") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("a failing tool: %v; want its status and output", err)
	}
	start := time.Now()
	_, err = Run(ctx, 200*time.Millisecond, nil, "/bin/sleep", "30")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Errorf("a hung tool: %v after %s; want the deadline, at once", err, time.Since(start))
	}
	out, _ = Run(ctx, 10*time.Second, nil, "/bin/sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x")
	if len(out) != MaxOutput {
		t.Errorf("a chatty tool: kept %d bytes, want %d", len(out), MaxOutput)
	}
}
