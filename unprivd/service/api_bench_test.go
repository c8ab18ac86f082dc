package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// The API benchmarks are regression guards for issue #8's targets
// (GetProject and ListProjects with 1,000 projects): they time the
// handlers in-process and through gRPC on a real Unix socket, over a real
// bbolt file filled with records shaped like a host's after months of use
// (apps with revision history, settings, some owner certificates and
// external databases, and an operation history per project). They assert
// no timings; compare runs with benchstat. BenchmarkAPIGet and
// BenchmarkAPIList serve the real opusd API with servicetest, which
// imports this package, so they are in package service_test
// (api_serve_bench_test.go); this file has what they share with this
// package's tests (export_test.go exports it to them).
//
//	go test -run '^$' -bench 'API' -benchmem ./unprivd/service/
//	go test -run '^$' -bench 'APIList/handler' -cpuprofile cpu.out ./unprivd/service/

// benchProjects is how many projects the API benchmarks store.
const benchProjects = 1000

// benchOwners spreads the projects over this many owner uids, so an
// owner's list filters the store.
const benchOwners = 50

// benchShape is what the stored projects look like.
type benchShape struct {
	name string
	// full: two apps with ten revisions each, settings, every tenth an
	// owner certificate, every third an external database; else a project
	// as BenchmarkAPI in e2e/ makes it (no apps, one create operation).
	full   bool
	opsPer int
}

var benchShapes = []benchShape{
	{name: "fresh", opsPer: 1},
	{name: "full", full: true, opsPer: 10},
}

// benchFill stores n projects of the given shape, each with its finished
// operations, in one transaction (one fsync).
func benchFill(tb testing.TB, st *store.Store, n int, shape benchShape) []string {
	tb.Helper()
	hexOf := func(n int) string {
		b := make([]byte, n)
		rand.Read(b)
		return hex.EncodeToString(b)
	}
	pem := func(size int) []byte {
		b := make([]byte, size)
		rand.Read(b)
		return b
	}
	names := make([]string, n)
	steps := []string{"user", "directories", "database", "recover", "data", "sources", "render", "secure", "backend", "migrate", "superuser", "certificate", "vhost", "reload", "health"}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	err := st.Update(context.Background(), func(tx *store.Tx) error {
		for i := range n {
			name := fmt.Sprintf("bench%04d", i)
			names[i] = name
			p := &store.Project{Name: name, OwnerUID: uint32(10000 + i%benchOwners), Generation: 1,
				Status: store.Status{Phase: store.PhaseReady, ObservedGeneration: 1, SystemUser: "opus-" + name,
					UID: uint32(70000 + i), GID: uint32(70000 + i),
					Certificate: store.CertificateStatus{Kind: "self-signed", NotAfter: t0.AddDate(1, 0, 0)}},
			}
			if shape.full {
				p.Spec = store.Spec{
					Admin: true,
					Apps: []store.AppSpec{
						{Name: "blog", Git: &store.GitSource{URL: "https://git.example.com/team/blog.git", Ref: "v1.4.2"}, ByUID: 10000},
						{Name: "shop", Upload: &store.UploadSource{Digest: "sha256:" + hexOf(32), Origin: "/home/dev/src/shop"}, ByUID: 10000},
					},
					Superuser: &store.Superuser{Username: "admin", Email: "admin@example.com"},
					Settings: store.Settings{Debug: i%7 == 0, Hosts: []string{name + ".example.com", "www." + name + ".example.com"},
						Env: map[string]string{"DJANGO_LOG_LEVEL": "INFO", "SENTRY_DSN": "https://" + hexOf(16) + "@sentry.example.com/42",
							"FEATURE_X": "on", "TZ": "Europe/Berlin", "CACHE_URL": "redis://127.0.0.1:6379/3"}},
				}
				p.Status.Superuser = "admin"
				p.Status.Apps = map[string]store.AppStatus{}
			}
			if shape.full && i%10 == 0 {
				p.Spec.Certificate = &store.OwnerCertificate{CertificatePEM: pem(2400), KeyPEM: pem(240)}
				p.Status.Certificate.Kind = "owner"
			}
			if shape.full && i%3 == 0 {
				p.Spec.Database = &store.Database{Engine: "postgresql", Host: "db.internal", Port: 5432, Name: name, User: name, Password: hexOf(16)}
			}
			for _, a := range p.Spec.Apps {
				as := store.AppStatus{RequestedRef: a.RequestedRef(), ResolvedCommit: hexOf(20)}
				for r := range 10 {
					as.Revisions = append(as.Revisions, store.Revision{URL: "https://git.example.com/team/blog.git",
						RequestedRef: fmt.Sprintf("v1.%d.0", r), Resolved: hexOf(20), Time: t0.Add(time.Duration(r) * time.Hour), ByUID: 10000})
				}
				p.Status.Apps[a.Name] = as
			}
			if err := tx.CreateProject(p); err != nil {
				return err
			}
			for range shape.opsPer {
				op, err := tx.NewOperation(p, store.OpUpdateApp, p.OwnerUID)
				if err != nil {
					return err
				}
				op.State = store.OpSucceeded
				for _, s := range steps {
					op.Steps = append(op.Steps, store.Step{Name: s, State: store.StepDone, StartTime: t0, EndTime: t0.Add(time.Second), Message: "ok"})
				}
				op.EndTime = t0.Add(time.Minute)
				if err := tx.PutOperation(op); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return names
}

// benchService is a Service over a filled store in tb's temp directory,
// for tests of the read handlers.
func benchService(tb testing.TB, admins Admins, shape benchShape) (*Service, []string) {
	tb.Helper()
	st, err := store.Open(context.Background(), filepath.Join(tb.TempDir(), "opusd.db"), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	names := benchFill(tb, st, benchProjects, shape)
	svc, err := New(Config{Store: st, Privd: &fakePrivd{}, Reconciler: &fakeKicker{}, Admins: admins,
		ServerSuffix: ".opus.example.com", HTTPPort: 80, HTTPSPort: 443, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	return svc, names
}

// asCaller is the context the interceptor would hand a handler.
func asCaller(uid uint32, admin bool) context.Context {
	return context.WithValue(context.Background(), callerKey{}, caller{uid: uid, admin: admin})
}

// BenchmarkAPIAuthorize is the interceptor's work for a caller who is not
// root: with GroupAdmins as opusd configures it, raw (the user and group
// databases read per call) and as New caches it.
func BenchmarkAPIAuthorize(b *testing.B) {
	st, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "opusd.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for _, tc := range []struct {
		name   string
		admins func() Admins
	}{
		{"groupadmins", func() Admins { return GroupAdmins{Group: "nogroup"} }},
		{"cached", func() Admins { return cacheAdmins(GroupAdmins{Group: "nogroup"}, time.Now) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			svc := &Service{st: st, admins: tc.admins(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			ctx := peerContext(context.Background(), 65534)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := svc.authorize(ctx, opusv1.Opus_GetProject_FullMethodName); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
