package e2e

import (
	"bytes"
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
)

// grpcurl is a stock gRPC client nobody at Opus wrote: if it can list,
// describe and call opusd, any gRPC tool can. The version is pinned (the
// newest that builds with the project's Go) and built from the Go module
// proxy once; the binary is kept across runs outside the e2e root, which
// every run wipes.
const (
	grpcurlModule  = "github.com/fullstorydev/grpcurl/cmd/grpcurl"
	grpcurlVersion = "v1.9.4"
	grpcurlTools   = "/tmp/opus-e2e-tools"
	// grpcurlTimeout bounds one grpcurl run.
	grpcurlTimeout = time.Minute
	// grpcurlMaxOutput bounds what is kept of a grpcurl run's output.
	grpcurlMaxOutput = 1 << 20
)

var (
	grpcurlOnce sync.Once
	grpcurlPath string
	grpcurlErr  error
)

// grpcurlBinary returns the pinned grpcurl, installing it on first use.
func grpcurlBinary(t *testing.T) string {
	t.Helper()
	grpcurlOnce.Do(func() { grpcurlPath, grpcurlErr = installGrpcurl() })
	if grpcurlErr != nil {
		t.Fatalf("installing grpcurl %s: %v", grpcurlVersion, grpcurlErr)
	}
	return grpcurlPath
}

func installGrpcurl() (string, error) {
	dir := filepath.Join(grpcurlTools, "grpcurl-"+grpcurlVersion)
	bin := filepath.Join(dir, "grpcurl")
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o001 != 0 {
		return bin, nil
	}
	// Every uid the tests run grpcurl as must reach the binary.
	for _, d := range []string{grpcurlTools, dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return "", err
		}
	}
	// Build into a scratch directory and rename, so a killed build never
	// leaves a half-written binary where the next run would trust it.
	tmp, err := os.MkdirTemp(grpcurlTools, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", grpcurlModule+"@"+grpcurlVersion)
	cmd.Dir = tmp // outside Opus's module: the tool's own go.mod decides its dependencies
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "CGO_ENABLED=0")
	out := &cappedBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %w\n%s", grpcurlModule, grpcurlVersion, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "grpcurl"), bin); err != nil {
		return "", err
	}
	return bin, nil
}

// cappedBuffer keeps the first max bytes written to it and counts the rest.
type cappedBuffer struct {
	max     int
	buf     bytes.Buffer
	dropped int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	room := b.max - b.buf.Len()
	if room < len(p) {
		if room > 0 {
			b.buf.Write(p[:room])
		}
		b.dropped += len(p) - max(room, 0)
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *cappedBuffer) String() string {
	if b.dropped > 0 {
		return fmt.Sprintf("%s\n[… %d bytes dropped]", b.buf.String(), b.dropped)
	}
	return b.buf.String()
}

// grpcurl runs grpcurl as uid (0 = root) against opusd's socket and returns
// its stdout; a non-zero exit fails the test.
func (h *host) grpcurl(t *testing.T, uid uint32, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), grpcurlTimeout)
	defer cancel()
	// On the wire opusd speaks plaintext gRPC over a Unix socket (its
	// transport credentials only read the kernel's peer credentials).
	// grpcurl wants the address before the verb: ... -unix SOCKET VERB [SYMBOL].
	full := append([]string{"-plaintext", "-unix", h.cfg.OpusdSocket()}, args...)
	cmd := exec.CommandContext(ctx, grpcurlBinary(t), full...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/"}
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: credOf(uid)}
	}
	stdout, stderr := &cappedBuffer{max: grpcurlMaxOutput}, &cappedBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	t.Logf("grpcurl %s (uid %d) → %v\n%s%s", strings.Join(args, " "), uid, err, stdout, stderr)
	if err != nil {
		h.dumpLogs(t)
		t.Fatalf("grpcurl %v as uid %d: %v: %s", args, uid, err, stderr)
	}
	return stdout.String()
}

// TestServiceGrpcurl: opusd is an ordinary gRPC service — reflection lists
// its services, the standard health check answers SERVING, and
// opus.v1.Opus answers a stock client in JSON, still scoped to the
// caller's uid.
func TestServiceGrpcurl(t *testing.T) {
	h := needHost(t)
	grpcurlBinary(t)

	t.Run("list", func(t *testing.T) {
		services := map[string]bool{}
		for _, l := range strings.Split(h.grpcurl(t, 0, "list"), "\n") {
			services[strings.TrimSpace(l)] = true
		}
		for _, want := range []string{"opus.v1.Opus", "grpc.health.v1.Health"} {
			if !services[want] {
				t.Errorf("grpcurl list lacks %s: %v", want, services)
			}
		}
		if !services["grpc.reflection.v1.ServerReflection"] && !services["grpc.reflection.v1alpha.ServerReflection"] {
			t.Errorf("grpcurl list shows no reflection service: %v", services)
		}
		desc := h.grpcurl(t, h.otherID, "describe", "opus.v1.Opus")
		for _, rpc := range []string{"rpc ListProjects", "rpc CreateProject", "rpc WatchOperation"} {
			if !strings.Contains(desc, rpc) {
				t.Errorf("describe opus.v1.Opus lacks %q", rpc)
			}
		}
	})

	t.Run("health", func(t *testing.T) {
		for _, uid := range []uint32{0, h.otherID} {
			var resp struct{ Status string }
			out := h.grpcurl(t, uid, "grpc.health.v1.Health/Check")
			if err := json.Unmarshal([]byte(out), &resp); err != nil {
				t.Fatalf("health answer %q: %v", out, err)
			}
			if resp.Status != "SERVING" {
				t.Errorf("health as uid %d: status %q, want SERVING", uid, resp.Status)
			}
		}
	})

	t.Run("ListProjects", func(t *testing.T) {
		name := h.newProject(t)
		h.mustCtl(t, h.otherID, "create", name, "--empty")
		type listing struct {
			Projects []struct {
				Name string
				// grpcurl prints protojson's lowerCamelCase names
				// (opusctl -o json uses the proto names instead).
				OwnerUID uint32 `json:"ownerUid"`
			}
		}
		// owner is the project's owner as grpcurl as uid sees it; found
		// reports whether the project is listed at all.
		list := func(uid uint32) (owner uint32, found bool) {
			out := h.grpcurl(t, uid, "opus.v1.Opus/ListProjects")
			var l listing
			if err := json.Unmarshal([]byte(out), &l); err != nil {
				t.Fatalf("ListProjects answer %q: %v", out, err)
			}
			for _, p := range l.Projects {
				if p.Name == name {
					return p.OwnerUID, true
				}
			}
			return 0, false
		}
		if owner, ok := list(h.otherID); !ok || owner != h.otherID {
			t.Errorf("owner (uid %d) lists %s: found %v, owner uid %d", h.otherID, name, ok, owner)
		}
		if owner, ok := list(0); !ok || owner != h.otherID {
			t.Errorf("root lists %s: found %v, owner uid %d (want %d)", name, ok, owner, h.otherID)
		}
		// Identity is the socket's peer uid, also for a stock client:
		// another user does not see the project.
		if _, ok := list(65534); ok {
			t.Errorf("nobody (uid 65534) sees %s", name)
		}
		h.mustCtl(t, h.otherID, "destroy", name, "--yes")
		if _, ok := list(0); ok {
			t.Errorf("%s still listed after destroy", name)
		}
	})
}
