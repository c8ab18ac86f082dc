package opusprivd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpusIDs(t *testing.T) {
	if _, _, err := opusIDs("root"); err == nil {
		t.Error("root accepted as opus user")
	}
	if _, _, err := opusIDs("no-such-user-xyz"); err == nil {
		t.Error("absent user accepted")
	}
	if uid, _, err := opusIDs("nobody"); err != nil || uid != 65534 {
		t.Errorf("nobody = %d, %v", uid, err)
	}
}

// TestCheckBackendPort: privd refuses to start when unprivileged users may
// bind the backend port (a tenant could stand in for another's backend).
func TestCheckBackendPort(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		sysctl string // "" = no such file
		port   int
		ok     bool
	}{
		{"1024\n", 1023, true},
		{"1024\n", 1024, false},
		{"80\n", 1023, false},
		{"0\n", 1, false},
		{"", 1023, true},
	} {
		path := filepath.Join(dir, "missing")
		if tt.sysctl != "" {
			path = filepath.Join(dir, "sysctl")
			if err := os.WriteFile(path, []byte(tt.sysctl), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		err := checkBackendPort(tt.port, path)
		if (err == nil) != tt.ok || err != nil && !strings.Contains(err.Error(), "ip_unprivileged_port_start") {
			t.Errorf("port %d with sysctl %q: %v, want ok=%v", tt.port, tt.sysctl, err, tt.ok)
		}
	}
}
