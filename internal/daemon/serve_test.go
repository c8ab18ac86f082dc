package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/opus-hosting/opus/internal/daemon/notifytest"
	"github.com/opus-hosting/opus/internal/logtest"
)

// TestServeStops runs Serve on a real gRPC server and stops it: systemd
// hears READY=1 then STOPPING=1; Stopping runs before the server stops,
// Drain after, with DrainGrace to finish; a call still in flight (a
// health Watch stream, which never ends by itself) is cut off CallGrace
// after the stop and not before, and one that ended lets the server stop
// at once; a failure of another server ends Serve with that failure.
func TestServeStops(t *testing.T) {
	const callGrace, drainGrace = 300 * time.Millisecond, 5 * time.Second
	failure := errors.New("console broke")
	tests := []struct {
		name      string
		inFlight  bool  // a call runs until it is cut off
		fail      error // sent on Failed instead of ending ctx
		wantLog   string
		minToStop time.Duration // from the stop to Drain
	}{
		{"signal, nothing in flight", false, nil, `msg="testd stopping" signal=terminated`, 0},
		{"signal, a call in flight", true, nil, "calls still running after the grace period; cutting them off", callGrace},
		{"another server failed", false, failure, "console broke", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			notify, notes := notifytest.Socket(t)
			t.Setenv("NOTIFY_SOCKET", notify)
			var logs logtest.Buffer
			d := &Daemon{Name: "testd", Log: slog.New(slog.NewTextHandler(&logs, nil))}
			lis, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
			if err != nil {
				t.Fatal(err)
			}
			g := grpc.NewServer()
			hs := health.NewServer()
			healthpb.RegisterHealthServer(g, hs)

			var (
				mu                       sync.Mutex
				order                    []string
				stoppedAt, drainDeadline time.Time
				drainedAt                time.Time
			)
			step := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
			started := make(chan struct{})
			failed := make(chan error, 1)
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			done := make(chan error, 1)
			go func() {
				done <- d.Serve(ctx, Serving{GRPC: g, Listener: lis, Failed: failed,
					Started:   func() { step("started"); close(started) },
					Stopping:  func() { step("stopping"); hs.Shutdown() },
					CallGrace: callGrace,
					Drain: func(ctx context.Context) error {
						step("drain")
						drainedAt = time.Now()
						drainDeadline, _ = ctx.Deadline()
						return nil
					},
					DrainGrace: drainGrace,
				})
			}()
			<-started

			cc, err := grpc.NewClient("unix://"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			hc := healthpb.NewHealthClient(cc)
			cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer ccancel()
			if _, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatalf("not serving: %v", err)
			}
			// cutOff ends when the call in flight has ended.
			cutOff := make(chan error, 1)
			if tc.inFlight {
				w, err := hc.Watch(cctx, &healthpb.HealthCheckRequest{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := w.Recv(); err != nil {
					t.Fatal(err)
				}
				go func() {
					for {
						if _, err := w.Recv(); err != nil {
							cutOff <- err
							return
						}
					}
				}()
			}

			stoppedAt = time.Now()
			if tc.fail != nil {
				failed <- tc.fail
			} else {
				cancel(SignalError{syscall.SIGTERM})
			}
			var got error
			select {
			case got = <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("Serve still running 20s after the stop\n%s", logs.String())
			}
			if tc.inFlight {
				select {
				case err := <-cutOff:
					t.Logf("the call in flight ended: %v", err)
				case <-time.After(10 * time.Second):
					t.Error("the call in flight still runs 10s after Serve returned")
				}
			}
			if !errors.Is(got, tc.fail) || (tc.fail == nil) != (got == nil) {
				t.Errorf("Serve = %v, want %v", got, tc.fail)
			}
			if strings.Join(order, ",") != "started,stopping,drain" {
				t.Errorf("order %v", order)
			}
			if toDrain := drainedAt.Sub(stoppedAt); toDrain < tc.minToStop || toDrain > callGrace+10*time.Second {
				t.Errorf("drain began %v after the stop, want from %v (calls cut off after %v)", toDrain, tc.minToStop, callGrace)
			}
			if left := drainDeadline.Sub(drainedAt); left <= 0 || left > drainGrace {
				t.Errorf("drain had %v left, want at most %v", left, drainGrace)
			}
			notesGot := notifytest.Drain(t, notify, notes)
			if strings.Join(notesGot, ",") != "READY=1,STOPPING=1" {
				t.Errorf("notes %q, want READY=1 then STOPPING=1", notesGot)
			}
			l := logs.String()
			for _, want := range []string{tc.wantLog, "testd stopped"} {
				if !strings.Contains(l, want) {
					t.Errorf("log lacks %q:\n%s", want, l)
				}
			}
			if !tc.inFlight && strings.Contains(l, "cutting them off") {
				t.Errorf("calls cut off although none was in flight:\n%s", l)
			}
		})
	}
}

// TestDrainCutShort: a drain that does not finish within its grace is
// given a context that ends then, and saying so is logged.
func TestDrainCutShort(t *testing.T) {
	var logs logtest.Buffer
	d := &Daemon{Name: "testd", Log: slog.New(slog.NewTextHandler(&logs, nil))}
	lis, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		done <- d.Serve(ctx, Serving{GRPC: grpc.NewServer(), Listener: lis, CallGrace: time.Second, DrainGrace: 200 * time.Millisecond,
			Drain: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve still draining 20s after the stop, with a drain bounded at 200ms")
	}
	if took := time.Since(start); took < 200*time.Millisecond || took > 10*time.Second {
		t.Errorf("stop took %v with a drain bounded at 200ms", took)
	}
	if !strings.Contains(logs.String(), "work in flight cut short by the stop") {
		t.Errorf("log lacks the cut-short drain:\n%s", logs.String())
	}
}
