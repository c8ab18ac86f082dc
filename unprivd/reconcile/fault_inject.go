//go:build faultinject

package reconcile

// This file exists only in test builds (go build -tags faultinject): it lets
// the crash tests kill opusd with SIGKILL right after a chosen reconcile
// step, as a power cut or the OOM killer would. A release build has no such
// file, no such environment variable and no way to do this; the e2e crash
// test checks that.

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// FaultEnv names the step after which opusd kills itself:
// "deploy/STEP" or "teardown/STEP", optionally ":N" to die at the N-th time
// that step is done in this process (default the first).
const FaultEnv = "OPUS_FAULT_KILL_AFTER_STEP"

func init() {
	spec := os.Getenv(FaultEnv)
	if spec == "" {
		return
	}
	want, nth, err := parseFault(spec)
	if err != nil {
		// A test that asked for a fault it cannot get must not pass
		// silently: refuse to run at all.
		fmt.Fprintf(os.Stderr, "opusd: %s: %v\n", FaultEnv, err)
		os.Exit(3)
	}
	var seen atomic.Int64
	afterStep = func(deleting bool, step string) {
		chain := "deploy"
		if deleting {
			chain = "teardown"
		}
		if chain+"/"+step != want || seen.Add(1) < nth {
			return
		}
		slog.Warn("fault injection: killing opusd with SIGKILL", "after", want, "time", nth)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not handled; never go on to the next step
	}
}

// parseFault splits "chain/step[:n]".
func parseFault(spec string) (string, int64, error) {
	want, count, hasCount := strings.Cut(spec, ":")
	nth := int64(1)
	if hasCount {
		n, err := strconv.ParseInt(count, 10, 64)
		if err != nil || n < 1 {
			return "", 0, fmt.Errorf("%q: count %q is not a positive number", spec, count)
		}
		nth = n
	}
	chain, step, ok := strings.Cut(want, "/")
	if !ok || (chain != "deploy" && chain != "teardown") {
		return "", 0, fmt.Errorf("%q: want deploy/STEP or teardown/STEP", spec)
	}
	steps := DeploySteps()
	if chain == "teardown" {
		steps = TeardownSteps()
	}
	for _, s := range steps {
		if s.Name == step {
			return want, nth, nil
		}
	}
	return "", 0, fmt.Errorf("%q: no step %q in the %s chain", spec, step, chain)
}
