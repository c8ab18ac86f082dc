package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/testrun"
	"github.com/opus-hosting/opus/privd/apache"
)

// TestSystemModeWithoutInclude: in system mode, a privd whose vhost
// directory Debian's Apache does not include still starts (removals and
// logs must keep working) but says at once, with the line to add, that it
// refuses to install sites; it exits cleanly on SIGTERM. The guard itself
// is tested in privd/apache (TestIncludeGuard).
func TestSystemModeWithoutInclude(t *testing.T) {
	run := testrun.Need(t, "runs opus-privd")
	dir, bin := buildPrivd(t, run)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A fresh directory no Apache configuration on this host includes.
	apacheDir := filepath.Join(dir, "vhosts")
	cfg := config.Default()
	cfg.ApacheMode, cfg.ApacheDir = config.ApacheSystem, apacheDir
	line := apache.NewSystem(cfg).IncludeLine()
	sock := filepath.Join(dir, "run", "privd.sock")
	conf := filepath.Join(dir, "opus.conf")
	if err := os.WriteFile(conf, []byte("apache_mode system\napache_dir "+apacheDir+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--config", conf, "--socket", sock,
		"--base-dir", filepath.Join(dir, "base"), "--opus-user", "nobody")
	cmd.Stderr = &stderr
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("privd exited at start-up: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket after 20s\n%s", stderr.String())
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("still running 20s after SIGTERM")
	}
	log := stderr.String()
	for _, want := range []string{"level=ERROR", "InstallSite is refused until the system Apache includes", line, "opus-privd ready"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	// Start-up created nothing in the system vhost directory.
	if _, err := os.Stat(apacheDir); err == nil {
		t.Errorf("privd created %s at start-up", apacheDir)
	}
}
