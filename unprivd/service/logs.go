package service

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

const (
	// maxLogLines is the most lines GetLogs and FollowLogs send at first.
	maxLogLines = 1000
	// maxFollows is how many logs one uid may follow at once: each
	// follow asks privd every followPoll, and a caller must not turn that
	// into a flood of privd calls by opening thousands of them.
	maxFollows = 8
)

// errPrivdCannotFollow: privd answered a tail without a position (it
// predates FollowLogs). Asked again without one, it would send the tail
// again and again.
var errPrivdCannotFollow = status.Error(codes.Unimplemented, "logs: this opus-privd cannot follow a log; restart it with the opus-privd of this Opus version")

// followPoll is how often FollowLogs asks privd for new lines (a var for
// tests).
var followPoll = time.Second

// logLines checks the lines field of a logs request and applies its
// default.
func logLines(n int32) (int32, error) {
	if n < 0 || n > maxLogLines {
		return 0, invalid("lines", "%d is out of range; ask for 0 (meaning 100) to %d lines", n, maxLogLines)
	}
	if n == 0 {
		return 100, nil
	}
	return n, nil
}

// tailLog asks privd for (part of) a project's log, and maps its errors
// for the caller.
func (s *Service) tailLog(ctx context.Context, req *privdv1.TailLogRequest) (*privdv1.TailLogResponse, error) {
	res, err := s.privd.TailLog(ctx, req)
	if err != nil {
		st := status.Convert(err)
		switch {
		case ctx.Err() != nil:
			return nil, status.FromContextError(ctx.Err()).Err()
		case st.Code() == codes.Unavailable:
			return nil, status.Errorf(codes.Unavailable, "logs: opus-privd is not reachable (%s); ask the host administrator", st.Message())
		}
		s.log.WarnContext(ctx, "privd TailLog", "project", req.GetProject(), "err", err)
		return nil, status.Errorf(st.Code(), "logs: %s", st.Message())
	}
	return res, nil
}

// checkVisible answers whether c may see the project now.
func (s *Service) checkVisible(ctx context.Context, c caller, method, project string) error {
	err := s.st.View(ctx, func(tx *store.Tx) error {
		p, err := s.visibleProject(ctx, tx, c, method, project)
		if err == nil && !s.servedHere(p) {
			err = s.elsewhere(p, "its logs are kept: read them")
		}
		return err
	})
	if err != nil {
		return s.storeErr(ctx, err)
	}
	return nil
}

// FollowLogs sends the project's last lines, then every line appended to
// its log, until the caller goes away or the project does. privd keeps
// the position in the log: each poll asks for what follows the last
// answer's position, so each line is sent once, and a rotated or
// truncated log is read again from its start. The project is looked up
// again before every poll: once it is deleted (and its name perhaps taken
// by someone else) its old owner is sent nothing more.
func (s *Service) FollowLogs(req *opusv1.FollowLogsRequest, stream opusv1.Opus_FollowLogsServer) error {
	ctx := stream.Context()
	const method = opusv1.Opus_FollowLogs_FullMethodName
	c, err := callerAbout(ctx, "project", req.GetProject())
	if err != nil {
		return err
	}
	lines, err := logLines(req.GetLines())
	if err != nil {
		return err
	}
	if err := s.checkVisible(ctx, c, method, req.GetProject()); err != nil {
		return err
	}
	release, ok := s.follows.acquire(c.uid)
	if !ok {
		return status.Errorf(codes.ResourceExhausted, "logs: you are following %d logs already, the most one user may at once; stop one of them first", maxFollows)
	}
	defer release()

	res, err := s.tailLog(ctx, &privdv1.TailLogRequest{Project: req.GetProject(), Lines: lines})
	if err != nil {
		return err
	}
	// The first answer goes out even when empty: the caller then knows
	// it is following.
	if err := stream.Send(&opusv1.FollowLogsResponse{Lines: res.GetLines()}); err != nil {
		return err
	}
	next, more := res.GetNext(), false
	if next == nil {
		return errPrivdCannotFollow
	}
	t := time.NewTimer(followPoll)
	defer t.Stop()
	for {
		if !more {
			select {
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			case <-t.C:
				t.Reset(followPoll)
			}
		}
		if err := s.checkVisible(ctx, c, method, req.GetProject()); err != nil {
			if status.Code(err) == codes.NotFound {
				return status.Errorf(codes.NotFound, "logs: project %q no longer exists", req.GetProject())
			}
			return err
		}
		res, err := s.tailLog(ctx, &privdv1.TailLogRequest{Project: req.GetProject(), Lines: maxLogLines, After: next})
		if err != nil {
			return err
		}
		if len(res.GetLines()) > 0 {
			if err := stream.Send(&opusv1.FollowLogsResponse{Lines: res.GetLines()}); err != nil {
				return err
			}
		}
		if res.GetNext() == nil {
			return errPrivdCannotFollow
		}
		next, more = res.GetNext(), res.GetMore()
	}
}

// uidLimit counts each uid's streams of one kind (FollowLogs' follows,
// WatchOperation's watches), up to max at once. Its max is set when made;
// the map is made on first use.
type uidLimit struct {
	max int
	mu  sync.Mutex
	n   map[uint32]int
}

// acquire takes one of uid's streams, if it has one left, and returns
// what gives it back.
func (l *uidLimit) acquire(uid uint32) (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[uid] >= l.max {
		return nil, false
	}
	if l.n == nil {
		l.n = map[uint32]int{}
	}
	l.n[uid]++
	return sync.OnceFunc(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.n[uid]--; l.n[uid] == 0 {
			delete(l.n, uid)
		}
	}), true
}
