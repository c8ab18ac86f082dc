// Package fakeopus is an in-memory opus.v1.Opus server on a real Unix socket
// with peer credentials, for testing code built on package client (opusctl,
// other Go services) without opusd, root or Apache. It keeps projects and
// operations in maps and walks every operation through a scripted list of
// steps; it deploys nothing.
package fakeopus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/peercred"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// DefaultSteps are the steps every operation walks through.
var DefaultSteps = []string{"user", "sources", "render", "migrate", "vhost", "reload"}

// Server is the fake. Its exported fields may be changed before the first
// call; the Set methods are safe while it serves.
type Server struct {
	opusv1.UnimplementedOpusServer

	// Socket is the path it listens on.
	Socket string
	// ForgetDeletes makes a finished delete operation vanish with its
	// project, as opusd may do.
	ForgetDeletes bool
	// Steps each operation walks through; StepDelay is how long each takes.
	Steps     []string
	StepDelay time.Duration

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change
	projects map[string]*opusv1.Project
	ops      map[string]*opusv1.Operation
	opOrder  []string
	uploads  map[string][]byte
	calls    []Call
	failStep map[string]string // project -> step that fails
	breaks   int               // watch streams still to break
	nextID   int
	srv      *grpc.Server
	wg       sync.WaitGroup
}

// Call is one request the fake received and who sent it.
type Call struct {
	Method string
	UID    uint32
	Req    proto.Message
}

// Start serves a new fake on a socket in t.TempDir() and stops it when the
// test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		Socket:    filepath.Join(t.TempDir(), "opusd.sock"),
		Steps:     DefaultSteps,
		StepDelay: 5 * time.Millisecond,
		changed:   make(chan struct{}),
		projects:  map[string]*opusv1.Project{},
		ops:       map[string]*opusv1.Operation{},
		uploads:   map[string][]byte{},
		failStep:  map[string]string{},
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Serve (re)starts serving on s.Socket, keeping all state: a test stops and
// serves again to look like an opusd restart.
func (s *Server) Serve() error {
	l, err := peercred.Listen(s.Socket, 0o600, -1)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.Creds(peercred.Server()))
	opusv1.RegisterOpusServer(srv, s)
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(l)
	return nil
}

// Stop stops serving at once, breaking open streams, and waits for the
// operations in flight to finish their script.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
	s.wg.Wait()
}

// FailAt makes operations on project fail at step.
func (s *Server) FailAt(project, step string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failStep[project] = step
}

// BreakWatches makes the next n WatchOperation streams fail with
// Unavailable after sending their first message.
func (s *Server) BreakWatches(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.breaks = n
}

// AddProject records a project as if it had been deployed.
func (s *Server) AddProject(p *opusv1.Project) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.projects[p.GetName()] = proto.Clone(p).(*opusv1.Project)
}

// Project returns a copy of a project, or nil.
func (s *Server) Project(name string) *opusv1.Project {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.projects[name]; ok {
		return proto.Clone(p).(*opusv1.Project)
	}
	return nil
}

// Upload returns the bytes of an upload by digest, or nil.
func (s *Server) Upload(digest string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uploads[digest]
}

// Calls returns every request received so far, in order.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CallsOf returns the requests received for one method.
func (s *Server) CallsOf(method string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

func (s *Server) record(ctx context.Context, method string, req proto.Message) uint32 {
	cred, err := peercred.FromContext(ctx)
	if err != nil {
		panic("fakeopus: call without peer credentials: " + err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var c proto.Message
	if req != nil {
		c = proto.Clone(req)
	}
	s.calls = append(s.calls, Call{Method: method, UID: cred.UID, Req: c})
	return cred.UID
}

// notifyLocked wakes every watcher; s.mu must be held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// startOp records an operation and runs its script; s.mu must be held.
func (s *Server) startOpLocked(project string, kind opusv1.OperationKind, uid uint32) *opusv1.Operation {
	s.nextID++
	op := &opusv1.Operation{
		Id:         fmt.Sprintf("op-%d", s.nextID),
		Project:    project,
		Kind:       kind,
		State:      opusv1.OperationState_OPERATION_STATE_PENDING,
		CreateTime: timestamppb.Now(),
		OwnerUid:   uid,
	}
	for _, n := range s.Steps {
		op.Steps = append(op.Steps, &opusv1.Step{Name: n})
	}
	s.ops[op.Id] = op
	s.opOrder = append(s.opOrder, op.Id)
	s.wg.Add(1)
	go s.run(op.Id)
	return proto.Clone(op).(*opusv1.Operation)
}

func (s *Server) run(id string) {
	defer s.wg.Done()
	s.mu.Lock()
	op := s.ops[id]
	op.State = opusv1.OperationState_OPERATION_STATE_RUNNING
	s.notifyLocked()
	fail := s.failStep[op.Project]
	s.mu.Unlock()
	for i := range op.Steps {
		s.mu.Lock()
		op.Steps[i].State = opusv1.StepState_STEP_STATE_RUNNING
		op.Steps[i].StartTime = timestamppb.Now()
		s.notifyLocked()
		s.mu.Unlock()
		time.Sleep(s.StepDelay)
		s.mu.Lock()
		st := op.Steps[i]
		st.EndTime = timestamppb.Now()
		if st.Name == fail {
			st.State = opusv1.StepState_STEP_STATE_FAILED
			st.Message = "exit status 1: django.db.utils.OperationalError: no such table"
			for _, rest := range op.Steps[i+1:] {
				rest.State = opusv1.StepState_STEP_STATE_SKIPPED
			}
			op.State = opusv1.OperationState_OPERATION_STATE_FAILED
			op.Error = "step " + st.Name + ": " + st.Message
			op.EndTime = timestamppb.Now()
			if p := s.projects[op.Project]; p != nil {
				p.Phase = opusv1.Phase_PHASE_FAILED
				p.LastError = op.Error
			}
			s.notifyLocked()
			s.mu.Unlock()
			return
		}
		st.State = opusv1.StepState_STEP_STATE_DONE
		s.notifyLocked()
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	op.State = opusv1.OperationState_OPERATION_STATE_SUCCEEDED
	op.EndTime = timestamppb.Now()
	if op.Kind == opusv1.OperationKind_OPERATION_KIND_DELETE {
		delete(s.projects, op.Project)
		if s.ForgetDeletes {
			delete(s.ops, op.Id)
		}
	} else if p := s.projects[op.Project]; p != nil {
		p.Phase = opusv1.Phase_PHASE_READY
		p.LastError = ""
		p.ObservedGeneration = p.Generation
		for _, a := range p.Apps {
			if a.ResolvedCommit == "" {
				a.ResolvedCommit = fakeCommit(a.RequestedRef + a.Name)
			}
		}
	}
	s.notifyLocked()
}

func fakeCommit(seed string) string {
	h := sha256.Sum256([]byte(seed))
	return hex.EncodeToString(h[:20])
}

func (s *Server) visibleLocked(name string, uid uint32) (*opusv1.Project, error) {
	p, ok := s.projects[name]
	if !ok || (uid != 0 && p.OwnerUid != uid) {
		return nil, status.Errorf(codes.NotFound, "project %q not found", name)
	}
	return p, nil
}

func appFromSpec(spec *opusv1.AppSpec) *opusv1.App {
	a := &opusv1.App{Name: spec.GetName(), Source: spec.GetSource()}
	switch k := spec.GetSource().GetKind().(type) {
	case *opusv1.AppSource_Git:
		a.RequestedRef = k.Git.GetRef()
	case *opusv1.AppSource_Upload:
		a.RequestedRef = k.Upload.GetDigest()
		a.ResolvedCommit = k.Upload.GetDigest()
	}
	return a
}

// CreateProject implements opusv1.OpusServer.
func (s *Server) CreateProject(ctx context.Context, req *opusv1.CreateProjectRequest) (*opusv1.Operation, error) {
	uid := s.record(ctx, "CreateProject", req)
	if err := names.ValidateProject(req.GetName()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.projects[req.GetName()]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "project %q already exists", req.GetName())
	}
	for _, a := range req.GetApps() {
		if up := a.GetSource().GetUpload(); up != nil {
			if _, ok := s.uploads[up.GetDigest()]; !ok {
				return nil, status.Errorf(codes.FailedPrecondition, "no upload with digest %q", up.GetDigest())
			}
		}
	}
	server := req.GetName() + ".opus.localhost"
	p := &opusv1.Project{
		Name: req.GetName(), OwnerUid: uid, Phase: opusv1.Phase_PHASE_PENDING,
		Urls:       []string{"http://" + server + ":8080/", "https://" + server + ":8443/"},
		CreateTime: timestamppb.Now(), UpdateTime: timestamppb.Now(), Generation: 1,
		Admin: req.GetAdmin(), SuperuserName: req.GetSuperuser().GetUsername(),
		ServerName: server, SystemUser: names.User(names.DefaultUserPrefix, req.GetName()), Certificate: "self-signed",
	}
	for _, a := range req.GetApps() {
		p.Apps = append(p.Apps, appFromSpec(a))
	}
	s.projects[p.Name] = p
	return s.startOpLocked(p.Name, opusv1.OperationKind_OPERATION_KIND_CREATE, uid), nil
}

// GetProject implements opusv1.OpusServer.
func (s *Server) GetProject(ctx context.Context, req *opusv1.GetProjectRequest) (*opusv1.Project, error) {
	uid := s.record(ctx, "GetProject", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.visibleLocked(req.GetName(), uid)
	if err != nil {
		return nil, err
	}
	return proto.Clone(p).(*opusv1.Project), nil
}

// ListProjects implements opusv1.OpusServer.
func (s *Server) ListProjects(ctx context.Context, req *opusv1.ListProjectsRequest) (*opusv1.ListProjectsResponse, error) {
	uid := s.record(ctx, "ListProjects", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &opusv1.ListProjectsResponse{}
	for _, p := range s.projects {
		if uid == 0 || p.OwnerUid == uid {
			resp.Projects = append(resp.Projects, proto.Clone(p).(*opusv1.Project))
		}
	}
	sort.Slice(resp.Projects, func(i, j int) bool { return resp.Projects[i].Name < resp.Projects[j].Name })
	return resp, nil
}

// DeleteProject implements opusv1.OpusServer.
func (s *Server) DeleteProject(ctx context.Context, req *opusv1.DeleteProjectRequest) (*opusv1.Operation, error) {
	uid := s.record(ctx, "DeleteProject", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.visibleLocked(req.GetName(), uid)
	if err != nil {
		return nil, err
	}
	p.Phase = opusv1.Phase_PHASE_DELETING
	return s.startOpLocked(p.Name, opusv1.OperationKind_OPERATION_KIND_DELETE, uid), nil
}

// AddApp implements opusv1.OpusServer.
func (s *Server) AddApp(ctx context.Context, req *opusv1.AddAppRequest) (*opusv1.Operation, error) {
	uid := s.record(ctx, "AddApp", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.visibleLocked(req.GetProject(), uid)
	if err != nil {
		return nil, err
	}
	for _, a := range p.Apps {
		if a.Name == req.GetApp().GetName() {
			return nil, status.Errorf(codes.AlreadyExists, "project %q already has an app %q", p.Name, a.Name)
		}
	}
	p.Apps = append(p.Apps, appFromSpec(req.GetApp()))
	p.Generation++
	return s.startOpLocked(p.Name, opusv1.OperationKind_OPERATION_KIND_ADD_APP, uid), nil
}

// RemoveApp implements opusv1.OpusServer.
func (s *Server) RemoveApp(ctx context.Context, req *opusv1.RemoveAppRequest) (*opusv1.Operation, error) {
	uid := s.record(ctx, "RemoveApp", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.visibleLocked(req.GetProject(), uid)
	if err != nil {
		return nil, err
	}
	for i, a := range p.Apps {
		if a.Name == req.GetApp() {
			p.Apps = append(p.Apps[:i], p.Apps[i+1:]...)
			p.Generation++
			return s.startOpLocked(p.Name, opusv1.OperationKind_OPERATION_KIND_REMOVE_APP, uid), nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "project %q has no app %q", p.Name, req.GetApp())
}

// UpdateApp implements opusv1.OpusServer.
func (s *Server) UpdateApp(ctx context.Context, req *opusv1.UpdateAppRequest) (*opusv1.Operation, error) {
	uid := s.record(ctx, "UpdateApp", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.visibleLocked(req.GetProject(), uid)
	if err != nil {
		return nil, err
	}
	for i, a := range p.Apps {
		if a.Name == req.GetApp() {
			if req.GetRollback() {
				// The fake keeps no history: a rollback only starts an
				// operation.
				p.Generation++
				return s.startOpLocked(p.Name, opusv1.OperationKind_OPERATION_KIND_UPDATE_APP, uid), nil
			}
			p.Apps[i] = appFromSpec(&opusv1.AppSpec{Name: a.Name, Source: req.GetSource()})
			p.Generation++
			return s.startOpLocked(p.Name, opusv1.OperationKind_OPERATION_KIND_UPDATE_APP, uid), nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "project %q has no app %q", p.Name, req.GetApp())
}

// UpdateSettings implements opusv1.OpusServer. It applies the keys
// loosely (opusd validates them for real): debug and admin take "true",
// hosts a comma-separated list, env.NAME any value; other keys are
// InvalidArgument.
func (s *Server) UpdateSettings(ctx context.Context, req *opusv1.UpdateSettingsRequest) (*opusv1.Operation, error) {
	uid := s.record(ctx, "UpdateSettings", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.visibleLocked(req.GetProject(), uid)
	if err != nil {
		return nil, err
	}
	set := proto.Clone(p.GetSettings()).(*opusv1.Settings)
	if set == nil {
		set = &opusv1.Settings{}
	}
	if set.Env == nil {
		set.Env = map[string]string{}
	}
	for _, k := range req.GetUnset() {
		switch {
		case k == "debug":
			set.Debug = false
		case k == "admin":
			set.Admin = false
		case k == "hosts":
			set.Hosts = nil
		case strings.HasPrefix(k, "env."):
			delete(set.Env, strings.TrimPrefix(k, "env."))
		default:
			return nil, status.Errorf(codes.InvalidArgument, "unset: unknown setting %q", k)
		}
	}
	for k, v := range req.GetSet() {
		switch {
		case k == "debug":
			set.Debug = v == "true"
		case k == "admin":
			set.Admin = v == "true"
		case k == "hosts":
			set.Hosts = strings.Split(v, ",")
		case strings.HasPrefix(k, "env."):
			set.Env[strings.TrimPrefix(k, "env.")] = v
		default:
			return nil, status.Errorf(codes.InvalidArgument, "set: unknown setting %q", k)
		}
	}
	p.Settings, p.Admin = set, set.Admin
	p.Generation++
	return s.startOpLocked(p.Name, opusv1.OperationKind_OPERATION_KIND_UPDATE_SETTINGS, uid), nil
}

// SetCertificate implements opusv1.OpusServer.
func (s *Server) SetCertificate(ctx context.Context, req *opusv1.SetCertificateRequest) (*opusv1.Operation, error) {
	uid := s.record(ctx, "SetCertificate", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.visibleLocked(req.GetProject(), uid)
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(req.GetCertificatePem(), []byte("BEGIN CERTIFICATE")) || !bytes.Contains(req.GetKeyPem(), []byte("PRIVATE KEY")) {
		return nil, status.Error(codes.InvalidArgument, "certificate and key must be PEM")
	}
	p.Certificate = "owner"
	return s.startOpLocked(p.Name, opusv1.OperationKind_OPERATION_KIND_SET_CERTIFICATE, uid), nil
}

// UploadSource implements opusv1.OpusServer.
func (s *Server) UploadSource(stream opusv1.Opus_UploadSourceServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	s.record(stream.Context(), "UploadSource", first)
	if first.GetInfo() == nil {
		return status.Error(codes.InvalidArgument, "the first message must carry UploadInfo")
	}
	var buf bytes.Buffer
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if m.GetChunk() == nil {
			return status.Error(codes.InvalidArgument, "only the first message may carry UploadInfo")
		}
		buf.Write(m.GetChunk())
	}
	if size := first.GetInfo().GetSize(); size != 0 && size != int64(buf.Len()) {
		return status.Errorf(codes.InvalidArgument, "upload announced %d bytes, sent %d", size, buf.Len())
	}
	sum := sha256.Sum256(buf.Bytes())
	digest := "sha256:" + hex.EncodeToString(sum[:])
	s.mu.Lock()
	s.uploads[digest] = buf.Bytes()
	s.mu.Unlock()
	return stream.SendAndClose(&opusv1.UploadSourceResponse{Digest: digest, Size: int64(buf.Len())})
}

// GetOperation implements opusv1.OpusServer.
func (s *Server) GetOperation(ctx context.Context, req *opusv1.GetOperationRequest) (*opusv1.Operation, error) {
	s.record(ctx, "GetOperation", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	op, ok := s.ops[req.GetId()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "operation %q not found", req.GetId())
	}
	return proto.Clone(op).(*opusv1.Operation), nil
}

// WatchOperation implements opusv1.OpusServer.
func (s *Server) WatchOperation(req *opusv1.WatchOperationRequest, stream opusv1.Opus_WatchOperationServer) error {
	s.record(stream.Context(), "WatchOperation", req)
	s.mu.Lock()
	brk := s.breaks > 0
	if brk {
		s.breaks--
	}
	s.mu.Unlock()
	var sent *opusv1.Operation
	for {
		s.mu.Lock()
		op, ok := s.ops[req.GetId()]
		if !ok {
			s.mu.Unlock()
			return status.Errorf(codes.NotFound, "operation %q not found", req.GetId())
		}
		cur := proto.Clone(op).(*opusv1.Operation)
		changed := s.changed
		s.mu.Unlock()
		if !proto.Equal(cur, sent) {
			if err := stream.Send(cur); err != nil {
				return err
			}
			sent = cur
			if brk {
				return status.Error(codes.Unavailable, "fakeopus: watch broken on purpose")
			}
		}
		if cur.State == opusv1.OperationState_OPERATION_STATE_SUCCEEDED || cur.State == opusv1.OperationState_OPERATION_STATE_FAILED {
			return nil
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// ListOperations implements opusv1.OpusServer.
func (s *Server) ListOperations(ctx context.Context, req *opusv1.ListOperationsRequest) (*opusv1.ListOperationsResponse, error) {
	uid := s.record(ctx, "ListOperations", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := int(req.GetLimit())
	if limit <= 0 {
		limit = 20
	}
	resp := &opusv1.ListOperationsResponse{}
	for i := len(s.opOrder) - 1; i >= 0 && len(resp.Operations) < limit; i-- {
		op := s.ops[s.opOrder[i]]
		if op.Project == req.GetProject() && (uid == 0 || op.OwnerUid == uid) {
			resp.Operations = append(resp.Operations, proto.Clone(op).(*opusv1.Operation))
		}
	}
	return resp, nil
}

// GetLogs implements opusv1.OpusServer.
func (s *Server) GetLogs(ctx context.Context, req *opusv1.GetLogsRequest) (*opusv1.GetLogsResponse, error) {
	uid := s.record(ctx, "GetLogs", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.visibleLocked(req.GetProject(), uid); err != nil {
		return nil, err
	}
	n := int(req.GetLines())
	if n <= 0 {
		n = 100
	}
	resp := &opusv1.GetLogsResponse{}
	for i := 1; i <= 3 && i <= n; i++ {
		resp.Lines = append(resp.Lines, fmt.Sprintf("[wsgi:error] [pid %d] %s: log line %d", 100+i, req.GetProject(), i))
	}
	return resp, nil
}
