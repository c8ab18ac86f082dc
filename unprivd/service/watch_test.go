package service

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// TestWatchOperationLimit: one uid watches at most maxWatches operations
// at once (each watch holds a stream, and in the web console a
// connection, for as long as the operation runs, which the project's own
// code can make long); the next is refused until one ends.
func TestWatchOperationLimit(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	op, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "watched"})
	if err != nil {
		t.Fatal(err)
	}
	watch := func(ctx context.Context) error {
		w, err := s.client.WatchOperation(ctx, &opusv1.WatchOperationRequest{Id: op.GetId()})
		if err == nil {
			var m *opusv1.Operation
			if m, err = w.Recv(); err == nil && (m.GetState() == opusv1.OperationState_OPERATION_STATE_SUCCEEDED || m.GetState() == opusv1.OperationState_OPERATION_STATE_FAILED) {
				t.Fatalf("the operation ended (%v): the test needs one that runs", m.GetState())
			}
		}
		return err
	}
	cancels := make([]context.CancelFunc, maxWatches)
	for i := range maxWatches {
		var wctx context.Context
		wctx, cancels[i] = context.WithCancel(ctx)
		defer cancels[i]()
		if err := watch(wctx); err != nil {
			t.Fatalf("watch %d: %v", i, err)
		}
	}
	if err := watch(ctx); code(err) != codes.ResourceExhausted {
		t.Fatalf("watch %d: %v, want ResourceExhausted", maxWatches+1, err)
	}
	cancels[0]()
	for range 100 { // the server sees the cancel soon after
		if err = watch(ctx); code(err) != codes.ResourceExhausted {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("watch after one ended: %v", err)
	}
}
