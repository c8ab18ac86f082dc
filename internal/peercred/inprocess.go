package peercred

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
)

// credCarrier is implemented only by the connections of an InProcess
// listener. The method is unexported, so no type outside this package can
// claim an identity: a connection from a socket never has it and goes
// through SO_PEERCRED.
type credCarrier interface {
	peerCred() Cred
}

// inprocConn is one end of an in-process connection and the identity of
// the other end, fixed when the connection was made.
type inprocConn struct {
	net.Conn
	peer Cred
}

func (c *inprocConn) peerCred() Cred { return c.peer }

// inprocAddr names the in-process transport in logs and gRPC peers.
type inprocAddr struct{}

func (inprocAddr) Network() string { return "inprocess" }
func (inprocAddr) String() string  { return "inprocess" }

// ErrClosed is returned by Dial and Accept after Close.
var ErrClosed = errors.New("in-process listener closed")

// InProcess is a net.Listener inside one process whose connections carry
// an identity chosen by whoever dials: DialAs(cred) gives a connection the
// server's handshake sees as coming from cred. It is how opusd's web
// console calls the gRPC service as the signed-in uid, through the same
// interceptors and access table as a Unix socket caller. It is reachable
// from no socket; only code holding the *InProcess can dial it, so it must
// only be handed to code that has authenticated the uid it dials as.
type InProcess struct {
	conns  chan net.Conn
	done   chan struct{}
	closed sync.Once
	self   Cred
}

// NewInProcess returns an open in-process listener.
func NewInProcess() *InProcess {
	return &InProcess{
		conns: make(chan net.Conn),
		done:  make(chan struct{}),
		self:  Cred{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), PID: int32(os.Getpid())},
	}
}

// DialAs connects to the listener as the peer cred. The server's
// handshake attaches cred to the connection; the client's end carries this
// process's own identity (the server's).
func (l *InProcess) DialAs(ctx context.Context, cred Cred) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- &inprocConn{Conn: server, peer: cred}:
		return &inprocConn{Conn: client, peer: l.self}, nil
	case <-l.done:
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, ctx.Err()
	}
	client.Close()
	server.Close()
	return nil, ErrClosed
}

// Accept implements net.Listener.
func (l *InProcess) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, ErrClosed
	}
}

// Close implements net.Listener; pending and later dials fail.
func (l *InProcess) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

// Addr implements net.Listener.
func (l *InProcess) Addr() net.Addr { return inprocAddr{} }
