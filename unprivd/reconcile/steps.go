package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// Step is one idempotent piece of a reconcile: running it again after it
// succeeded, or after a crash halfway through it, must be safe. Run returns
// a short note for the operation, or the error that fails the run.
type Step struct {
	Name string
	Run  func(ctx context.Context, t *Task) (string, error)
}

// DeploySteps is the ordered chain toward a project's spec (DESIGN.md):
// user → directories → database (a provisioned PostgreSQL, before
// anything runs manage.py) → recover (undo an interrupted run) → data (drop
// removed apps' tables) → sources → render → secure → backend → migrate →
// superuser → certificate → vhost → reload → health, with snapshot (a
// copy of the database, or a restore of one: snapshot.go) right before
// migrate. sources and render
// come before secure so that everything they write gets the file policy;
// drop data comes before them because it needs removed apps still
// installed. The backend serves before the front routes to it, and starts
// before migrate: its mod_wsgi daemon imports the project (mod_wsgi
// preloads it) while manage.py runs rather than while the first request
// waits; no request reaches it through the front before the vhost step.
func DeploySteps() []Step {
	return []Step{
		{Name: "user", Run: stepUser},
		{Name: "directories", Run: stepDirectories},
		{Name: "database", Run: stepDatabase},
		{Name: "recover", Run: stepRecover},
		{Name: "data", Run: stepDropData},
		{Name: "sources", Run: stepSources},
		{Name: "render", Run: stepRender},
		{Name: "secure", Run: stepSecure},
		{Name: "backend", Run: stepBackend},
		{Name: "snapshot", Run: stepSnapshot},
		{Name: "migrate", Run: stepMigrate},
		{Name: "superuser", Run: stepSuperuser},
		{Name: "certificate", Run: stepCertificate},
		{Name: "vhost", Run: stepVhost},
		{Name: "reload", Run: stepReload},
		{Name: "health", Run: stepHealth},
	}
}

// TeardownSteps is the chain toward "absent", the deploy chain in reverse:
// the vhost goes and the front reloads, the project's backend stops, then
// the tree, the user, a PostgreSQL database Opus provisioned, and opusd's
// own certificate copies (a certificate from the ACME CA is revoked
// first, best effort).
// After the last step the project's record is deleted.
func TeardownSteps() []Step {
	return []Step{
		{Name: "site", Run: stepRemoveSite},
		{Name: "reload", Run: stepTeardownReload},
		{Name: "backend", Run: stepRemoveBackend},
		{Name: "tree", Run: stepRemoveTree},
		{Name: "user", Run: stepDeleteUser},
		{Name: "database", Run: stepDropDatabase},
		{Name: "forget", Run: stepForget},
	}
}

// privdWork says in words what each privd call does for a project: a
// step's error names the work, never the call.
var privdWork = map[string]string{
	"EnsureUser":         "making the project's Linux user",
	"DeleteUser":         "deleting the project's Linux user",
	"SecureTree":         "securing the project's files",
	"RemoveTree":         "removing the project's files",
	"RunManage":          "running manage.py",
	"EnsureBackend":      "starting the project's Apache backend",
	"RemoveBackend":      "stopping the project's Apache backend",
	"InstallSite":        "installing the project's site on the front Apache",
	"RemoveSite":         "removing the project's site from the front Apache",
	"ReloadApache":       "reloading the front Apache",
	"TailLog":            "reading the project's error log",
	"DumpData":           "copying the project's SQLite database",
	"LoadData":           "restoring the project's SQLite database",
	"CertificateRequest": "making a key and certificate request for the project's site",
	"Stats":              "reading privd's call counters",
}

// privdErr turns a privd call's error into text a project owner can act
// on: the work that failed in words, privd's own message, never the call's
// name or grpc-go's "rpc error: code = ..." wrapping. The call's error
// stays wrapped, for status.Code and errors.Is.
func privdErr(call string, err error) error {
	work := privdWork[call]
	if work == "" {
		work = "asking opus-privd"
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", work, err)
	}
	msg := work + ": opus-privd: " + st.Message()
	if st.Code() == codes.Unavailable {
		msg = fmt.Sprintf("%s: the privileged daemon opus-privd is not reachable (%s); the host administrator must start it", work, st.Message())
	}
	return &wordedError{msg: msg, err: err}
}

// wordedError is an error told in words of its own, wrapping the one it
// tells.
type wordedError struct {
	msg string
	err error
}

func (e *wordedError) Error() string { return e.msg }
func (e *wordedError) Unwrap() error { return e.err }

// stepDirectories creates the project's tree as the opus user. Modes are
// set only on directories this call creates: once privd has secured the
// tree, secrets/ and data/ belong to the project user (group opus, 0770),
// where opusd can still create files but not chmod the directory.
func stepDirectories(ctx context.Context, t *Task) (string, error) {
	l := t.Layout
	dirs := []struct {
		path string
		mode fs.FileMode
	}{
		{filepath.Dir(l.Root), 0o751}, // layout.ProjectsDir
		{l.Root, 0o751},
		{l.Code, 0o751},
		{l.Secrets, 0o770},
		{l.Data, 0o770},
		{l.Static, 0o775},
	}
	var made []string
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		fi, err := os.Lstat(d.path)
		if err == nil {
			if !fi.IsDir() {
				// Lstat: a symlink here is refused, never followed.
				return "", fmt.Errorf("%s exists and is not a directory (%s); remove it", d.path, fi.Mode().Type())
			}
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("directories: %w", err)
		}
		if err := os.Mkdir(d.path, d.mode); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("directories: %w", err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return "", fmt.Errorf("directories: %w", err)
		}
		made = append(made, d.path)
	}
	if len(made) == 0 {
		return "directories exist", nil
	}
	return fmt.Sprintf("created %d directories under %s", len(made), l.Root), nil
}

// stepSecure has privd apply the file policy. Entries privd refused (links,
// devices, hard-linked files) do not fail the run: they are left untouched
// and reported in the step's message so the owner can remove them.
func stepSecure(ctx context.Context, t *Task) (string, error) {
	res, err := t.Privd.SecureTree(ctx, &privdv1.SecureTreeRequest{Project: t.Project.Name})
	if err != nil {
		return "", privdErr("SecureTree", err)
	}
	msg := fmt.Sprintf("secured %d entries", res.GetSecured())
	if rs := res.GetRefusals(); len(rs) > 0 {
		const show = 5
		var parts []string
		for i, r := range rs {
			if i == show {
				parts = append(parts, fmt.Sprintf("and %d more", len(rs)-show))
				break
			}
			parts = append(parts, fmt.Sprintf("%s (%s)", r.GetPath(), r.GetReason()))
		}
		msg += fmt.Sprintf("; warning: left %d entries untouched: %s", len(rs), strings.Join(parts, ", "))
		t.Log.Warn("secure: refusals", "count", len(rs))
	}
	return msg, nil
}

func stepRemoveSite(ctx context.Context, t *Task) (string, error) {
	res, err := t.Privd.RemoveSite(ctx, &privdv1.RemoveSiteRequest{Project: t.Project.Name})
	if err != nil {
		return "", privdErr("RemoveSite", err)
	}
	if res.GetRemoved() {
		t.siteRemoved = true
		return "virtual host removed", nil
	}
	return "no virtual host", nil
}

func stepRemoveTree(ctx context.Context, t *Task) (string, error) {
	res, err := t.Privd.RemoveTree(ctx, &privdv1.RemoveTreeRequest{Project: t.Project.Name})
	if err != nil {
		return "", privdErr("RemoveTree", err)
	}
	return fmt.Sprintf("removed %d entries", res.GetRemoved()), nil
}

// stepDeleteUser deletes the project's user. After the reload the
// mod_wsgi daemon takes a moment to exit: it gets a few seconds to do so
// cleanly; privd's DeleteUser then ends whatever still runs as the user
// (processes the tenant's code detached, say) before userdel.
func stepDeleteUser(ctx context.Context, t *Task) (string, error) {
	if n := waitNoProcesses(ctx, t.Project.Status.UID); n > 0 {
		t.Log.Info("project user still runs processes; privd ends them", "processes", n)
	}
	res, err := t.Privd.DeleteUser(ctx, &privdv1.DeleteUserRequest{Project: t.Project.Name})
	if err != nil {
		return "", privdErr("DeleteUser", err)
	}
	if res.GetDeleted() {
		return "user deleted", nil
	}
	return "no user", nil
}
