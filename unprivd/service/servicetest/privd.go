package servicetest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/peercred"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// Privd is a stub opus-privd: it does nothing on the host, answers every
// call as a privd that succeeded would, and records the calls. A Hook set
// for a method runs first and may delay the call, fail it, or give
// another answer (a manage.py command that failed, say).
type Privd struct {
	privdv1.UnimplementedPrivdServer

	mu    sync.Mutex
	calls []PrivdCall
	hooks map[string]Hook
}

// PrivdCall is one call the stub received.
type PrivdCall struct {
	// Method is the short method name, "RunManage".
	Method string
	// Project is the project the call names; "" for ReloadApache.
	Project string
}

// Hook runs before the stub answers a call of project. A non-nil error
// is the call's answer, a non-nil message replaces the stub's; nil, nil
// lets the stub answer. It must return when ctx ends.
type Hook func(ctx context.Context, project string, req proto.Message) (proto.Message, error)

// startPrivd serves a stub privd on socket until tb ends and returns it
// with a client of it that, as opusd's does, believes only the uid privd
// must run as (here this process's).
func startPrivd(tb testing.TB, socket string) (*Privd, privdv1.PrivdClient) {
	tb.Helper()
	p := &Privd{hooks: map[string]Hook{}}
	g := grpc.NewServer(grpc.Creds(peercred.Server()))
	privdv1.RegisterPrivdServer(g, p)
	l, err := peercred.Listen(socket, 0o600, -1)
	if err != nil {
		tb.Fatal(err)
	}
	go g.Serve(l)
	tb.Cleanup(g.Stop)
	cc, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(peercred.ClientExpecting(uint32(os.Getuid()))))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return p, privdv1.NewPrivdClient(cc)
}

// Set makes h run before every call of method ("RunManage"); a nil h
// removes it.
func (p *Privd) Set(method string, h Hook) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h == nil {
		delete(p.hooks, method)
		return
	}
	p.hooks[method] = h
}

// Calls returns the calls received so far, in order.
func (p *Privd) Calls() []PrivdCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]PrivdCall(nil), p.calls...)
}

// answer records a call and answers it: with the hook's answer if there
// is one, else with def.
func answer[Res proto.Message](p *Privd, ctx context.Context, method string, req proto.Message, def Res) (Res, error) {
	project := ""
	if r, ok := req.(interface{ GetProject() string }); ok {
		project = r.GetProject()
	}
	p.mu.Lock()
	p.calls = append(p.calls, PrivdCall{Method: method, Project: project})
	h := p.hooks[method]
	p.mu.Unlock()
	if h != nil {
		res, err := h(ctx, project, req)
		if err != nil {
			var zero Res
			return zero, err
		}
		if res != nil {
			return res.(Res), nil
		}
	}
	return def, nil
}

// EnsureUser implements privdv1.PrivdServer: the user exists with the
// uid asked for.
func (p *Privd) EnsureUser(ctx context.Context, in *privdv1.EnsureUserRequest) (*privdv1.EnsureUserResponse, error) {
	return answer(p, ctx, "EnsureUser", in, &privdv1.EnsureUserResponse{
		User: names.User(names.DefaultUserPrefix, in.GetProject()), Uid: in.GetUid(), Gid: in.GetUid(), Created: true})
}

// DeleteUser implements privdv1.PrivdServer.
func (p *Privd) DeleteUser(ctx context.Context, in *privdv1.DeleteUserRequest) (*privdv1.DeleteUserResponse, error) {
	return answer(p, ctx, "DeleteUser", in, &privdv1.DeleteUserResponse{Deleted: true})
}

// SecureTree implements privdv1.PrivdServer.
func (p *Privd) SecureTree(ctx context.Context, in *privdv1.SecureTreeRequest) (*privdv1.SecureTreeResponse, error) {
	return answer(p, ctx, "SecureTree", in, &privdv1.SecureTreeResponse{Secured: 1})
}

// RemoveTree implements privdv1.PrivdServer.
func (p *Privd) RemoveTree(ctx context.Context, in *privdv1.RemoveTreeRequest) (*privdv1.RemoveTreeResponse, error) {
	return answer(p, ctx, "RemoveTree", in, &privdv1.RemoveTreeResponse{Removed: 1})
}

// RunManage implements privdv1.PrivdServer: every command passes.
func (p *Privd) RunManage(ctx context.Context, in *privdv1.RunManageRequest) (*privdv1.RunManageResponse, error) {
	return answer(p, ctx, "RunManage", in, &privdv1.RunManageResponse{Output: "ok\n"})
}

// EnsureBackend implements privdv1.PrivdServer.
func (p *Privd) EnsureBackend(ctx context.Context, in *privdv1.EnsureBackendRequest) (*privdv1.EnsureBackendResponse, error) {
	return answer(p, ctx, "EnsureBackend", in, &privdv1.EnsureBackendResponse{MasterPid: 2, Started: true})
}

// RemoveBackend implements privdv1.PrivdServer.
func (p *Privd) RemoveBackend(ctx context.Context, in *privdv1.RemoveBackendRequest) (*privdv1.RemoveBackendResponse, error) {
	return answer(p, ctx, "RemoveBackend", in, &privdv1.RemoveBackendResponse{Removed: true})
}

// InstallSite implements privdv1.PrivdServer.
func (p *Privd) InstallSite(ctx context.Context, in *privdv1.InstallSiteRequest) (*privdv1.InstallSiteResponse, error) {
	return answer(p, ctx, "InstallSite", in, &privdv1.InstallSiteResponse{Changed: true})
}

// RemoveSite implements privdv1.PrivdServer.
func (p *Privd) RemoveSite(ctx context.Context, in *privdv1.RemoveSiteRequest) (*privdv1.RemoveSiteResponse, error) {
	return answer(p, ctx, "RemoveSite", in, &privdv1.RemoveSiteResponse{Removed: true})
}

// ReloadApache implements privdv1.PrivdServer.
func (p *Privd) ReloadApache(ctx context.Context, in *privdv1.ReloadApacheRequest) (*privdv1.ReloadApacheResponse, error) {
	return answer(p, ctx, "ReloadApache", in, &privdv1.ReloadApacheResponse{MasterPid: 1})
}

// TailLog implements privdv1.PrivdServer: up to three lines, shaped like
// mod_wsgi's, naming the project; asked for what follows a position,
// nothing new (a Hook may give lines).
func (p *Privd) TailLog(ctx context.Context, in *privdv1.TailLogRequest) (*privdv1.TailLogResponse, error) {
	if in.GetAfter() != nil {
		return answer(p, ctx, "TailLog", in, &privdv1.TailLogResponse{Next: in.GetAfter()})
	}
	res := &privdv1.TailLogResponse{Next: &privdv1.LogPosition{}}
	for i := int32(1); i <= 3 && i <= in.GetLines(); i++ {
		res.Lines = append(res.Lines, fmt.Sprintf("[wsgi:error] [pid %d] %s: log line %d", 100+i, in.GetProject(), i))
	}
	return answer(p, ctx, "TailLog", in, res)
}

// Delay is a Hook that holds each call for d, or until it is cancelled.
func Delay(d time.Duration) Hook {
	return func(ctx context.Context, _ string, _ proto.Message) (proto.Message, error) {
		select {
		case <-time.After(d):
			return nil, nil
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// FailMigrate is a RunManage Hook under which project's migrations fail
// as manage.py reports it: exit code 1 with output. Other projects and
// calls without migrate pass.
func FailMigrate(project, output string) Hook {
	return func(_ context.Context, p string, req proto.Message) (proto.Message, error) {
		if p != project || !slices.Contains(req.(*privdv1.RunManageRequest).GetCommands(), privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE) {
			return nil, nil
		}
		return &privdv1.RunManageResponse{Output: output, FailedCommand: privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE, ExitCode: 1}, nil
	}
}

// FailMigrateOnce is FailMigrate for the project's next migrate only, as
// a change whose new migration raises: the undo of that change migrates
// the previous code, which passes.
func FailMigrateOnce(project, output string) Hook {
	var done atomic.Bool
	fail := FailMigrate(project, output)
	return func(ctx context.Context, p string, req proto.Message) (proto.Message, error) {
		res, err := fail(ctx, p, req)
		if res == nil || !done.CompareAndSwap(false, true) {
			return nil, nil
		}
		return res, err
	}
}

// SlowDeploys makes every deploy take at least 3*d: the calls that start
// a backend, run manage.py and install a site each wait d. Tests use it to
// watch an operation while it runs.
func (p *Privd) SlowDeploys(d time.Duration) {
	for _, m := range []string{"EnsureBackend", "RunManage", "InstallSite"} {
		p.Set(m, Delay(d))
	}
}
