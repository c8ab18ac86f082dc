package service

import (
	"context"
	"errors"
	"io"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/excerpt"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

func validateOpID(id string) error {
	if !strings.HasPrefix(id, "op-") || len(id) != 3+32 || strings.Trim(id[3:], "0123456789abcdef") != "" {
		return invalid("id", "%q is not an operation id (op- and 32 hex digits)", excerpt.Short(id))
	}
	return nil
}

// operation loads operation id for c; not existing and not visible are the
// same NotFound.
func (s *Service) operation(ctx context.Context, c caller, method, id string) (*store.Operation, error) {
	op, err := s.st.GetOperation(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "operation %q not found", id)
	}
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	if !c.mayOp(op) {
		return nil, s.refuse(ctx, c, method, op.Project, status.Errorf(codes.NotFound, "operation %q not found", id))
	}
	return op, nil
}

// GetOperation returns one operation.
func (s *Service) GetOperation(ctx context.Context, req *opusv1.GetOperationRequest) (*opusv1.Operation, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	if err := validateOpID(req.GetId()); err != nil {
		return nil, err
	}
	op, err := s.operation(ctx, c, opusv1.Opus_GetOperation_FullMethodName, req.GetId())
	if err != nil {
		return nil, err
	}
	return toOperation(op), nil
}

// WatchOperation sends the operation now and after every change, and
// returns once it is final (at once if it already is).
func (s *Service) WatchOperation(req *opusv1.WatchOperationRequest, stream opusv1.Opus_WatchOperationServer) error {
	ctx := stream.Context()
	c, err := callerFrom(ctx)
	if err != nil {
		return err
	}
	if err := validateOpID(req.GetId()); err != nil {
		return err
	}
	if _, err := s.operation(ctx, c, opusv1.Opus_WatchOperation_FullMethodName, req.GetId()); err != nil {
		return err
	}
	release, ok := s.watches.acquire(c.uid)
	if !ok {
		return status.Errorf(codes.ResourceExhausted, "operations: you are watching %d operations already, the most one user may at once; stop watching one of them first (close a console page or an opusctl)", maxWatches)
	}
	defer release()
	var lastSent *opusv1.Operation
	for {
		// Subscribe before reading, so a change between the read and the
		// wait still wakes us.
		changed, release := s.st.Changed(req.GetId())
		op, err := s.st.GetOperation(ctx, req.GetId())
		if err != nil {
			release()
			if errors.Is(err, store.ErrNotFound) {
				// Pruned or forgotten with its project while watched.
				return status.Errorf(codes.NotFound, "operation %q no longer exists", req.GetId())
			}
			return s.storeErr(ctx, err)
		}
		msg := toOperation(op)
		if lastSent == nil || !sameOperation(lastSent, msg) {
			if err := stream.Send(msg); err != nil {
				release()
				return err
			}
			lastSent = msg
		}
		if op.State.Final() {
			release()
			return nil
		}
		select {
		case <-changed:
			release()
		case <-ctx.Done():
			release()
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// ListOperations returns a project's recent operations, newest first.
func (s *Service) ListOperations(ctx context.Context, req *opusv1.ListOperationsRequest) (*opusv1.ListOperationsResponse, error) {
	c, err := callerAbout(ctx, "project", req.GetProject())
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit < 0 || limit > store.MaxOperationsPerProject {
		return nil, invalid("limit", "%d is out of range; ask for 0 (meaning 20) to %d", limit, store.MaxOperationsPerProject)
	}
	if limit == 0 {
		limit = 20
	}
	var ops []*store.Operation
	err = s.st.View(ctx, func(tx *store.Tx) error {
		if _, err := s.visibleProject(ctx, tx, c, opusv1.Opus_ListOperations_FullMethodName, req.GetProject()); err != nil {
			return err
		}
		ops, err = tx.Operations(req.GetProject(), limit)
		return err
	})
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	res := &opusv1.ListOperationsResponse{}
	for _, op := range ops {
		res.Operations = append(res.Operations, toOperation(op))
	}
	return res, nil
}

// UploadSource receives an app archive: the first message is the info,
// the rest are chunks, at most MaxUpload bytes in all. The archive is the
// caller's upload, usable by them (and admins), and counted against their
// upload quota; the caller's uploads no project needs any more are pruned
// first, so what they no longer use never stands in their way.
func (s *Service) UploadSource(stream opusv1.Opus_UploadSourceServer) error {
	ctx := stream.Context()
	c, err := callerFrom(ctx)
	if err != nil {
		return err
	}
	if s.uploads == nil {
		return status.Error(codes.Unimplemented, "this opusd has no upload store configured")
	}
	first, err := stream.Recv()
	if err == io.EOF {
		return invalid("info", "the stream is empty; the first message must carry the upload's info")
	}
	if err != nil {
		return err
	}
	info := first.GetInfo()
	if info == nil {
		return invalid("info", "the first message must carry the upload's info, not a chunk")
	}
	if info.GetSize() < 0 {
		return invalid("info.size", "%d is negative", info.GetSize())
	}
	if info.GetSize() > s.cfg.MaxUpload {
		return invalid("info.size", "the archive is %d bytes; at most %d are accepted", info.GetSize(), s.cfg.MaxUpload)
	}
	if err := s.PruneUploads(ctx, c.uid); err != nil {
		// Not fatal: the quota check below counts what is still stored.
		s.log.WarnContext(ctx, "pruning uploads", "uid", c.uid, "err", err)
	}
	r := &chunkReader{stream: stream, max: s.cfg.MaxUpload}
	digest, size, err := s.uploads.Put(ctx, c.uid, r)
	var quota quotaExceeded
	switch {
	case r.err != nil && errors.Is(r.err, errTooBig):
		return status.Errorf(codes.ResourceExhausted, "upload: the archive exceeds %d bytes", s.cfg.MaxUpload)
	case r.err != nil && errors.Is(r.err, errInfoAgain):
		return invalid("info", "sent twice; only the first message carries info")
	case r.err != nil:
		return r.err
	case errors.As(err, &quota) && quota.QuotaExceeded():
		s.log.WarnContext(ctx, "upload refused: quota", "uid", c.uid, "origin", excerpt.Short(info.GetOrigin()), "err", err)
		return status.Errorf(codes.ResourceExhausted, "upload: %v; to make room, destroy projects or remove apps you no longer need (the uploads of each app's last revisions are kept for rollback: revisions_keep), or ask the host administrator for a larger upload_quota", err)
	case err != nil:
		// The store reads and checks the archive; its refusal is the
		// caller's to fix (not a tar, unsafe entries, ...).
		s.log.WarnContext(ctx, "upload refused", "uid", c.uid, "origin", excerpt.Short(info.GetOrigin()), "err", err)
		return status.Errorf(codes.InvalidArgument, "upload: %v", err)
	}
	s.log.InfoContext(ctx, "upload stored", "uid", c.uid, "digest", digest, "size", size, "origin", excerpt.Short(info.GetOrigin()))
	return stream.SendAndClose(&opusv1.UploadSourceResponse{Digest: digest, Size: size})
}

var (
	errTooBig    = errors.New("upload too big")
	errInfoAgain = errors.New("info sent twice")
)

// chunkReader reads the chunks of an upload stream as one byte stream,
// failing once more than max bytes arrive. err keeps the first stream or
// limit error so the handler can tell it from the upload store's own.
type chunkReader struct {
	stream opusv1.Opus_UploadSourceServer
	buf    []byte
	n, max int64
	err    error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	for len(r.buf) == 0 {
		msg, err := r.stream.Recv()
		if err == io.EOF {
			return 0, io.EOF
		}
		if err != nil {
			r.err = err
			return 0, err
		}
		if msg.GetInfo() != nil {
			r.err = errInfoAgain
			return 0, r.err
		}
		r.buf = msg.GetChunk()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	r.n += int64(n)
	if r.n > r.max {
		r.err = errTooBig
		return 0, r.err
	}
	return n, nil
}

// maxWatches is how many operations one uid may watch at once: a watch
// holds a stream (and, from the web console, a connection) for as long
// as the operation runs, which the project's own code can make long.
const maxWatches = 32
