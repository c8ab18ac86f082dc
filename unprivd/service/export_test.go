package service

import (
	"context"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/unprivd/store"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// What the API benchmarks in package service_test (api_serve_bench_test.go)
// take from this package's tests.

// BenchProjects and BenchOwners are how many projects the API benchmarks
// store, spread over how many owner uids (10000 on).
const (
	BenchProjects = benchProjects
	BenchOwners   = benchOwners
)

// AsCaller is the context the interceptor would hand a handler.
func AsCaller(uid uint32, admin bool) context.Context { return asCaller(uid, admin) }

// BenchShapes names the shapes of stored projects the benchmarks time.
func BenchShapes() []string {
	var names []string
	for _, s := range benchShapes {
		names = append(names, s.name)
	}
	return names
}

// BenchFill stores BenchProjects projects of the named shape in st and
// returns their names.
func BenchFill(tb testing.TB, st *store.Store, shape string) []string {
	tb.Helper()
	for _, s := range benchShapes {
		if s.name == shape {
			return benchFill(tb, st, benchProjects, s)
		}
	}
	tb.Fatalf("no benchmark shape %q", shape)
	return nil
}

// mentions reports whether err is about want: the request field path in
// its BadRequest detail starts with want, or its message holds want.
func mentions(err error, want string) bool {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if strings.HasPrefix(v.GetField(), want) {
					return true
				}
			}
		}
	}
	return strings.Contains(status.Convert(err).Message(), want)
}
