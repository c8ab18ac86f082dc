package peercred

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestHandshakeCarriesCredentials runs a real gRPC server and client over
// a real Unix socket and checks the handler sees this process's identity.
func TestHandshakeCarriesCredentials(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := Listen(sock, 0o600, -1)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	got := make(chan Cred, 1)
	srv := grpc.NewServer(grpc.Creds(Server()), grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		c, err := FromContext(ctx)
		if err != nil {
			return nil, err
		}
		got <- c
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(l)
	defer srv.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(ClientExpecting(uint32(os.Getuid()))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	c := <-got
	if c.UID != uint32(os.Getuid()) || c.GID != uint32(os.Getgid()) || c.PID != int32(os.Getpid()) {
		t.Fatalf("cred %+v, want uid %d gid %d pid %d", c, os.Getuid(), os.Getgid(), os.Getpid())
	}

	// A client that insists on another server uid never gets an answer.
	bad, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(ClientExpecting(uint32(os.Getuid())+1)))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	if _, err := healthpb.NewHealthClient(bad).Check(sctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Fatal("client accepted a server running as another uid")
	}
}

func TestFromContextWithoutPeer(t *testing.T) {
	if _, err := FromContext(context.Background()); err != ErrNoCred {
		t.Fatalf("err = %v, want ErrNoCred", err)
	}
}

func TestOfRefusesNonUnix(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := Of(a); err == nil || !strings.Contains(err.Error(), "not a Unix socket") {
		t.Fatalf("err = %v", err)
	}
}

func TestListenStaleAndObstacles(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	l, err := Listen(sock, 0o660, -1)
	if err != nil {
		t.Fatal(err)
	}
	// Simulate a crash: the socket file stays behind.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l, err = Listen(sock, 0o660, -1)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l.Close()

	file := filepath.Join(dir, "precious")
	if err := os.WriteFile(file, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file, 0o660, -1); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
	if data, _ := os.ReadFile(file); string(data) != "keep" {
		t.Fatal("regular file was touched")
	}
}
