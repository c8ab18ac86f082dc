package opusd

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/daemon"
	"github.com/opus-hosting/opus/internal/logtest"
)

// TestBadWebAddrRefusedFirst: a --web-addr the console cannot listen on
// is refused naming the flag, what is wrong and what is allowed, before
// opusd makes or opens anything (its state directory, state file,
// certificate).
func TestBadWebAddrRefusedFirst(t *testing.T) {
	for _, addr := range []string{"nonsense", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:-1", ":port"} {
		t.Run(addr, func(t *testing.T) {
			dir := t.TempDir()
			cfg := config.Default()
			cfg.BaseDir = filepath.Join(dir, "state")
			var logs logtest.Buffer
			d := &daemon.Daemon{Name: "opusd", Config: cfg, Log: slog.New(slog.NewTextHandler(&logs, nil))}
			err := Run(context.Background(), d, Options{Socket: filepath.Join(dir, "o.sock"), PrivdSocket: filepath.Join(dir, "p.sock"), WebAddr: addr})
			if err == nil || !strings.Contains(err.Error(), "--web-addr") || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "0-65535") {
				t.Errorf("Run with --web-addr %q: %v; want it refused naming the flag, the value and the ports allowed", addr, err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("opusd made %v before refusing --web-addr %q", ents, addr)
			}
		})
	}
}
