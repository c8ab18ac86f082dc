package service

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/cert/certtest"
	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/logtest"
	"github.com/opus-hosting/opus/internal/names/namestest"
	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/internal/testrun"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/reconcile"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Two uids other than root for the cross-user tests: nobody, and one that
// need not exist in /etc/passwd (the kernel does not care).
const (
	uidA = 65534
	uidB = 65533
)

func TestMain(m *testing.M) {
	if os.Getenv("OPUS_SVC_HELPER") == "1" {
		os.Exit(helperMain())
	}
	os.Exit(testrun.Main(m))
}

// helperResult is what a helper child prints.
type helperResult struct {
	Code  string   `json:"code"`
	Msg   string   `json:"msg,omitempty"`
	ID    string   `json:"id,omitempty"`
	Names []string `json:"names,omitempty"`
}

// helperMain runs one call against the socket in OPUS_SVC_SOCK as whatever
// uid this process has, and prints the outcome as JSON.
func helperMain() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := grpc.NewClient("unix://"+os.Getenv("OPUS_SVC_SOCK"), grpc.WithTransportCredentials(peercred.Client()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer cc.Close()
	cl := opusv1.NewOpusClient(cc)
	arg := os.Getenv("OPUS_SVC_ARG")
	var res helperResult
	switch action := os.Getenv("OPUS_SVC_ACTION"); action {
	case "create":
		// NAME, or NAME@HOST to name the host.
		name, host, _ := strings.Cut(arg, "@")
		var op *opusv1.Operation
		op, err = cl.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: name, Host: host, Apps: []*opusv1.AppSpec{gitApp("blog", "https://example.com/blog.git")}})
		res.ID = op.GetId()
	case "disk":
		// Names: "user UID NAME" for each user's totals, then "project
		// NAME OWNER" for each project.
		var d *opusv1.GetDiskUsageResponse
		d, err = cl.GetDiskUsage(ctx, &opusv1.GetDiskUsageRequest{Project: arg})
		for _, u := range d.GetUsers() {
			res.Names = append(res.Names, fmt.Sprintf("user %d %s", u.GetUid(), u.GetUser()))
		}
		for _, p := range d.GetProjects() {
			res.Names = append(res.Names, fmt.Sprintf("project %s %s", p.GetProject(), p.GetOwner()))
		}
	case "get":
		_, err = cl.GetProject(ctx, &opusv1.GetProjectRequest{Name: arg})
	case "list":
		var l *opusv1.ListProjectsResponse
		l, err = cl.ListProjects(ctx, &opusv1.ListProjectsRequest{})
		for _, p := range l.GetProjects() {
			res.Names = append(res.Names, p.GetName())
		}
	case "delete":
		_, err = cl.DeleteProject(ctx, &opusv1.DeleteProjectRequest{Name: arg})
	case "addapp":
		_, err = cl.AddApp(ctx, &opusv1.AddAppRequest{Project: arg, App: gitApp("shop", "https://example.com/shop.git")})
	case "removeapp":
		_, err = cl.RemoveApp(ctx, &opusv1.RemoveAppRequest{Project: arg, App: "blog"})
	case "updateapp":
		_, err = cl.UpdateApp(ctx, &opusv1.UpdateAppRequest{Project: arg, App: "blog", Source: gitApp("blog", "https://evil.example.com/x.git").GetSource()})
	case "rollbackapp":
		_, err = cl.RollbackApp(ctx, &opusv1.RollbackAppRequest{Project: arg, App: "blog", To: "1"})
	case "getop":
		_, err = cl.GetOperation(ctx, &opusv1.GetOperationRequest{Id: arg})
	case "watch":
		var w opusv1.Opus_WatchOperationClient
		if w, err = cl.WatchOperation(ctx, &opusv1.WatchOperationRequest{Id: arg}); err == nil {
			_, err = w.Recv()
		}
	case "listops":
		_, err = cl.ListOperations(ctx, &opusv1.ListOperationsRequest{Project: arg})
	case "logs":
		_, err = cl.GetLogs(ctx, &opusv1.GetLogsRequest{Project: arg})
	case "followlogs":
		var f opusv1.Opus_FollowLogsClient
		if f, err = cl.FollowLogs(ctx, &opusv1.FollowLogsRequest{Project: arg}); err == nil {
			_, err = f.Recv()
		}
	case "health":
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	case "console-password", "console-link", "console-session", "console-signout":
		err = callConsoleSessions(ctx, opusv1.NewConsoleSessionsClient(cc), action, arg)
	default:
		fmt.Fprintln(os.Stderr, "unknown action", action)
		return 2
	}
	st := status.Convert(err)
	res.Code, res.Msg = st.Code().String(), st.Message()
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

func gitApp(name, url string) *opusv1.AppSpec {
	return &opusv1.AppSpec{Name: name, Source: &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: url, Ref: "main"}}}}
}

// fakeAdmins makes exactly the listed uids admins.
type fakeAdmins map[uint32]bool

func (f fakeAdmins) IsAdmin(uid uint32) bool { return f[uid] }

type fakeKicker struct {
	mu    sync.Mutex
	kicks []string
}

func (k *fakeKicker) Kick(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kicks = append(k.kicks, name)
}

func (k *fakeKicker) list() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.kicks...)
}

// fakePrivd answers what the service and the deploy steps call; anything
// else panics through the nil embedded interface.
type fakePrivd struct {
	privdv1.PrivdClient
	logErr error
	// log, when set, answers TailLog calls that read after a position.
	log *fakeLog
	// ensured counts EnsureUser calls: the deploys this privd's host ran.
	ensured atomic.Int64
}

func (f *fakePrivd) TailLog(_ context.Context, in *privdv1.TailLogRequest, _ ...grpc.CallOption) (*privdv1.TailLogResponse, error) {
	if f.logErr != nil {
		return nil, f.logErr
	}
	if f.log != nil {
		return f.log.tail(in), nil
	}
	return &privdv1.TailLogResponse{Lines: []string{fmt.Sprintf("%s: %d lines", in.Project, in.Lines)}}, nil
}

func (f *fakePrivd) EnsureUser(_ context.Context, in *privdv1.EnsureUserRequest, _ ...grpc.CallOption) (*privdv1.EnsureUserResponse, error) {
	f.ensured.Add(1)
	return &privdv1.EnsureUserResponse{User: "opus-" + in.Project, Uid: 901, Gid: 901}, nil
}

func (f *fakePrivd) SecureTree(context.Context, *privdv1.SecureTreeRequest, ...grpc.CallOption) (*privdv1.SecureTreeResponse, error) {
	return &privdv1.SecureTreeResponse{Secured: 1}, nil
}

func (f *fakePrivd) RunManage(context.Context, *privdv1.RunManageRequest, ...grpc.CallOption) (*privdv1.RunManageResponse, error) {
	return &privdv1.RunManageResponse{Output: "ok\n"}, nil
}

func (f *fakePrivd) EnsureBackend(context.Context, *privdv1.EnsureBackendRequest, ...grpc.CallOption) (*privdv1.EnsureBackendResponse, error) {
	return &privdv1.EnsureBackendResponse{MasterPid: 2, Started: true}, nil
}

func (f *fakePrivd) InstallSite(context.Context, *privdv1.InstallSiteRequest, ...grpc.CallOption) (*privdv1.InstallSiteResponse, error) {
	return &privdv1.InstallSiteResponse{Changed: true}, nil
}

func (f *fakePrivd) ReloadApache(context.Context, *privdv1.ReloadApacheRequest, ...grpc.CallOption) (*privdv1.ReloadApacheResponse, error) {
	return &privdv1.ReloadApacheResponse{MasterPid: 1}, nil
}

// testClock is a settable clock for the upload store's grace period.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type server struct {
	dir     string
	sock    string
	st      *store.Store
	kicker  *fakeKicker
	privd   *fakePrivd
	uploads *source.Store
	// clock is the upload store's.
	clock  *testClock
	svc    *Service
	client opusv1.OpusClient
	cc     *grpc.ClientConn
	logs   *logtest.Buffer
}

type serverOpt struct {
	admins      fakeAdmins
	reconciler  bool  // a real reconciler instead of the recording kicker
	uploadQuota int64 // of the upload store; 0: none
	projectUIDs config.UIDRange
	// userName, when set, is the store's user database (uid → login
	// name), for the console's accounts.
	userName func(uint32) (string, error)
	// disk is the disk hygiene policy (its BaseDir defaults to the
	// test's).
	disk Disk
	// store, when set, is the state (an etcd store of host hostName)
	// instead of a new bbolt file.
	store    *store.Store
	hostName string
}

// startServer serves the Opus API on a real Unix socket, in a directory any
// uid may enter, with health and reflection as unprivd/opusd registers them.
func startServer(t *testing.T, o serverOpt) *server {
	t.Helper()
	dir, err := os.MkdirTemp("", "opussvc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	st := o.store
	if st == nil {
		st, err = store.Open(context.Background(), filepath.Join(dir, "opusd.db"), store.Options{UserName: o.userName})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
	}
	s := &server{dir: dir, sock: filepath.Join(dir, "opusd.sock"), st: st, kicker: &fakeKicker{},
		privd: &fakePrivd{}, clock: &testClock{now: time.Now()}}
	// The real upload store, on the test's clock.
	s.uploads, err = source.NewStore(filepath.Join(dir, "sources"), source.StoreOptions{
		Limits: source.DefaultLimits, Quota: o.uploadQuota, Now: s.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	var kick Kicker = s.kicker
	s.logs = &logtest.Buffer{}
	log := slog.New(slog.NewTextHandler(s.logs, nil))
	if o.reconciler {
		base := filepath.Join(dir, "base")
		os.Mkdir(base, 0o755)
		// Apache's stand-in answers the health check.
		web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		t.Cleanup(web.Close)
		r := reconcile.New(st, s.privd, reconcile.Options{BaseDir: base, Logger: log,
			ServerSuffix: ".opus.test", HTTPPort: 8080, HTTPSPort: 8443, HealthAddr: web.Listener.Addr().String()})
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r.Stop(ctx)
		})
		kick = r
	}
	if o.admins == nil {
		o.admins = fakeAdmins{0: true}
	}
	s.svc, err = New(Config{Store: st, Privd: s.privd, Reconciler: kick, Admins: o.admins, Uploads: s.uploads,
		ProjectUIDs: o.projectUIDs, ServerSuffix: ".opus.test", HTTPPort: 8080, HTTPSPort: 8443, MaxUpload: 1 << 10, Logger: log, TLSSecurityLevel: 2,
		Backups: &Backups{BaseDir: filepath.Join(dir, "base"), MaxData: 1 << 20, OpusVersion: "test"},
		Disk:    o.disk, HostName: o.hostName})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(append(s.svc.ServerOptions(), grpc.Creds(peercred.Server()))...)
	s.svc.Register(g)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)
	l, err := peercred.Listen(s.sock, 0o666, -1)
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l)
	t.Cleanup(g.Stop)
	s.cc, err = grpc.NewClient("unix://"+s.sock, grpc.WithTransportCredentials(peercred.Client()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.cc.Close() })
	s.client = opusv1.NewOpusClient(s.cc)
	return s
}

// as runs one helper call as uid.
func (s *server) as(t *testing.T, uid uint32, action, arg string) helperResult {
	t.Helper()
	bin := filepath.Join(s.dir, "helper.test")
	if _, err := os.Stat(bin); err != nil {
		// The test binary lives in a 0700 build directory; copy it where
		// another uid may run it.
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(self)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = []string{"OPUS_SVC_HELPER=1", "OPUS_SVC_SOCK=" + s.sock, "OPUS_SVC_ACTION=" + action, "OPUS_SVC_ARG=" + arg}
	// The user's own group, and no supplementary groups (not root's).
	gid := uid
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			gid = uint32(g)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper %s %s as uid %d: %v\n%s", action, arg, uid, err, stderr.Bytes())
	}
	var res helperResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("helper output %q: %v", stdout.Bytes(), err)
	}
	return res
}

func code(err error) codes.Code { return status.Code(err) }

func TestAccessTableIsExactlyTheServedMethods(t *testing.T) {
	s := startServer(t, serverOpt{})
	g := grpc.NewServer()
	s.svc.Register(g)
	healthpb.RegisterHealthServer(g, health.NewServer())
	reflection.Register(g)
	var served []string
	for name, info := range g.GetServiceInfo() {
		for _, m := range info.Methods {
			served = append(served, "/"+name+"/"+m.Name)
		}
	}
	var table []string
	for m := range methodAccess {
		table = append(table, m)
	}
	sort.Strings(served)
	sort.Strings(table)
	if !slices.Equal(served, table) {
		t.Fatalf("served methods %v\n!= access table %v", served, table)
	}
	for _, m := range opusv1.Opus_ServiceDesc.Methods {
		if methodAccess["/opus.v1.Opus/"+m.MethodName] == accessPublic {
			t.Errorf("opus method %s is public", m.MethodName)
		}
	}
	for _, m := range opusv1.Opus_ServiceDesc.Streams {
		if methodAccess["/opus.v1.Opus/"+m.StreamName] == 0 {
			t.Errorf("stream %s not in table", m.StreamName)
		}
	}
}

func TestDefaultDeny(t *testing.T) {
	s := startServer(t, serverOpt{})
	ctx := context.Background()
	// A method not in the table never reaches a handler.
	called := false
	_, err := s.svc.UnaryInterceptor()(peerCtx(1000), nil, &grpc.UnaryServerInfo{FullMethod: "/opus.v1.Opus/Exec"},
		func(context.Context, any) (any, error) { called = true; return nil, nil })
	if code(err) != codes.PermissionDenied || called {
		t.Fatalf("unknown method: %v, handler called %v", err, called)
	}
	// No peer credentials: refused.
	_, err = s.svc.UnaryInterceptor()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: opusv1.Opus_ListProjects_FullMethodName},
		func(context.Context, any) (any, error) { called = true; return nil, nil })
	if code(err) != codes.Unauthenticated || called {
		t.Fatalf("no creds: %v, handler called %v", err, called)
	}
	// A handler reached without the interceptor refuses.
	if _, err := s.svc.ListProjects(ctx, &opusv1.ListProjectsRequest{}); code(err) != codes.Unauthenticated {
		t.Fatalf("handler without interceptor: %v", err)
	}
}

func peerCtx(uid uint32) context.Context {
	return peerContext(context.Background(), uid)
}

func TestValidationRefusesAndRecordsNothing(t *testing.T) {
	// The in-process client is no admin here, whatever uid runs the test.
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	goodDigestUnknown := "sha256:" + strings.Repeat("ab", 32)
	up := func(d string) *opusv1.AppSpec {
		return &opusv1.AppSpec{Name: "up", Source: &opusv1.AppSource{Kind: &opusv1.AppSource_Upload{Upload: &opusv1.UploadedSource{Digest: d}}}}
	}
	for _, tc := range []struct {
		name  string
		req   *opusv1.CreateProjectRequest
		code  codes.Code
		field string
	}{
		{"empty name", &opusv1.CreateProjectRequest{}, codes.InvalidArgument, "name"},
		{"bad name", &opusv1.CreateProjectRequest{Name: "Blog"}, codes.InvalidArgument, "name"},
		{"reserved", &opusv1.CreateProjectRequest{Name: "admin"}, codes.InvalidArgument, "name"},
		{"bad app name", &opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{gitApp("My-App", "https://x.org/a.git")}}, codes.InvalidArgument, "apps[0].name"},
		{"keyword app", &opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{gitApp("class", "https://x.org/a.git")}}, codes.InvalidArgument, "apps[0].name"},
		{"duplicate app", &opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{gitApp("a", "https://x.org/a.git"), gitApp("a", "https://x.org/b.git")}}, codes.InvalidArgument, "apps[1].name"},
		{"empty url", &opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{gitApp("a", "")}}, codes.InvalidArgument, "apps[0].source.git.url"},
		{"ext scheme", &opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{gitApp("a", "ext::sh -c id")}}, codes.InvalidArgument, "apps[0].source.git.url"},
		{"local path", &opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{gitApp("a", "/srv/git/a")}}, codes.PermissionDenied, "apps[0].source.git.url"},
		{"file url", &opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{gitApp("a", "file:///srv/git/a")}}, codes.PermissionDenied, "apps[0].source.git.url"},
		{"no source", &opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{{Name: "a"}}}, codes.InvalidArgument, "app source: is missing"},
		{"bad digest", &opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{up("sha1:abc")}}, codes.InvalidArgument, "apps[0].source.upload.digest"},
		{"unknown digest", &opusv1.CreateProjectRequest{Name: "p1", Apps: []*opusv1.AppSpec{up(goodDigestUnknown)}}, codes.InvalidArgument, "send it first"},
		{"superuser no password", &opusv1.CreateProjectRequest{Name: "p1", Superuser: &opusv1.Superuser{Username: "admin", Email: "admin@example.com"}}, codes.InvalidArgument, "superuser.password"},
		{"superuser no email", &opusv1.CreateProjectRequest{Name: "p1", Superuser: &opusv1.Superuser{Username: "admin", Password: "x"}}, codes.InvalidArgument, "superuser.email"},
		{"superuser email Django refuses", &opusv1.CreateProjectRequest{Name: "p1", Superuser: &opusv1.Superuser{Username: "admin", Email: "admin@b", Password: "x"}}, codes.InvalidArgument, "superuser.email"},
		{"superuser bad name", &opusv1.CreateProjectRequest{Name: "p1", Superuser: &opusv1.Superuser{Username: "a b", Password: "x"}}, codes.InvalidArgument, "superuser.username"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.client.CreateProject(ctx, tc.req)
			if code(err) != tc.code || !mentions(err, tc.field) {
				t.Fatalf("CreateProject = %v, want %v mentioning %q", err, tc.code, tc.field)
			}
		})
	}
	if ps, _ := s.st.ListProjects(ctx); len(ps) != 0 {
		t.Fatalf("refused creates recorded %d projects", len(ps))
	}
	if k := s.kicker.list(); len(k) != 0 {
		t.Fatalf("refused creates kicked %v", k)
	}
}

// TestCreateSuperuserEmails: the API takes exactly the superuser e-mail
// addresses of the table privd and opusctl are tested against, and a
// refused one records nothing.
func TestCreateSuperuserEmails(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	for i, c := range namestest.Emails {
		name := fmt.Sprintf("mail%d", i)
		_, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: name, Apps: []*opusv1.AppSpec{gitApp("a", "https://x.org/a.git")},
			Superuser: &opusv1.Superuser{Username: "admin", Email: c.Addr, Password: "s3cret"}})
		if c.OK != (err == nil) || err != nil && (code(err) != codes.InvalidArgument || !mentions(err, "superuser.email")) {
			t.Errorf("CreateProject with e-mail %.40q: %v; want ok=%v", c.Addr, err, c.OK)
		}
		if _, err := s.st.GetProject(ctx, name); c.OK != (err == nil) {
			t.Errorf("e-mail %.40q (ok=%v): project recorded: %v", c.Addr, c.OK, err == nil)
		}
	}
}

func TestLocalPathForAdmin(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{uint32(os.Geteuid()): true}})
	_, err := s.client.CreateProject(context.Background(), &opusv1.CreateProjectRequest{Name: "local", Apps: []*opusv1.AppSpec{gitApp("a", "/srv/git/a")}})
	if err != nil {
		t.Fatalf("admin with a local path: %v", err)
	}
}

func TestProjectLifecycle(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "/run/opus-test-agent.sock") // it adds an ssh source
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	me := uint32(os.Geteuid())
	op, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "life", Admin: true,
		Apps:      []*opusv1.AppSpec{gitApp("blog", "https://example.com/blog.git")},
		Superuser: &opusv1.Superuser{Username: "boss", Email: "boss@example.com", Password: "s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	if op.State != opusv1.OperationState_OPERATION_STATE_PENDING || op.Kind != opusv1.OperationKind_OPERATION_KIND_CREATE || op.OwnerUid != me || op.Generation != 1 {
		t.Fatalf("create op = %v", op)
	}
	if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "life"}); code(err) != codes.AlreadyExists || !strings.Contains(status.Convert(err).Message(), "choose another name") {
		t.Fatalf("second create = %v", err)
	}
	p, err := s.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "life"})
	if err != nil {
		t.Fatal(err)
	}
	if p.OwnerUid != me || p.ServerName != "life.opus.test" || p.SuperuserName != "boss" || len(p.Apps) != 1 ||
		p.Apps[0].RequestedRef != "main" || p.Phase != opusv1.Phase_PHASE_PENDING || p.SystemUser != "opus-life" ||
		!slices.Equal(p.Urls, []string{"http://life.opus.test:8080/", "https://life.opus.test:8443/"}) {
		t.Fatalf("project = %v", p)
	}
	if strings.Contains(p.String(), "s3cret") {
		t.Fatal("password returned")
	}

	add, err := s.client.AddApp(ctx, &opusv1.AddAppRequest{Project: "life", App: gitApp("shop", "git@example.com:shop.git")})
	if err != nil || add.Generation != 2 || add.Kind != opusv1.OperationKind_OPERATION_KIND_ADD_APP {
		t.Fatalf("AddApp = %v, %v", add, err)
	}
	if _, err := s.client.AddApp(ctx, &opusv1.AddAppRequest{Project: "life", App: gitApp("shop", "https://x.org/s.git")}); code(err) != codes.AlreadyExists {
		t.Fatalf("AddApp twice = %v", err)
	}
	if _, err := s.client.RemoveApp(ctx, &opusv1.RemoveAppRequest{Project: "life", App: "nope"}); code(err) != codes.NotFound {
		t.Fatalf("RemoveApp unknown = %v", err)
	}
	if _, err := s.client.UpdateApp(ctx, &opusv1.UpdateAppRequest{Project: "life", App: "blog", Source: gitApp("", "https://example.com/blog.git").Source}); err != nil {
		t.Fatalf("UpdateApp = %v", err)
	}
	if _, err := s.client.RemoveApp(ctx, &opusv1.RemoveAppRequest{Project: "life", App: "shop", DropData: true}); err != nil {
		t.Fatalf("RemoveApp = %v", err)
	}
	rec, _ := s.st.GetProject(ctx, "life")
	if rec.Generation != 4 || len(rec.Spec.Apps) != 1 || !slices.Equal(rec.Spec.DropAppData, []string{"shop"}) || rec.Spec.Superuser.Password != "s3cret" {
		t.Fatalf("stored spec = %+v gen %d", rec.Spec, rec.Generation)
	}
	ops, err := s.client.ListOperations(ctx, &opusv1.ListOperationsRequest{Project: "life"})
	if err != nil || len(ops.Operations) != 4 || ops.Operations[0].Kind != opusv1.OperationKind_OPERATION_KIND_REMOVE_APP {
		t.Fatalf("ListOperations = %v, %v", ops, err)
	}
	if _, err := s.client.ListOperations(ctx, &opusv1.ListOperationsRequest{Project: "life", Limit: 1000}); code(err) != codes.InvalidArgument {
		t.Fatalf("ListOperations limit 1000 = %v", err)
	}

	del, err := s.client.DeleteProject(ctx, &opusv1.DeleteProjectRequest{Name: "life"})
	if err != nil || del.Kind != opusv1.OperationKind_OPERATION_KIND_DELETE {
		t.Fatalf("DeleteProject = %v, %v", del, err)
	}
	again, err := s.client.DeleteProject(ctx, &opusv1.DeleteProjectRequest{Name: "life"})
	if err != nil || again.Id != del.Id {
		t.Fatalf("second DeleteProject = %v, %v; want the same operation", again, err)
	}
	_, err = s.client.AddApp(ctx, &opusv1.AddAppRequest{Project: "life", App: gitApp("x", "https://x.org/x.git")})
	if code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "being deleted") {
		t.Fatalf("AddApp while deleting = %v", err)
	}
	if got := s.kicker.list(); len(got) != 6 {
		t.Fatalf("kicks = %v, want 6", got)
	}
	rec, _ = s.st.GetProject(ctx, "life")
	if !rec.Deleting || rec.Generation != 5 {
		t.Fatalf("after delete: deleting %v gen %d", rec.Deleting, rec.Generation)
	}
}

func TestWatchOperation(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	op, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "watched"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.client.WatchOperation(ctx, &opusv1.WatchOperationRequest{Id: op.Id})
	if err != nil {
		t.Fatal(err)
	}
	first, err := w.Recv()
	if err != nil || first.State != opusv1.OperationState_OPERATION_STATE_PENDING {
		t.Fatalf("first = %v, %v", first, err)
	}
	steps := []func(*store.Operation){
		func(o *store.Operation) { o.State = store.OpRunning },
		func(o *store.Operation) {
			o.Steps = append(o.Steps, store.Step{Name: "user", State: store.StepRunning})
		},
		func(o *store.Operation) { o.Steps[0].State = store.StepDone },
		func(o *store.Operation) { o.State = store.OpSucceeded },
	}
	for i, f := range steps {
		if _, err := s.st.UpdateOperation(ctx, op.Id, func(o *store.Operation) error { f(o); return nil }); err != nil {
			t.Fatal(err)
		}
		got, err := w.Recv()
		if err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		want, _ := s.st.GetOperation(ctx, op.Id)
		if got.State != opStates[want.State] || len(got.Steps) != len(want.Steps) {
			t.Fatalf("change %d: got %v, stored %+v", i, got, want)
		}
	}
	if _, err := w.Recv(); err != io.EOF {
		t.Fatalf("after final: %v, want EOF", err)
	}
	// Watching a final operation sends it once and ends.
	w, _ = s.client.WatchOperation(ctx, &opusv1.WatchOperationRequest{Id: op.Id})
	if got, err := w.Recv(); err != nil || got.State != opusv1.OperationState_OPERATION_STATE_SUCCEEDED {
		t.Fatalf("final watch = %v, %v", got, err)
	}
	if _, err := w.Recv(); err != io.EOF {
		t.Fatalf("final watch second recv: %v", err)
	}
	w, _ = s.client.WatchOperation(ctx, &opusv1.WatchOperationRequest{Id: "op-" + strings.Repeat("0", 32)})
	if _, err := w.Recv(); code(err) != codes.NotFound {
		t.Fatalf("watch unknown = %v", err)
	}
	w, _ = s.client.WatchOperation(ctx, &opusv1.WatchOperationRequest{Id: "../x"})
	if _, err := w.Recv(); code(err) != codes.InvalidArgument {
		t.Fatalf("watch bad id = %v", err)
	}
}

func TestEndToEndWithReconciler(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}, reconciler: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	op, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "full"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.client.WatchOperation(ctx, &opusv1.WatchOperationRequest{Id: op.Id})
	if err != nil {
		t.Fatal(err)
	}
	var last *opusv1.Operation
	for {
		got, err := w.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = got
	}
	if last.State != opusv1.OperationState_OPERATION_STATE_SUCCEEDED || len(last.Steps) != len(reconcile.DeploySteps()) {
		t.Fatalf("final = %v", last)
	}
	p, _ := s.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "full"})
	if p.Phase != opusv1.Phase_PHASE_READY || p.ObservedGeneration != 1 {
		t.Fatalf("project = %v", p)
	}
	if p.Certificate != reconcile.CertSelfSigned || p.CertificateNotAfter == nil || !p.CertificateNotAfter.AsTime().After(time.Now()) ||
		strings.Join(p.Urls, " ") != "http://full.opus.test:8080/ https://full.opus.test:8443/" || p.ServerName != "full.opus.test" {
		t.Fatalf("project = %v", p)
	}
}

func TestUploadSource(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	send := func(msgs ...*opusv1.UploadSourceRequest) (*opusv1.UploadSourceResponse, error) {
		u, err := s.client.UploadSource(ctx)
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if err := u.Send(m); err != nil {
				break
			}
		}
		return u.CloseAndRecv()
	}
	info := &opusv1.UploadSourceRequest{Part: &opusv1.UploadSourceRequest_Info{Info: &opusv1.UploadInfo{Origin: "/home/me/blog"}}}
	chunk := func(b string) *opusv1.UploadSourceRequest {
		return &opusv1.UploadSourceRequest{Part: &opusv1.UploadSourceRequest_Chunk{Chunk: []byte(b)}}
	}
	if _, err := send(chunk("tar")); code(err) != codes.InvalidArgument {
		t.Fatalf("chunk first = %v", err)
	}
	if _, err := send(&opusv1.UploadSourceRequest{Part: &opusv1.UploadSourceRequest_Info{Info: &opusv1.UploadInfo{Size: 1 << 20}}}); code(err) != codes.InvalidArgument {
		t.Fatalf("declared too big = %v", err)
	}
	if _, err := send(info, chunk("tar"), chunk(strings.Repeat("x", 1<<10))); code(err) != codes.ResourceExhausted {
		t.Fatalf("too big = %v", err)
	}
	if _, err := send(info, chunk("zip")); code(err) != codes.InvalidArgument {
		t.Fatalf("store refusal = %v", err)
	}
	me := uint32(os.Geteuid())
	if n, err := s.uploads.Usage(me); n != 0 || err != nil {
		t.Fatalf("refused uploads stored %d bytes (%v)", n, err)
	}
	arch := appArchive(t, "blog", "")
	res, err := send(info, chunk(string(arch[:10])), chunk(string(arch[10:])))
	if err != nil || res.Size != int64(len(arch)) || !strings.HasPrefix(res.Digest, "sha256:") || !s.uploads.Has(me, res.Digest) {
		t.Fatalf("upload = %v, %v", res, err)
	}
	_, err = s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "uploaded", Apps: []*opusv1.AppSpec{{Name: "blog",
		Source: &opusv1.AppSource{Kind: &opusv1.AppSource_Upload{Upload: &opusv1.UploadedSource{Digest: res.Digest}}}}}})
	if err != nil {
		t.Fatalf("create with uploaded digest: %v", err)
	}
}

func TestGetLogs(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "logged"}); err != nil {
		t.Fatal(err)
	}
	res, err := s.client.GetLogs(ctx, &opusv1.GetLogsRequest{Project: "logged"})
	if err != nil || len(res.Lines) != 1 || res.Lines[0] != "logged: 100 lines" {
		t.Fatalf("GetLogs = %v, %v", res, err)
	}
	if _, err := s.client.GetLogs(ctx, &opusv1.GetLogsRequest{Project: "logged", Lines: 1001}); code(err) != codes.InvalidArgument {
		t.Fatalf("1001 lines = %v", err)
	}
	if _, err := s.client.GetLogs(ctx, &opusv1.GetLogsRequest{Project: "nothere"}); code(err) != codes.NotFound {
		t.Fatalf("unknown project = %v", err)
	}
	s.privd.logErr = status.Error(codes.Unavailable, "connection refused")
	if _, err := s.client.GetLogs(ctx, &opusv1.GetLogsRequest{Project: "logged"}); code(err) != codes.Unavailable || !strings.Contains(err.Error(), "opus-privd") {
		t.Fatalf("privd down = %v", err)
	}
}

func TestSetCertificate(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "tls"}); err != nil {
		t.Fatal(err)
	}
	good, goodKey, err := cert.SelfSigned([]string{"tls.opus.test"}, time.Now(), 24*time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	other, otherKey, _ := cert.SelfSigned([]string{"elsewhere.example.com"}, time.Now(), 24*time.Hour, 2)
	weak, weakKey, err := certtest.WeakRSA("tls.opus.test")
	if err != nil {
		t.Fatal(err)
	}
	sha1, sha1Key, err := certtest.SHA1Chain("tls.opus.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		crt, key  []byte
		wantCode  codes.Code
		wantField string
	}{
		{"empty", nil, goodKey, codes.InvalidArgument, "certificate:"},
		{"no key", good, nil, codes.InvalidArgument, "key:"},
		{"garbage", []byte("nope"), goodKey, codes.InvalidArgument, "certificate:"},
		{"mismatched key", good, otherKey, codes.InvalidArgument, "certificate:"},
		{"wrong host", other, otherKey, codes.InvalidArgument, "not valid for tls.opus.test"},
		{"RSA-1024 key", weak, weakKey, codes.InvalidArgument, "certificate: the certificate for tls.opus.test has an RSA 1024-bit key (80-bit security); this host serves certificates at TLS security level 2, which needs 112 bits: use RSA 2048 or more, or ECDSA P-256"},
		{"chain signed with SHA-1", sha1, sha1Key, codes.InvalidArgument, `chain certificate 1 of 1 ("Opus Test SHA-1 Intermediate") is signed with SHA-1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.client.SetCertificate(ctx, &opusv1.SetCertificateRequest{Project: "tls", CertificatePem: tc.crt, KeyPem: tc.key})
			if code(err) != tc.wantCode || !strings.Contains(err.Error(), tc.wantField) {
				t.Fatalf("SetCertificate = %v, want %v %q", err, tc.wantCode, tc.wantField)
			}
		})
	}
	if p, _ := s.st.GetProject(ctx, "tls"); p.Spec.Certificate != nil || p.Generation != 1 {
		t.Fatal("refused certificate recorded")
	}
	op, err := s.client.SetCertificate(ctx, &opusv1.SetCertificateRequest{Project: "tls", CertificatePem: good, KeyPem: goodKey})
	if err != nil || op.Kind != opusv1.OperationKind_OPERATION_KIND_SET_CERTIFICATE {
		t.Fatalf("SetCertificate = %v, %v", op, err)
	}
}

func TestHealthIsPublic(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	if _, err := healthpb.NewHealthClient(s.cc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health: %v", err)
	}
}

// TestProjectUsersRefused: a caller whose uid is a project user's (in
// project_uids) is that project's code, not a person: every call is
// refused, and nothing is recorded; a uid outside the range is served.
func TestProjectUsersRefused(t *testing.T) {
	run := testrun.Need(t, "creates two users and runs helper processes as them")
	_, tenant, _ := run.NewUser(t, "p")
	_, person, _ := run.NewUser(t, "u")
	// A range of the tenant's id alone: the person (another user, so
	// another id) is outside it.
	s := startServer(t, serverOpt{admins: fakeAdmins{0: true}, projectUIDs: config.UIDRange{First: tenant, Last: tenant}})
	for _, action := range []string{"create", "list", "health"} {
		if got := s.as(t, tenant, action, "bytenant"); got.Code != "PermissionDenied" || !strings.Contains(got.Msg, "project's user") {
			t.Errorf("%s as project user %d: %+v, want PermissionDenied naming the project user", action, tenant, got)
		}
	}
	if ps, _ := s.st.ListProjects(context.Background()); len(ps) != 0 {
		t.Errorf("refused calls recorded %d projects", len(ps))
	}
	if got := s.as(t, person, "create", "byperson"); got.Code != "OK" {
		t.Errorf("create as %d (no project user): %+v", person, got)
	}
}

// TestCrossUserIsolation proves over a real socket, with the kernel's peer
// credentials, that one user's project is invisible and unchangeable to
// another, and visible to root.
func TestCrossUserIsolation(t *testing.T) {
	run := testrun.Need(t, "creates two users and runs helper processes as them")
	_, uidA, _ := run.NewUser(t, "a")
	_, uidB, _ := run.NewUser(t, "b")
	s := startServer(t, serverOpt{admins: fakeAdmins{0: true}})
	ctx := context.Background()

	created := s.as(t, uidA, "create", "ownedbya")
	if created.Code != "OK" || created.ID == "" {
		t.Fatalf("create as %d: %+v", uidA, created)
	}
	s.as(t, uidB, "create", "ownedbyb")
	before, _ := s.st.GetProject(ctx, "ownedbya")
	if before.OwnerUID != uidA {
		t.Fatalf("owner = %d, want %d", before.OwnerUID, uidA)
	}

	for _, tc := range []struct{ action, arg, want string }{
		{"get", "ownedbya", "NotFound"},
		{"delete", "ownedbya", "NotFound"},
		{"addapp", "ownedbya", "NotFound"},
		{"removeapp", "ownedbya", "NotFound"},
		{"updateapp", "ownedbya", "NotFound"},
		{"rollbackapp", "ownedbya", "NotFound"},
		{"listops", "ownedbya", "NotFound"},
		{"logs", "ownedbya", "NotFound"},
		{"followlogs", "ownedbya", "NotFound"},
		{"getop", created.ID, "NotFound"},
		{"watch", created.ID, "NotFound"},
		{"create", "ownedbya", "AlreadyExists"},
		{"health", "", "OK"},
	} {
		t.Run("B "+tc.action, func(t *testing.T) {
			got := s.as(t, uidB, tc.action, tc.arg)
			if got.Code != tc.want {
				t.Fatalf("uid %d %s %s = %+v, want %s", uidB, tc.action, tc.arg, got, tc.want)
			}
			// Not found looks the same as for a project that does not exist.
			if tc.want == "NotFound" && strings.Contains(got.Msg, fmt.Sprint(uidA)) {
				t.Fatalf("refusal leaks the owner: %q", got.Msg)
			}
		})
	}
	// Every refusal is logged with who, what and which project.
	for _, m := range []string{"GetProject", "DeleteProject", "AddApp", "GetOperation", "WatchOperation", "GetLogs", "FollowLogs"} {
		want := fmt.Sprintf("msg=refused uid=%d method=/opus.v1.Opus/%s project=ownedbya", uidB, m)
		if !strings.Contains(s.logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	// Nothing of A's changed.
	after, _ := s.st.GetProject(ctx, "ownedbya")
	ops, _ := s.st.ListOperations(ctx, "ownedbya", 0)
	if after.Generation != before.Generation || after.Deleting || len(after.Spec.Apps) != 1 || after.Spec.Apps[0].Git.URL != "https://example.com/blog.git" || len(ops) != 1 {
		t.Fatalf("A's project changed by B: %+v, %d ops", after, len(ops))
	}
	// Each lists only its own; root sees all.
	if got := s.as(t, uidA, "list", ""); !slices.Equal(got.Names, []string{"ownedbya"}) {
		t.Fatalf("A lists %v", got.Names)
	}
	if got := s.as(t, uidB, "list", ""); !slices.Equal(got.Names, []string{"ownedbyb"}) {
		t.Fatalf("B lists %v", got.Names)
	}
	// A can do what B could not.
	if got := s.as(t, uidA, "get", "ownedbya"); got.Code != "OK" {
		t.Fatalf("A get own = %+v", got)
	}
	if got := s.as(t, uidA, "watch", created.ID); got.Code != "OK" {
		t.Fatalf("A watch own = %+v", got)
	}
	l, err := s.client.ListProjects(ctx, &opusv1.ListProjectsRequest{})
	if err != nil || len(l.Projects) != 2 {
		t.Fatalf("root lists %v, %v", l, err)
	}
	if p, err := s.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "ownedbya"}); err != nil || p.OwnerUid != uidA {
		t.Fatalf("root get = %v, %v", p, err)
	}
	if got := s.as(t, uidA, "delete", "ownedbya"); got.Code != "OK" {
		t.Fatalf("A delete own = %+v", got)
	}
}

func TestGroupAdmins(t *testing.T) {
	// Reads the host's own user and group databases; changes nothing.
	for _, tc := range []struct {
		name  string
		group string
		uid   uint32
		want  bool
	}{
		{"root always", "", 0, true},
		{"no group configured", "", 65534, false},
		{"primary group", "nogroup", 65534, true},
		{"not a member", "root", 65534, false},
		{"missing group", "opus-no-such-group", 65534, false},
		{"unknown uid", "nogroup", 65533, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := (GroupAdmins{Group: tc.group}).IsAdmin(tc.uid); got != tc.want {
				t.Fatalf("IsAdmin(%d) in %q = %v, want %v", tc.uid, tc.group, got, tc.want)
			}
		})
	}
}

// peerContext is a context as the gRPC transport makes it for a peer of uid.
func peerContext(ctx context.Context, uid uint32) context.Context {
	return peer.NewContext(ctx, &peer.Peer{Addr: &net.UnixAddr{Name: "@", Net: "unix"}, AuthInfo: peercred.AuthInfo{Cred: peercred.Cred{UID: uid}}})
}

// TestCreateWhileRemoved: the name of a project being removed (destroyed,
// or undone after its first deploy failed) is refused with a message that
// says to wait, not to choose another name.
func TestCreateWhileRemoved(t *testing.T) {
	s := startServer(t, serverOpt{})
	ctx := context.Background()
	if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.st.UpdateProject(ctx, "gone", func(p *store.Project) error { p.Deleting = true; return nil }); err != nil {
		t.Fatal(err)
	}
	before, _ := s.st.GetProject(ctx, "gone")
	_, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "gone"})
	if msg := status.Convert(err).Message(); code(err) != codes.AlreadyExists || !strings.Contains(msg, "is being removed; wait until that is done") {
		t.Fatalf("create while removed: %v", err)
	}
	if after, _ := s.st.GetProject(ctx, "gone"); after.Generation != before.Generation || !after.Deleting {
		t.Errorf("the refused create changed the record: %+v", after)
	}
	// Its removal failed: nothing is going on, so the message says what
	// to do.
	if _, err := s.st.UpdateProject(ctx, "gone", func(p *store.Project) error {
		p.Status.Phase, p.Status.LastError = store.PhaseFailed, "step site: removing the site: opus-privd is not reachable\nmore"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_, err = s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "gone"})
	if msg := status.Convert(err).Message(); code(err) != codes.AlreadyExists || !strings.Contains(msg, "could not be removed (step site: removing the site: opus-privd is not reachable); once that is dealt with, run 'opusctl destroy gone --yes', then create it again") {
		t.Fatalf("create while its removal failed: %v", err)
	}
}
