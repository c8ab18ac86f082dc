package server

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/opus-hosting/opus/internal/logtest"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// TestStats: the interceptors count every call privd answers: calls that
// reach their handler by method and code, calls refused before any
// handler (another uid, a method not served) by method; a method privd
// does not serve counts as "other", however many names callers make up;
// Stats answers with them, every method's refusals included at 0.
func TestStats(t *testing.T) {
	s := New(Config{OpusUID: 997, Logger: slog.New(slog.DiscardHandler)})
	unary := func(ctx context.Context, method string, err error) {
		h := func(context.Context, any) (any, error) { return nil, err }
		s.UnaryInterceptor()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, h)
	}
	stream := func(ctx context.Context, method string, err error) {
		h := func(any, grpc.ServerStream) error { return err }
		s.StreamInterceptor()(nil, fakeStream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: method}, h)
	}
	opus, other := credContext(997), credContext(1000)
	const svc = "/opus.privd.v1.Privd/"
	unary(opus, svc+"EnsureUser", nil)
	unary(opus, svc+"EnsureUser", nil)
	unary(opus, svc+"EnsureUser", status.Error(codes.InvalidArgument, "project: bad"))
	unary(opus, svc+"RunManage", fmt.Errorf("not a status"))
	unary(opus, svc+"TailLog", status.Error(codes.Code(99), "a code gRPC does not know"))
	stream(opus, svc+"DumpData", status.Error(codes.NotFound, "no database"))
	stream(opus, svc+"LoadData", nil)
	unary(other, svc+"EnsureUser", nil)
	unary(context.Background(), svc+"DeleteUser", nil)
	stream(other, svc+"LoadData", nil)
	for i := range 1000 {
		// Made-up methods, from opus (Unimplemented) and from others.
		unary(opus, fmt.Sprintf("%sExec%d", svc, i), nil)
		stream(other, fmt.Sprintf("/evil.Service/M%d", i), nil)
	}
	if n := len(s.stats.methods); n != len(allowed) {
		t.Errorf("%d methods counted after made-up names; want the %d of the allowlist", n, len(allowed))
	}

	got, err := s.Stats(opus, &privdv1.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &privdv1.StatsResponse{
		Calls: []*privdv1.CallCount{
			{Method: "DumpData", Code: "NotFound", Count: 1},
			{Method: "EnsureUser", Code: "OK", Count: 2},
			{Method: "EnsureUser", Code: "InvalidArgument", Count: 1},
			{Method: "LoadData", Code: "OK", Count: 1},
			{Method: "RunManage", Code: "Unknown", Count: 1},
			{Method: "TailLog", Code: "Unknown", Count: 1},
		},
	}
	for _, m := range []string{"CertificateRequest", "DeleteUser", "DumpData", "EnsureBackend", "EnsureUser", "InstallSite", "LoadData",
		"ReloadApache", "RemoveBackend", "RemoveSite", "RemoveTree", "RunManage", "SecureTree", "Stats", "TailLog", "other"} {
		n := map[string]uint64{"DeleteUser": 1, "EnsureUser": 1, "LoadData": 1, "other": 2000}[m]
		want.Refusals = append(want.Refusals, &privdv1.RefusalCount{Method: m, Count: n})
	}
	if !proto.Equal(want, got) {
		t.Errorf("Stats:\n%s\nwant:\n%s", prototext.Format(got), prototext.Format(want))
	}

	// Through the interceptor, Stats counts itself.
	var resp any
	resp, err = s.UnaryInterceptor()(opus, &privdv1.StatsRequest{}, &grpc.UnaryServerInfo{FullMethod: svc + "Stats"},
		func(ctx context.Context, req any) (any, error) { return s.Stats(ctx, req.(*privdv1.StatsRequest)) })
	if err != nil {
		t.Fatal(err)
	}
	if n := countOf(resp.(*privdv1.StatsResponse), "Stats", "OK"); n != 0 {
		t.Errorf("Stats counted itself before it answered: %d", n)
	}
	if n := countOf(s.stats.snapshot(), "Stats", "OK"); n != 1 {
		t.Errorf("Stats calls after one: %d", n)
	}
}

func countOf(r *privdv1.StatsResponse, method, code string) uint64 {
	for _, c := range r.GetCalls() {
		if c.GetMethod() == method && c.GetCode() == code {
			return c.GetCount()
		}
	}
	return 0
}

// TestStatsLoggedAtDebug: the Stats call every scrape makes is logged at
// Debug, not among the calls that change the host; a failed one (a
// refusal included) still is, as a warning.
func TestStatsLoggedAtDebug(t *testing.T) {
	var logs logtest.Buffer
	s := New(Config{OpusUID: 997, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	stats := func(ctx context.Context, req any) (any, error) { return s.Stats(ctx, req.(*privdv1.StatsRequest)) }
	ok := func(context.Context, any) (any, error) { return nil, nil }
	call := func(ctx context.Context, method string, h grpc.UnaryHandler) {
		s.UnaryInterceptor()(ctx, &privdv1.StatsRequest{}, &grpc.UnaryServerInfo{FullMethod: method}, h)
	}
	call(credContext(997), statsMethod, stats)
	if l := logs.String(); l != "" {
		t.Errorf("Stats logged at Info: %s", l)
	}
	call(credContext(997), "/opus.privd.v1.Privd/ReloadApache", ok)
	call(credContext(1000), statsMethod, stats)
	l := logs.String()
	if !strings.Contains(l, "level=INFO msg=call method=/opus.privd.v1.Privd/ReloadApache") {
		t.Errorf("another call not logged at Info:\n%s", l)
	}
	if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "method=/opus.privd.v1.Privd/Stats") {
		t.Errorf("a refused Stats not logged:\n%s", l)
	}
}
