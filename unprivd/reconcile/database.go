package reconcile

import (
	"context"
	"errors"

	"github.com/opus-hosting/opus/unprivd/store"
)

// Provisioner creates and drops the PostgreSQL role and database Opus
// provisions for a project (implemented by *postgres.Admin). Both calls are
// idempotent and return a short note of what they did.
type Provisioner interface {
	// Ensure makes sure role exists with password and owns database db.
	Ensure(ctx context.Context, project, role, db, password string) (string, error)
	// Drop removes db and role when Opus made them; missing is fine.
	Drop(ctx context.Context, role, db string) (string, error)
}

// errNoProvisioner explains a provisioned project on a host whose opusd
// lost its admin connection (the key was removed from the configuration
// after the project was made).
var errNoProvisioner = errors.New("this project's PostgreSQL database is provisioned by Opus, but opusd has no admin connection; the host administrator must set postgres_admin in opus.conf and restart opusd")

// stepDatabase makes sure a provisioned project's role and database exist
// with the password in its secrets. It comes before anything that runs
// manage.py (data, migrate), which needs them.
func stepDatabase(ctx context.Context, t *Task) (string, error) {
	return withProvisioned(t, "nothing to provision", func(pg Provisioner, db *store.Database) (string, error) {
		return pg.Ensure(ctx, t.Project.Name, db.User, db.Name, db.Password)
	})
}

// stepDropDatabase drops a provisioned project's database and role on
// teardown, after the project's daemon is gone. A database given by its
// connection parameters is the owner's and is never touched.
func stepDropDatabase(ctx context.Context, t *Task) (string, error) {
	return withProvisioned(t, "no database of Opus's to drop", func(pg Provisioner, db *store.Database) (string, error) {
		return pg.Drop(ctx, db.User, db.Name)
	})
}

// withProvisioned runs f on the project's database when Opus provisioned
// it, with the admin connection; otherwise it does nothing and says none.
func withProvisioned(t *Task, none string, f func(Provisioner, *store.Database) (string, error)) (string, error) {
	db := t.Project.Spec.Database
	if db == nil || !db.Provisioned {
		return none, nil
	}
	if t.opt.Postgres == nil {
		return "", errNoProvisioner
	}
	return f(t.opt.Postgres, db)
}
