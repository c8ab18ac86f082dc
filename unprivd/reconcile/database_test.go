package reconcile

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/unprivd/store"
)

// fakeProvisioner records the calls the database steps make.
type fakeProvisioner struct {
	calls []string
	err   error
}

func (f *fakeProvisioner) Ensure(_ context.Context, project, role, db, password string) (string, error) {
	f.calls = append(f.calls, "ensure "+project+" "+role+" "+db+" "+password)
	return "ensured", f.err
}

func (f *fakeProvisioner) Drop(_ context.Context, role, db string) (string, error) {
	f.calls = append(f.calls, "drop "+role+" "+db)
	return "dropped", f.err
}

func TestDatabaseSteps(t *testing.T) {
	provisioned := &store.Database{Engine: "postgresql", Host: "localhost", Name: "opus_blog", User: "opus_blog", Password: "pw0123456789abcdef", Provisioned: true}
	given := &store.Database{Engine: "postgresql", Host: "db.example.com", Name: "blog", User: "blog", Password: "secret"}
	boom := errors.New("connection refused")
	for _, tc := range []struct {
		name      string
		db        *store.Database
		noClient  bool
		fail      error
		step      func(context.Context, *Task) (string, error)
		wantCalls []string
		wantErr   string
	}{
		{name: "sqlite deploy", step: stepDatabase},
		{name: "sqlite teardown", step: stepDropDatabase},
		{name: "given deploy", db: given, step: stepDatabase},
		{name: "given teardown never drops", db: given, step: stepDropDatabase},
		{name: "given without client", db: given, noClient: true, step: stepDropDatabase},
		{name: "provisioned deploy", db: provisioned, step: stepDatabase,
			wantCalls: []string{"ensure blog opus_blog opus_blog pw0123456789abcdef"}},
		{name: "provisioned teardown", db: provisioned, step: stepDropDatabase,
			wantCalls: []string{"drop opus_blog opus_blog"}},
		{name: "provisioned deploy fails", db: provisioned, fail: boom, step: stepDatabase,
			wantCalls: []string{"ensure blog opus_blog opus_blog pw0123456789abcdef"}, wantErr: "connection refused"},
		{name: "provisioned teardown fails", db: provisioned, fail: boom, step: stepDropDatabase,
			wantCalls: []string{"drop opus_blog opus_blog"}, wantErr: "connection refused"},
		{name: "provisioned deploy without client", db: provisioned, noClient: true, step: stepDatabase, wantErr: "postgres_admin"},
		{name: "provisioned teardown without client", db: provisioned, noClient: true, step: stepDropDatabase, wantErr: "postgres_admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeProvisioner{err: tc.fail}
			opt := &Options{Postgres: fake}
			if tc.noClient {
				opt.Postgres = nil
			}
			task := &Task{Project: &store.Project{Name: "blog", Spec: store.Spec{Database: tc.db}}, opt: opt}
			msg, err := tc.step(context.Background(), task)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
			} else if err != nil || msg == "" {
				t.Fatalf("= %q, %v", msg, err)
			}
			if !slices.Equal(fake.calls, tc.wantCalls) {
				t.Fatalf("calls = %q, want %q", fake.calls, tc.wantCalls)
			}
		})
	}
}

// TestDatabaseStepOrder: the database exists before anything runs
// manage.py, and is dropped only once the project's daemon is gone.
func TestDatabaseStepOrder(t *testing.T) {
	index := func(steps []Step, name string) int {
		return slices.IndexFunc(steps, func(s Step) bool { return s.Name == name })
	}
	d := DeploySteps()
	db := index(d, "database")
	for _, later := range []string{"data", "migrate"} {
		if db < 0 || index(d, later) < db {
			t.Errorf("deploy: database (%d) must come before %s (%d)", db, later, index(d, later))
		}
	}
	td := TeardownSteps()
	drop := index(td, "database")
	for _, earlier := range []string{"reload", "user"} {
		if drop < 0 || index(td, earlier) > drop {
			t.Errorf("teardown: database (%d) must come after %s (%d)", drop, earlier, index(td, earlier))
		}
	}
	if drop > index(td, "forget") {
		t.Errorf("teardown: database must come before forget")
	}
}
