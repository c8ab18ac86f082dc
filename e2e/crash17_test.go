package e2e

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/client"
	"github.com/opus-hosting/opus/internal/cert"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/reconcile"
)

// crashOp asks for one operation through the faultinject opusd, which dies
// after each step of points in turn (h.crashAt), then lets the release
// opusd finish it and returns it as it ended.
func (h *host) crashOp(t *testing.T, name string, points []string, ask func(ctx context.Context, c *client.Client) (*opusv1.Operation, error)) (*opusv1.Operation, error) {
	t.Helper()
	h.stopOpusd(t)
	var id string
	h.crashAt(t, points, func() {
		c := h.rootClient(t)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		op, err := ask(ctx, c)
		// opusd may die before its answer leaves; the spec is committed
		// first, so the operation is found after the restart.
		if err != nil && status.Code(err) != codes.Unavailable {
			t.Fatalf("asking for the operation on %s: %v", name, err)
		}
		id = op.GetId()
	})
	h.startOpusdBinary(t, filepath.Join(h.bin, "opusd"))
	if id == "" {
		c := h.rootClient(t)
		ops, err := c.ListOperations(context.Background(), name, 1)
		c.Close()
		if err != nil || len(ops) == 0 {
			t.Fatalf("no operation of %s after the crashes: %v", name, err)
		}
		id = ops[0].GetId()
	}
	return h.waitOp(t, id)
}

// TestCrashEveryOperationKind kills opusd right after every step of each
// kind of change to a live project (app add, update, rollback, settings,
// certificate, app removal) and of a change that fails: each converges,
// after the restarts, to the whole change, or for the failing one to
// nothing of it (the previous state READY and serving, the failure in the
// operation), with no drift left; another project answers throughout.
func TestCrashEveryOperationKind(t *testing.T) {
	// After the others (no other test uses the shared host then), beside
	// the etcd, cluster and packaging tests, which use none of its
	// accounts (see joinGroup).
	joinGroup(t, &sharedHostTests)
	crashEveryOperationKind(t, needHost(t))
}

// crashEveryOperationKind is TestCrashEveryOperationKind on h (the shared
// host, or one on the etcd state store).
func crashEveryOperationKind(t *testing.T, h *host) {
	bystander := h.newProject(t)
	h.deploy(t, 0, bystander, localApp(t, "hello"))
	name := h.newProject(t)
	crashy := newGitApp(t, "crashy", "crash v1")
	crashy.addVersion(t, "v2", "crash v2")
	extra := newGitApp(t, "extra", "extra app")
	h.mustCtl(t, 0, "create", name, "--app", crashy.dir+"@v1")
	h.restoreOpusd(t)
	stopProbe := steadyProbe(t, h.url(bystander, "http", "/hello/"), "Hello from Opus")

	crt, key, err := cert.SelfSigned([]string{name + h.cfg.ServerSuffix}, time.Now(), 24*time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	deploy := stepPoints("deploy", reconcile.DeploySteps(), 1)
	cases := []struct {
		kind  string
		want  opusv1.OperationKind
		ask   func(ctx context.Context, c *client.Client) (*opusv1.Operation, error)
		check func(t *testing.T)
	}{
		{"add app", opusv1.OperationKind_OPERATION_KIND_ADD_APP,
			func(ctx context.Context, c *client.Client) (*opusv1.Operation, error) {
				return c.AddApp(ctx, name, &opusv1.AppSpec{Name: "extra", Source: client.GitSource(extra.dir, "v1")})
			},
			func(t *testing.T) { mustGet(t, webClient(), h.url(name, "https", "/extra/"), "extra app") }},
		{"update app", opusv1.OperationKind_OPERATION_KIND_UPDATE_APP,
			func(ctx context.Context, c *client.Client) (*opusv1.Operation, error) {
				return c.UpdateApp(ctx, name, "crashy", client.GitSource(crashy.dir, "v2"))
			},
			func(t *testing.T) { mustGet(t, webClient(), h.url(name, "https", "/crashy/"), "crash v2") }},
		{"rollback", opusv1.OperationKind_OPERATION_KIND_ROLLBACK,
			func(ctx context.Context, c *client.Client) (*opusv1.Operation, error) {
				return c.RollbackApp(ctx, name, "crashy", "1")
			},
			func(t *testing.T) { mustGet(t, webClient(), h.url(name, "https", "/crashy/"), "crash v1") }},
		{"settings", opusv1.OperationKind_OPERATION_KIND_UPDATE_SETTINGS,
			func(ctx context.Context, c *client.Client) (*opusv1.Operation, error) {
				return c.UpdateSettings(ctx, name, map[string]string{"env.OPUS_CRASH": "survived"}, nil)
			},
			func(t *testing.T) {
				if p := h.show(t, name); p.Settings.Env["OPUS_CRASH"] != "survived" {
					t.Errorf("settings after the crashes: %+v", p.Settings)
				}
				if j := h.opusJSON(t, name); !strings.Contains(mustJSON(t, j), "survived") {
					t.Errorf("opus.json lacks the new variable: %v", j)
				}
			}},
		{"certificate", opusv1.OperationKind_OPERATION_KIND_SET_CERTIFICATE,
			func(ctx context.Context, c *client.Client) (*opusv1.Operation, error) {
				return c.SetCertificate(ctx, name, crt, key)
			},
			func(t *testing.T) {
				served, err := tlsDial(h, name)
				block, _ := pem.Decode(crt)
				if err != nil || block == nil || !bytes.Equal(served.Raw, block.Bytes) {
					t.Errorf("the owner's certificate is not served after the crashes (%v)", err)
				}
			}},
		{"remove app", opusv1.OperationKind_OPERATION_KIND_REMOVE_APP,
			func(ctx context.Context, c *client.Client) (*opusv1.Operation, error) {
				return c.RemoveApp(ctx, name, "extra", false)
			},
			func(t *testing.T) {
				if code, _ := get(t, webClient(), h.url(name, "https", "/extra/")); code != http.StatusNotFound {
					t.Errorf("the removed app answers %d, want 404", code)
				}
			}},
	}
	current := "crash v1"
	for _, c := range cases {
		if t.Failed() {
			break
		}
		op, err := h.crashOp(t, name, deploy, c.ask)
		if err != nil || op.GetKind() != c.want {
			h.dumpLogs(t)
			t.Fatalf("%s after the crashes: %v (%v), want a %v that succeeded", c.kind, err, op, c.want)
		}
		switch c.kind {
		case "update app":
			current = "crash v2"
		case "rollback":
			current = "crash v1"
		}
		h.checkDeployed(t, name, "crashy", current)
		c.check(t)
	}

	// A change that fails (an app whose urls.py does not parse fails
	// manage.py check, in the migrate step): killed after each step of
	// the change, then after each step of its undo (the second pass of
	// the chain in the opusd that finds the failure, the first in each
	// one after).
	broken := newGitApp(t, "broken", "never")
	broken.write(t, "urls.py", "from django.urls import path\nurlpatterns = [path('', \n")
	broken.git(t, "commit", "-q", "-am", "break")
	before := h.show(t, name)
	var points []string
	for _, p := range deploy {
		if p == "deploy/migrate" {
			break
		}
		points = append(points, p)
	}
	points = append(points, "deploy/user:2")
	points = append(points, deploy[1:]...)
	op, err := h.crashOp(t, name, points, func(ctx context.Context, c *client.Client) (*opusv1.Operation, error) {
		return c.AddApp(ctx, name, &opusv1.AppSpec{Name: "broken", Source: client.GitSource(broken.dir, "main")})
	})
	var oe *client.OperationError
	if !errors.As(err, &oe) || !strings.Contains(op.GetError(), "SyntaxError") {
		h.dumpLogs(t)
		t.Fatalf("the failing change after the crashes: %v (%v), want it failed with the SyntaxError", err, op)
	}
	p := h.show(t, name)
	if p.Phase != "PHASE_READY" || p.LastFailedOp != op.GetId() || p.Generation != p.ObservedGeneration || len(p.Apps) != len(before.Apps) {
		t.Errorf("after the failing change and the crashes: %+v, want READY with the apps of before (%d) and the failure of %s", p, len(before.Apps), op.GetId())
	}
	if exists(filepath.Join(h.cfg.BaseDir, "projects", name, "code", "broken")) {
		t.Errorf("the failed app's code is on disk")
	}
	h.checkDeployed(t, name, "crashy", current)

	if n, outages, last := stopProbe(); n == 0 || outages > 0 {
		t.Errorf("project %s while opusd crashed after every step: %d outages in %d requests (last failure: %s)", bystander, outages, n, last)
	}
}
