package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/internal/testrun"
	"github.com/opus-hosting/opus/privd/account"
	"github.com/opus-hosting/opus/privd/apache"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// The test binary doubles as an unprivileged client: run with helperEnv
// set, it calls every method on the socket and prints the codes as JSON.
const (
	helperEnv    = "OPUS_PRIVD_TEST_CLIENT_SOCKET"
	helperProj   = "OPUS_PRIVD_TEST_CLIENT_PROJECTS"
	decoyGECOS   = "Opus test decoy"
	clientTimout = 20 * time.Second
)

func TestMain(m *testing.M) {
	if sock := os.Getenv(helperEnv); sock != "" {
		os.Exit(clientMain(sock, strings.Split(os.Getenv(helperProj), ",")))
	}
	os.Exit(testrun.Main(m))
}

// clientResult is what the helper client reports.
type clientResult struct {
	UID   int
	Codes map[string]string
}

func clientMain(sock string, projects []string) int {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(peercred.Client()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer conn.Close()
	c := privdv1.NewPrivdClient(conn)
	existing, fresh := projects[0], projects[1]
	res := clientResult{UID: os.Getuid(), Codes: map[string]string{}}
	rec := func(name string, err error) { res.Codes[name] = status.Code(err).String() }
	_, err = c.EnsureUser(ctx, &privdv1.EnsureUserRequest{Project: fresh, Uid: 99999})
	rec("EnsureUser", err)
	_, err = c.DeleteUser(ctx, &privdv1.DeleteUserRequest{Project: existing})
	rec("DeleteUser", err)
	_, err = c.SecureTree(ctx, &privdv1.SecureTreeRequest{Project: existing})
	rec("SecureTree", err)
	_, err = c.RemoveTree(ctx, &privdv1.RemoveTreeRequest{Project: existing})
	rec("RemoveTree", err)
	_, err = c.RunManage(ctx, &privdv1.RunManageRequest{Project: existing, Commands: []privdv1.ManageCommand{privdv1.ManageCommand_MANAGE_COMMAND_CHECK}})
	rec("RunManage", err)
	_, err = c.EnsureBackend(ctx, &privdv1.EnsureBackendRequest{Project: existing})
	rec("EnsureBackend", err)
	_, err = c.RemoveBackend(ctx, &privdv1.RemoveBackendRequest{Project: existing})
	rec("RemoveBackend", err)
	_, err = c.InstallSite(ctx, &privdv1.InstallSiteRequest{Project: existing, CertificatePem: validCert, KeyPem: validCert})
	rec("InstallSite", err)
	_, err = c.RemoveSite(ctx, &privdv1.RemoveSiteRequest{Project: existing})
	rec("RemoveSite", err)
	_, err = c.CertificateRequest(ctx, &privdv1.CertificateRequestRequest{Project: existing})
	rec("CertificateRequest", err)
	_, err = c.ReloadApache(ctx, &privdv1.ReloadApacheRequest{})
	rec("ReloadApache", err)
	_, err = c.TailLog(ctx, &privdv1.TailLogRequest{Project: existing})
	rec("TailLog", err)
	_, err = c.Stats(ctx, &privdv1.StatsRequest{})
	rec("Stats", err)
	// The streaming calls are refused at the stream's first message.
	if dump, err := c.DumpData(ctx, &privdv1.DumpDataRequest{Project: existing}); err != nil {
		rec("DumpData", err)
	} else {
		_, err = dump.Recv()
		rec("DumpData", err)
	}
	if load, err := c.LoadData(ctx); err != nil {
		rec("LoadData", err)
	} else {
		// A refused stream may end before the send does (io.EOF): the
		// call's status comes from CloseAndRecv either way.
		_ = load.Send(&privdv1.LoadDataRequest{Project: existing, Chunk: []byte("SQLite format 3\x00")})
		_, err = load.CloseAndRecv()
		rec("LoadData", err)
	}
	err = conn.Invoke(ctx, "/opus.privd.v1.Privd/Exec", &privdv1.ReloadApacheRequest{}, &privdv1.ReloadApacheResponse{})
	rec("Exec", err)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 2
	}
	return 0
}

func randomProject(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'a' + b[i]%26
	}
	return prefix + string(b)
}

// startServer serves a real privd service on a real Unix socket in a
// directory of the run that every user can reach, and returns the socket
// path.
func startServer(t *testing.T, run *testrun.Run, cfg Config) string {
	t.Helper()
	// Reachable by any user on purpose: the refusal under test must be the
	// interceptor's, not the file mode's.
	dir := run.TempDir(t)
	sock := filepath.Join(dir, "privd.sock")
	l, err := peercred.Listen(sock, 0o666, -1)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	g := New(cfg).GRPC()
	go g.Serve(l)
	t.Cleanup(g.Stop)
	return sock
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func dial(t *testing.T, sock string) privdv1.PrivdClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(peercred.Client()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return privdv1.NewPrivdClient(conn)
}

// needRun returns the test run and Accounts for its project users under
// base in the run; it skips under -short and when not root.
func needRun(t *testing.T) (*testrun.Run, *account.Accounts) {
	t.Helper()
	run := testrun.Need(t, "serves privd on a real socket, creates users, runs a client as another user")
	return run, &account.Accounts{Prefix: run.UserPrefix(), BaseDir: run.TempDir(t), UIDs: run.UIDs()}
}

// hostState is what must not change when a call is refused: the
// passwd/group lines of the users the projects would have, and the tree
// under the accounts' base. (Whole files are not compared: other tests and
// a real Opus on this host may add their own users meanwhile.)
func hostState(t *testing.T, acc *account.Accounts, projects ...string) string {
	t.Helper()
	var b strings.Builder
	for _, f := range []string{"/etc/passwd", "/etc/group"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			for _, p := range projects {
				if strings.HasPrefix(line, acc.User(p)+":") {
					fmt.Fprintln(&b, line)
				}
			}
		}
	}
	filepath.Walk(acc.BaseDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			st := fi.Sys().(*syscall.Stat_t)
			fmt.Fprintf(&b, "%s %v %d %d\n", p, fi.Mode(), st.Uid, st.Gid)
		}
		return nil
	})
	return b.String()
}

// TestOtherUserIsRefused runs a client as a user other than opus against a
// real socket: every method (and an unknown one) is PermissionDenied, and
// the host is as it was: the existing user and tree survive, no user or
// tree was created.
func TestOtherUserIsRefused(t *testing.T) {
	run, acc := needRun(t)
	base := acc.BaseDir
	client, clientUID, clientGID := run.NewUser(t, "c")
	existing, fresh := randomProject(t, "p"), randomProject(t, "p")
	ctx := context.Background()
	if _, _, err := acc.EnsureUser(ctx, existing, testrun.MustFreeID(t, acc.UIDs)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { acc.DeleteUser(context.Background(), existing) })
	t.Cleanup(func() { acc.DeleteUser(context.Background(), fresh) })
	if err := os.MkdirAll(filepath.Join(layout.For(base, existing).Code, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	sock := startServer(t, run, withRecorder(Config{OpusUID: uint32(os.Geteuid()), BaseDir: base, Accounts: acc}, rec))

	// Copy the test binary where the client user may execute it.
	bin := filepath.Join(filepath.Dir(sock), "client")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, self, bin)

	before := hostState(t, acc, existing, fresh)
	cctx, cancel := context.WithTimeout(ctx, 2*clientTimout)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin)
	cmd.Env = []string{helperEnv + "=" + sock, helperProj + "=" + existing + "," + fresh}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: clientUID, Gid: clientGID, Groups: []uint32{}}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("client as %s: %v: %s", client, err, stderr.String())
	}
	var res clientResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("client output %q: %v", stdout.String(), err)
	}
	if res.UID != int(clientUID) {
		t.Fatalf("client ran as uid %d, want %d", res.UID, clientUID)
	}
	if len(res.Codes) != len(allowed)+1 {
		t.Errorf("client reported %d calls, want %d", len(res.Codes), len(allowed)+1)
	}
	for m, code := range res.Codes {
		if code != codes.PermissionDenied.String() {
			t.Errorf("%s as %s: %s, want PermissionDenied", m, client, code)
		}
	}
	if after := hostState(t, acc, existing, fresh); after != before {
		t.Errorf("host changed by refused calls:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if len(rec.calls) != 0 {
		t.Errorf("dependencies reached: %v", rec.calls)
	}
	if _, err := acc.LookupUser(existing); err != nil {
		t.Errorf("existing user: %v", err)
	}
	if _, err := acc.LookupUser(fresh); err == nil {
		t.Errorf("user %s was created for %s", fresh, client)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOverSocket drives the real service as the allowed uid: invalid
// requests change nothing; the user and tree life cycle works; a user Opus
// did not make is refused and survives.
func TestOverSocket(t *testing.T) {
	run, acc := needRun(t)
	base := acc.BaseDir
	sock := startServer(t, run, Config{OpusUID: uint32(os.Geteuid()), OpusGID: 0, BaseDir: base, Accounts: acc})
	c := dial(t, sock)
	ctx := context.Background()

	t.Run("invalid requests change nothing", func(t *testing.T) {
		before := hostState(t, acc, badNames...)
		for i, tc := range invalidRequests(c) {
			err := tc.call(ctx)
			if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tc.field+":") {
				t.Errorf("case %d (%s): %v; want InvalidArgument naming %s", i, tc.field, err, tc.field)
			}
		}
		if after := hostState(t, acc, badNames...); after != before {
			t.Errorf("host changed by invalid calls")
		}
	})

	t.Run("life cycle", func(t *testing.T) {
		project := randomProject(t, "p")
		t.Cleanup(func() { acc.DeleteUser(context.Background(), project) })
		eu, err := c.EnsureUser(ctx, &privdv1.EnsureUserRequest{Project: project, Uid: testrun.MustFreeID(t, acc.UIDs)})
		if err != nil || !eu.Created || eu.User != acc.User(project) || eu.Uid == 0 {
			t.Fatalf("EnsureUser = %v, %v", eu, err)
		}
		st, err := c.SecureTree(ctx, &privdv1.SecureTreeRequest{Project: project})
		if err != nil || st.Secured != 5 || len(st.Refusals) != 0 {
			t.Fatalf("SecureTree = %v, %v; want 5 secured", st, err)
		}
		var sys syscall.Stat_t
		if err := syscall.Stat(layout.For(base, project).Data, &sys); err != nil || sys.Uid != eu.Uid || sys.Mode&0o7777 != 0o770 {
			t.Errorf("data dir: uid %d mode %#o (%v); want uid %d mode 0770", sys.Uid, sys.Mode&0o7777, err, eu.Uid)
		}
		rt, err := c.RemoveTree(ctx, &privdv1.RemoveTreeRequest{Project: project})
		if err != nil || rt.Removed != 5 {
			t.Errorf("RemoveTree = %v, %v; want 5 removed", rt, err)
		}
		du, err := c.DeleteUser(ctx, &privdv1.DeleteUserRequest{Project: project})
		if err != nil || !du.Deleted {
			t.Errorf("DeleteUser = %v, %v", du, err)
		}
		if _, err := c.ReloadApache(ctx, &privdv1.ReloadApacheRequest{}); status.Code(err) != codes.Unavailable {
			t.Errorf("ReloadApache without Sites: %v, want Unavailable", err)
		}
	})

	t.Run("user not made by Opus", func(t *testing.T) {
		project := randomProject(t, "x")
		addDecoy(t, run, acc, project)
		before := hostState(t, acc, project)
		if before == "" {
			t.Fatal("decoy user not found")
		}
		if _, err := c.DeleteUser(ctx, &privdv1.DeleteUserRequest{Project: project}); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("DeleteUser(decoy) = %v, want FailedPrecondition", err)
		}
		if _, err := c.EnsureUser(ctx, &privdv1.EnsureUserRequest{Project: project, Uid: testrun.MustFreeID(t, acc.UIDs)}); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("EnsureUser(decoy) = %v, want FailedPrecondition", err)
		}
		if _, err := c.SecureTree(ctx, &privdv1.SecureTreeRequest{Project: project}); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("SecureTree(decoy) = %v, want FailedPrecondition", err)
		}
		if after := hostState(t, acc, project); after != before {
			t.Errorf("host changed by refused calls")
		}
	})
}

// addDecoy makes project's user by hand, without Opus's marker (as an
// account that merely has the name would be), written down with the run
// first and removed when the test ends, and returns its name.
func addDecoy(t *testing.T, run *testrun.Run, acc *account.Accounts, project string) string {
	t.Helper()
	name := acc.User(project)
	if err := run.NoteAccount(name); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/usr/sbin/useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
		"--comment", decoyGECOS, "--user-group", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd decoy: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("/usr/sbin/userdel", name).Run() })
	return name
}

// TestInstallSiteNeedsOpusUser drives InstallSite over the real socket into
// the real vhost installer and a real Apache configtest: for a user that
// merely has the project user's name (made by hand, without Opus's marker)
// it is FailedPrecondition and nothing is written — no vhost whose mod_wsgi
// daemon would run as that account — while the same call for a user Opus
// made installs the site.
func TestInstallSiteNeedsOpusUser(t *testing.T) {
	run, acc := needRun(t)
	if _, err := os.Stat("/usr/sbin/apache2"); err != nil {
		t.Skip("needs apache2: ", err)
	}
	dir := t.TempDir()
	cfg := config.Default()
	cfg.BaseDir = filepath.Join(dir, "base")
	cfg.ApacheDir = filepath.Join(dir, "apache")
	cfg.HTTPPort, cfg.HTTPSPort = 18080, 18443 // configtest binds nothing
	cfg.UserPrefix = acc.Prefix
	sites := apache.NewSites(cfg, apache.NewManaged(cfg), apache.Options{})
	sock := startServer(t, run, Config{OpusUID: uint32(os.Geteuid()), BaseDir: cfg.BaseDir, Accounts: acc, Sites: sites, BackendAddr: cfg.BackendAddr})
	c := dial(t, sock)
	ctx := context.Background()
	install := func(project string) error {
		crt, key, err := cert.SelfSigned([]string{cfg.ServerName(project)}, time.Now(), 24*time.Hour, cfg.TLSSecurityLevel)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.InstallSite(ctx, &privdv1.InstallSiteRequest{Project: project, CertificatePem: crt, KeyPem: key})
		return err
	}
	vhost := apache.Paths{Dir: cfg.ApacheDir}.Vhost

	decoy := randomProject(t, "x")
	decoyUser := addDecoy(t, run, acc, decoy)
	before := hostState(t, acc, decoy)
	err := install(decoy)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), decoyUser) {
		t.Errorf("InstallSite for %s (not made by Opus) = %v, want FailedPrecondition naming the user", decoyUser, err)
	}
	if _, err := os.Stat(vhost(decoy)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a vhost was written for the decoy: %v", err)
	}
	if after := hostState(t, acc, decoy); after != before {
		t.Errorf("host changed by the refused InstallSite:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// The control: the same call for a user Opus made goes through.
	ours := randomProject(t, "p")
	oursUser, _, err := acc.EnsureUser(ctx, ours, testrun.MustFreeID(t, acc.UIDs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { acc.DeleteUser(context.Background(), ours) })
	if err := install(ours); err != nil {
		t.Fatalf("InstallSite for Opus's own user: %v", err)
	}
	// The vhost routes to the backend of that user's uid.
	b, err := os.ReadFile(vhost(ours))
	if err != nil || !bytes.Contains(b, []byte("ProxyPass / http://"+cfg.BackendAddr(oursUser.UID).String()+"/ ")) {
		t.Errorf("vhost for %s: %v\n%s", ours, err, b)
	}
}
