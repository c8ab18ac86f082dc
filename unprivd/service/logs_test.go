package service

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// fakeLog is a project's log as privd's TailLog with a position sees it:
// the offset is a line number, at most two lines come per call.
type fakeLog struct {
	mu    sync.Mutex
	lines []string
	calls int
}

func (l *fakeLog) add(lines ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, lines...)
}

func (l *fakeLog) polls() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

// tail answers as privd would: without a position, one line naming
// the project and how many lines were asked for, at the log's end.
func (l *fakeLog) tail(in *privdv1.TailLogRequest) *privdv1.TailLogResponse {
	l.mu.Lock()
	defer l.mu.Unlock()
	if in.GetAfter() == nil {
		return &privdv1.TailLogResponse{Lines: []string{fmt.Sprintf("%s: %d lines", in.GetProject(), in.GetLines())},
			Next: &privdv1.LogPosition{Offset: int64(len(l.lines))}}
	}
	l.calls++
	from := min(int(in.GetAfter().GetOffset()), len(l.lines))
	to := min(from+2, len(l.lines))
	return &privdv1.TailLogResponse{Lines: slices.Clone(l.lines[from:to]),
		Next: &privdv1.LogPosition{Offset: int64(to)}, More: to < len(l.lines)}
}

func setFollowPoll(t *testing.T, d time.Duration) {
	old := followPoll
	followPoll = d
	t.Cleanup(func() { followPoll = old })
}

// TestFollowLogs: the tail comes first (even empty it would), then each
// appended line once, in order, however many polls find nothing and
// however many calls privd needs for a burst; the stream ends when the
// project is deleted.
func TestFollowLogs(t *testing.T) {
	setFollowPoll(t, 5*time.Millisecond)
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	s.privd.log = &fakeLog{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "followed"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		req  *opusv1.FollowLogsRequest
		want codes.Code
	}{
		{&opusv1.FollowLogsRequest{Project: "followed", Lines: 1001}, codes.InvalidArgument},
		{&opusv1.FollowLogsRequest{Project: "Bad Name"}, codes.InvalidArgument},
		{&opusv1.FollowLogsRequest{Project: "nothere"}, codes.NotFound},
	} {
		f, _ := s.client.FollowLogs(ctx, tc.req)
		if _, err := f.Recv(); code(err) != tc.want {
			t.Errorf("FollowLogs(%v) = %v, want %v", tc.req, err, tc.want)
		}
	}
	f, err := s.client.FollowLogs(ctx, &opusv1.FollowLogsRequest{Project: "followed", Lines: 7})
	if err != nil {
		t.Fatal(err)
	}
	recv := func() []string {
		t.Helper()
		m, err := f.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		return m.GetLines()
	}
	if got := recv(); !slices.Equal(got, []string{"followed: 7 lines"}) {
		t.Fatalf("first answer %q, want the tail", got)
	}
	var got []string
	s.privd.log.add("a", "b", "c")
	for len(got) < 3 {
		got = append(got, recv()...)
	}
	// Polls that find nothing send nothing: the next answer is the next line.
	for p := s.privd.log.polls(); s.privd.log.polls() < p+5 && ctx.Err() == nil; {
		time.Sleep(time.Millisecond)
	}
	s.privd.log.add("d")
	got = append(got, recv()...)
	if want := []string{"a", "b", "c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("followed %q, want %q", got, want)
	}
	// Deleted (the name may be someone else's next): the stream ends.
	if err := s.st.Update(ctx, func(tx *store.Tx) error { return tx.DeleteProject("followed") }); err != nil {
		t.Fatal(err)
	}
	s.privd.log.add("not to be seen")
	if m, err := f.Recv(); code(err) != codes.NotFound {
		t.Fatalf("after the delete: %v, %v; want NotFound", m, err)
	}
}

// TestFollowLogsLimit: one uid follows at most maxFollows logs at once;
// the next is refused until one ends.
func TestFollowLogsLimit(t *testing.T) {
	setFollowPoll(t, time.Hour)
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	s.privd.log = &fakeLog{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "followed"}); err != nil {
		t.Fatal(err)
	}
	follow := func(ctx context.Context) error {
		f, err := s.client.FollowLogs(ctx, &opusv1.FollowLogsRequest{Project: "followed"})
		if err == nil {
			_, err = f.Recv()
		}
		return err
	}
	cancels := make([]context.CancelFunc, maxFollows)
	for i := range maxFollows {
		var fctx context.Context
		fctx, cancels[i] = context.WithCancel(ctx)
		defer cancels[i]()
		if err := follow(fctx); err != nil {
			t.Fatalf("follow %d: %v", i, err)
		}
	}
	if err := follow(ctx); code(err) != codes.ResourceExhausted {
		t.Fatalf("follow %d: %v, want ResourceExhausted", maxFollows+1, err)
	}
	cancels[0]()
	var err error
	for range 100 { // the server sees the cancel soon after
		if err = follow(ctx); code(err) != codes.ResourceExhausted {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("follow after one ended: %v", err)
	}
}
