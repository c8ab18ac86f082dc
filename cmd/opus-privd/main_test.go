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

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/internal/testrun"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

func TestMain(m *testing.M) { os.Exit(testrun.Main(m)) }

// TestImportFence: the root daemon links no opusd code, no database and no
// test support, and none of Opus's own packages in it speaks HTTP. (gRPC itself imports
// net/http for its HTTP/2 transport, so net/http as such cannot be fenced
// out of the binary; what is fenced is any direct use by privd's code.)
func TestImportFence(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go tool: ", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", ".")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, stderr.String())
	}
	const mod = "github.com/opus-hosting/opus"
	forbiddenDeps := []string{"go.etcd.io/bbolt", mod + "/unprivd", "github.com/go-git/", mod + "/client",
		mod + "/internal/testrun", mod + "/internal/pgtest"}
	forbiddenDirect := []string{"net/http", "net/rpc", "plugin"}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := fields[0]
		for _, f := range forbiddenDeps {
			if pkg == f || strings.HasPrefix(pkg, strings.TrimSuffix(f, "/")+"/") {
				t.Errorf("opus-privd depends on %s", pkg)
			}
		}
		if !strings.HasPrefix(pkg, mod+"/") || strings.HasPrefix(pkg, mod+"/proto/") {
			continue
		}
		seen++
		for _, imp := range fields[1:] {
			for _, f := range forbiddenDirect {
				if imp == f {
					t.Errorf("%s imports %s directly", pkg, imp)
				}
			}
		}
	}
	if seen < 5 {
		t.Errorf("only %d Opus packages in the dependency list; the fence checks nothing", seen)
	}
}

func TestFlagsAndConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "opus.conf")
	if err := os.WriteFile(conf, []byte("base_dir /srv/opus\nhttp_port 81\nopus_user svc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		check   func(config.Config, string) bool
	}{
		{"a named file must exist", []string{"--config", filepath.Join(dir, "absent")}, true, nil},
		{"file", []string{"--config", conf}, false, func(c config.Config, socket string) bool {
			return c.BaseDir == "/srv/opus" && c.HTTPPort == 81 && c.OpusUser == "svc" && c.HTTPSPort == 8443 &&
				socket == c.PrivdSocket()
		}},
		{"flags override the file", []string{"--config", conf, "--base-dir", "/b", "--http-port", "82", "--opus-user", "o",
			"--apache-mode", "system", "--apache-dir", "/etc/apache2/opus", "--https-port", "444", "--socket", "/run/x.sock"}, false,
			func(c config.Config, socket string) bool {
				return c.BaseDir == "/b" && c.HTTPPort == 82 && c.OpusUser == "o" && c.ApacheMode == "system" &&
					c.ApacheDir == "/etc/apache2/opus" && c.HTTPSPort == 444 && socket == "/run/x.sock"
			}},
		{"bad port", []string{"--config", conf, "--http-port", "x"}, true, nil},
		{"bad mode", []string{"--config", conf, "--apache-mode", "docker"}, true, nil},
		{"relative base", []string{"--config", conf, "--base-dir", "rel"}, true, nil},
		{"root opus user", []string{"--config", conf, "--opus-user", "root"}, true, nil},
		{"bad level", []string{"--log-level", "loud"}, true, nil},
		{"stray argument", []string{"serve"}, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			socket := new(string)
			cmd := command(socket)
			err := cmd.Parse(tc.args, &stderr)
			var c config.Config
			if err == nil {
				c, err = cmd.Config()
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if tc.check != nil && !tc.check(c, *socket) {
				t.Errorf("config %+v, socket %q", c, *socket)
			}
		})
	}
	// That the default path may be missing (built-in defaults apply) is the
	// lifecycle's rule, tested with it (internal/daemon TestFlagsOverConfig).
}

func TestHelpListsEveryFlag(t *testing.T) {
	var stderr bytes.Buffer
	if code := command(new(string)).Main([]string{"--help"}, &stderr); code != 0 {
		t.Errorf("--help exit %d", code)
	}
	if code := command(new(string)).Main([]string{"--no-such-flag"}, &bytes.Buffer{}); code != 2 {
		t.Errorf("a bad flag: exit %d, want 2", code)
	}
	for _, f := range []string{"config", "socket", "base-dir", "opus-user", "apache-mode", "apache-dir", "http-port", "https-port", "log-level"} {
		if !strings.Contains(stderr.String(), "-"+f+" ") {
			t.Errorf("--help does not list --%s", f)
		}
	}
}

// TestDaemon runs the real binary as root with a real (temporary) opus
// user: its socket is 0660 and group-owned by that user's group, root is
// refused (only opus is served), and SIGTERM stops it cleanly.
func TestDaemon(t *testing.T) {
	run := testrun.Need(t, "runs opus-privd and creates a stand-in opus user")
	dir, bin := buildPrivd(t, run)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opus, _, gid := run.NewUser(t, "o")

	sock := filepath.Join(dir, "run", "privd.sock")
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--config", filepath.Join(dir, "absent.conf"), "--socket", sock,
		"--base-dir", filepath.Join(dir, "base"), "--apache-dir", filepath.Join(dir, "apache"), "--opus-user", opus)
	cmd.Stderr = &stderr
	// No systemd here: make sure activation is not inherited.
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if err := os.WriteFile(filepath.Join(dir, "absent.conf"), []byte("# defaults\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	var st syscall.Stat_t
	deadline := time.Now().Add(20 * time.Second)
	for syscall.Stat(sock, &st) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("no socket after 20s; stderr: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.Mode&0o777 != 0o660 || st.Gid != gid {
		t.Errorf("socket mode %#o gid %d, want 0660 gid %d", st.Mode&0o777, st.Gid, gid)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(peercred.ClientExpecting(0)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = privdv1.NewPrivdClient(conn).EnsureUser(ctx, &privdv1.EnsureUserRequest{Project: "blog"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("root calling: %v, want PermissionDenied", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v; stderr: %s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("still running 20s after SIGTERM")
	}
	for _, want := range []string{"opus-privd ready", "refused call from unauthorized peer", "uid=0", "stopped"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, stderr.String())
		}
	}
}

// buildPrivd builds this opus-privd into a fresh directory of the run and
// returns both (privd started from there names the run on its command
// line, so a killed run's privd is stopped by the next run); it skips the
// test where there is no go tool.
func buildPrivd(t *testing.T, run *testrun.Run) (dir, bin string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("needs the go tool: ", err)
	}
	dir = run.TempDir(t)
	bin = filepath.Join(dir, "opus-privd")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	return dir, bin
}
