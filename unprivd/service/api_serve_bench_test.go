package service_test

import (
	"context"
	"os"
	"testing"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/service"
	"github.com/opus-hosting/opus/unprivd/service/servicetest"
	"google.golang.org/grpc"
)

// benchOpusd serves the real API (over a stub privd) with a store filled
// in the named shape, this process an admin; the calls are not recorded,
// so the socket benchmarks time what opusd serves.
func benchOpusd(b *testing.B, shape string) (*servicetest.Opusd, []string) {
	b.Helper()
	o := servicetest.Start(b, servicetest.Options{Admin: true, NoRecord: true})
	return o, service.BenchFill(b, o.Store, shape)
}

func BenchmarkAPIGet(b *testing.B) {
	me := uint32(os.Getuid())
	for _, shape := range service.BenchShapes() {
		b.Run(shape, func(b *testing.B) {
			o, names := benchOpusd(b, shape)
			b.Run("handler", func(b *testing.B) {
				svc, ctx := o.Service(), service.AsCaller(me, true)
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if _, err := svc.GetProject(ctx, &opusv1.GetProjectRequest{Name: names[(i*7919)%len(names)]}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("socket", func(b *testing.B) {
				cl := o.Client(b)
				ctx := context.Background()
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					if _, err := cl.GetProject(ctx, &opusv1.GetProjectRequest{Name: names[(i*7919)%len(names)]}); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func BenchmarkAPIList(b *testing.B) {
	me := uint32(os.Getuid())
	for _, shape := range service.BenchShapes() {
		b.Run(shape, func(b *testing.B) {
			o, _ := benchOpusd(b, shape)
			// list times ListProjects through list, as ctx's caller.
			list := func(b *testing.B, list func(context.Context, *opusv1.ListProjectsRequest, ...grpc.CallOption) (*opusv1.ListProjectsResponse, error), ctx context.Context, want int) {
				b.ReportAllocs()
				for b.Loop() {
					res, err := list(ctx, &opusv1.ListProjectsRequest{})
					if err != nil {
						b.Fatal(err)
					}
					if len(res.GetProjects()) != want {
						b.Fatalf("%d projects, want %d", len(res.GetProjects()), want)
					}
				}
			}
			handler := func(ctx context.Context, req *opusv1.ListProjectsRequest, _ ...grpc.CallOption) (*opusv1.ListProjectsResponse, error) {
				return o.Service().ListProjects(ctx, req)
			}
			b.Run("handler/admin", func(b *testing.B) { list(b, handler, service.AsCaller(me, true), service.BenchProjects) })
			b.Run("handler/owner", func(b *testing.B) {
				list(b, handler, service.AsCaller(10000, false), service.BenchProjects/service.BenchOwners)
			})
			b.Run("socket", func(b *testing.B) { list(b, o.Client(b).ListProjects, context.Background(), service.BenchProjects) })
		})
	}
}
