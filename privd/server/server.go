// Package server is opus-privd's gRPC service: the only door into the root
// daemon. Every call passes, in this order, an authorization check on the
// socket's peer credentials (only the configured opus uid), an allowlist of
// method names (default deny), and validation of every request field, before
// a handler derives anything from it. Errors are mapped to gRPC codes here,
// once.
package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/privd/account"
	"github.com/opus-hosting/opus/privd/manage"
	"github.com/opus-hosting/opus/privd/tree"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// Sites installs and removes virtual hosts and drives Apache. privd/apache's
// *Sites implements it. Requests reach it already validated by this package
// (names, bounds); it may validate further. An error that carries a gRPC
// status (status.Error) keeps its code; any other error becomes Internal.
type Sites interface {
	// Install renders and installs the project's vhost, key and
	// certificate and configtests them; it does not reload Apache. The
	// server has already checked that the project's user exists and was
	// made by Opus; backend is where the vhost routes (the project's
	// backend's address).
	Install(ctx context.Context, req *privdv1.InstallSiteRequest, backend netip.AddrPort) (*privdv1.InstallSiteResponse, error)
	// Remove removes the project's vhost, key and certificate.
	Remove(ctx context.Context, req *privdv1.RemoveSiteRequest) (*privdv1.RemoveSiteResponse, error)
	// Reload gracefully restarts Apache (coalesced), starting it if down.
	Reload(ctx context.Context, req *privdv1.ReloadApacheRequest) (*privdv1.ReloadApacheResponse, error)
	// TailLog returns the last lines of the project's error log.
	TailLog(ctx context.Context, req *privdv1.TailLogRequest) (*privdv1.TailLogResponse, error)
	// CertificateRequest makes a new key for the project's site, kept
	// beside its installed key, and returns a CSR for its names.
	CertificateRequest(ctx context.Context, req *privdv1.CertificateRequestRequest) (*privdv1.CertificateRequestResponse, error)
}

// Backends runs each project's own Apache + mod_wsgi. privd/apache's
// *Backends implements it; it finds the project's user itself and refuses
// one Opus did not make. Errors map as for Sites.
type Backends interface {
	Ensure(ctx context.Context, req *privdv1.EnsureBackendRequest) (*privdv1.EnsureBackendResponse, error)
	Remove(ctx context.Context, req *privdv1.RemoveBackendRequest) (*privdv1.RemoveBackendResponse, error)
}

// Manager runs whitelisted manage.py commands as the project's user.
// privd/manage's *Runner implements it. The server has already checked that
// the project's user exists and was made by Opus before Run is called.
// Errors map as for Sites.
type Manager interface {
	Run(ctx context.Context, req *privdv1.RunManageRequest) (*privdv1.RunManageResponse, error)
}

// Data copies a project's SQLite database out and in as the project's
// user. privd/manage's *Runner implements it; the server has already
// checked that the project's user exists and is Opus's. Errors map as for
// Sites, and manage.ErrNoDatabase, ErrNotDatabaseFile (and
// ErrMediaRefused) and ErrDataTooLarge to NotFound, FailedPrecondition and
// ResourceExhausted.
//
// DumpMedia and LoadMedia do the same for the project's media files
// (data/media) as a tar, for backups.
type Data interface {
	DumpSQLite(ctx context.Context, project string, max int64, w io.Writer) (int64, error)
	LoadSQLite(ctx context.Context, project string, max int64, src io.Reader) error
	DumpMedia(ctx context.Context, project string, max int64, w io.Writer) (int64, error)
	LoadMedia(ctx context.Context, project string, max int64, src io.Reader) error
}

// Config is what the service needs.
type Config struct {
	// OpusUID is the only peer uid served; OpusGID is the opus group the
	// file policy assigns.
	OpusUID, OpusGID uint32
	// BaseDir is privd's configured base directory (project trees).
	BaseDir string
	// Accounts manages project users; required.
	Accounts *account.Accounts
	// Sites, Backends and Manager may be nil: their calls then fail with
	// Unavailable.
	Sites    Sites
	Backends Backends
	Manager  Manager
	// Data copies SQLite databases (nil: its calls fail with Unavailable);
	// SnapshotMaxBytes is config.Config's, the bound of one copy.
	Data             Data
	SnapshotMaxBytes int64
	// BackendAddr is config.Config's: where a project's backend listens,
	// by its user's uid.
	BackendAddr func(uid uint32) netip.AddrPort
	// Logger receives structured logs (slog.Default() if nil).
	Logger *slog.Logger
}

// Server implements privdv1.PrivdServer.
type Server struct {
	privdv1.UnimplementedPrivdServer
	cfg   Config
	log   *slog.Logger
	stats *stats
}

// allowed is privd's whole surface: full method names that may be served.
// Anything not in it is refused, whatever is registered. A test keeps it
// equal to the service descriptor.
var allowed = map[string]bool{
	"/opus.privd.v1.Privd/EnsureUser":    true,
	"/opus.privd.v1.Privd/DeleteUser":    true,
	"/opus.privd.v1.Privd/SecureTree":    true,
	"/opus.privd.v1.Privd/RemoveTree":    true,
	"/opus.privd.v1.Privd/RunManage":     true,
	"/opus.privd.v1.Privd/EnsureBackend": true,
	"/opus.privd.v1.Privd/RemoveBackend": true,
	"/opus.privd.v1.Privd/InstallSite":   true,
	"/opus.privd.v1.Privd/RemoveSite":    true,
	"/opus.privd.v1.Privd/ReloadApache":  true,
	"/opus.privd.v1.Privd/TailLog":       true,
	"/opus.privd.v1.Privd/DumpData":      true,
	"/opus.privd.v1.Privd/LoadData":      true,
	"/opus.privd.v1.Privd/Stats":         true,
	// CertificateRequest: a key for an ACME certificate is made here, as
	// root, and never leaves privd and the front (README's security
	// section).
	"/opus.privd.v1.Privd/CertificateRequest": true,
}

// New returns the service for cfg.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{cfg: cfg, log: log, stats: newStats()}
}

// GRPC returns a gRPC server with peer-credential transport credentials,
// the authorization interceptors and this service registered. Serve it on a
// Unix socket listener.
func (s *Server) GRPC(opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{
		grpc.Creds(peercred.Server()),
		grpc.ChainUnaryInterceptor(s.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(s.StreamInterceptor()),
		// Unknown methods still go through the stream interceptor (so the
		// caller is authorized first), then get Unimplemented.
		grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
			return status.Error(codes.Unimplemented, "not a privd method")
		}),
	}, opts...)
	g := grpc.NewServer(opts...)
	privdv1.RegisterPrivdServer(g, s)
	return g
}

// authorize refuses every caller but the opus uid, then every method not in
// the allowlist, and counts each refusal. It runs before any handler.
func (s *Server) authorize(ctx context.Context, method string) error {
	err := s.refusal(ctx, method)
	if err != nil {
		s.stats.refused(method)
	}
	return err
}

// refusal is why a call of method on ctx is refused, or nil.
func (s *Server) refusal(ctx context.Context, method string) error {
	cred, err := peercred.FromContext(ctx)
	if err != nil {
		s.log.Warn("refused call without peer credentials", "method", method, "err", err)
		return status.Error(codes.PermissionDenied, "no peer credentials")
	}
	if cred.UID != s.cfg.OpusUID {
		s.log.Warn("refused call from unauthorized peer", "uid", cred.UID, "pid", cred.PID, "method", method)
		return status.Errorf(codes.PermissionDenied, "uid %d may not call privd", cred.UID)
	}
	if !allowed[method] {
		s.log.Warn("refused method not in allowlist", "uid", cred.UID, "pid", cred.PID, "method", method)
		return status.Errorf(codes.Unimplemented, "method %s is not served", method)
	}
	return nil
}

// UnaryInterceptor authorizes each unary call and logs its outcome (never
// its request: it may hold a password or a key).
func (s *Server) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := s.authorize(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		start := time.Now()
		resp, err := handler(ctx, req)
		s.stats.called(info.FullMethod, status.Code(err))
		attrs := []any{"method", info.FullMethod, "code", status.Code(err).String(), "duration", time.Since(start)}
		if p, ok := req.(interface{ GetProject() string }); ok {
			attrs = append(attrs, "project", p.GetProject())
		}
		switch {
		case err != nil:
			s.log.Warn("call failed", append(attrs, "err", err)...)
		case info.FullMethod == statsMethod:
			// Every scrape of opusd's metrics asks: at Info, a line
			// every few seconds would drown the calls that change things.
			s.log.Debug("call", attrs...)
		default:
			s.log.Info("call", attrs...)
		}
		return resp, err
	}
}

// StreamInterceptor authorizes and counts each streaming call (DumpData,
// LoadData, and unknown methods, which gRPC hands to the stream path).
func (s *Server) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := s.authorize(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		err := handler(srv, ss)
		s.stats.called(info.FullMethod, status.Code(err))
		return err
	}
}

// toStatus maps an error to a gRPC status, once, for every handler.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	var c codes.Code
	switch {
	case errors.Is(err, account.ErrNotOurs), errors.Is(err, account.ErrNoUser):
		c = codes.FailedPrecondition
	case errors.Is(err, account.ErrIDInUse):
		c = codes.AlreadyExists
	case errors.Is(err, account.ErrIDOutOfRange):
		c = codes.InvalidArgument
	case errors.Is(err, tree.ErrLimit):
		c = codes.ResourceExhausted
	case errors.Is(err, cert.ErrInvalid):
		c = codes.InvalidArgument
	case errors.Is(err, manage.ErrNoDatabase):
		c = codes.NotFound
	case errors.Is(err, manage.ErrNotDatabaseFile), errors.Is(err, manage.ErrMediaRefused):
		c = codes.FailedPrecondition
	case errors.Is(err, manage.ErrDataTooLarge):
		c = codes.ResourceExhausted
	case errors.Is(err, manage.ErrDatabaseDamaged):
		c = codes.DataLoss
	case errors.Is(err, context.DeadlineExceeded):
		c = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		c = codes.Canceled
	default:
		c = codes.Internal
	}
	return status.Error(c, err.Error())
}

// EnsureUser implements privdv1.PrivdServer.
func (s *Server) EnsureUser(ctx context.Context, req *privdv1.EnsureUserRequest) (*privdv1.EnsureUserResponse, error) {
	if err := validateProject(req.GetProject()); err != nil {
		return nil, err
	}
	u, created, err := s.cfg.Accounts.EnsureUser(ctx, req.GetProject(), req.GetUid())
	if err != nil {
		return nil, toStatus(err)
	}
	return &privdv1.EnsureUserResponse{User: u.Name, Uid: u.UID, Gid: u.GID, Created: created}, nil
}

// DeleteUser implements privdv1.PrivdServer.
func (s *Server) DeleteUser(ctx context.Context, req *privdv1.DeleteUserRequest) (*privdv1.DeleteUserResponse, error) {
	if err := validateProject(req.GetProject()); err != nil {
		return nil, err
	}
	deleted, err := s.cfg.Accounts.DeleteUser(ctx, req.GetProject())
	if err != nil {
		return nil, toStatus(err)
	}
	return &privdv1.DeleteUserResponse{Deleted: deleted}, nil
}

// SecureTree implements privdv1.PrivdServer. The project's user must exist
// and be Opus's (FailedPrecondition otherwise): its ids come from there,
// never from the request.
func (s *Server) SecureTree(ctx context.Context, req *privdv1.SecureTreeRequest) (*privdv1.SecureTreeResponse, error) {
	if err := validateProject(req.GetProject()); err != nil {
		return nil, err
	}
	u, err := s.cfg.Accounts.LookupUser(req.GetProject())
	if err != nil {
		return nil, toStatus(err)
	}
	res, err := tree.SecureTree(ctx, s.cfg.BaseDir, req.GetProject(), tree.Owners{
		OpusUID: s.cfg.OpusUID, OpusGID: s.cfg.OpusGID, ProjectUID: u.UID, ProjectGID: u.GID})
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &privdv1.SecureTreeResponse{Secured: res.Secured}
	for _, r := range res.Refusals {
		resp.Refusals = append(resp.Refusals, &privdv1.Refusal{Path: r.Path, Reason: r.Reason})
	}
	if len(res.Refusals) > 0 {
		s.log.Warn("secure tree refused entries", "project", req.GetProject(), "refusals", len(res.Refusals), "first", res.Refusals[0].Path)
	}
	return resp, nil
}

// RemoveTree implements privdv1.PrivdServer.
func (s *Server) RemoveTree(ctx context.Context, req *privdv1.RemoveTreeRequest) (*privdv1.RemoveTreeResponse, error) {
	if err := validateProject(req.GetProject()); err != nil {
		return nil, err
	}
	n, err := tree.RemoveTree(ctx, s.cfg.BaseDir, req.GetProject())
	if err != nil {
		return nil, toStatus(err)
	}
	return &privdv1.RemoveTreeResponse{Removed: n}, nil
}

// RunManage implements privdv1.PrivdServer. The project's user must exist
// and be Opus's before anything runs as it.
func (s *Server) RunManage(ctx context.Context, req *privdv1.RunManageRequest) (*privdv1.RunManageResponse, error) {
	if err := validateRunManage(req); err != nil {
		return nil, err
	}
	if s.cfg.Manager == nil {
		return nil, status.Error(codes.Unavailable, "manage.py runner is not configured in this privd")
	}
	if _, err := s.cfg.Accounts.LookupUser(req.GetProject()); err != nil {
		return nil, toStatus(err)
	}
	resp, err := s.cfg.Manager.Run(ctx, req)
	return resp, toStatus(err)
}

// EnsureBackend implements privdv1.PrivdServer. The backend runs the
// project's mod_wsgi daemon as the project's user, so that user must exist
// and be Opus's (FailedPrecondition otherwise, nothing written), exactly as
// for RunManage: else a compromised opusd could have Apache run a daemon
// as a pre-existing account that merely has the project user's name.
func (s *Server) EnsureBackend(ctx context.Context, req *privdv1.EnsureBackendRequest) (*privdv1.EnsureBackendResponse, error) {
	if err := validateEnsureBackend(req); err != nil {
		return nil, err
	}
	if s.cfg.Backends == nil {
		return nil, errNoSites
	}
	if _, err := s.cfg.Accounts.LookupUser(req.GetProject()); err != nil {
		return nil, toStatus(err)
	}
	resp, err := s.cfg.Backends.Ensure(ctx, req)
	return resp, toStatus(err)
}

// RemoveBackend implements privdv1.PrivdServer. Like RemoveSite it does
// not ask for the project's user: it stops what privd itself started for
// the name and removes privd's own files.
func (s *Server) RemoveBackend(ctx context.Context, req *privdv1.RemoveBackendRequest) (*privdv1.RemoveBackendResponse, error) {
	if err := validateProject(req.GetProject()); err != nil {
		return nil, err
	}
	if s.cfg.Backends == nil {
		return nil, errNoSites
	}
	resp, err := s.cfg.Backends.Remove(ctx, req)
	return resp, toStatus(err)
}

// InstallSite implements privdv1.PrivdServer. The vhost routes to the
// backend of the project's user, found here (FailedPrecondition, nothing
// written, when it is missing or not Opus's): its uid gives the backend's
// address.
func (s *Server) InstallSite(ctx context.Context, req *privdv1.InstallSiteRequest) (*privdv1.InstallSiteResponse, error) {
	if err := validateInstallSite(req); err != nil {
		return nil, err
	}
	if s.cfg.Sites == nil {
		return nil, errNoSites
	}
	u, err := s.cfg.Accounts.LookupUser(req.GetProject())
	if err != nil {
		return nil, toStatus(err)
	}
	if s.cfg.BackendAddr == nil {
		return nil, errNoSites
	}
	resp, err := s.cfg.Sites.Install(ctx, req, s.cfg.BackendAddr(u.UID))
	return resp, toStatus(err)
}

// CertificateRequest implements privdv1.PrivdServer. Like InstallSite it
// asks for the project's user (FailedPrecondition, nothing made, when it is
// missing or not Opus's): privd makes keys only for projects Opus made.
func (s *Server) CertificateRequest(ctx context.Context, req *privdv1.CertificateRequestRequest) (*privdv1.CertificateRequestResponse, error) {
	if err := validateCertificateRequest(req); err != nil {
		return nil, err
	}
	if s.cfg.Sites == nil {
		return nil, errNoSites
	}
	if _, err := s.cfg.Accounts.LookupUser(req.GetProject()); err != nil {
		return nil, toStatus(err)
	}
	resp, err := s.cfg.Sites.CertificateRequest(ctx, req)
	return resp, toStatus(err)
}

// RemoveSite implements privdv1.PrivdServer. Unlike InstallSite it does
// not ask for the project's user: it only deletes privd's own files for
// the name and acts neither as nor for that user, it must still work after
// DeleteUser (a teardown repaired after a crash), and removing is the safe
// direction even for a user without the marker.
func (s *Server) RemoveSite(ctx context.Context, req *privdv1.RemoveSiteRequest) (*privdv1.RemoveSiteResponse, error) {
	if err := validateProject(req.GetProject()); err != nil {
		return nil, err
	}
	if s.cfg.Sites == nil {
		return nil, errNoSites
	}
	resp, err := s.cfg.Sites.Remove(ctx, req)
	return resp, toStatus(err)
}

// ReloadApache implements privdv1.PrivdServer.
func (s *Server) ReloadApache(ctx context.Context, req *privdv1.ReloadApacheRequest) (*privdv1.ReloadApacheResponse, error) {
	if s.cfg.Sites == nil {
		return nil, errNoSites
	}
	resp, err := s.cfg.Sites.Reload(ctx, req)
	return resp, toStatus(err)
}

// TailLog implements privdv1.PrivdServer. It does not ask for the
// project's user either: it reads privd's own log file for the name
// (bounded), runs nothing as anyone and grants nothing, and the log of a
// project whose user is gone is still worth reading.
func (s *Server) TailLog(ctx context.Context, req *privdv1.TailLogRequest) (*privdv1.TailLogResponse, error) {
	if err := validateTailLog(req); err != nil {
		return nil, err
	}
	if s.cfg.Sites == nil {
		return nil, errNoSites
	}
	resp, err := s.cfg.Sites.TailLog(ctx, req)
	return resp, toStatus(err)
}

var errNoSites = status.Error(codes.Unavailable, "Apache control is not configured in this privd")

// validateProject checks the project field of any request.
func validateProject(p string) error {
	if err := names.ValidateProject(p); err != nil {
		return status.Errorf(codes.InvalidArgument, "project: %v", err)
	}
	return nil
}

// dataChunk is the size of the parts DumpData sends.
const dataChunk = 1 << 20

// DumpData implements privdv1.PrivdServer. The project's user must exist
// and be Opus's: the copy runs as it. With media, it copies the project's
// media files (a tar) instead of its database, within the same bound.
func (s *Server) DumpData(req *privdv1.DumpDataRequest, stream privdv1.Privd_DumpDataServer) error {
	ctx := stream.Context()
	if err := validateProject(req.GetProject()); err != nil {
		return err
	}
	if s.cfg.Data == nil || s.cfg.SnapshotMaxBytes <= 0 {
		return status.Error(codes.Unavailable, "data snapshots are not configured in this privd (snapshot_max_bytes)")
	}
	if _, err := s.cfg.Accounts.LookupUser(req.GetProject()); err != nil {
		return toStatus(err)
	}
	w := &chunkSender{send: func(b []byte) error { return stream.Send(&privdv1.DumpDataResponse{Chunk: b}) }}
	start := time.Now()
	dump := s.cfg.Data.DumpSQLite
	if req.GetMedia() {
		dump = s.cfg.Data.DumpMedia
	}
	n, err := dump(ctx, req.GetProject(), s.cfg.SnapshotMaxBytes, w)
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		s.log.Warn("dump data failed", "project", req.GetProject(), "media", req.GetMedia(), "bytes", n, "err", err)
		return toStatus(err)
	}
	s.log.Info("dump data", "project", req.GetProject(), "media", req.GetMedia(), "bytes", n, "duration", time.Since(start))
	return nil
}

// LoadData implements privdv1.PrivdServer. The first message names the
// project (and says media for a tar of media files rather than a
// database); what is streamed in is bounded by snapshot_max_bytes.
func (s *Server) LoadData(stream privdv1.Privd_LoadDataServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "no request: %v", err)
	}
	project := first.GetProject()
	if err := validateProject(project); err != nil {
		return err
	}
	if s.cfg.Data == nil || s.cfg.SnapshotMaxBytes <= 0 {
		return status.Error(codes.Unavailable, "data snapshots are not configured in this privd (snapshot_max_bytes)")
	}
	if _, err := s.cfg.Accounts.LookupUser(project); err != nil {
		return toStatus(err)
	}
	in := &chunkReader{max: s.cfg.SnapshotMaxBytes, pending: first.GetChunk(), recv: func() ([]byte, error) {
		m, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if m.GetProject() != "" && m.GetProject() != project {
			return nil, status.Error(codes.InvalidArgument, "project: only the first message names it")
		}
		return m.GetChunk(), nil
	}}
	in.n = int64(len(first.GetChunk()))
	if in.n > in.max {
		return toStatus(manage.ErrDataTooLarge)
	}
	start := time.Now()
	load := s.cfg.Data.LoadSQLite
	if first.GetMedia() {
		load = s.cfg.Data.LoadMedia
	}
	if err := load(ctx, project, s.cfg.SnapshotMaxBytes, in); err != nil {
		if in.err != nil && !errors.Is(in.err, io.EOF) {
			err = in.err
		}
		s.log.Warn("load data failed", "project", project, "media", first.GetMedia(), "err", err)
		return toStatus(err)
	}
	if in.err == nil {
		// The program stopped reading before the end: drain and check
		// that nothing more was sent.
		if _, err := io.Copy(io.Discard, in); err != nil || in.n > in.max {
			return status.Error(codes.InvalidArgument, "the database sent was not read whole")
		}
	}
	s.log.Info("load data", "project", project, "media", first.GetMedia(), "bytes", in.n, "duration", time.Since(start))
	return stream.SendAndClose(&privdv1.LoadDataResponse{Bytes: in.n})
}

// chunkSender gathers writes into parts of dataChunk bytes for send.
type chunkSender struct {
	send func([]byte) error
	buf  []byte
}

func (c *chunkSender) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), dataChunk-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == dataChunk {
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (c *chunkSender) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	err := c.send(c.buf)
	c.buf = nil
	return err
}

// chunkReader reads the parts of a stream, at most max bytes in all: more
// fails with ErrDataTooLarge.
type chunkReader struct {
	recv    func() ([]byte, error)
	pending []byte
	n, max  int64
	err     error
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		b, err := c.recv()
		if err != nil {
			c.err = err
			return 0, err
		}
		c.n += int64(len(b))
		if c.n > c.max {
			c.err = manage.ErrDataTooLarge
			return 0, c.err
		}
		c.pending = b
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}
