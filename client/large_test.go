package client_test

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/opus-hosting/opus/client"
	"github.com/opus-hosting/opus/internal/peercred"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// bigLister answers ListProjects with more than gRPC's default 4 MiB.
type bigLister struct {
	opusv1.UnimplementedOpusServer
	projects []*opusv1.Project
}

func (b *bigLister) ListProjects(context.Context, *opusv1.ListProjectsRequest) (*opusv1.ListProjectsResponse, error) {
	return &opusv1.ListProjectsResponse{Projects: b.projects}, nil
}

// An admin's list on a large host is bigger than gRPC's default receive
// limit; the client accepts it.
func TestListProjectsPastDefaultMessageLimit(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "opusd.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	big := &bigLister{}
	note := strings.Repeat("x", 2000)
	for i := range 3000 {
		big.projects = append(big.projects, &opusv1.Project{Name: "p" + strings.Repeat("0", i%5), LastError: note})
	}
	g := grpc.NewServer(grpc.Creds(peercred.Server()))
	opusv1.RegisterOpusServer(g, big)
	go g.Serve(lis)
	t.Cleanup(g.Stop)

	c, err := client.Dial(testCtx(t), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ps, err := c.ListProjects(testCtx(t))
	if err != nil {
		t.Fatalf("ListProjects of about 6 MB: %v", err)
	}
	if len(ps) != len(big.projects) {
		t.Fatalf("%d projects, want %d", len(ps), len(big.projects))
	}
}
