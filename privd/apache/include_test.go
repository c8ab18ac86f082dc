package apache

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/config"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// TestIncludeGuard: without the include line the system-mode InstallSite
// is refused with FailedPrecondition naming the line, nothing is written
// and Apache is not touched; once the line is in an enabled file, the
// same call installs the site; removal works either way.
func TestIncludeGuard(t *testing.T) {
	s, fake, cfg := tempSites(t)
	cfg.ApacheMode = config.ApacheSystem
	sys := NewSystem(cfg)
	sys.EtcDir = t.TempDir()
	enableFrontModules(t, sys.EtcDir)
	g := IncludeGuard{Sites: s, Check: sys.CheckInclude}
	ctx := context.Background()
	req := installReq(t, "blog")

	steps := []struct {
		name    string
		include string // written to conf-enabled/opus.conf before the call; "" = none
		code    codes.Code
	}{
		{"no include", "", codes.FailedPrecondition},
		{"only in conf-available", "conf-available", codes.FailedPrecondition},
		{"enabled", "conf-enabled", codes.OK},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.include != "" {
				p := filepath.Join(sys.EtcDir, st.include, "opus.conf")
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(sys.IncludeLine()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := snapshot(t, cfg.ApacheDir)
			tests, _ := fake.counts()
			_, err := g.Install(ctx, req, testBackend)
			if got := status.Code(err); got != st.code {
				t.Fatalf("Install = %v, want %s", err, st.code)
			}
			if st.code == codes.OK {
				if _, err := os.Stat(s.Paths().Vhost("blog")); err != nil {
					t.Errorf("installed site has no vhost: %v", err)
				}
				return
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, sys.IncludeLine()) || !strings.Contains(msg, "a2enconf") {
				t.Errorf("refusal %q does not say which line to add and how", msg)
			}
			sameSnapshot(t, before, snapshot(t, cfg.ApacheDir))
			if after, _ := fake.counts(); after != tests {
				t.Errorf("a refused install ran configtest (%d → %d)", tests, after)
			}
		})
	}
	// Removal passes through the guard whatever the include says.
	os.RemoveAll(filepath.Join(sys.EtcDir, "conf-enabled"))
	if r, err := g.Remove(ctx, &privdv1.RemoveSiteRequest{Project: "blog"}); err != nil || !r.GetRemoved() {
		t.Errorf("Remove without the include = %v, %v; want removed", r, err)
	}
}
