package web

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/opus-hosting/opus/internal/peercred"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// maxConns bounds the cached gRPC connections (one per signed-in uid);
// the least recently used is closed beyond it.
const maxConns = 64

// conns keeps one gRPC client connection per signed-in uid to opusd's own
// server, over the in-process listener: each connection carries its uid,
// so the server's interceptors and access table judge the console's calls
// exactly as they judge a socket caller's. One more connection, as opusd
// itself, carries the console's ConsoleSessions calls (sign-in, session
// lookup, sign-out), which the service serves only in-process.
type conns struct {
	lis *peercred.InProcess
	mu  sync.Mutex
	m   map[uint32]*connEntry
	// self is the console's own connection, made on first use.
	self *grpc.ClientConn
}

type connEntry struct {
	cc   *grpc.ClientConn
	used time.Time
}

func newConns(lis *peercred.InProcess) *conns {
	return &conns{lis: lis, m: map[uint32]*connEntry{}}
}

// client returns the Opus client acting as uid.
func (c *conns) client(uid uint32) (opusv1.OpusClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[uid]; e != nil {
		e.used = time.Now()
		return opusv1.NewOpusClient(e.cc), nil
	}
	cc, err := c.dial(peercred.Cred{UID: uid, GID: primaryGID(uid)})
	if err != nil {
		return nil, fmt.Errorf("console connection for uid %d: %w", uid, err)
	}
	if len(c.m) >= maxConns {
		var oldest uint32
		var at time.Time
		for u, e := range c.m {
			if at.IsZero() || e.used.Before(at) {
				oldest, at = u, e.used
			}
		}
		c.m[oldest].cc.Close()
		delete(c.m, oldest)
	}
	c.m[uid] = &connEntry{cc: cc, used: time.Now()}
	return opusv1.NewOpusClient(cc), nil
}

// sessions returns the ConsoleSessions client, on a connection as this
// process.
func (c *conns) sessions() (opusv1.ConsoleSessionsClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.self == nil {
		cc, err := c.dial(peercred.Cred{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), PID: int32(os.Getpid())})
		if err != nil {
			return nil, fmt.Errorf("console connection: %w", err)
		}
		c.self = cc
	}
	return opusv1.NewConsoleSessionsClient(c.self), nil
}

// dial makes a connection to the in-process listener as cred.
func (c *conns) dial(cred peercred.Cred) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///opusd-console",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return c.lis.DialAs(ctx, cred) }),
		grpc.WithTransportCredentials(peercred.Client()))
}

func (c *conns) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for u, e := range c.m {
		e.cc.Close()
		delete(c.m, u)
	}
	if c.self != nil {
		c.self.Close()
		c.self = nil
	}
}

// primaryGID is uid's primary group from the user database, or nogroup
// (65534) for a uid without an entry; authorization looks at the uid only.
func primaryGID(uid uint32) uint32 {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			return uint32(g)
		}
	}
	return 65534
}
