package service

import (
	"context"
	"testing"

	"github.com/opus-hosting/opus/unprivd/store"
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
