package client_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/service/servicetest"
)

func dial(t *testing.T, o *servicetest.Opusd) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, o.Socket)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDialMissingSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nothing.sock")
	_, err := client.Dial(context.Background(), sock)
	if err == nil {
		t.Fatal("Dial of a missing socket succeeded")
	}
	if !strings.Contains(err.Error(), sock) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("error %q should name the socket and the reason", err)
	}
}

// The caller's identity must come from the socket, and the helpers must
// reach the server with what they were given.
func TestHelpersUseRealPeerCredentials(t *testing.T) {
	o := servicetest.Start(t, servicetest.Options{})
	c := dial(t, o)
	ctx := testCtx(t)

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "__init__.py"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	digest, err := c.UploadDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	op, err := c.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "tblog", Apps: []*opusv1.AppSpec{{Name: "polls", Source: client.UploadedSource(digest, dir)}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx, op.GetId(), nil); err != nil {
		t.Fatal(err)
	}
	calls := o.CallsOf("CreateProject")
	if len(calls) != 1 || calls[0].UID != uint32(os.Getuid()) {
		t.Fatalf("CreateProject calls = %+v, want one from uid %d", calls, os.Getuid())
	}
	if up := calls[0].Req.(*opusv1.CreateProjectRequest).GetApps()[0].GetSource().GetUpload(); up.GetDigest() != digest || up.GetOrigin() != dir {
		t.Errorf("CreateProject sent upload %v, want %s from %s", up, digest, dir)
	}
	ps, err := c.ListProjects(ctx)
	if err != nil || len(ps) != 1 || ps[0].GetOwnerUid() != uint32(os.Getuid()) || ps[0].GetPhase() != opusv1.Phase_PHASE_READY {
		t.Fatalf("ListProjects = %v, %v; want one READY project owned by us", ps, err)
	}
	ops, err := c.ListOperations(ctx, "tblog", 5)
	if err != nil || len(ops) != 1 || ops[0].GetId() != op.GetId() {
		t.Fatalf("ListOperations = %v, %v", ops, err)
	}
	lines, err := c.GetLogs(ctx, "tblog", 2)
	if err != nil || len(lines) != 2 {
		t.Fatalf("GetLogs = %v, %v; want 2 lines", lines, err)
	}
	_, err = c.GetProject(ctx, "tnope")
	if status.Code(err) != codes.NotFound {
		t.Fatalf("GetProject of a missing project: %v, want NotFound", err)
	}
}

func TestUploadDir(t *testing.T) {
	o := servicetest.Start(t, servicetest.Options{})
	c := dial(t, o)
	dir := t.TempDir()
	files := map[string]string{
		"__init__.py":          "",
		"views.py":             "def index(request): pass\n",
		"templates/blog/a.txt": strings.Repeat("x", 600<<10), // spans several chunks
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	digest, err := c.UploadDir(testCtx(t), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("digest %q", digest)
	}
	info := o.CallsOf("UploadSource")
	if len(info) != 1 {
		t.Fatalf("%d uploads", len(info))
	}
	meta := info[0].Req.(*opusv1.UploadSourceRequest).GetInfo()
	uid := uint32(os.Getuid())
	stored, err := o.Uploads.Usage(uid)
	if err != nil {
		t.Fatal(err)
	}
	if meta.GetOrigin() != dir || meta.GetSize() != stored {
		t.Errorf("UploadInfo = %v, want origin %s and size %d (what opusd stored)", meta, dir, stored)
	}
	// opusd unpacks what it stored into the files that were sent.
	out := filepath.Join(t.TempDir(), "app")
	if err := o.Uploads.Extract(testCtx(t), uid, digest, out); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || string(got) != body {
			t.Errorf("unpacked %s: got %d bytes (%v), want %d", name, len(got), err, len(body))
		}
	}
}

func TestUploadDirRefuses(t *testing.T) {
	tests := []struct {
		name    string
		make    func(t *testing.T) string
		wantErr string
	}{
		{name: "a file", wantErr: "not a directory", make: func(t *testing.T) string {
			f := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			return f
		}},
		{name: "a missing directory", wantErr: "no such file", make: func(t *testing.T) string {
			return filepath.Join(t.TempDir(), "none")
		}},
		// Not "symlink": the test's directory is named after it.
		{name: "a symlink inside", wantErr: "passwd is a symbolic link; app sources may not contain links", make: func(t *testing.T) string {
			d := t.TempDir()
			if err := os.Symlink("/etc/passwd", filepath.Join(d, "passwd")); err != nil {
				t.Fatal(err)
			}
			return d
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := servicetest.Start(t, servicetest.Options{})
			c := dial(t, o)
			dir := tc.make(t)
			_, err := c.UploadDir(testCtx(t), dir)
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.wantErr) {
				t.Fatalf("UploadDir = %v, want an error containing %q", err, tc.wantErr)
			}
			// The directory is named once, not once per layer.
			if n := strings.Count(err.Error(), dir+":"); n > 1 {
				t.Errorf("UploadDir = %v: names %s %d times", err, dir, n)
			}
			if n := len(o.CallsOf("UploadSource")); n != 0 {
				t.Fatalf("%d uploads reached the server", n)
			}
		})
	}
}

func TestWait(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(*servicetest.Opusd)
		during     func(*servicetest.Opusd) // runs while waiting
		wantState  opusv1.OperationState
		wantOpErr  string // substring of an *OperationError
		minWatches int
		minResumes int // GetOperation calls
	}{
		{name: "succeeds", wantState: opusv1.OperationState_OPERATION_STATE_SUCCEEDED, minWatches: 1},
		{
			name: "failed op is an OperationError",
			setup: func(s *servicetest.Opusd) {
				s.Privd.Set("RunManage", servicetest.FailMigrate("twait", "django.db.utils.OperationalError: no such table"))
			},
			wantState: opusv1.OperationState_OPERATION_STATE_FAILED,
			wantOpErr: "step migrate: manage.py migrate failed: django.db.utils.OperationalError: no such table",
		},
		{
			name: "broken streams are resumed",
			setup: func(s *servicetest.Opusd) {
				s.Privd.SlowDeploys(150 * time.Millisecond)
				s.BreakWatches(2)
			},
			wantState:  opusv1.OperationState_OPERATION_STATE_SUCCEEDED,
			minWatches: 3,
			minResumes: 2,
		},
		{
			name:  "opusd restart is survived",
			setup: func(s *servicetest.Opusd) { s.Privd.SlowDeploys(100 * time.Millisecond) },
			during: func(s *servicetest.Opusd) {
				time.Sleep(60 * time.Millisecond)
				s.Stop()
				time.Sleep(300 * time.Millisecond)
				if err := s.Serve(); err != nil {
					panic(err)
				}
			},
			wantState:  opusv1.OperationState_OPERATION_STATE_SUCCEEDED,
			minWatches: 1,
			minResumes: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := servicetest.Start(t, servicetest.Options{})
			if tc.setup != nil {
				tc.setup(o)
			}
			c := dial(t, o)
			ctx := testCtx(t)
			op, err := c.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "twait"})
			if err != nil {
				t.Fatal(err)
			}
			if tc.during != nil {
				go tc.during(o)
			}
			var seen []opusv1.OperationState
			final, err := c.Wait(ctx, op.GetId(), func(o *opusv1.Operation) { seen = append(seen, o.GetState()) })
			if final.GetState() != tc.wantState {
				t.Fatalf("final state %v (err %v), want %v", final.GetState(), err, tc.wantState)
			}
			if tc.wantOpErr != "" {
				var oe *client.OperationError
				if !errors.As(err, &oe) || oe.Op.GetId() != op.GetId() || !strings.Contains(err.Error(), tc.wantOpErr) {
					t.Fatalf("err = %v, want *OperationError containing %q", err, tc.wantOpErr)
				}
			} else if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if len(seen) == 0 || seen[len(seen)-1] != tc.wantState {
				t.Errorf("progress saw %v; the last must be %v", seen, tc.wantState)
			}
			if !sort.SliceIsSorted(seen, func(i, j int) bool { return seen[i] < seen[j] }) {
				t.Errorf("progress went backwards: %v", seen)
			}
			if n := len(o.CallsOf("WatchOperation")); n < tc.minWatches {
				t.Errorf("%d WatchOperation calls, want at least %d", n, tc.minWatches)
			}
			if n := len(o.CallsOf("GetOperation")); n < tc.minResumes {
				t.Errorf("%d GetOperation calls, want at least %d", n, tc.minResumes)
			}
		})
	}
}

// An operation that does not exist, or an id that cannot be one, is
// answered once: retrying cannot change the answer.
func TestWaitUnknownOperationIsNotRetried(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want codes.Code
	}{
		{"op-" + strings.Repeat("0", 32), codes.NotFound},
		{"op-404", codes.InvalidArgument},
	} {
		o := servicetest.Start(t, servicetest.Options{})
		c := dial(t, o)
		_, err := c.Wait(testCtx(t), tc.id, nil)
		if status.Code(err) != tc.want {
			t.Fatalf("Wait(%s) = %v, want %v", tc.id, err, tc.want)
		}
		if n := len(o.CallsOf("WatchOperation")); n != 1 {
			t.Fatalf("Wait(%s): %d watch calls, want exactly 1 (no retry on %v)", tc.id, n, tc.want)
		}
	}
}

func TestWaitGivesUpWhenContextEnds(t *testing.T) {
	o := servicetest.Start(t, servicetest.Options{})
	o.Privd.SlowDeploys(time.Second)
	c := dial(t, o)
	op, err := c.CreateProject(testCtx(t), &opusv1.CreateProjectRequest{Name: "tslow"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.Wait(ctx, op.GetId(), nil)
	if err == nil || status.Code(err) != codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its deadline = %v, want a deadline error", err)
	}
}
