package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/names/namestest"
	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/privd/account"
	"github.com/opus-hosting/opus/privd/tree"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// TestAllowlistIsTheService: every method of the service is allowed and
// nothing else is.
func TestAllowlistIsTheService(t *testing.T) {
	desc := privdv1.Privd_ServiceDesc
	served := map[string]bool{}
	for _, m := range desc.Methods {
		served["/"+desc.ServiceName+"/"+m.MethodName] = true
	}
	for _, m := range desc.Streams {
		served["/"+desc.ServiceName+"/"+m.StreamName] = true
	}
	for m := range served {
		if !allowed[m] {
			t.Errorf("%s is in the service but not in the allowlist", m)
		}
	}
	for m := range allowed {
		if !served[m] {
			t.Errorf("%s is in the allowlist but not in the service", m)
		}
	}
	// Nine after the first round, EnsureBackend and RemoveBackend
	// (issue 15), DumpData and LoadData (issue 17), Stats and
	// CertificateRequest (issue 19), each argued in README's security
	// section.
	if len(served) > 15 {
		t.Errorf("the service has %d methods; the design allows at most fifteen", len(served))
	}
}

func credContext(uid uint32) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{
		AuthInfo: peercred.AuthInfo{Cred: peercred.Cred{UID: uid, PID: 42}}})
}

func TestAuthorizeInterceptor(t *testing.T) {
	s := New(Config{OpusUID: 997})
	tests := []struct {
		name   string
		ctx    context.Context
		method string
		want   codes.Code
	}{
		{"no credentials", context.Background(), "/opus.privd.v1.Privd/EnsureUser", codes.PermissionDenied},
		{"root is not opus", credContext(0), "/opus.privd.v1.Privd/EnsureUser", codes.PermissionDenied},
		{"nobody", credContext(65534), "/opus.privd.v1.Privd/DeleteUser", codes.PermissionDenied},
		{"nobody, unknown method", credContext(65534), "/opus.privd.v1.Privd/Exec", codes.PermissionDenied},
		{"opus, unknown method", credContext(997), "/opus.privd.v1.Privd/Exec", codes.Unimplemented},
		{"opus, other service", credContext(997), "/grpc.health.v1.Health/Check", codes.Unimplemented},
		{"opus", credContext(997), "/opus.privd.v1.Privd/TailLog", codes.OK},
		{"root asks for stats", credContext(0), "/opus.privd.v1.Privd/Stats", codes.PermissionDenied},
		{"nobody asks for stats", credContext(65534), "/opus.privd.v1.Privd/Stats", codes.PermissionDenied},
		{"opus asks for stats", credContext(997), "/opus.privd.v1.Privd/Stats", codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			called := false
			h := func(context.Context, any) (any, error) { called = true; return nil, nil }
			_, err := s.UnaryInterceptor()(tc.ctx, nil, &grpc.UnaryServerInfo{FullMethod: tc.method}, h)
			if status.Code(err) != tc.want {
				t.Errorf("unary: code %v, want %v", status.Code(err), tc.want)
			}
			if called != (tc.want == codes.OK) {
				t.Errorf("unary: handler called = %v", called)
			}
			called = false
			sh := func(any, grpc.ServerStream) error { called = true; return nil }
			err = s.StreamInterceptor()(nil, fakeStream{ctx: tc.ctx}, &grpc.StreamServerInfo{FullMethod: tc.method}, sh)
			if status.Code(err) != tc.want {
				t.Errorf("stream: code %v, want %v", status.Code(err), tc.want)
			}
			if called != (tc.want == codes.OK) {
				t.Errorf("stream: handler called = %v", called)
			}
		})
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeStream) Context() context.Context { return f.ctx }

// badNames are project names every method must refuse.
var badNames = []string{"../x", "Root", "a b", strings.Repeat("a", 40), "", "root", "x/y", "1abc"}

// validCert stands in for PEM bytes; only the length is checked here.
var validCert = []byte("-----BEGIN CERTIFICATE-----")

// invalidRequests calls every method with a bad request; each must fail
// with InvalidArgument naming field.
func invalidRequests(c privdv1.PrivdClient) []struct {
	field string
	call  func(ctx context.Context) error
} {
	type tc = struct {
		field string
		call  func(ctx context.Context) error
	}
	var out []tc
	for _, n := range badNames {
		n := n
		out = append(out,
			tc{"project", func(ctx context.Context) error {
				_, err := c.EnsureUser(ctx, &privdv1.EnsureUserRequest{Project: n})
				return err
			}},
			tc{"project", func(ctx context.Context) error {
				_, err := c.DeleteUser(ctx, &privdv1.DeleteUserRequest{Project: n})
				return err
			}},
			tc{"project", func(ctx context.Context) error {
				_, err := c.SecureTree(ctx, &privdv1.SecureTreeRequest{Project: n})
				return err
			}},
			tc{"project", func(ctx context.Context) error {
				_, err := c.RemoveTree(ctx, &privdv1.RemoveTreeRequest{Project: n})
				return err
			}},
			tc{"project", func(ctx context.Context) error {
				_, err := c.RemoveSite(ctx, &privdv1.RemoveSiteRequest{Project: n})
				return err
			}},
			tc{"project", func(ctx context.Context) error {
				_, err := c.TailLog(ctx, &privdv1.TailLogRequest{Project: n})
				return err
			}},
			tc{"project", func(ctx context.Context) error {
				_, err := c.RunManage(ctx, &privdv1.RunManageRequest{Project: n, Commands: []privdv1.ManageCommand{privdv1.ManageCommand_MANAGE_COMMAND_CHECK}})
				return err
			}},
			tc{"project", func(ctx context.Context) error {
				_, err := c.InstallSite(ctx, &privdv1.InstallSiteRequest{Project: n, CertificatePem: validCert, KeyPem: validCert})
				return err
			}},
			tc{"project", func(ctx context.Context) error {
				_, err := c.CertificateRequest(ctx, &privdv1.CertificateRequestRequest{Project: n})
				return err
			}},
		)
	}
	site := func(mod func(*privdv1.InstallSiteRequest)) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			r := &privdv1.InstallSiteRequest{Project: "blog", CertificatePem: validCert, KeyPem: validCert}
			mod(r)
			_, err := c.InstallSite(ctx, r)
			return err
		}
	}
	manage := func(mod func(*privdv1.RunManageRequest)) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			r := &privdv1.RunManageRequest{Project: "blog", Commands: []privdv1.ManageCommand{privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE}}
			mod(r)
			_, err := c.RunManage(ctx, r)
			return err
		}
	}
	out = append(out,
		tc{"aliases[0]", site(func(r *privdv1.InstallSiteRequest) { r.Aliases = []string{"Evil.example"} })},
		tc{"aliases[1]", site(func(r *privdv1.InstallSiteRequest) { r.Aliases = []string{"ok.example", "a\nInclude /etc"} })},
		tc{"aliases", site(func(r *privdv1.InstallSiteRequest) { r.Aliases = make([]string, 33) })},
		tc{"aliases[0]", func(ctx context.Context) error {
			_, err := c.CertificateRequest(ctx, &privdv1.CertificateRequestRequest{Project: "blog", Aliases: []string{"a\nInclude /etc"}})
			return err
		}},
		tc{"aliases", func(ctx context.Context) error {
			_, err := c.CertificateRequest(ctx, &privdv1.CertificateRequestRequest{Project: "blog", Aliases: make([]string, 33)})
			return err
		}},
		tc{"processes", func(ctx context.Context) error {
			_, err := c.EnsureBackend(ctx, &privdv1.EnsureBackendRequest{Project: "blog", Processes: 1000})
			return err
		}},
		tc{"threads", func(ctx context.Context) error {
			_, err := c.EnsureBackend(ctx, &privdv1.EnsureBackendRequest{Project: "blog", Threads: 1000})
			return err
		}},
		tc{"certificate_pem", site(func(r *privdv1.InstallSiteRequest) { r.CertificatePem = nil })},
		tc{"key_pem", site(func(r *privdv1.InstallSiteRequest) { r.KeyPem = make([]byte, 1<<20) })},
		tc{"commands", manage(func(r *privdv1.RunManageRequest) { r.Commands = nil })},
		tc{"commands[1]", manage(func(r *privdv1.RunManageRequest) { r.Commands = append(r.Commands, 99) })},
		tc{"commands[0]", manage(func(r *privdv1.RunManageRequest) { r.Commands[0] = privdv1.ManageCommand_MANAGE_COMMAND_UNSPECIFIED })},
		tc{"migrate_app", manage(func(r *privdv1.RunManageRequest) { r.MigrateApp = "--settings=evil" })},
		tc{"migrate_target", manage(func(r *privdv1.RunManageRequest) { r.MigrateTarget = "zero" })},
		tc{"superuser_password", manage(func(r *privdv1.RunManageRequest) { r.SuperuserPassword = strings.Repeat("p", 5000) })},
		tc{"superuser_username", manage(func(r *privdv1.RunManageRequest) {
			r.Commands = []privdv1.ManageCommand{privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER}
		})},
		tc{"lines", func(ctx context.Context) error {
			_, err := c.TailLog(ctx, &privdv1.TailLogRequest{Project: "blog", Lines: -1})
			return err
		}},
		tc{"lines", func(ctx context.Context) error {
			_, err := c.TailLog(ctx, &privdv1.TailLogRequest{Project: "blog", Lines: 1001})
			return err
		}},
		tc{"after.offset", func(ctx context.Context) error {
			_, err := c.TailLog(ctx, &privdv1.TailLogRequest{Project: "blog", After: &privdv1.LogPosition{Offset: -1}})
			return err
		}},
	)
	return out
}

// direct adapts a Server to the client interface, calling the handlers
// without the transport, for unit tests of validation.
type direct struct{ s *Server }

func (d direct) EnsureUser(ctx context.Context, r *privdv1.EnsureUserRequest, _ ...grpc.CallOption) (*privdv1.EnsureUserResponse, error) {
	return d.s.EnsureUser(ctx, r)
}
func (d direct) DeleteUser(ctx context.Context, r *privdv1.DeleteUserRequest, _ ...grpc.CallOption) (*privdv1.DeleteUserResponse, error) {
	return d.s.DeleteUser(ctx, r)
}
func (d direct) SecureTree(ctx context.Context, r *privdv1.SecureTreeRequest, _ ...grpc.CallOption) (*privdv1.SecureTreeResponse, error) {
	return d.s.SecureTree(ctx, r)
}
func (d direct) RemoveTree(ctx context.Context, r *privdv1.RemoveTreeRequest, _ ...grpc.CallOption) (*privdv1.RemoveTreeResponse, error) {
	return d.s.RemoveTree(ctx, r)
}
func (d direct) RunManage(ctx context.Context, r *privdv1.RunManageRequest, _ ...grpc.CallOption) (*privdv1.RunManageResponse, error) {
	return d.s.RunManage(ctx, r)
}
func (d direct) EnsureBackend(ctx context.Context, r *privdv1.EnsureBackendRequest, _ ...grpc.CallOption) (*privdv1.EnsureBackendResponse, error) {
	return d.s.EnsureBackend(ctx, r)
}
func (d direct) RemoveBackend(ctx context.Context, r *privdv1.RemoveBackendRequest, _ ...grpc.CallOption) (*privdv1.RemoveBackendResponse, error) {
	return d.s.RemoveBackend(ctx, r)
}
func (d direct) InstallSite(ctx context.Context, r *privdv1.InstallSiteRequest, _ ...grpc.CallOption) (*privdv1.InstallSiteResponse, error) {
	return d.s.InstallSite(ctx, r)
}
func (d direct) RemoveSite(ctx context.Context, r *privdv1.RemoveSiteRequest, _ ...grpc.CallOption) (*privdv1.RemoveSiteResponse, error) {
	return d.s.RemoveSite(ctx, r)
}
func (d direct) ReloadApache(ctx context.Context, r *privdv1.ReloadApacheRequest, _ ...grpc.CallOption) (*privdv1.ReloadApacheResponse, error) {
	return d.s.ReloadApache(ctx, r)
}
func (d direct) CertificateRequest(ctx context.Context, r *privdv1.CertificateRequestRequest, _ ...grpc.CallOption) (*privdv1.CertificateRequestResponse, error) {
	return d.s.CertificateRequest(ctx, r)
}
func (d direct) TailLog(ctx context.Context, r *privdv1.TailLogRequest, _ ...grpc.CallOption) (*privdv1.TailLogResponse, error) {
	return d.s.TailLog(ctx, r)
}
func (d direct) Stats(ctx context.Context, r *privdv1.StatsRequest, _ ...grpc.CallOption) (*privdv1.StatsResponse, error) {
	return d.s.Stats(ctx, r)
}

// backends is recorder as Backends.
type backends struct{ *recorder }

func (b backends) Ensure(context.Context, *privdv1.EnsureBackendRequest) (*privdv1.EnsureBackendResponse, error) {
	b.calls = append(b.calls, "Ensure")
	return &privdv1.EnsureBackendResponse{}, nil
}
func (b backends) Remove(context.Context, *privdv1.RemoveBackendRequest) (*privdv1.RemoveBackendResponse, error) {
	b.calls = append(b.calls, "RemoveBackend")
	return &privdv1.RemoveBackendResponse{}, nil
}

// withRecorder is cfg with rec as its Sites, Backends and Manager.
func withRecorder(cfg Config, rec *recorder) Config {
	cfg.Sites, cfg.Backends, cfg.Manager = rec, backends{rec}, rec
	cfg.BackendAddr = config.Default().BackendAddr
	return cfg
}

// recorder is a Sites and Manager that records whether it was reached.
// Its TailLog fails unless tailOK.
type recorder struct {
	calls  []string
	tailOK bool
}

func (r *recorder) Install(context.Context, *privdv1.InstallSiteRequest, netip.AddrPort) (*privdv1.InstallSiteResponse, error) {
	r.calls = append(r.calls, "Install")
	return &privdv1.InstallSiteResponse{}, nil
}
func (r *recorder) CertificateRequest(context.Context, *privdv1.CertificateRequestRequest) (*privdv1.CertificateRequestResponse, error) {
	r.calls = append(r.calls, "CertificateRequest")
	return &privdv1.CertificateRequestResponse{}, nil
}
func (r *recorder) Remove(context.Context, *privdv1.RemoveSiteRequest) (*privdv1.RemoveSiteResponse, error) {
	r.calls = append(r.calls, "Remove")
	return &privdv1.RemoveSiteResponse{}, nil
}
func (r *recorder) Reload(context.Context, *privdv1.ReloadApacheRequest) (*privdv1.ReloadApacheResponse, error) {
	r.calls = append(r.calls, "Reload")
	return &privdv1.ReloadApacheResponse{}, nil
}
func (r *recorder) TailLog(context.Context, *privdv1.TailLogRequest) (*privdv1.TailLogResponse, error) {
	r.calls = append(r.calls, "TailLog")
	if r.tailOK {
		return &privdv1.TailLogResponse{}, nil
	}
	return nil, errors.New("boom")
}
func (r *recorder) Run(context.Context, *privdv1.RunManageRequest) (*privdv1.RunManageResponse, error) {
	r.calls = append(r.calls, "Run")
	return &privdv1.RunManageResponse{}, nil
}

func TestValidation(t *testing.T) {
	base := t.TempDir()
	rec := &recorder{}
	// A passwd file that does not exist: if validation let anything
	// through to the accounts, it would fail with another code.
	s := New(withRecorder(Config{BaseDir: base, Accounts: &account.Accounts{BaseDir: base, PasswdPath: filepath.Join(base, "nopasswd")}}, rec))
	for i, tc := range invalidRequests(direct{s}) {
		err := tc.call(context.Background())
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tc.field+":") {
			t.Errorf("case %d (%s): %v; want InvalidArgument naming %s", i, tc.field, err, tc.field)
		}
	}
	if len(rec.calls) != 0 {
		t.Errorf("dependencies reached with invalid requests: %v", rec.calls)
	}
	if entries, _ := os.ReadDir(base); len(entries) != 0 {
		t.Errorf("base dir holds %v", entries)
	}
}

func TestDependencies(t *testing.T) {
	base := t.TempDir()
	passwd := filepath.Join(base, "passwd")
	if err := os.WriteFile(passwd, []byte("opus-blog:x:990:990:Opus project blog:/x:/usr/sbin/nologin\nopus-evil:x:991:991:evil:/x:/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	acc := &account.Accounts{BaseDir: base, PasswdPath: passwd}
	ctx := context.Background()
	check := privdv1.RunManageRequest{Project: "blog", Commands: []privdv1.ManageCommand{privdv1.ManageCommand_MANAGE_COMMAND_CHECK}}

	// Without Sites and Manager, their calls are Unavailable.
	s := New(Config{BaseDir: base, Accounts: acc})
	for name, call := range map[string]func() error{
		"InstallSite": func() error {
			_, err := s.InstallSite(ctx, &privdv1.InstallSiteRequest{Project: "blog", CertificatePem: validCert, KeyPem: validCert})
			return err
		},
		"RemoveSite": func() error { _, err := s.RemoveSite(ctx, &privdv1.RemoveSiteRequest{Project: "blog"}); return err },
		"CertificateRequest": func() error {
			_, err := s.CertificateRequest(ctx, &privdv1.CertificateRequestRequest{Project: "blog"})
			return err
		},
		"ReloadApache": func() error { _, err := s.ReloadApache(ctx, &privdv1.ReloadApacheRequest{}); return err },
		"TailLog":      func() error { _, err := s.TailLog(ctx, &privdv1.TailLogRequest{Project: "blog"}); return err },
		"RunManage":    func() error { _, err := s.RunManage(ctx, &check); return err },
	} {
		if status.Code(call()) != codes.Unavailable {
			t.Errorf("%s without dependency: %v, want Unavailable", name, call())
		}
	}

	rec := &recorder{}
	s = New(withRecorder(Config{BaseDir: base, Accounts: acc}, rec))
	if _, err := s.RunManage(ctx, &check); err != nil {
		t.Errorf("RunManage(blog): %v", err)
	}
	for _, p := range []string{"evil", "absent"} {
		r := &privdv1.RunManageRequest{Project: p, Commands: check.Commands}
		if _, err := s.RunManage(ctx, r); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("RunManage(%s) = %v, want FailedPrecondition", p, err)
		}
		if _, err := s.SecureTree(ctx, &privdv1.SecureTreeRequest{Project: p}); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("SecureTree(%s) = %v, want FailedPrecondition", p, err)
		}
	}
	if _, err := s.TailLog(ctx, &privdv1.TailLogRequest{Project: "blog"}); status.Code(err) != codes.Internal {
		t.Errorf("TailLog with a failing dependency: %v, want Internal", err)
	}
	if want := []string{"Run", "TailLog"}; fmt.Sprint(rec.calls) != fmt.Sprint(want) {
		t.Errorf("calls = %v, want %v", rec.calls, want)
	}
	if entries, _ := os.ReadDir(base); len(entries) != 1 {
		t.Errorf("base dir holds %v, want only passwd", entries)
	}
}

// TestSiteCallsAndProjectUsers: InstallSite reaches Apache only for a
// project whose user exists with Opus's marker; RemoveSite and TailLog,
// which touch only privd's own files for the name, work whatever the user.
func TestSiteCallsAndProjectUsers(t *testing.T) {
	base := t.TempDir()
	passwd := filepath.Join(base, "passwd")
	if err := os.WriteFile(passwd, []byte("opus-blog:x:990:990:Opus project blog:/x:/usr/sbin/nologin\n"+
		"opus-evil:x:991:991:evil:/x:/bin/sh\n"+
		"opus-rooty:x:0:0:Opus project rooty:/x:/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tests := []struct {
		project string
		call    string
		want    codes.Code
	}{
		{"blog", "InstallSite", codes.OK},
		{"evil", "InstallSite", codes.FailedPrecondition},
		{"rooty", "InstallSite", codes.FailedPrecondition},
		{"absent", "InstallSite", codes.FailedPrecondition},
		// privd makes keys only for projects Opus made.
		{"blog", "CertificateRequest", codes.OK},
		{"evil", "CertificateRequest", codes.FailedPrecondition},
		{"rooty", "CertificateRequest", codes.FailedPrecondition},
		{"absent", "CertificateRequest", codes.FailedPrecondition},
		{"evil", "RemoveSite", codes.OK},
		{"absent", "RemoveSite", codes.OK},
		{"evil", "TailLog", codes.OK},
		{"absent", "TailLog", codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.call+"/"+tc.project, func(t *testing.T) {
			rec := &recorder{tailOK: true}
			s := New(withRecorder(Config{BaseDir: base, Accounts: &account.Accounts{BaseDir: base, PasswdPath: passwd}}, rec))
			var err error
			switch tc.call {
			case "InstallSite":
				_, err = s.InstallSite(ctx, &privdv1.InstallSiteRequest{Project: tc.project, CertificatePem: validCert, KeyPem: validCert})
			case "CertificateRequest":
				_, err = s.CertificateRequest(ctx, &privdv1.CertificateRequestRequest{Project: tc.project})
			case "RemoveSite":
				_, err = s.RemoveSite(ctx, &privdv1.RemoveSiteRequest{Project: tc.project})
			case "TailLog":
				_, err = s.TailLog(ctx, &privdv1.TailLogRequest{Project: tc.project})
			}
			if status.Code(err) != tc.want {
				t.Fatalf("%s(%s) = %v, want %v", tc.call, tc.project, err, tc.want)
			}
			if reached := len(rec.calls) > 0; reached != (tc.want == codes.OK) {
				t.Errorf("%s(%s) reached Apache: %v", tc.call, tc.project, rec.calls)
			}
			if tc.want == codes.FailedPrecondition && !strings.Contains(status.Convert(err).Message(), "opus-"+tc.project) {
				t.Errorf("refusal %q does not name the user", status.Convert(err).Message())
			}
		})
	}
}

func TestToStatus(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{fmt.Errorf("x: %w", account.ErrNotOurs), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", account.ErrNoUser), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", tree.ErrLimit), codes.ResourceExhausted},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{status.Error(codes.InvalidArgument, "key does not match"), codes.InvalidArgument},
		{fmt.Errorf("install site blog: tls: %w", cert.ErrInvalid), codes.InvalidArgument},
		{errors.New("disk on fire"), codes.Internal},
	}
	for _, tc := range tests {
		if got := status.Code(toStatus(tc.err)); got != tc.want {
			t.Errorf("toStatus(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestHostNamesAgree: privd's request check takes exactly the host names
// of the one table every caller of names.ValidateHostName is tested
// against (opusd's settings and privd's renderer are, in their packages).
func TestHostNamesAgree(t *testing.T) {
	for _, c := range namestest.Hosts {
		err := validateInstallSite(&privdv1.InstallSiteRequest{Project: "blog", Aliases: []string{c.Name}, CertificatePem: []byte("C"), KeyPem: []byte("K")})
		if (err == nil) != c.OK {
			t.Errorf("alias %.40q: %v, want ok=%v", c.Name, err, c.OK)
		}
	}
}

// TestProjectNamesAgree: privd's check of every request's project takes
// exactly the project names of the one table every caller of
// names.ValidateProject is tested against (opusd's API and opusctl's
// early check are, in their packages).
func TestProjectNamesAgree(t *testing.T) {
	for _, c := range namestest.Projects {
		err := validateProject(c.Name)
		if (err == nil) != c.OK() {
			t.Errorf("project %.40q: %v, want ok=%v", c.Name, err, c.OK())
		}
		if err != nil && status.Code(err) != codes.InvalidArgument {
			t.Errorf("project %.40q: %v, want InvalidArgument", c.Name, err)
		}
	}
}

// The streaming calls are tested over a real connection (data_test.go).
func (d direct) DumpData(context.Context, *privdv1.DumpDataRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[privdv1.DumpDataResponse], error) {
	return nil, status.Error(codes.Unimplemented, "not a unary call")
}
func (d direct) LoadData(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[privdv1.LoadDataRequest, privdv1.LoadDataResponse], error) {
	return nil, status.Error(codes.Unimplemented, "not a unary call")
}
