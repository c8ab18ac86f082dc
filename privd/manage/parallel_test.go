package manage

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/testrun"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// TestRunnerTurns: at most MaxParallel holders of a turn at once; others
// wait for one to be given back, or give up with their context.
func TestRunnerTurns(t *testing.T) {
	tests := []struct {
		name    string
		max     int
		callers int
		want    int // most holders seen at once
	}{
		{"default", 0, 10, DefaultMaxParallel},
		{"one at a time", 1, 5, 1},
		{"fewer callers than turns", 8, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := &Runner{MaxParallel: tt.max}
				var mu sync.Mutex
				holding, most := 0, 0
				var wg sync.WaitGroup
				for range tt.callers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						release, err := r.acquire(context.Background())
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						holding++
						most = max(most, holding)
						mu.Unlock()
						time.Sleep(time.Second) // "Python"
						mu.Lock()
						holding--
						mu.Unlock()
						release()
					}()
				}
				wg.Wait()
				if most != tt.want {
					t.Errorf("%d held a turn at once, want %d", most, tt.want)
				}
			})
		})
	}
}

func TestRunnerTurnGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &Runner{MaxParallel: 1}
		release, err := r.acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := r.acquire(ctx); err == nil {
			t.Fatal("a second turn was given while the only one was held")
		}
		release()
		if release, err = r.acquire(context.Background()); err != nil {
			t.Fatalf("turn given back, but: %v", err)
		}
		release()
	})
}

// TestRunTakesTurns drives Run itself with a stand-in interpreter (a shell
// script run as a user of the test run, reporting success on the driver's
// progress fd):
// no more than MaxParallel of them run at once, and each one's timeout
// starts with its turn —
// six half-second runs one at a time take three seconds, past the
// two-second timeout, and none is killed.
func TestRunTakesTurns(t *testing.T) {
	run := testrun.Need(t, "creates a user and runs the stand-in interpreter as it")
	name, _, _ := run.NewUser(t, "m")
	runner, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		max, runs int
	}{
		{"two at a time", 2, 6},
		{"one at a time", 1, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The run's user reaches the code directory and the stand-in
			// there.
			base := run.TempDir(t)
			runs := filepath.Join(base, "running")
			if err := os.MkdirAll(runs, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(runs, 0o777); err != nil {
				t.Fatal(err)
			}
			py := filepath.Join(base, "python")
			script := "#!/bin/sh\n" +
				"d=" + runs + "\n" +
				"touch $d/$$; ls $d | wc -l >> $d/../counts\n" +
				"sleep 0.5\n" +
				"rm $d/$$\n" +
				"printf 'start 0\\ndone 0 0\\n' >&3\n"
			if err := os.WriteFile(py, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(base, "counts"), nil, 0o666); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Join(base, "counts"), 0o666); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(layout.For(base, "turns").Code, 0o755); err != nil {
				t.Fatal(err)
			}
			r := &Runner{Base: base, Python: py, Timeout: 2 * time.Second, MaxParallel: tt.max,
				LookupUser: func(string) (*user.User, error) { return runner, nil }}
			var wg sync.WaitGroup
			errs := make(chan error, tt.runs)
			for range tt.runs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := r.Run(context.Background(), &privdv1.RunManageRequest{Project: "turns",
						Commands: []privdv1.ManageCommand{privdv1.ManageCommand_MANAGE_COMMAND_CHECK}})
					if err == nil && res.GetFailedCommand() != privdv1.ManageCommand_MANAGE_COMMAND_UNSPECIFIED {
						err = fmt.Errorf("failed: exit %d: %s", res.GetExitCode(), res.GetOutput())
					}
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			}
			data, err := os.ReadFile(filepath.Join(base, "counts"))
			if err != nil {
				t.Fatal(err)
			}
			most, n := 0, 0
			for _, f := range strings.Fields(string(data)) {
				c, err := strconv.Atoi(f)
				if err != nil {
					t.Fatalf("counts: %q", data)
				}
				most, n = max(most, c), n+1
			}
			if n != tt.runs || most > tt.max {
				t.Errorf("%d runs, at most %d at once; want %d runs, at most %d", n, most, tt.runs, tt.max)
			}
		})
	}
}
