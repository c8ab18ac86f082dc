package docs

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestPackageBoundaries fences the packages as DESIGN.md draws them: the
// root half (privd/...) links nothing of opusd's (unprivd/...) or of the
// client's; the client (client/..., opusctl) nothing of either daemon;
// opusd nothing of privd but privd's generated API; opusd's web console
// nothing of its state: it is HTTP over the gRPC service, so it links
// neither the store nor the service (only their API and unprivd/credential).
// What both sides share lives in internal/ (names, layout, config, the git
// rules, pack, the daemons' lifecycle, ...), which depends on neither side.
func TestPackageBoundaries(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go tool: ", err)
	}
	const mod = "github.com/opus-hosting/opus/"
	fences := []struct {
		pkgs      string // a go list pattern
		forbidden []string
	}{
		{"./privd/...", []string{mod + "unprivd/", mod + "client"}},
		{"./cmd/opus-privd", []string{mod + "unprivd/", mod + "client"}},
		{"./client/...", []string{mod + "unprivd/", mod + "privd/"}},
		{"./cmd/opusctl", []string{mod + "unprivd/", mod + "privd/"}},
		{"./unprivd/...", []string{mod + "privd/", mod + "client"}},
		{"./cmd/opusd", []string{mod + "privd/", mod + "client"}},
		{"./unprivd/web", []string{mod + "unprivd/store", mod + "unprivd/service", mod + "privd/", mod + "client"}},
		// What both daemons share (internal/daemon's lifecycle among it)
		// depends on neither.
		{"./internal/...", []string{mod + "unprivd/", mod + "privd/", mod + "client"}},
	}
	for _, f := range fences {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, goBin, "list", "-deps", "-f", "{{.ImportPath}}", f.pkgs)
		cmd.Dir = ".."
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		cancel()
		if err != nil {
			t.Fatalf("go list %s: %v: %s", f.pkgs, err, stderr.String())
		}
		deps := strings.Fields(string(out))
		own := 0
		for _, d := range deps {
			if strings.HasPrefix(d, mod) {
				own++
			}
			for _, bad := range f.forbidden {
				if strings.HasPrefix(d, bad) {
					t.Errorf("%s depends on %s", f.pkgs, d)
				}
			}
		}
		if own < 2 {
			t.Errorf("%s: only %d of Opus's packages in its dependencies; the fence checks nothing", f.pkgs, own)
		}
	}
}
