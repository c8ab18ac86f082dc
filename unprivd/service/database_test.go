package service

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func TestDatabaseFromProto(t *testing.T) {
	pg := func(mod func(*opusv1.Database)) *opusv1.Database {
		db := &opusv1.Database{Engine: "postgresql", Host: "DB.example.com", Port: 5432, Name: "blog", User: "blog_rw", Password: `p"'; DROP`}
		if mod != nil {
			mod(db)
		}
		return db
	}
	for _, tc := range []struct {
		name string
		db   *opusv1.Database
		code codes.Code
		msg  string
	}{
		{"none", nil, codes.OK, ""},
		{"sqlite", &opusv1.Database{Engine: "sqlite"}, codes.OK, ""},
		{"postgresql", pg(nil), codes.OK, ""},
		{"ip host", pg(func(d *opusv1.Database) { d.Host = "127.0.0.1" }), codes.OK, ""},
		{"local socket", pg(func(d *opusv1.Database) { d.Host, d.Port = "", 0 }), codes.OK, ""},
		{"sqlite with parameters", &opusv1.Database{Engine: "sqlite", Name: "x"}, codes.InvalidArgument, "SQLite needs none"},
		{"other engine", &opusv1.Database{Engine: "mysql"}, codes.InvalidArgument, "database.engine"},
		{"no name", pg(func(d *opusv1.Database) { d.Name = "" }), codes.InvalidArgument, "database.name"},
		{"quoted name", pg(func(d *opusv1.Database) { d.Name = `a"; DROP` }), codes.InvalidArgument, "database.name"},
		{"bad user", pg(func(d *opusv1.Database) { d.User = "a b" }), codes.InvalidArgument, "database.user"},
		{"host with newline", pg(func(d *opusv1.Database) { d.Host = "db\nx" }), codes.InvalidArgument, "database.host"},
		{"host with options", pg(func(d *opusv1.Database) { d.Host = "db sslmode=disable" }), codes.InvalidArgument, "database.host"},
		{"port", pg(func(d *opusv1.Database) { d.Port = 70000 }), codes.InvalidArgument, "database.port"},
		{"password nul", pg(func(d *opusv1.Database) { d.Password = "a\x00" }), codes.InvalidArgument, "database.password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := databaseFromProto(tc.db, "blog", &Provisioning{Host: "localhost", Port: 5432})
			if status.Code(err) != tc.code || (err != nil && !mentions(err, tc.msg)) {
				t.Fatalf("err = %v, want %v with %q", err, tc.code, tc.msg)
			}
			if err != nil {
				return
			}
			if tc.db.GetEngine() == "postgresql" {
				if got == nil || got.Name != tc.db.GetName() || got.Password != tc.db.GetPassword() || got.Host != strings.ToLower(tc.db.GetHost()) {
					t.Fatalf("stored %+v", got)
				}
			} else if got != nil {
				t.Fatalf("sqlite stored as %+v", got)
			}
		})
	}
}

func TestProvisionedDatabase(t *testing.T) {
	prov := &Provisioning{Host: "localhost", Port: 5433}
	for _, tc := range []struct {
		name string
		db   *opusv1.Database
		prov *Provisioning
		code codes.Code
		msg  string
	}{
		{"provision", &opusv1.Database{Engine: "postgresql", Provision: true}, prov, codes.OK, ""},
		{"not configured", &opusv1.Database{Engine: "postgresql", Provision: true}, nil, codes.FailedPrecondition, "postgres_admin"},
		{"sqlite", &opusv1.Database{Engine: "sqlite", Provision: true}, prov, codes.InvalidArgument, "SQLite needs none"},
		{"no engine", &opusv1.Database{Provision: true}, prov, codes.InvalidArgument, "SQLite needs none"},
		{"host", &opusv1.Database{Engine: "postgresql", Provision: true, Host: "db"}, prov, codes.InvalidArgument, "database.host"},
		{"port", &opusv1.Database{Engine: "postgresql", Provision: true, Port: 5432}, prov, codes.InvalidArgument, "database.port"},
		{"name", &opusv1.Database{Engine: "postgresql", Provision: true, Name: "x"}, prov, codes.InvalidArgument, "database.name"},
		{"user", &opusv1.Database{Engine: "postgresql", Provision: true, User: "postgres"}, prov, codes.InvalidArgument, "database.user"},
		{"password", &opusv1.Database{Engine: "postgresql", Provision: true, Password: "x"}, prov, codes.InvalidArgument, "database.password"},
		{"parameters and not configured", &opusv1.Database{Engine: "postgresql", Provision: true, Name: "x"}, nil, codes.InvalidArgument, "database.name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := databaseFromProto(tc.db, "blog", tc.prov)
			if status.Code(err) != tc.code || (err != nil && !mentions(err, tc.msg)) {
				t.Fatalf("err = %v, want %v with %q", err, tc.code, tc.msg)
			}
			if err != nil {
				if got != nil {
					t.Fatalf("refused but returned %+v", got)
				}
				return
			}
			if got == nil || !got.Provisioned || got.Name != "opus_blog" || got.User != "opus_blog" || got.Host != "localhost" || got.Port != 5433 || len(got.Password) != 2*provisionedPasswordBytes {
				t.Fatalf("stored %+v", got)
			}
			again, _ := databaseFromProto(tc.db, "blog", tc.prov)
			if again.Password == got.Password {
				t.Fatalf("two provisioned databases got the same password")
			}
		})
	}
}

// TestProvisionRefusedChangesNothing: asking for provisioning on a host
// without postgres_admin is FailedPrecondition and records no project.
func TestProvisionRefusedChangesNothing(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	_, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "pgprov",
		Database: &opusv1.Database{Engine: "postgresql", Provision: true}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "postgres_admin") {
		t.Fatalf("err = %v, want FailedPrecondition naming postgres_admin", err)
	}
	if ps, err := s.client.ListProjects(ctx, &opusv1.ListProjectsRequest{}); err != nil || len(ps.GetProjects()) != 0 {
		t.Fatalf("projects after a refusal: %v %v", ps, err)
	}
	if k := s.kicker.list(); len(k) != 0 {
		t.Fatalf("the reconciler was kicked after a refusal: %v", k)
	}
}

func TestDatabasePasswordNeverReturned(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	_, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "pgsite",
		Database: &opusv1.Database{Engine: "postgresql", Host: "127.0.0.1", Port: 5432, Name: "pgsite", User: "pgsite", Password: "hunter2-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "pgsite"})
	if err != nil {
		t.Fatal(err)
	}
	if db := p.GetDatabase(); db.GetEngine() != "postgresql" || db.GetName() != "pgsite" || db.GetPort() != 5432 || strings.Contains(p.String(), "hunter2") {
		t.Fatalf("database = %v", db)
	}
	if rec, _ := s.st.GetProject(ctx, "pgsite"); rec.Spec.Database == nil || rec.Spec.Database.Password != "hunter2-secret" {
		t.Fatalf("stored database = %+v", rec.Spec.Database)
	}
}
