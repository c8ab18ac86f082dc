package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/unprivd/store"
)

// TestStoreUnavailable: a change the state store refuses because it
// cannot be reached (etcd partitioned away) reaches the caller as
// Unavailable, saying the state store cannot be reached, that changes are
// refused and projects keep serving, in words without internal names:
// through storeErr, and from a handler that passed the store's error on
// unmapped, through the interceptors. Other errors keep their codes.
func TestStoreUnavailable(t *testing.T) {
	s := &Service{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	names := internalNames(t)
	// A call from root over the socket, as the interceptors see it.
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: peercred.AuthInfo{Cred: peercred.Cred{UID: 0}}})
	// As the etcd store says it: the cluster's own error (a deadline)
	// wrapped too, which must not turn it into a DeadlineExceeded.
	wrapped := fmt.Errorf("%w (etcd http://127.0.0.1:2379 prefix /opus/): %w", store.ErrUnavailable, context.DeadlineExceeded)
	check := func(what string, err error) {
		t.Helper()
		st := status.Convert(err)
		if st.Code() != codes.Unavailable {
			t.Fatalf("%s: %v, want Unavailable", what, err)
		}
		for _, want := range []string{"state store (etcd)", "changes are refused", "projects keep serving"} {
			if !strings.Contains(st.Message(), want) {
				t.Errorf("%s: %q lacks %q", what, st.Message(), want)
			}
		}
		checkUserMessage(t, names, what, st.Message())
	}
	check("storeErr", s.storeErr(ctx, wrapped))

	unary := s.UnaryInterceptor()
	stream := s.StreamInterceptor()
	for _, tt := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"store unreachable", wrapped, codes.Unavailable},
		{"already a status", status.Error(codes.NotFound, "project \"blog\" not found"), codes.NotFound},
		{"none", nil, codes.OK},
		{"other error", errors.New("boom"), codes.Unknown},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The health service is public: any caller gets through.
			info := &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"}
			_, err := unary(ctx, nil, info, func(context.Context, any) (any, error) { return nil, tt.err })
			if status.Code(err) != tt.want {
				t.Errorf("unary: %v, want %v", err, tt.want)
			}
			serr := stream(nil, fakeStream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: "/grpc.health.v1.Health/Watch"}, func(any, grpc.ServerStream) error { return tt.err })
			if status.Code(serr) != tt.want {
				t.Errorf("stream: %v, want %v", serr, tt.want)
			}
			if tt.want == codes.Unavailable {
				check("unary", err)
				check("stream", serr)
			}
		})
	}
}

// fakeStream is a server stream with only a context.
type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeStream) Context() context.Context { return f.ctx }
