package apache

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/config"
)

// fakeSystemctl is a systemctl that writes down its arguments, one call a
// line, in the file it returns.
func fakeSystemctl(t *testing.T) (path, calls string) {
	t.Helper()
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls")
	path = filepath.Join(dir, "systemctl")
	script := "#!/bin/sh\necho \"$*\" >> " + calls + "\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, calls
}

func readCalls(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestRenderDropInGolden(t *testing.T) {
	for _, tt := range []struct {
		golden string
		limits config.BackendLimits
	}{
		{"dropin_defaults.golden", testConfig().BackendLimits()},
		{"dropin_unbounded.golden", config.BackendLimits{}},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			got, err := RenderDropIn(testConfig(), "blog", tt.limits)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.golden, got)
		})
	}
}

func TestRenderDropInRefuses(t *testing.T) {
	cfg := testConfig()
	cfg.BaseDir = "/var/lib/my opus"
	if out, err := RenderDropIn(cfg, "blog", config.BackendLimits{}); err == nil || out != nil {
		t.Errorf("a base dir with a space: %q, %v; want a refusal", out, err)
	}
	if out, err := RenderDropIn(testConfig(), "blog", config.BackendLimits{MemoryBytes: 1}); err == nil || out != nil {
		t.Errorf("a memory bound of 1 byte: %q, %v; want a refusal", out, err)
	}
}

// TestUnitsDriveSystemctl: under systemd a backend is an instance of
// opus-backend@.service: start writes its drop-in and has systemd read it
// (only when it changed) before starting the instance; stop stops it and
// removes the drop-in.
func TestUnitsDriveSystemctl(t *testing.T) {
	ctl, calls := fakeSystemctl(t)
	u := &Units{Systemctl: ctl, DropIns: t.TempDir()}
	ctx := context.Background()
	cfg := testConfig()
	if err := u.start(ctx, cfg, "blog", cfg.BackendLimits()); err != nil {
		t.Fatal(err)
	}
	dropIn := filepath.Join(u.DropIns, "opus-backend@blog.service.d", "50-opus.conf")
	want, _ := RenderDropIn(cfg, "blog", cfg.BackendLimits())
	if got, err := os.ReadFile(dropIn); err != nil || !bytes.Equal(got, want) {
		t.Errorf("drop-in %s: %v\n%s", dropIn, err, got)
	}
	if got := readCalls(t, calls); got != "daemon-reload\nstart opus-backend@blog.service" {
		t.Errorf("systemctl calls:\n%s", got)
	}
	os.Remove(calls)
	if err := u.start(ctx, cfg, "blog", cfg.BackendLimits()); err != nil {
		t.Fatal(err)
	}
	if got := readCalls(t, calls); got != "start opus-backend@blog.service" {
		t.Errorf("start with an unchanged drop-in: systemctl calls:\n%s", got)
	}
	os.Remove(calls)
	if err := u.stop(ctx, "blog"); err != nil {
		t.Fatal(err)
	}
	if got := readCalls(t, calls); got != "stop opus-backend@blog.service\ndaemon-reload" {
		t.Errorf("stop: systemctl calls:\n%s", got)
	}
	if _, err := os.Lstat(filepath.Dir(dropIn)); !os.IsNotExist(err) {
		t.Errorf("the drop-in directory is left: %v", err)
	}
}
