package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// Deploy a project with one app packed from a local directory and one from
// git, then follow the operation to its end.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	c, err := client.Dial(ctx, client.DefaultSocket())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// The directory is packed by this process, with its own rights.
	digest, err := c.UploadDir(ctx, "./blog")
	if err != nil {
		log.Fatal(err)
	}
	op, err := c.CreateProject(ctx, &opusv1.CreateProjectRequest{
		Name: "site",
		Apps: []*opusv1.AppSpec{
			{Name: "blog", Source: client.UploadedSource(digest, "./blog")},
			{Name: "polls", Source: client.GitSource("https://git.example.com/polls.git", "v1.2")},
		},
		Admin: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	op, err = c.Wait(ctx, op.GetId(), func(op *opusv1.Operation) {
		fmt.Println("operation", op.GetId(), op.GetState())
	})
	var failed *client.OperationError
	if errors.As(err, &failed) {
		log.Fatalf("deploy failed: %s", failed.Op.GetError())
	}
	if err != nil {
		log.Fatal(err)
	}
	p, err := c.GetProject(ctx, "site")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.GetUrls())
}
