package server

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/privd/account"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// backendLog stands in for Apache control and the manage.py runner: it keeps
// every request that got past the server's checks.
type backendLog struct {
	mu   sync.Mutex
	seen []proto.Message
}

func (r *backendLog) keep(m proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, m)
}

func (r *backendLog) take() []proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.seen
	r.seen = nil
	return s
}

func (r *backendLog) Install(_ context.Context, req *privdv1.InstallSiteRequest, _ netip.AddrPort) (*privdv1.InstallSiteResponse, error) {
	r.keep(req)
	return &privdv1.InstallSiteResponse{}, nil
}

func (r *backendLog) CertificateRequest(_ context.Context, req *privdv1.CertificateRequestRequest) (*privdv1.CertificateRequestResponse, error) {
	r.keep(req)
	return &privdv1.CertificateRequestResponse{}, nil
}

// backendsLog is backendLog as Backends.
type backendsLog struct{ *backendLog }

func (r backendsLog) Ensure(_ context.Context, req *privdv1.EnsureBackendRequest) (*privdv1.EnsureBackendResponse, error) {
	r.keep(req)
	return &privdv1.EnsureBackendResponse{}, nil
}

func (r backendsLog) Remove(_ context.Context, req *privdv1.RemoveBackendRequest) (*privdv1.RemoveBackendResponse, error) {
	r.keep(req)
	return &privdv1.RemoveBackendResponse{}, nil
}

func (r *backendLog) Remove(_ context.Context, req *privdv1.RemoveSiteRequest) (*privdv1.RemoveSiteResponse, error) {
	r.keep(req)
	return &privdv1.RemoveSiteResponse{}, nil
}

func (r *backendLog) Reload(_ context.Context, req *privdv1.ReloadApacheRequest) (*privdv1.ReloadApacheResponse, error) {
	r.keep(req)
	return &privdv1.ReloadApacheResponse{}, nil
}

func (r *backendLog) TailLog(_ context.Context, req *privdv1.TailLogRequest) (*privdv1.TailLogResponse, error) {
	r.keep(req)
	return &privdv1.TailLogResponse{}, nil
}

func (r *backendLog) Run(_ context.Context, req *privdv1.RunManageRequest) (*privdv1.RunManageResponse, error) {
	r.keep(req)
	return &privdv1.RunManageResponse{}, nil
}

// projectOK is the project rule restated independently of package names:
// what a path element, a user name and an Apache directive may safely hold.
func projectOK(p string) bool {
	if p == "" || len(p) > names.MaxProject || p[0] < 'a' || p[0] > 'z' {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// safeToken: a migrate argument that passed may only be letters, digits, '_'.
func safeToken(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return len(s) <= maxMigrateArg
}

// checkAccepted fails t unless a request that reached a handler's backend
// has a valid project name and every field within its bounds.
func checkAccepted(t *testing.T, m proto.Message) {
	t.Helper()
	if p, ok := m.(interface{ GetProject() string }); ok && !projectOK(p.GetProject()) {
		t.Fatalf("%T with project %q got through", m, p.GetProject())
	}
	switch r := m.(type) {
	case *privdv1.EnsureBackendRequest:
		if r.GetProcesses() > maxProcesses || r.GetThreads() > maxThreads {
			t.Fatalf("EnsureBackend out of bounds got through: %d processes, %d threads", r.GetProcesses(), r.GetThreads())
		}
	case *privdv1.InstallSiteRequest:
		if len(r.GetAliases()) > maxAliases {
			t.Fatalf("InstallSite out of bounds got through: %d aliases", len(r.GetAliases()))
		}
		for _, a := range r.GetAliases() {
			if a == "" || len(a) > names.MaxHostName || strings.ContainsAny(a, " \t\r\n\"'<>\\/*#${}%") || strings.ToLower(a) != a {
				t.Fatalf("InstallSite alias %q got through", a)
			}
		}
		// No key is a certificate for privd's own key (CertificateRequest).
		if n, k := len(r.GetCertificatePem()), len(r.GetKeyPem()); n == 0 || n > maxPEM || k > maxPEM {
			t.Fatalf("InstallSite PEM sizes %d/%d got through", n, k)
		}
	case *privdv1.CertificateRequestRequest:
		if len(r.GetAliases()) > maxAliases {
			t.Fatalf("CertificateRequest out of bounds got through: %d aliases", len(r.GetAliases()))
		}
		for _, a := range r.GetAliases() {
			if a == "" || len(a) > names.MaxHostName || strings.ContainsAny(a, " \t\r\n\"'<>\\/*#${}%") || strings.ToLower(a) != a {
				t.Fatalf("CertificateRequest alias %q got through", a)
			}
		}
	case *privdv1.RunManageRequest:
		if n := len(r.GetCommands()); n == 0 || n > maxCommands {
			t.Fatalf("RunManage with %d commands got through", n)
		}
		for _, c := range r.GetCommands() {
			if c <= privdv1.ManageCommand_MANAGE_COMMAND_UNSPECIFIED || c > privdv1.ManageCommand_MANAGE_COMMAND_COLLECTSTATIC {
				t.Fatalf("RunManage command %v got through", c)
			}
		}
		if !safeToken(r.GetMigrateApp()) || !safeToken(r.GetMigrateTarget()) {
			t.Fatalf("RunManage migrate args %q %q got through", r.GetMigrateApp(), r.GetMigrateTarget())
		}
		if len(r.GetSuperuserEmail()) > names.MaxSuperuserEmail || len(r.GetSuperuserPassword()) > maxPassword || len(r.GetSuperuserUsername()) > 4*maxUsername {
			t.Fatalf("RunManage superuser fields out of bounds got through")
		}
	case *privdv1.TailLogRequest:
		if n := r.GetLines(); n < 0 || n > maxTailLogLine {
			t.Fatalf("TailLog lines %d got through", n)
		}
	}
}

// FuzzRequestValidation feeds arbitrary field values to every privd request
// type. Calls whose handlers change the host directly (users, trees) are
// checked at their one validation function; the others go through the
// server's real handlers with a recording backend. Whatever passes must
// carry a valid project name and bounded fields, and whatever is refused
// must be refused as InvalidArgument (the caller's mistake), never reach
// the backend, and never panic.
func FuzzRequestValidation(f *testing.F) {
	pem := strings.Repeat("P", 100)
	f.Add("blog", "www.example.com", uint32(2), uint32(15), len(pem), len(pem), []byte{1, 2}, "admin", "a@example.com", "pw", "polls", "0001_initial", int32(100))
	f.Add("../etc", "a\nInclude /etc", uint32(1), uint32(1), 1, 1, []byte{1}, "", "", "", "", "", int32(0))
	f.Add("Blog", "", uint32(33), uint32(101), 0, maxPEM+1, []byte{0, 9}, "x", "", "", "a b", "", int32(-1))
	f.Add("blog\n", "ex ample.com", uint32(0), uint32(0), maxPEM, maxPEM, []byte{3, 3, 3, 3, 3, 3, 3, 3, 3}, strings.Repeat("u", 700), "", "", "", "x", int32(1001))
	f.Add("site", "example.com#x", uint32(1), uint32(1), 1, 1, []byte{2}, "root", "", "", "app;rm", "", int32(5))
	f.Add("a123456789012345678901234", "a..b", uint32(1), uint32(1), 1, 1, []byte{4}, "", "", "", "", "", int32(5))

	base := f.TempDir()
	passwd := filepath.Join(base, "passwd")
	rec := &backendLog{}
	acc := &account.Accounts{BaseDir: base, PasswdPath: passwd, GroupPath: filepath.Join(base, "group")}
	s := New(Config{BaseDir: base, Accounts: acc, Sites: rec, Backends: backendsLog{rec}, Manager: rec, BackendAddr: config.Default().BackendAddr})

	f.Fuzz(func(t *testing.T, project, aliases string, processes, threads uint32, certLen, keyLen int,
		cmds []byte, username, email, password, migrateApp, migrateTarget string, lines int32) {
		ctx := context.Background()
		// Lengths are bounded so that the fuzzer spends its time on content.
		clamp := func(n int) int { return max(0, min(n, 2*maxPEM)) }
		var als []string
		if aliases != "" {
			als = strings.Split(aliases, ",")
		}
		var commands []privdv1.ManageCommand
		for _, c := range cmds {
			commands = append(commands, privdv1.ManageCommand(int32(int8(c))))
		}
		// The project's user exists and is Opus's, so a valid RunManage
		// reaches the backend (a malformed name only makes a line that
		// matches nothing).
		line := acc.User(project) + ":x:50000:50000:" + names.Marker(project) + ":" + base + ":/usr/sbin/nologin\n"
		if err := os.WriteFile(passwd, []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}

		refused := func(call string, err error) {
			t.Helper()
			if err == nil {
				return
			}
			if c := status.Code(err); c != codes.InvalidArgument {
				t.Fatalf("%s refused with %v (%v), want InvalidArgument", call, c, err)
			}
		}
		// Calls that act on the host at once: their validation alone.
		if err := validateProject(project); err == nil {
			if !projectOK(project) {
				t.Fatalf("validateProject accepted %q", project)
			}
		} else {
			refused("validateProject", err)
		}

		calls := []struct {
			name string
			do   func() error
		}{
			{"InstallSite", func() error {
				_, err := s.InstallSite(ctx, &privdv1.InstallSiteRequest{Project: project, Aliases: als,
					CertificatePem: []byte(strings.Repeat("C", clamp(certLen))), KeyPem: []byte(strings.Repeat("K", clamp(keyLen)))})
				return err
			}},
			{"CertificateRequest", func() error {
				_, err := s.CertificateRequest(ctx, &privdv1.CertificateRequestRequest{Project: project, Aliases: als})
				return err
			}},
			{"EnsureBackend", func() error {
				_, err := s.EnsureBackend(ctx, &privdv1.EnsureBackendRequest{Project: project, Processes: processes, Threads: threads})
				return err
			}},
			{"RemoveSite", func() error {
				_, err := s.RemoveSite(ctx, &privdv1.RemoveSiteRequest{Project: project})
				return err
			}},
			{"TailLog", func() error {
				_, err := s.TailLog(ctx, &privdv1.TailLogRequest{Project: project, Lines: lines})
				return err
			}},
			{"RunManage", func() error {
				_, err := s.RunManage(ctx, &privdv1.RunManageRequest{Project: project, Commands: commands,
					SuperuserUsername: username, SuperuserEmail: email, SuperuserPassword: password,
					MigrateApp: migrateApp, MigrateTarget: migrateTarget})
				return err
			}},
		}
		for _, c := range calls {
			err := c.do()
			got := rec.take()
			if err != nil {
				refused(c.name, err)
				if len(got) > 0 {
					t.Fatalf("%s was refused (%v) but reached the backend", c.name, err)
				}
				continue
			}
			if len(got) != 1 {
				t.Fatalf("%s succeeded but the backend saw %d requests", c.name, len(got))
			}
			checkAccepted(t, got[0])
		}
	})
}
