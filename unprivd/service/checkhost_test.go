package service

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/drift"
	"github.com/opus-hosting/opus/unprivd/store"
)

// TestCheckHost: admins get the drift between the store and a host laid
// out in a temporary directory; anyone else is refused before the check
// runs; without a configured checker the call is Unimplemented.
func TestCheckHost(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(context.Background(), filepath.Join(dir, "opusd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	host := drift.Host{BaseDir: filepath.Join(dir, "base"), SitesDir: filepath.Join(dir, "sites"), PasswdPath: filepath.Join(dir, "passwd")}
	passwd := "opus-gone:x:990:990:Opus project gone:/x:/usr/sbin/nologin\nopus-blog:x:991:991:Opus project blog:/x:/usr/sbin/nologin\n"
	if err := os.WriteFile(host.PasswdPath, []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(host.BaseDir, "projects", "stray"), 0o755); err != nil {
		t.Fatal(err)
	}
	newSvc := func(hc HostChecker) *Service {
		s, err := New(Config{Store: st, Privd: &fakePrivd{}, Reconciler: &fakeKicker{}, Admins: fakeAdmins{0: true, 7: true}, HostCheck: hc})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	call := func(s *Service, uid uint32) (*opusv1.CheckHostResponse, error) {
		resp, err := s.UnaryInterceptor()(peerCtx(uid), &opusv1.CheckHostRequest{},
			&grpc.UnaryServerInfo{FullMethod: opusv1.Opus_CheckHost_FullMethodName},
			func(ctx context.Context, req any) (any, error) {
				return s.CheckHost(ctx, req.(*opusv1.CheckHostRequest))
			})
		r, _ := resp.(*opusv1.CheckHostResponse)
		return r, err
	}
	svc := newSvc(host)
	// blog exists in the store (not yet deployed): its user is no drift.
	if _, err := svc.UnaryInterceptor()(peerCtx(1000), &opusv1.CreateProjectRequest{Name: "blog"},
		&grpc.UnaryServerInfo{FullMethod: opusv1.Opus_CreateProject_FullMethodName},
		func(ctx context.Context, req any) (any, error) {
			return svc.CreateProject(ctx, req.(*opusv1.CreateProjectRequest))
		}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		svc  *Service
		uid  uint32
		code codes.Code
		want []string // "kind project" of each finding
	}{
		{"root", svc, 0, codes.OK, []string{"directory stray", "user gone"}},
		{"admin group member", svc, 7, codes.OK, []string{"directory stray", "user gone"}},
		{"project owner who is no admin", svc, 1000, codes.PermissionDenied, nil},
		{"not configured", newSvc(nil), 0, codes.Unimplemented, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := call(tt.svc, tt.uid)
			if code(err) != tt.code {
				t.Fatalf("CheckHost as uid %d: %v, want %v", tt.uid, err, tt.code)
			}
			if err != nil {
				if resp != nil {
					t.Errorf("refused call answered %v", resp)
				}
				return
			}
			var got []string
			for _, d := range resp.GetDrift() {
				got = append(got, d.GetKind()+" "+d.GetProject())
				if !strings.Contains(d.GetDetail(), d.GetProject()) {
					t.Errorf("detail %q does not name %q", d.GetDetail(), d.GetProject())
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("drift %v, want %v", got, tt.want)
			}
			if resp.GetChecked() != 1 {
				t.Errorf("checked %d projects, want 1", resp.GetChecked())
			}
		})
	}
}
