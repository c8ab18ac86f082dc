// Package servicetest runs the real opusd API in-process for tests of code
// built on it (package client, opusctl, other Go services): service.Service
// over a bbolt store and the real reconciler, served on a Unix socket with
// peer credentials, over a stub privd. Everything lives in temporary
// directories removed when the test ends; it needs no root and starts no
// process. A test may give it a store of its own (Options.Store: one on
// etcd, say) instead of the bbolt file it opens by default.
//
// The caller's identity comes from the kernel, as in opusd: it is the test
// process's uid, an admin or not as Options.Admin says (root always is).
// The stub privd (Privd) answers every call with success and records it; a
// test makes a call fail or wait with Privd.Set. Opusd records the opus.v1
// calls it receives, so a test can check that a client made none.
package servicetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/peercred"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/reconcile"
	"github.com/opus-hosting/opus/unprivd/service"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/store"
)

// The host a started opusd describes: a project NAME answers at
// http://NAME+ServerSuffix:HTTPPort/ and https://NAME+ServerSuffix:HTTPSPort/.
const (
	ServerSuffix = ".opus.localhost"
	HTTPPort     = 8080
	HTTPSPort    = 8443
)

// ProjectUIDs is the range project users' ids come from: far above any
// real account, so no process runs as one and a teardown never waits.
var ProjectUIDs = config.UIDRange{First: 3900000, Last: 3999999}

// Options configures Start.
type Options struct {
	// Admin makes the test process's uid an admin: it sees and changes
	// every project and may name git repositories on this host.
	Admin bool
	// NoRecord leaves the opus.v1 calls unrecorded (Calls is empty), so
	// benchmarks time the API exactly as opusd serves it.
	NoRecord bool
	// Store is the state to serve; nil means a new bbolt file in the
	// test's temporary directory. The caller closes a store it gives, after
	// the test's cleanups have stopped the API (register its Close before
	// calling Start).
	Store *store.Store
}

// Call is one opus.v1 call Opusd received.
type Call struct {
	// Method is the short method name, "CreateProject".
	Method string
	// UID is the caller's uid from the socket's peer credentials.
	UID uint32
	// Req is the request; for a client stream (UploadSource), its first
	// message.
	Req proto.Message
}

// Opusd is a running opusd API. Its fields must not be changed.
type Opusd struct {
	// Socket is the Unix socket it serves on.
	Socket string
	// Store is its state, for tests that look at or fill it directly.
	Store *store.Store
	// Uploads is its archive store.
	Uploads *source.Store
	// Privd is the stub privd it calls.
	Privd *Privd

	opt         Options
	dir         string
	health      string // the address of Apache's stand-in
	privdClient privdv1.PrivdClient
	log         *slog.Logger

	mu     sync.Mutex
	svc    *service.Service
	rec    *reconcile.Reconciler
	srv    *grpc.Server
	calls  []*Call
	breaks int // WatchOperation streams still to break
}

// Start serves the API, its state in tb.TempDir(), and stops it (and its
// reconciler) when the test ends.
func Start(tb testing.TB, opt Options) *Opusd {
	tb.Helper()
	dir := tb.TempDir()
	// The sockets get a directory of their own with a short name: a Unix
	// socket's path must fit in 108 bytes, and tb.TempDir() is named
	// after the test.
	sockets, err := os.MkdirTemp("", "opusd")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(sockets) })
	o := &Opusd{Socket: filepath.Join(sockets, "opusd.sock"), opt: opt, dir: dir,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	o.Store = opt.Store
	if o.Store == nil {
		st, err := store.Open(context.Background(), filepath.Join(dir, "opusd.db"), store.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { st.Close() })
		o.Store = st
	}
	if o.Uploads, err = source.NewStore(filepath.Join(dir, "sources"), source.StoreOptions{Limits: source.DefaultLimits}); err != nil {
		tb.Fatal(err)
	}
	for _, d := range []string{"base", "git"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o750); err != nil {
			tb.Fatal(err)
		}
	}
	o.Privd, o.privdClient = startPrivd(tb, filepath.Join(sockets, "privd.sock"))
	// Apache's stand-in answers every project's health check.
	web := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	tb.Cleanup(web.Close)
	o.health = web.Listener.Addr().String()
	if err := o.Serve(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(o.Stop) // before the store closes: cleanups run last first
	return o
}

// Service is the API being served, for benchmarks of its handlers.
func (o *Opusd) Service() *service.Service {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.svc
}

// Serve starts a reconciler and the API over the same store, privd and
// uploads and serves on Socket: after Stop, the start of a new opusd. The
// reconciler resumes what the last one left unfinished.
func (o *Opusd) Serve() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.srv != nil {
		return fmt.Errorf("servicetest: already serving on %s", o.Socket)
	}
	rec := reconcile.New(o.Store, o.privdClient, reconcile.Options{
		BaseDir: filepath.Join(o.dir, "base"), ServerSuffix: ServerSuffix, HTTPPort: HTTPPort, HTTPSPort: HTTPSPort,
		ProjectUIDs: ProjectUIDs, TLSSecurityLevel: 2, Uploads: o.Uploads, Git: &source.Git{CacheDir: filepath.Join(o.dir, "git")},
		HealthAddr: o.health, HealthTimeout: 10 * time.Second, Logger: o.log,
	})
	me := uint32(os.Getuid())
	svc, err := service.New(service.Config{
		Store: o.Store, Privd: o.privdClient, Reconciler: rec, Uploads: o.Uploads,
		Admins:      admins(func(uid uint32) bool { return uid == 0 || o.opt.Admin && uid == me }),
		ProjectUIDs: ProjectUIDs, ServerSuffix: ServerSuffix, HTTPPort: HTTPPort, HTTPSPort: HTTPSPort,
		MaxUpload: source.DefaultLimits.MaxCompressed, TLSSecurityLevel: 2, Logger: o.log,
	})
	if err != nil {
		return err
	}
	if err := rec.Start(context.Background()); err != nil {
		return err
	}
	opts := []grpc.ServerOption{grpc.Creds(peercred.Server())}
	if !o.opt.NoRecord {
		// Outermost, so calls the service refuses are recorded too.
		opts = append(opts, grpc.ChainUnaryInterceptor(o.recordUnary), grpc.ChainStreamInterceptor(o.recordStream))
	}
	g := grpc.NewServer(append(opts, svc.ServerOptions()...)...)
	svc.Register(g)
	l, err := peercred.Listen(o.Socket, 0o600, -1)
	if err != nil {
		stopReconciler(rec)
		return err
	}
	go g.Serve(l)
	o.svc, o.rec, o.srv = svc, rec, g
	return nil
}

// Stop stops serving at once, breaking open streams, then stops the
// reconciler as opusd does when it stops, letting steps in flight end.
// Stopping a stopped Opusd does nothing.
func (o *Opusd) Stop() {
	o.mu.Lock()
	srv, rec := o.srv, o.rec
	o.srv, o.rec = nil, nil
	o.mu.Unlock()
	if srv != nil {
		srv.Stop()
		stopReconciler(rec)
	}
}

func stopReconciler(rec *reconcile.Reconciler) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec.Stop(ctx)
}

// Client returns a client of the API as the test process.
func (o *Opusd) Client(tb testing.TB) opusv1.OpusClient {
	tb.Helper()
	cc, err := grpc.NewClient("unix://"+o.Socket, grpc.WithTransportCredentials(peercred.Client()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return opusv1.NewOpusClient(cc)
}

// BreakWatches makes the next n WatchOperation streams end with
// Unavailable right after their first message, as a dropped connection
// would.
func (o *Opusd) BreakWatches(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.breaks = n
}

// Calls returns the opus.v1 calls received so far, in order.
func (o *Opusd) Calls() []Call {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]Call, len(o.calls))
	for i, c := range o.calls {
		out[i] = *c
	}
	return out
}

// CallsOf returns the calls of one method ("CreateProject").
func (o *Opusd) CallsOf(method string) []Call {
	var out []Call
	for _, c := range o.Calls() {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

// record notes a call of an opus.v1 method; others (health, reflection)
// are not the API.
func (o *Opusd) record(ctx context.Context, fullMethod string, req any) *Call {
	service, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if service != opusv1.Opus_ServiceDesc.ServiceName {
		return nil
	}
	c := &Call{Method: method}
	if cred, err := peercred.FromContext(ctx); err == nil {
		c.UID = cred.UID
	}
	if m, ok := req.(proto.Message); ok {
		c.Req = proto.Clone(m)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, c)
	return c
}

func (o *Opusd) recordUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	o.record(ctx, info.FullMethod, req)
	return handler(ctx, req)
}

func (o *Opusd) recordStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	c := o.record(ss.Context(), info.FullMethod, nil)
	if c == nil {
		return handler(srv, ss)
	}
	o.mu.Lock()
	brk := c.Method == "WatchOperation" && o.breaks > 0
	if brk {
		o.breaks--
	}
	o.mu.Unlock()
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	w := &recordedStream{ServerStream: ss, o: o, call: c, ctx: ctx}
	if brk {
		w.cut = cancel
	}
	err := handler(srv, w)
	if brk {
		return status.Error(codes.Unavailable, "servicetest: watch broken on purpose")
	}
	return err
}

// recordedStream records the first message a stream receives and, when
// cut is set, ends the stream after the first message it sends.
type recordedStream struct {
	grpc.ServerStream
	o    *Opusd
	call *Call
	ctx  context.Context
	cut  context.CancelFunc
	recv bool
	sent bool
}

func (s *recordedStream) Context() context.Context { return s.ctx }

func (s *recordedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil && !s.recv {
		s.recv = true
		if pm, ok := m.(proto.Message); ok {
			s.o.mu.Lock()
			s.call.Req = proto.Clone(pm)
			s.o.mu.Unlock()
		}
	}
	return err
}

func (s *recordedStream) SendMsg(m any) error {
	if s.cut != nil && s.sent {
		return status.Error(codes.Unavailable, "servicetest: watch broken on purpose")
	}
	if err := s.ServerStream.SendMsg(m); err != nil {
		return err
	}
	s.sent = true
	if s.cut != nil {
		s.cut()
	}
	return nil
}

// admins is service.Admins from a function.
type admins func(uid uint32) bool

func (a admins) IsAdmin(uid uint32) bool { return a(uid) }

// ForgetCalls forgets the calls recorded so far: a test's setup made
// them.
func (o *Opusd) ForgetCalls() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = nil
}
