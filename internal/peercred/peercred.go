// Package peercred attaches the kernel's account of who is on the other end
// of a Unix socket (SO_PEERCRED) to a gRPC connection, once, at the handshake.
// Handlers read it back with FromContext; nothing else in Opus decides who a
// caller is. Both daemons use it: opus-privd to serve only the opus uid,
// opusd to know which user owns what.
//
// The one other source of identity is an InProcess listener: a connection
// dialed on it inside opusd carries the uid its dialer names (opusd's web
// console, after it has signed that user in), so the console calls the same
// gRPC server, interceptors and access table as a socket caller. Only this
// package can make such a connection; a socket connection never is one,
// and FromInProcess tells the two apart (opusd serves its console's own
// calls to in-process connections alone).
package peercred

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Cred is the identity of a socket peer as the kernel recorded it when the
// peer connected.
type Cred struct {
	UID uint32
	GID uint32
	PID int32
}

// AuthInfo is the gRPC AuthInfo carrying a peer's credentials.
type AuthInfo struct {
	credentials.CommonAuthInfo
	Cred Cred
	// inProcess marks a connection made on an InProcess listener. It is
	// unexported so that only this package's handshake sets it: no value a
	// socket peer sends and no AuthInfo built elsewhere can claim it.
	inProcess bool
}

// AuthType implements credentials.AuthInfo.
func (AuthInfo) AuthType() string { return "peercred" }

// ErrNoCred means a context carries no peer credentials: the connection did
// not come through these transport credentials.
var ErrNoCred = errors.New("no peer credentials on this connection")

// FromContext returns the credentials of the peer of a gRPC call.
func FromContext(ctx context.Context) (Cred, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Cred{}, ErrNoCred
	}
	ai, ok := p.AuthInfo.(AuthInfo)
	if !ok {
		return Cred{}, ErrNoCred
	}
	return ai.Cred, nil
}

// FromInProcess reports whether a gRPC call came over an InProcess
// listener, that is from code inside this process that holds it (opusd's
// web console), and not from any socket, whatever uid is on it.
func FromInProcess(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	ai, ok := p.AuthInfo.(AuthInfo)
	return ok && ai.inProcess
}

// Of returns the credentials of the process at the other end of conn, which
// must be a Unix socket connection.
func Of(conn net.Conn) (Cred, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return Cred{}, fmt.Errorf("peer credentials: %T is not a Unix socket", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Cred{}, fmt.Errorf("peer credentials: %w", err)
	}
	var (
		ucred  *unix.Ucred
		sysErr error
	)
	if err := raw.Control(func(fd uintptr) {
		ucred, sysErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Cred{}, fmt.Errorf("peer credentials: %w", err)
	}
	if sysErr != nil {
		return Cred{}, fmt.Errorf("peer credentials: SO_PEERCRED: %w", sysErr)
	}
	return Cred{UID: ucred.Uid, GID: ucred.Gid, PID: ucred.Pid}, nil
}

// transport implements credentials.TransportCredentials over Unix sockets.
type transport struct {
	// wantServerUID, when non-nil, is the uid a client insists the server
	// runs as (opusd checks that privd is root, so a socket planted by
	// someone else is not believed).
	wantServerUID *uint32
}

// Server returns transport credentials for a gRPC server on a Unix socket:
// each connection's AuthInfo carries the peer's credentials, and a
// connection whose credentials cannot be read is refused.
func Server() credentials.TransportCredentials { return transport{} }

// Client returns transport credentials for a gRPC client on a Unix socket.
// The server's credentials are attached too.
func Client() credentials.TransportCredentials { return transport{} }

// ClientExpecting is Client, refusing a server that does not run as uid.
func ClientExpecting(uid uint32) credentials.TransportCredentials {
	return transport{wantServerUID: &uid}
}

func (t transport) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	ai, err := authInfoOf(conn)
	if err != nil {
		return nil, nil, err
	}
	if t.wantServerUID != nil && ai.Cred.UID != *t.wantServerUID {
		return nil, nil, fmt.Errorf("server on %s runs as uid %d, want uid %d", conn.RemoteAddr(), ai.Cred.UID, *t.wantServerUID)
	}
	return conn, ai, nil
}

func (transport) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	ai, err := authInfoOf(conn)
	if err != nil {
		return nil, nil, err
	}
	return conn, ai, nil
}

// authInfoOf is the identity at the other end of conn: the one an
// in-process connection (InProcess) was made with, marked as such, or else
// the kernel's SO_PEERCRED.
func authInfoOf(conn net.Conn) (AuthInfo, error) {
	ai := AuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}
	if cc, ok := conn.(credCarrier); ok {
		ai.Cred, ai.inProcess = cc.peerCred(), true
		return ai, nil
	}
	c, err := Of(conn)
	ai.Cred = c
	return ai, err
}

func (transport) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (t transport) Clone() credentials.TransportCredentials { return t }

// OverrideServerName is part of the interface and has no meaning here.
func (transport) OverrideServerName(string) error { return nil }

// Listen listens on a Unix socket at path with the given mode, group-owned
// by gid (or left alone when gid < 0). A stale socket from a previous run is
// removed; any other kind of file at path is an error, so a misconfigured
// path never deletes a regular file. The socket is created under a tight
// umask so it is never reachable with looser permissions.
//
// Its owner and mode are set on the socket itself, never through its path:
// the directory may be writable by others (the opus group may create its
// own socket beside privd's), and a link swapped in between bind and chown
// would otherwise make root chown and chmod whatever it points to.
func Listen(path string, mode fs.FileMode, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("listen %s: a file that is not a socket is in the way", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen %s: remove stale socket: %w", path, err)
		}
	}
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := setSocketOwner(path, mode, gid); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return l, nil
}

// setSocketOwner gives the socket just bound at path its group and mode
// through a handle on the entry itself (O_PATH|O_NOFOLLOW opens a link as
// the link, and nothing is opened for reading): it must still be a socket
// this process owns, which nobody else can make; a link, or someone else's
// socket put in its place, is refused untouched.
func setSocketOwner(path string, mode fs.FileMode, gid int) error {
	h, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the new socket: %w", err)
	}
	defer unix.Close(h)
	var st unix.Stat_t
	if err := unix.Fstat(h, &st); err != nil {
		return fmt.Errorf("stat the new socket: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("the new socket was replaced (now mode %#o, owner uid %d) before its owner and mode were set; someone who may write %s is tampering with it", st.Mode, st.Uid, filepath.Dir(path))
	}
	if gid >= 0 {
		if err := unix.Fchownat(h, "", -1, gid, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("chown to gid %d: %w", gid, err)
		}
	}
	// There is no fchmod on an O_PATH handle; its /proc magic link names
	// exactly the inode checked above (glibc's lchmod does the same).
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(h), uint32(mode.Perm())); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}
