package service

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// TestAPINeverReturnsSecrets: the project's secret key and database
// password are kept in opusd's store, and no answer of the API carries
// them: not GetProject, ListProjects, GetOperation, ListOperations nor
// WatchOperation (whose step messages describe the secrets step), in any
// encoding a client may use.
func TestAPINeverReturnsSecrets(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}, reconciler: true})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const password = "db-Password-kept-by-opusd"
	op, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "secret",
		Database: &opusv1.Database{Engine: "postgresql", Host: "127.0.0.1", Name: "secret", User: "secret", Password: password}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.client.WatchOperation(ctx, &opusv1.WatchOperationRequest{Id: op.Id})
	if err != nil {
		t.Fatal(err)
	}
	var answers []proto.Message
	for {
		got, err := w.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		answers = append(answers, got)
	}
	p, err := s.st.GetProject(ctx, "secret")
	if err != nil {
		t.Fatal(err)
	}
	if p.Secrets == nil || p.Secrets.SecretKey == "" {
		t.Fatalf("the store keeps no secret key after the deploy: %+v (this test would prove nothing)", p.Secrets)
	}
	key := p.Secrets.SecretKey

	get, err := s.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.client.ListProjects(ctx, &opusv1.ListProjectsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	one, err := s.client.GetOperation(ctx, &opusv1.GetOperationRequest{Id: op.Id})
	if err != nil {
		t.Fatal(err)
	}
	ops, err := s.client.ListOperations(ctx, &opusv1.ListOperationsRequest{Project: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetProjects()) != 1 || len(ops.GetOperations()) == 0 || len(one.GetSteps()) == 0 {
		t.Fatalf("answers are empty (this test would prove nothing): %v %v %v", list, ops, one)
	}
	answers = append(answers, get, list, one, ops)
	for _, secret := range []string{key, password} {
		// encoding/json escapes some of a key's characters ('&').
		quoted, _ := json.Marshal(secret)
		forms := []string{secret, string(quoted[1 : len(quoted)-1])}
		for _, m := range answers {
			wire, _ := proto.Marshal(m)
			text := []string{string(wire), protojson.Format(m), m.(interface{ String() string }).String()}
			for _, enc := range text {
				for _, f := range forms {
					if strings.Contains(enc, f) {
						t.Errorf("%T carries a secret:\n%s", m, protojson.Format(m))
					}
				}
			}
		}
	}
}
