package service

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/unprivd/store"
)

// TestMovingRefusesChanges: a change to a moving project is refused (not
// queued: nothing applies it later), and the refusal says so and how to
// follow the move.
func TestMovingRefusesChanges(t *testing.T) {
	if err := moving(&store.Project{Name: "blog"}); err != nil {
		t.Fatalf("project not moving: %v", err)
	}
	err := moving(&store.Project{Name: "blog", Move: &store.Move{From: "web1", To: "web2", Operation: "op-1"}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("moving project: %v; want FailedPrecondition", err)
	}
	for _, want := range []string{`project "blog" is moving to host web2`, "changes to it are refused until the move is done", "opusctl wait op-1"} {
		if !strings.Contains(status.Convert(err).Message(), want) {
			t.Errorf("moving project: %q; want it to say %q", status.Convert(err).Message(), want)
		}
	}
}
