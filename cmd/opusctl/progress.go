package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// ANSI sequences for the live display.
const (
	ansiClearLine = "\r\x1b[2K"
	ansiGreen     = "\x1b[32m"
	ansiRed       = "\x1b[31m"
	ansiDim       = "\x1b[2m"
	ansiReset     = "\x1b[0m"
)

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// progress shows an operation's steps as they change. On a terminal it
// keeps one live line per step, redrawn in place with a spinner and the
// elapsed time of the running step; elsewhere (logs, pipes, CI) it prints
// one plain line per step as the step ends, so the output reads well
// without a terminal.
type progress struct {
	w   io.Writer
	tty bool
	now func() time.Time

	mu sync.Mutex
	op *opusv1.Operation
	// printed is, in plain mode, the last state printed of each step by
	// its position in the operation: a failed change's undo runs the
	// chain again, so one name comes back as a new step, which must be
	// printed too (and never flip an earlier line's state).
	printed map[int]opusv1.StepState
	drawn   int // tty mode: lines drawn last time
	frame   int

	stop chan struct{}
	done chan struct{}
}

// newProgress starts a display on w; tty selects the live display, which
// redraws on its own every tick until close.
func newProgress(w io.Writer, tty bool) *progress {
	p := &progress{w: w, tty: tty, now: time.Now, printed: map[int]opusv1.StepState{}, stop: make(chan struct{}), done: make(chan struct{})}
	if !tty {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.mu.Lock()
				p.frame++
				p.drawLocked()
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// update takes a new state of the operation.
func (p *progress) update(op *opusv1.Operation) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.op = op
	if p.tty {
		p.drawLocked()
		return
	}
	for i, s := range op.GetSteps() {
		st := s.GetState()
		if !stepEnded(st) || p.printed[i] == st {
			continue
		}
		p.printed[i] = st
		fmt.Fprintln(p.w, plainStepLine(s))
	}
}

// close stops the live display after a last redraw.
func (p *progress) close() {
	if p.tty {
		close(p.stop)
	}
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		p.drawLocked()
	}
}

func stepEnded(st opusv1.StepState) bool {
	switch st {
	case opusv1.StepState_STEP_STATE_DONE, opusv1.StepState_STEP_STATE_FAILED, opusv1.StepState_STEP_STATE_SKIPPED:
		return true
	}
	return false
}

// plainStepLine is a step as one line for non-terminals, for example
// "step user: done (0.12s)".
func plainStepLine(s *opusv1.Step) string {
	line := "step " + printable(s.GetName()) + ": " + stepStateName(s.GetState())
	if s.GetState() != opusv1.StepState_STEP_STATE_SKIPPED && s.GetStartTime() != nil && s.GetEndTime() != nil {
		line += " (" + formatElapsed(s.GetEndTime().AsTime().Sub(s.GetStartTime().AsTime())) + ")"
	}
	if m := stepNote(s); m != "" {
		line += ": " + m
	}
	return line
}

// stepNote is what a step's line says after its state: the step's message
// on one line, except for a failed step, whose message is the operation's
// error that opusctl prints in full (with its line breaks) when the
// operation ends: said once, there.
func stepNote(s *opusv1.Step) string {
	if s.GetState() == opusv1.StepState_STEP_STATE_FAILED {
		return ""
	}
	return oneLine(s.GetMessage())
}

// drawLocked redraws every step line in place: cursor up over what was
// drawn last, then each line cleared and written again.
func (p *progress) drawLocked() {
	if p.op == nil {
		return
	}
	var b strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", p.drawn)
	}
	steps := p.op.GetSteps()
	width := 12
	for _, s := range steps {
		width = max(width, len(s.GetName()))
	}
	for _, s := range steps {
		b.WriteString(ansiClearLine)
		b.WriteString(p.ttyStepLine(s, width))
		b.WriteString("\n")
	}
	p.drawn = len(steps)
	io.WriteString(p.w, b.String())
}

func (p *progress) ttyStepLine(s *opusv1.Step, width int) string {
	var icon, elapsed string
	start, end := s.GetStartTime(), s.GetEndTime()
	if start != nil && end != nil {
		elapsed = formatElapsed(end.AsTime().Sub(start.AsTime()))
	}
	switch s.GetState() {
	case opusv1.StepState_STEP_STATE_DONE:
		icon = ansiGreen + "✓" + ansiReset
	case opusv1.StepState_STEP_STATE_FAILED:
		icon = ansiRed + "✗" + ansiReset
	case opusv1.StepState_STEP_STATE_SKIPPED:
		icon, elapsed = ansiDim+"-"+ansiReset, ansiDim+"skipped"+ansiReset
	case opusv1.StepState_STEP_STATE_RUNNING:
		icon = spinner[p.frame%len(spinner)]
		if start != nil {
			elapsed = formatElapsed(p.now().Sub(start.AsTime()))
		}
	default:
		icon = ansiDim + "·" + ansiReset
	}
	line := fmt.Sprintf("  %s %-*s %s", icon, width, printable(s.GetName()), elapsed)
	if m := stepNote(s); m != "" {
		line += "  " + m
	}
	return line
}

// formatElapsed is a short duration: 0.12s, 12.3s, 2m05s.
func formatElapsed(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < 10*time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	default:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
}

// oneLine keeps a server message on one line, so it cannot break the
// display: line breaks and tabs become spaces, and anything else a
// terminal would act on is escaped (printable).
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		return r
	}, s)
	return printable(strings.TrimSpace(s))
}

// stepStateName is "done", "failed", ...
func stepStateName(st opusv1.StepState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "STEP_STATE_"))
}
