package service

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/etcdtest"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// clusterHost is one host of a two-host Opus on one etcd: its store, its
// registration and its API over a real reconciler and a stub privd.
func clusterHost(t *testing.T, srv *etcdtest.Server, name string, capacity int) *server {
	t.Helper()
	return clusterHostWith(t, srv, name, capacity, serverOpt{reconciler: true})
}

// clusterHostWith is clusterHost served with o (its store and host name
// are the host's; o.userName is its user database).
func clusterHostWith(t *testing.T, srv *etcdtest.Server, name string, capacity int, o serverOpt) *server {
	t.Helper()
	st, err := store.OpenEtcd(context.Background(), store.EtcdOptions{
		Endpoints: []string{srv.ClientURL}, Prefix: "/svc/", Host: name, HostTTL: 2 * time.Second,
		Options: store.Options{UserName: o.userName},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.RegisterHost(context.Background(), store.Host{Name: name, Front: "127.0.0.1:80", Capacity: capacity, Instance: name + "-instance"}); err != nil {
		t.Fatal(err)
	}
	o.store, o.hostName = st, name
	return startServer(t, o)
}

func etcdForTest(t *testing.T) *etcdtest.Server {
	t.Helper()
	return etcdtest.ForTest(t, filepath.Join(t.TempDir(), "etcd"))
}

// TestTwoHosts: a project created through host a's API with --host b is
// deployed by b alone and shows READY on b from a; a host that is not
// answering cannot be named; placement fills the host with the most room;
// what only the serving host has (logs) is asked of it; and once b's
// opusd is gone its projects are UNREACHABLE and refuse changes, leaving
// them as they were.
func TestTwoHosts(t *testing.T) {
	srv := etcdForTest(t)
	ctx := context.Background()
	a := clusterHost(t, srv, "a", 1)
	b := clusterHost(t, srv, "b", 10)
	waitHosts := func(s *server, want string) {
		t.Helper()
		var got []string
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			res, err := s.client.ListHosts(ctx, &opusv1.ListHostsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			got = nil
			for _, h := range res.GetHosts() {
				got = append(got, h.GetName())
			}
			if strings.Join(got, " ") == want {
				return
			}
		}
		t.Fatalf("hosts %v; want %s", got, want)
	}
	waitHosts(a, "a b")

	// Named: deployed by b, whichever host was asked.
	if _, err := a.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "onb", Host: "b"}); err != nil {
		t.Fatal(err)
	}
	ready := func(s *server, name string) *opusv1.Project {
		t.Helper()
		var p *opusv1.Project
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			var err error
			if p, err = s.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: name}); err == nil && p.GetPhase() == opusv1.Phase_PHASE_READY {
				return p
			}
		}
		t.Fatalf("project %s is %v; want READY", name, p.GetPhase())
		return nil
	}
	if p := ready(a, "onb"); p.GetHost() != "b" {
		t.Fatalf("project on host %q; want b", p.GetHost())
	}
	// Its URLs name b's ports, as b registered them, whichever host
	// answers.
	if err := b.st.RegisterHost(ctx, store.Host{Name: "b", Front: "127.0.0.1:80", Capacity: 10, Instance: "b-instance", HTTPPort: 9080, HTTPSPort: 9443}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		p, err := a.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "onb"})
		if err == nil && strings.Join(p.GetUrls(), " ") == "http://onb.opus.test:9080/ https://onb.opus.test:9443/" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b's project's URLs through a: %v, %v; want b's ports", p.GetUrls(), err)
		}
	}
	if n := a.privd.ensured.Load(); n != 0 {
		t.Errorf("host a's privd made %d users for a project of b's", n)
	}
	if n := b.privd.ensured.Load(); n == 0 {
		t.Error("host b's privd made no user for its project")
	}

	// A host not answering is refused by name, with the live ones; nothing
	// is made.
	_, err := a.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "nowhere", Host: "c"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `no host "c"`) || !strings.Contains(err.Error(), "a, b") {
		t.Fatalf("create on host c: %v", err)
	}
	if _, err := a.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "nowhere"}); status.Code(err) != codes.NotFound {
		t.Fatalf("the refused project: %v; want NotFound", err)
	}

	// Placement: a takes 1 and has 0; b takes 10 and has 1: a has the
	// most room (0/1 < 1/10), then b (1/1 > 1/10).
	for _, want := range []struct{ name, host string }{{"first", "a"}, {"second", "b"}} {
		if _, err := b.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: want.name}); err != nil {
			t.Fatal(err)
		}
		if p := ready(b, want.name); p.GetHost() != want.host {
			t.Errorf("project %s placed on %q; want %s", want.name, p.GetHost(), want.host)
		}
	}

	// Logs are b's to read.
	_, err = a.client.GetLogs(ctx, &opusv1.GetLogsRequest{Project: "onb"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "served by host b") {
		t.Fatalf("logs of b's project through a: %v", err)
	}

	// b's opusd goes: its projects are UNREACHABLE and changes to them
	// are refused, and nothing of the change is recorded.
	before, err := a.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "onb"})
	if err != nil {
		t.Fatal(err)
	}
	b.st.Close()
	waitHosts(a, "a")
	// (Each opusd reads the hosts' list again at most every half second.)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		p, err := a.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "onb"})
		if err == nil && p.GetPhase() == opusv1.Phase_PHASE_UNREACHABLE {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b's project with b gone: %v, %v; want UNREACHABLE", p.GetPhase(), err)
		}
	}
	_, err = a.client.UpdateSettings(ctx, &opusv1.UpdateSettingsRequest{Project: "onb", Set: map[string]string{"debug": "true"}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "host b, which is not answering: changes to it are refused until that host is back") {
		// Refused, not queued: the message must not promise the change
		// will happen later.
		t.Fatalf("change to b's project with b gone: %v", err)
	}
	_, err = a.client.DeleteProject(ctx, &opusv1.DeleteProjectRequest{Name: "onb"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("destroy of b's project with b gone: %v", err)
	}
	after, err := a.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "onb"})
	if err != nil || after.GetGeneration() != before.GetGeneration() || after.GetSettings().GetDebug() != before.GetSettings().GetDebug() {
		t.Fatalf("b's project after the refused changes: %v (generation %d, was %d)", err, after.GetGeneration(), before.GetGeneration())
	}
	// a's own project still changes.
	if _, err := a.client.UpdateSettings(ctx, &opusv1.UpdateSettingsRequest{Project: "first", Set: map[string]string{"debug": "true"}}); err != nil {
		t.Fatalf("change to a's own project: %v", err)
	}
}

// TestMoveRefused: a move that could not carry the project whole is
// refused before anything is recorded, each with a reason a user can act
// on; a move recorded refuses changes to the project until it ends.
func TestMoveRefused(t *testing.T) {
	srv := etcdForTest(t)
	ctx := context.Background()
	a := clusterHost(t, srv, "a", 10)
	clusterHost(t, srv, "b", 10)
	// c answers but takes part in no moves (no peer listener).
	for _, h := range []store.Host{{Name: "a", PeerAddr: "127.0.0.1:1", PeerFingerprint: "x"}, {Name: "b", PeerAddr: "127.0.0.1:2", PeerFingerprint: "y"}} {
		h.Capacity, h.Instance = 10, h.Name+"-instance"
		if err := a.st.RegisterHost(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.st.RegisterHost(ctx, store.Host{Name: "c", Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	ready := func(name string, edit func(*store.Project)) {
		t.Helper()
		if _, err := a.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: name, Host: "a"}); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			p, err := a.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: name})
			if err == nil && p.GetPhase() == opusv1.Phase_PHASE_READY {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not READY", name)
			}
		}
		if edit != nil {
			if _, err := a.st.UpdateProject(ctx, name, func(p *store.Project) error { edit(p); return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	ready("plain", nil)
	ready("onpg", func(p *store.Project) { p.Spec.Database = &store.Database{Engine: "postgresql"} })
	ready("uploaded", func(p *store.Project) {
		p.Spec.Apps = append(p.Spec.Apps, store.AppSpec{Name: "blog", Upload: &store.UploadSource{Digest: "sha256:ab"}})
	})
	ready("behind", func(p *store.Project) { p.Generation++ })
	for _, tc := range []struct {
		name, project, to string
		code              codes.Code
		want              string
	}{
		{"no host named", "plain", "", codes.InvalidArgument, "name the host to move the project to"},
		{"same host", "plain", "a", codes.InvalidArgument, "already on host a"},
		{"no such host", "plain", "z", codes.InvalidArgument, `no host "z" is answering`},
		{"host without peer", "plain", "c", codes.FailedPrecondition, "host c takes part in no moves: set peer_listen"},
		{"postgresql", "onpg", "b", codes.FailedPrecondition, "keeps its data in PostgreSQL"},
		{"uploaded app", "uploaded", "b", codes.FailedPrecondition, `app "blog" of project "uploaded" was uploaded`},
		{"not deployed", "behind", "b", codes.FailedPrecondition, "is not deployed at its current spec"},
		{"no such project", "nope", "b", codes.NotFound, `project "nope" not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := a.st.GetProject(ctx, tc.project)
			ops, _ := a.st.ListOperations(ctx, tc.project, 0)
			_, err := a.client.MoveProject(ctx, &opusv1.MoveProjectRequest{Name: tc.project, To: tc.to})
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("move %s to %q: %v; want %v saying %q", tc.project, tc.to, err, tc.code, tc.want)
			}
			after, _ := a.st.GetProject(ctx, tc.project)
			opsAfter, _ := a.st.ListOperations(ctx, tc.project, 0)
			if (before != nil && (after.Move != nil || after.Generation != before.Generation)) || len(opsAfter) != len(ops) {
				t.Errorf("the refused move left a record: move %+v, operations %d → %d", after.Move, len(ops), len(opsAfter))
			}
		})
	}
	// Recorded: changes wait (a move fails here at once, with no peer
	// listener behind the addresses, but not before this is checked).
	if _, err := a.st.UpdateProject(ctx, "plain", func(p *store.Project) error {
		p.Move = &store.Move{ID: "m", From: "a", To: "b", Operation: "op-x", State: store.MoveDeploying}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_, err := a.client.UpdateSettings(ctx, &opusv1.UpdateSettingsRequest{Project: "plain", Set: map[string]string{"debug": "true"}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "is moving to host b") {
		t.Fatalf("a change while moving: %v", err)
	}
}
