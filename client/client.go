// Package client is the Go client for opus.v1.Opus, the API opusd serves on
// its Unix socket. opusctl is built on it, and so can any other Go service.
//
// The caller's identity is the uid of the calling process: opusd reads it
// from the socket's peer credentials, so there is nothing to configure and
// no token to keep. A project belongs to the uid that created it.
//
// Mutations (CreateProject, AddApp, ...) return an Operation at once; Wait
// follows it to its end, surviving a broken stream or an opusd restart.
// A local app directory is packed by UploadDir with the caller's own rights
// and streamed to opusd, which never reads a path on a caller's behalf.
//
//	c, err := client.Dial(ctx, client.DefaultSocket())
//	if err != nil { ... }
//	defer c.Close()
//	digest, err := c.UploadDir(ctx, "./blog")
//	op, err := c.CreateProject(ctx, &opusv1.CreateProjectRequest{
//		Name: "site",
//		Apps: []*opusv1.AppSpec{{Name: "blog", Source: client.UploadedSource(digest, "./blog")}},
//	})
//	op, err = c.Wait(ctx, op.GetId(), nil)
//	var failed *client.OperationError
//	if errors.As(err, &failed) { ... failed.Op.GetError() ... }
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/peercred"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// SocketEnv is the environment variable that overrides DefaultSocket.
const SocketEnv = "OPUS_SOCKET"

// DefaultSocket returns the path of opusd's socket: $OPUS_SOCKET when set,
// otherwise the one in the default host configuration.
func DefaultSocket() string {
	if s := os.Getenv(SocketEnv); s != "" {
		return s
	}
	return config.Default().OpusdSocket()
}

// Client is a connection to opusd. It is safe for concurrent use.
type Client struct {
	conn   *grpc.ClientConn
	rpc    opusv1.OpusClient
	socket string
}

// Option changes how Dial connects.
type Option func(*options)

type options struct {
	dialOpts []grpc.DialOption
}

// MaxResponseBytes bounds one answer from opusd the client accepts.
const MaxResponseBytes = 64 << 20

// WithDialOptions adds gRPC dial options (interceptors, for example). The
// transport credentials are always peercred's and cannot be replaced.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// Dial connects to opusd on the Unix socket at socketPath. It checks that
// the socket accepts a connection, so a missing daemon or a permission
// problem is reported here rather than on the first call.
func Dial(ctx context.Context, socketPath string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	// Probe once: gRPC connects lazily and would report a missing socket
	// as a vague "Unavailable" on the first call.
	var d net.Dialer
	probe, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("connect to opusd at %s: %w", socketPath, unwrapOpErr(err))
	}
	probe.Close()

	dialOpts := append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		}),
		// The authority is meaningless on a Unix socket; a fixed one keeps
		// it from being derived from the path.
		grpc.WithAuthority("localhost"),
		// A local daemon restarts in well under a second; reconnect
		// quickly instead of gRPC's default one-second first backoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
		// ListProjects answers with every visible project at once: for an
		// admin on a large host (each project with its revision history,
		// about 2 KB) gRPC's default 4 MiB would run out near 2,000.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxResponseBytes)),
	}, o.dialOpts...)
	// Last, so that nothing in opts can replace the peer credentials.
	dialOpts = append(dialOpts, grpc.WithTransportCredentials(peercred.Client()))
	conn, err := grpc.NewClient("passthrough:///opusd", dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("connect to opusd at %s: %w", socketPath, err)
	}
	return &Client{conn: conn, rpc: opusv1.NewOpusClient(conn), socket: socketPath}, nil
}

// unwrapOpErr drops net.OpError's repetition of the socket path, which the
// caller's message already names.
func unwrapOpErr(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) {
			return se.Err
		}
		return oe.Err
	}
	return err
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Socket returns the path the client is connected to.
func (c *Client) Socket() string { return c.socket }

// RPC returns the raw generated client, for calls and options the typed
// helpers do not cover.
func (c *Client) RPC() opusv1.OpusClient { return c.rpc }

// GitSource returns an AppSource for a git repository at ref (empty: the
// remote's HEAD).
func GitSource(url, ref string) *opusv1.AppSource {
	return &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: url, Ref: ref}}}
}

// UploadedSource returns an AppSource for an archive sent with UploadDir;
// origin is informational.
func UploadedSource(digest, origin string) *opusv1.AppSource {
	return &opusv1.AppSource{Kind: &opusv1.AppSource_Upload{Upload: &opusv1.UploadedSource{Digest: digest, Origin: origin}}}
}

// CreateProject records a new project owned by the caller and starts
// deploying it.
func (c *Client) CreateProject(ctx context.Context, req *opusv1.CreateProjectRequest) (*opusv1.Operation, error) {
	return c.rpc.CreateProject(ctx, req)
}

// GetProject returns one project.
func (c *Client) GetProject(ctx context.Context, name string) (*opusv1.Project, error) {
	return c.rpc.GetProject(ctx, &opusv1.GetProjectRequest{Name: name})
}

// ListProjects returns the caller's projects (every project for an admin).
func (c *Client) ListProjects(ctx context.Context) ([]*opusv1.Project, error) {
	resp, err := c.rpc.ListProjects(ctx, &opusv1.ListProjectsRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetProjects(), nil
}

// DeleteProject starts tearing a project down.
func (c *Client) DeleteProject(ctx context.Context, name string) (*opusv1.Operation, error) {
	return c.rpc.DeleteProject(ctx, &opusv1.DeleteProjectRequest{Name: name})
}

// AddApp starts adding an app to a project.
func (c *Client) AddApp(ctx context.Context, project string, app *opusv1.AppSpec) (*opusv1.Operation, error) {
	return c.rpc.AddApp(ctx, &opusv1.AddAppRequest{Project: project, App: app})
}

// RemoveApp starts taking an app out of a project; dropData also removes
// its database tables.
func (c *Client) RemoveApp(ctx context.Context, project, app string, dropData bool) (*opusv1.Operation, error) {
	return c.rpc.RemoveApp(ctx, &opusv1.RemoveAppRequest{Project: project, App: app, DropData: dropData})
}

// UpdateApp starts moving an app to another source or version.
func (c *Client) UpdateApp(ctx context.Context, project, app string, src *opusv1.AppSource) (*opusv1.Operation, error) {
	return c.rpc.UpdateApp(ctx, &opusv1.UpdateAppRequest{Project: project, App: app, Source: src})
}

// RollbackApp starts moving an app back to the revision to names (its
// number, or a commit or digest prefix); an empty to means the revision
// before the running one (or, when an update of it did not deploy, the
// running one). When the app already runs and asks for that revision, the
// answer has Unchanged set and no id.
func (c *Client) RollbackApp(ctx context.Context, project, app, to string) (*opusv1.Operation, error) {
	return c.rpc.RollbackApp(ctx, &opusv1.RollbackAppRequest{Project: project, App: app, To: to})
}

// RollbackAppRequest sends a rollback with every option (with data,
// validate only, the confirmed snapshot).
func (c *Client) RollbackAppRequest(ctx context.Context, req *opusv1.RollbackAppRequest) (*opusv1.Operation, error) {
	return c.rpc.RollbackApp(ctx, req)
}

// UpdateSettings starts changing a project's owner-level settings: set
// maps keys ("debug", "admin", "hosts", "env.NAME") to values, unset
// removes keys. When the deployed project already has them, the answer
// has Unchanged set and no id: nothing runs, there is nothing to wait for.
func (c *Client) UpdateSettings(ctx context.Context, project string, set map[string]string, unset []string) (*opusv1.Operation, error) {
	return c.rpc.UpdateSettings(ctx, &opusv1.UpdateSettingsRequest{Project: project, Set: set, Unset: unset})
}

// SetCertificate starts installing the owner's own certificate (leaf then
// chain, PEM) and key (PEM).
func (c *Client) SetCertificate(ctx context.Context, project string, certPEM, keyPEM []byte) (*opusv1.Operation, error) {
	return c.rpc.SetCertificate(ctx, &opusv1.SetCertificateRequest{Project: project, CertificatePem: certPEM, KeyPem: keyPEM})
}

// GetOperation returns one operation.
func (c *Client) GetOperation(ctx context.Context, id string) (*opusv1.Operation, error) {
	return c.rpc.GetOperation(ctx, &opusv1.GetOperationRequest{Id: id})
}

// ListOperations returns a project's recent operations, newest first; limit
// 0 lets the server choose.
func (c *Client) ListOperations(ctx context.Context, project string, limit int) ([]*opusv1.Operation, error) {
	resp, err := c.rpc.ListOperations(ctx, &opusv1.ListOperationsRequest{Project: project, Limit: int32(limit)})
	if err != nil {
		return nil, err
	}
	return resp.GetOperations(), nil
}

// GetLogs returns the last lines of a project's Apache and mod_wsgi error
// log; lines 0 lets the server choose.
func (c *Client) GetLogs(ctx context.Context, project string, lines int) ([]string, error) {
	resp, err := c.rpc.GetLogs(ctx, &opusv1.GetLogsRequest{Project: project, Lines: int32(lines)})
	if err != nil {
		return nil, err
	}
	return resp.GetLines(), nil
}
