package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/client"
	"github.com/opus-hosting/opus/internal/peercred"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// helperEnv selects the helper mode: the test binary re-executed under
// another uid to call opus-privd directly, as an attacker or as opusd would
// (or opusd, for a call opusctl cannot make).
const helperEnv = "OPUS_E2E_HELPER"

// privdCall is one call the helper makes; its answer comes back as JSON.
type privdCall struct {
	Socket  string `json:"socket"`
	Method  string `json:"method"`
	Project string `json:"project"`
	Cert    string `json:"cert,omitempty"`
	Key     string `json:"key,omitempty"`
	// Digest is the upload an opusd call names (uploads_test.go).
	Digest string `json:"digest,omitempty"`
	// Secret is the password, link token or session id of a
	// ConsoleSessions call (consolesessions_test.go).
	Secret string `json:"secret,omitempty"`
}

type privdAnswer struct {
	Code      string   `json:"code"`
	Message   string   `json:"message"`
	DialError string   `json:"dial_error,omitempty"`
	Refusals  []string `json:"refusals,omitempty"`
}

func runHelper() int {
	var c privdCall
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ans := callPrivd(c)
	_ = json.NewEncoder(os.Stdout).Encode(ans)
	return 0
}

func callPrivd(c privdCall) privdAnswer {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(peercred.Client()))
	if err != nil {
		return privdAnswer{DialError: err.Error()}
	}
	defer conn.Close()
	pc := privdv1.NewPrivdClient(conn)
	var ans privdAnswer
	switch c.Method {
	case "EnsureUser":
		_, err = pc.EnsureUser(ctx, &privdv1.EnsureUserRequest{Project: c.Project})
	case "DeleteUser":
		_, err = pc.DeleteUser(ctx, &privdv1.DeleteUserRequest{Project: c.Project})
	case "SecureTree":
		var r *privdv1.SecureTreeResponse
		r, err = pc.SecureTree(ctx, &privdv1.SecureTreeRequest{Project: c.Project})
		for _, ref := range r.GetRefusals() {
			ans.Refusals = append(ans.Refusals, ref.GetPath()+": "+ref.GetReason())
		}
	case "InstallSite":
		_, err = pc.InstallSite(ctx, &privdv1.InstallSiteRequest{Project: c.Project, CertificatePem: []byte(c.Cert), KeyPem: []byte(c.Key)})
	case "RemoveTree":
		_, err = pc.RemoveTree(ctx, &privdv1.RemoveTreeRequest{Project: c.Project})
	case "opus.CreateProjectFromUpload":
		// Socket is opusd's: create Project with one app of upload Digest.
		_, err = opusv1.NewOpusClient(conn).CreateProject(ctx, &opusv1.CreateProjectRequest{Name: c.Project,
			Apps: []*opusv1.AppSpec{{Name: "app", Source: client.UploadedSource(c.Digest, "e2e")}}})
	case "console.SignInWithPassword":
		// Socket is opusd's; Project is the user signing in.
		_, err = opusv1.NewConsoleSessionsClient(conn).SignInWithPassword(ctx, &opusv1.SignInWithPasswordRequest{User: c.Project, Password: c.Secret, RemoteAddr: "127.0.0.1"})
	case "console.SignInWithLink":
		_, err = opusv1.NewConsoleSessionsClient(conn).SignInWithLink(ctx, &opusv1.SignInWithLinkRequest{Token: c.Secret, RemoteAddr: "127.0.0.1"})
	case "console.GetConsoleSession":
		_, err = opusv1.NewConsoleSessionsClient(conn).GetConsoleSession(ctx, &opusv1.GetConsoleSessionRequest{SessionId: c.Secret})
	case "console.SignOut":
		_, err = opusv1.NewConsoleSessionsClient(conn).SignOut(ctx, &opusv1.SignOutRequest{SessionId: c.Secret})
	default:
		return privdAnswer{DialError: "unknown method " + c.Method}
	}
	st := status.Convert(err)
	ans.Code, ans.Message = st.Code().String(), st.Message()
	return ans
}

// asUID calls privd as uid (0 runs as root) through a re-executed test
// binary, so the kernel's peer credentials are really that uid's.
func asUID(t *testing.T, uid, gid uint32, c privdCall) privdAnswer {
	t.Helper()
	req, _ := json.Marshal(c)
	cmd := exec.Command(helperBinary(t), "-test.run=^$")
	cmd.Env = []string{helperEnv + "=" + string(req)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper as uid %d: %v (%s)", uid, err, out)
	}
	var ans privdAnswer
	if err := json.Unmarshal(out, &ans); err != nil {
		t.Fatalf("helper answer %q: %v", out, err)
	}
	t.Logf("privd %s(%q) as uid %d → %s %s%s %v", c.Method, c.Project, uid, ans.Code, ans.Message, ans.DialError, ans.Refusals)
	return ans
}

// openPrivdToAll opens privd's socket to every user until the test ends,
// so that a caller other than opusd gets past the socket's mode and
// privd's own peer check is what must refuse it. It returns the socket.
func openPrivdToAll(t *testing.T, h *host) string {
	t.Helper()
	sock := h.cfg.PrivdSocket()
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(sock, fi.Mode().Perm()) })
	return sock
}

func contains(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

var helperOnce sync.Once

// helperBinary is a copy of the test binary that any uid may execute (go
// test builds it in a directory only root can enter).
func helperBinary(t *testing.T) string {
	t.Helper()
	path := filepath.Join(root, "bin", "e2e-helper")
	helperOnce.Do(func() {
		data, err := os.ReadFile(os.Args[0])
		if err == nil {
			err = os.WriteFile(path, data, 0o755)
		}
		if err != nil {
			t.Fatalf("copy test binary: %v", err)
		}
	})
	return path
}
