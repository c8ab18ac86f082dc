package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/internal/testrun"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func TestMain(m *testing.M) {
	if os.Getenv("OPUSD_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(testrun.Main(m))
}

// daemonDir is a directory for a test that starts opusd. It skips under
// -short (make unit starts no daemon); as root it is in the test run, so
// an opusd a killed run left is stopped by the next run.
func daemonDir(t *testing.T, why string) string {
	t.Helper()
	testrun.SkipShort(t, why)
	if os.Geteuid() == 0 {
		return testrun.Need(t, why).TempDir(t)
	}
	return t.TempDir()
}

// TestDaemon runs the real opusd (this test binary in main mode) as an
// unprivileged user of the test run against a privd socket that is absent:
// it must come up SERVING, accept a project, report privd unreachable in
// the operation, and exit cleanly on SIGTERM; a second start sees the
// state of the first.
func TestDaemon(t *testing.T) {
	tr := testrun.Need(t, "creates a user and runs opusd as it to prove it works unprivileged")
	_, uid, gid := tr.NewUser(t, "d")
	dir := tr.TempDir(t)
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o755)
	if err := os.Chown(state, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	os.Mkdir(run, 0o755)
	os.Chown(run, int(uid), int(gid))
	self, _ := os.Executable()
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "opusd")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(run, "opusd.sock")

	start := func() (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(bin, "--config", defaultsConf(t, dir), "--state-dir", state, "--socket", sock,
			"--privd-socket", filepath.Join(run, "privd.sock"), "--server-suffix", ".opus.test", "--log-level", "debug")
		cmd.Env = []string{"OPUSD_TEST_MAIN=1"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
		var logs bytes.Buffer
		cmd.Stderr = &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd, &logs
	}
	stopAndWait := func(cmd *exec.Cmd, logs *bytes.Buffer) {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("opusd exit: %v\n%s", err, logs)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("opusd did not exit on SIGTERM\n%s", logs)
		}
	}
	dial := func() (*grpc.ClientConn, opusv1.OpusClient) {
		cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(peercred.Client()))
		if err != nil {
			t.Fatal(err)
		}
		return cc, opusv1.NewOpusClient(cc)
	}
	waitServing := func(cc *grpc.ClientConn, logs *bytes.Buffer) {
		deadline := time.Now().Add(15 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			res, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			if err == nil && res.Status == healthpb.HealthCheckResponse_SERVING {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("opusd not serving: %v\n%s", err, logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	cmd, logs := start()
	cc, cl := dial()
	defer cc.Close()
	waitServing(cc, logs)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	op, err := cl.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "daemon1"})
	if err != nil {
		t.Fatalf("CreateProject: %v\n%s", err, logs)
	}
	w, err := cl.WatchOperation(ctx, &opusv1.WatchOperationRequest{Id: op.Id})
	if err != nil {
		t.Fatal(err)
	}
	var last *opusv1.Operation
	for {
		got, err := w.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("watch: %v\n%s", err, logs)
		}
		last = got
	}
	if last.State != opusv1.OperationState_OPERATION_STATE_FAILED || !strings.Contains(last.Error, "opus-privd is not reachable") {
		t.Fatalf("operation without privd = %v", last)
	}
	fi, err := os.Stat(filepath.Join(state, "opusd.db"))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != uid {
		t.Fatalf("state file: %v %v", fi, err)
	}
	stopAndWait(cmd, logs)
	if !strings.Contains(logs.String(), "opusd stopped") {
		t.Fatalf("no clean stop in log:\n%s", logs)
	}

	// A second opusd sees the first one's project.
	cmd, logs = start()
	cc2, cl2 := dial()
	defer cc2.Close()
	waitServing(cc2, logs)
	// The project is root's (root made the call). Its first deploy failed,
	// and removing what it made (the undo of a failed create) needs privd
	// too: the new opusd retries that removal on start, with a DELETE
	// operation.
	p, err := cl2.GetProject(ctx, &opusv1.GetProjectRequest{Name: "daemon1"})
	if err != nil || p.OwnerUid != 0 || p.ServerName != "daemon1.opus.test" || p.Phase == opusv1.Phase_PHASE_READY {
		t.Fatalf("after restart: %v, %v\n%s", p, err, logs)
	}
	for {
		ops, err := cl2.ListOperations(ctx, &opusv1.ListOperationsRequest{Project: "daemon1"})
		if err != nil {
			t.Fatal(err)
		}
		if o := ops.Operations[0]; o.Kind == opusv1.OperationKind_OPERATION_KIND_DELETE && o.State == opusv1.OperationState_OPERATION_STATE_FAILED {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no retry on restart: %v\n%s", ops, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopAndWait(cmd, logs)
}

func TestHelpListsFlags(t *testing.T) {
	self, _ := os.Executable()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "--help")
	cmd.Env = []string{"OPUSD_TEST_MAIN=1"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, f := range []string{"-config", "-socket", "-state-dir", "-privd-socket", "-admin-group", "-server-suffix", "-log-level", "/etc/opus/opus.conf"} {
		if !bytes.Contains(out, []byte(f)) {
			t.Errorf("--help lacks %s:\n%s", f, out)
		}
	}
}

// defaultsConf writes an empty configuration file into dir for a test's
// opusd (the built-in defaults, with the test's flags over them; never the
// host's /etc/opus/opus.conf) and returns its path.
func defaultsConf(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "defaults.conf")
	if err := os.WriteFile(p, []byte("# the built-in defaults\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigNamedMustExist: a configuration file named on the command line
// that is not there is an error (a typo must not run opusd on the built-in
// defaults while opus-privd refuses it); nothing is opened before.
func TestConfigNamedMustExist(t *testing.T) {
	self, _ := os.Executable()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "typo.conf")
	cmd := exec.CommandContext(ctx, self, "--config", missing, "--state-dir", filepath.Join(dir, "state"), "--socket", filepath.Join(dir, "s.sock"))
	cmd.Env = []string{"OPUSD_TEST_MAIN=1"}
	out, err := cmd.CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte(missing)) || !bytes.Contains(out, []byte("no such file")) {
		t.Fatalf("opusd --config %s: %v\n%s; want an error naming the file", missing, err, out)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("opusd made %v before refusing its configuration", ents)
	}
}
