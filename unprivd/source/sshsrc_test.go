package source

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSSHSourceWithoutKey: opusd has no ssh key or agent; an ssh:// or
// USER@HOST:PATH source fails saying so and what to use instead, not with
// the ssh library's "SSH_AUTH_SOCK not-specified".
func TestSSHSourceWithoutKey(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "")
	g := &Git{CacheDir: t.TempDir(), Timeout: 10 * time.Second}
	for _, url := range []string{"ssh://git@127.0.0.1:1/me/blog.git", "git@127.0.0.1:me/blog.git"} {
		_, err := g.Fetch(context.Background(), url, "", false, filepath.Join(t.TempDir(), "out"))
		if err == nil {
			t.Fatalf("%s: fetched", url)
		}
		msg := err.Error()
		if strings.Contains(msg, "SSH_AUTH_SOCK") || !strings.Contains(msg, "ssh sources need") || !strings.Contains(msg, "https://") {
			t.Errorf("%s: %s", url, msg)
		}
	}
}
