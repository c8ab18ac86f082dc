// Package subprocess runs the host tools the daemons call (useradd,
// apache2, apache2ctl, systemctl) the one way the project allows: with a
// timeout, a fixed environment, no descriptor but 0, 1 and 2 (os/exec
// passes no others, and the daemons mark theirs close-on-exec), and output
// kept only up to a bound, its last bytes (where a tool says what went
// wrong).
package subprocess

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// MaxOutput is how much of a tool's output is kept.
const MaxOutput = 64 << 10

// waitDelay bounds the wait for a tool's output once it exited: a tool
// that leaves a child holding its pipe (apache2 -k start forks the
// daemon) must not hold the caller forever.
const waitDelay = 5 * time.Second

// Tail keeps the last max bytes written to it (MaxOutput when max is 0).
type Tail struct {
	Max int
	buf []byte
}

// Write keeps p's bytes, dropping the oldest beyond the bound.
func (t *Tail) Write(p []byte) (int, error) {
	max := t.Max
	if max <= 0 {
		max = MaxOutput
	}
	t.buf = append(t.buf, p...)
	if len(t.buf) > max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-max:]...)
	}
	return len(p), nil
}

// String is what was kept.
func (t *Tail) String() string { return string(t.buf) }

// Run runs name with args, environment env (nothing else of the caller's)
// and timeout, and returns its combined output, bounded and trimmed. A
// failure's error names the command and carries that output.
func Run(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	return Wait(ctx, cmd, name+" "+strings.Join(args, " "))
}

// Wait runs cmd, which the caller made (confined, say), with its output
// bounded as Run's; what names the command in an error.
func Wait(ctx context.Context, cmd *exec.Cmd, what string) (string, error) {
	var out Tail
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = waitDelay
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	switch {
	case err != nil && ctx.Err() != nil:
		return text, fmt.Errorf("%s: %w (%v): %s", what, ctx.Err(), err, text)
	case err != nil:
		return text, fmt.Errorf("%s: %w: %s", what, err, text)
	}
	return text, nil
}
