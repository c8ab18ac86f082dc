package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// OperationError is the error Wait returns for an operation that FAILED.
// Op is the operation as it ended; its Error and failed step say why.
type OperationError struct {
	Op *opusv1.Operation
}

// Error names the operation and carries the server's reason.
func (e *OperationError) Error() string {
	reason := e.Op.GetError()
	if reason == "" {
		for _, s := range e.Op.GetSteps() {
			if s.GetState() == opusv1.StepState_STEP_STATE_FAILED {
				reason = fmt.Sprintf("step %s failed: %s", s.GetName(), s.GetMessage())
			}
		}
	}
	if reason == "" {
		reason = "no reason given"
	}
	kind := strings.ToLower(strings.TrimPrefix(e.Op.GetKind().String(), "OPERATION_KIND_"))
	return fmt.Sprintf("operation %s (%s of %s) failed: %s", e.Op.GetId(), kind, e.Op.GetProject(), reason)
}

// Final reports whether an operation has reached a state it will not leave.
func Final(op *opusv1.Operation) bool {
	switch op.GetState() {
	case opusv1.OperationState_OPERATION_STATE_SUCCEEDED, opusv1.OperationState_OPERATION_STATE_FAILED:
		return true
	}
	return false
}

// Retry policy for Wait when the connection to opusd breaks: enough to ride
// out an opusd restart, bounded so a dead daemon is reported.
const (
	retryFirst    = 100 * time.Millisecond
	retryMax      = 2 * time.Second
	retryAttempts = 12 // about 15 s of consecutive failures
)

// Wait follows operation id until it ends, calling progress (when not nil)
// with each new state of the operation, in order, from the calling
// goroutine. If the watch stream breaks (opusd restarted, connection lost)
// it resumes: it asks GetOperation for the current state and watches again,
// with backoff. It returns the final operation, and for a FAILED one an
// *OperationError as well. An error of the RPC itself (NotFound,
// PermissionDenied, ...) is returned as the server sent it.
func (c *Client) Wait(ctx context.Context, id string, progress func(*opusv1.Operation)) (*opusv1.Operation, error) {
	report := func(op *opusv1.Operation) {
		if progress != nil {
			progress(op)
		}
	}
	finish := func(op *opusv1.Operation) (*opusv1.Operation, error) {
		if op.GetState() == opusv1.OperationState_OPERATION_STATE_FAILED {
			return op, &OperationError{Op: op}
		}
		return op, nil
	}
	var last *opusv1.Operation
	failures := 0
	backoff := retryFirst
	for {
		op, err := c.watchOnce(ctx, id, func(op *opusv1.Operation) {
			failures, backoff = 0, retryFirst // the connection works again
			last = op
			report(op)
		})
		if err == nil && Final(op) {
			return finish(op)
		}
		if err != nil && !retryable(err) {
			return last, err
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return last, fmt.Errorf("wait for operation %s: %w", id, ctxErr)
		}
		// The stream broke or ended early: back off, then learn where the
		// operation is before watching again, so a final state reached
		// while we were away is not missed.
		failures++
		if failures > retryAttempts {
			return last, fmt.Errorf("wait for operation %s: giving up after %d attempts: %w", id, failures-1, err)
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("wait for operation %s: %w", id, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, retryMax)
		op, gerr := c.GetOperation(ctx, id)
		if gerr != nil {
			if !retryable(gerr) {
				return last, gerr
			}
			continue
		}
		failures, backoff = 0, retryFirst
		last = op
		report(op)
		if Final(op) {
			return finish(op)
		}
	}
}

// errStreamEnded means the server closed a watch before the operation
// reached a final state; Wait treats it like a broken stream.
var errStreamEnded = errors.New("watch stream ended before the operation finished")

// watchOnce runs one WatchOperation stream to its end. It returns the last
// operation received; a nil error means that operation is final.
func (c *Client) watchOnce(ctx context.Context, id string, each func(*opusv1.Operation)) (*opusv1.Operation, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.WatchOperation(ctx, &opusv1.WatchOperationRequest{Id: id})
	if err != nil {
		return nil, err
	}
	var last *opusv1.Operation
	for {
		op, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if last != nil && Final(last) {
				return last, nil
			}
			return last, errStreamEnded
		}
		if err != nil {
			return last, err
		}
		last = op
		each(op)
		if Final(op) {
			return op, nil
		}
	}
}

// retryable reports whether a failed watch is worth resuming: the
// transport broke or the stream ended early, as opposed to the server
// refusing the request. Wait checks its context before acting on it.
func retryable(err error) bool {
	if errors.Is(err, errStreamEnded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted, codes.Internal:
		// Internal covers a stream reset mid-flight (RST_STREAM).
		return true
	case codes.Canceled, codes.DeadlineExceeded:
		// Our own context ending is caught by Wait right after; these
		// codes can also arrive first from the server's side of the
		// deadline, or from a server cancelling its streams to shut down.
		return true
	}
	return false
}
