package peercred

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

// seen is what a server learned of a call's peer.
type seen struct {
	Cred
	inProcess bool
}

// credServer serves health on l and reports the credentials each call
// arrived with, and whether it came in-process.
func credServer(t *testing.T, l net.Listener) <-chan seen {
	t.Helper()
	got := make(chan seen, 10)
	srv := grpc.NewServer(grpc.Creds(Server()), grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		c, err := FromContext(ctx)
		if err != nil {
			return nil, err
		}
		got <- seen{c, FromInProcess(ctx)}
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return got
}

// TestInProcessCarriesDialedIdentity: two clients dialing as different
// uids on one in-process listener reach the same server, each seen as the
// uid it dialed as; the client side sees this process as the server.
func TestInProcessCarriesDialedIdentity(t *testing.T) {
	l := NewInProcess()
	defer l.Close()
	got := credServer(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, want := range []Cred{{UID: 1234, GID: 1234}, {UID: 4321, GID: 100}} {
		cc, err := grpc.NewClient("passthrough:///inprocess",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.DialAs(ctx, want) }),
			grpc.WithTransportCredentials(ClientExpecting(uint32(os.Getuid()))))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("as %+v: %v", want, err)
		}
		cc.Close()
		if c := <-got; c.Cred != want || !c.inProcess {
			t.Fatalf("server saw %+v, want %+v in-process", c, want)
		}
	}
}

// TestSocketCannotClaimIdentity: a Unix socket connection is judged by
// SO_PEERCRED, whatever the client's conn type, and is never in-process;
// a conn that is neither is refused at the handshake.
func TestSocketCannotClaimIdentity(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := Listen(sock, 0o600, -1)
	if err != nil {
		t.Fatal(err)
	}
	got := credServer(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(Client()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if c := <-got; c.UID != uint32(os.Getuid()) || c.PID != int32(os.Getpid()) || c.inProcess {
		t.Fatalf("socket peer %+v, want this process, not in-process", c)
	}
	// Nor is a peer whose AuthInfo was made outside this package's
	// handshake, with any credentials.
	for _, ctx := range []context.Context{
		context.Background(),
		peer.NewContext(ctx, &peer.Peer{AuthInfo: AuthInfo{Cred: Cred{UID: 0}}}),
		peer.NewContext(ctx, &peer.Peer{AuthInfo: &AuthInfo{Cred: Cred{UID: uint32(os.Getuid())}}}),
	} {
		if FromInProcess(ctx) {
			t.Errorf("a context the handshake did not make is in-process: %v", ctx)
		}
	}
	// A plain pipe (not from InProcess) has no identity at all.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, _, err := Server().ServerHandshake(a); err == nil {
		t.Fatal("a pipe not made by InProcess passed the server handshake")
	}
}

func TestInProcessClosed(t *testing.T) {
	l := NewInProcess()
	l.Close()
	l.Close() // idempotent
	if _, err := l.DialAs(context.Background(), Cred{UID: 1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("dial after close: %v", err)
	}
	if _, err := l.Accept(); !errors.Is(err, ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l2 := NewInProcess()
	defer l2.Close()
	if _, err := l2.DialAs(ctx, Cred{UID: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("dial with cancelled context and no accept: %v", err)
	}
}
