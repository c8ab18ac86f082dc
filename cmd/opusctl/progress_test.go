package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestPlainProgressRepeatedSteps: a failed change's undo runs the chain
// again, so step names come back as new steps. Without a terminal each
// step is printed once, as it ends, in order: the undo's steps too, and an
// earlier step's line is never printed again with another step's state.
func TestPlainProgressRepeatedSteps(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	step := func(name string, st opusv1.StepState, msg string) *opusv1.Step {
		s := &opusv1.Step{Name: name, State: st, Message: msg, StartTime: timestamppb.New(t0)}
		if st != opusv1.StepState_STEP_STATE_RUNNING {
			s.EndTime = timestamppb.New(t0.Add(10 * time.Millisecond))
		}
		return s
	}
	const (
		done    = opusv1.StepState_STEP_STATE_DONE
		failed  = opusv1.StepState_STEP_STATE_FAILED
		running = opusv1.StepState_STEP_STATE_RUNNING
	)
	// Each update is the operation as a watcher sees it, in order; a
	// watcher may miss states in between.
	updates := [][]*opusv1.Step{
		{step("user", done, "user exists"), step("migrate", running, "")},
		{step("user", done, "user exists"), step("migrate", failed, "boom")},
		{step("user", done, "user exists"), step("migrate", failed, "boom"), step("undo", done, "putting back"),
			step("user", done, "user exists again")},
		{step("user", done, "user exists"), step("migrate", failed, "boom"), step("undo", done, "putting back"),
			step("user", done, "user exists again"), step("migrate", running, "")},
		{step("user", done, "user exists"), step("migrate", failed, "boom"), step("undo", done, "putting back"),
			step("user", done, "user exists again"), step("migrate", done, "passed"), step("health", done, "200")},
		// The same state again (a second wake-up) prints nothing more.
		{step("user", done, "user exists"), step("migrate", failed, "boom"), step("undo", done, "putting back"),
			step("user", done, "user exists again"), step("migrate", done, "passed"), step("health", done, "200")},
	}
	var b bytes.Buffer
	p := newProgress(&b, false)
	for _, steps := range updates {
		p.update(&opusv1.Operation{Steps: steps})
	}
	p.close()
	want := strings.Join([]string{
		"step user: done (0.01s): user exists",
		"step migrate: failed (0.01s)",
		"step undo: done (0.01s): putting back",
		"step user: done (0.01s): user exists again",
		"step migrate: done (0.01s): passed",
		"step health: done (0.01s): 200",
	}, "\n") + "\n"
	if got := b.String(); got != want {
		t.Errorf("plain progress:\n%s\nwant:\n%s", got, want)
	}
}
