package reconcile

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opus-hosting/opus/internal/excerpt"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/django"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Bounds of the log lines quoted in an error (tailLines).
const (
	outputLineMax  = 400
	outputTotalMax = 6000
)

// manageCommandNames are the manage.py words of privd's commands.
var manageCommandNames = map[privdv1.ManageCommand]string{
	privdv1.ManageCommand_MANAGE_COMMAND_CHECK:           "check",
	privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE:         "migrate",
	privdv1.ManageCommand_MANAGE_COMMAND_COLLECTSTATIC:   "collectstatic",
	privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER: "createsuperuser",
}

// tailLines returns the last n lines of text, each cut to a bounded
// length, the whole bounded too: what an owner needs to see the Python
// error (the traceback's last lines), never megabytes.
func tailLines(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > outputLineMax {
			lines[i] = l[:outputLineMax] + "…"
		}
	}
	out := strings.Join(lines, "\n")
	if len(out) > outputTotalMax {
		out = "…" + out[len(out)-outputTotalMax:]
	}
	return out
}

// runManage has privd run commands and turns a failed command into an
// error carrying the tail of its output.
func runManage(ctx context.Context, t *Task, req *privdv1.RunManageRequest) (*privdv1.RunManageResponse, error) {
	req.Project = t.Project.Name
	res, err := t.Privd.RunManage(ctx, req)
	if err != nil {
		return nil, privdErr("RunManage", err)
	}
	if fc := res.GetFailedCommand(); fc != privdv1.ManageCommand_MANAGE_COMMAND_UNSPECIFIED {
		return res, manageError(manageCommandNames[fc], res.GetExitCode(), res.GetOutput())
	}
	return res, nil
}

// manageError says why manage.py COMMAND failed, the Python exception
// first, on the first line (the line a list of operations shows), then the
// traceback lines that lead to it: "manage.py migrate failed:
// ValueError: ...\nTraceback (most recent call last): ...". The exit code
// is said only when it tells more than "failed" (not 1).
func manageError(command string, code int32, output string) error {
	what := "manage.py " + command + " failed"
	switch code {
	case 1:
	case -1:
		what = "manage.py " + command + " was killed"
	default:
		what += fmt.Sprintf(" (exit code %d)", code)
	}
	gist := excerpt.Python(output)
	if gist.Exception == "" {
		if gist.Context == "" {
			return fmt.Errorf("%s without saying why", what)
		}
		return fmt.Errorf("%s; its last lines:\n%s", what, gist.Context)
	}
	return errors.New(what + ": " + gist.String())
}

// stepMigrate checks the project (which imports every URLconf, so a
// SyntaxError in an app's urls.py surfaces here rather than as a 500),
// applies migrations and collects static files; when a superuser is still
// to be made, createsuperuser runs last in the same call. privd runs all
// of a call's commands in one Python process, so a first deploy pays the
// interpreter start and django.setup() once, as a hand-written deploy
// would. createsuperuser comes last so that its failure leaves the
// migrations and static files done: the superuser step reports it (the
// owner sees the step that failed), and since the driver stops at the
// first failing command, a failed migration never creates a superuser.
func stepMigrate(ctx context.Context, t *Task) (string, error) {
	req := &privdv1.RunManageRequest{Commands: []privdv1.ManageCommand{
		privdv1.ManageCommand_MANAGE_COMMAND_CHECK,
		privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE,
		privdv1.ManageCommand_MANAGE_COMMAND_COLLECTSTATIC,
	}}
	su := pendingSuperuser(t)
	if su != nil {
		req.Commands = append(req.Commands, privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER)
		req.SuperuserUsername, req.SuperuserEmail, req.SuperuserPassword = su.Username, su.Email, su.Password
	}
	res, err := runManage(ctx, t, req)
	if err != nil {
		if su != nil && res.GetFailedCommand() == privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER {
			t.superuserErr = err
			return "check, migrate and collectstatic passed; createsuperuser failed (see the superuser step)", nil
		}
		return "", err
	}
	if su == nil {
		return "check, migrate and collectstatic passed", nil
	}
	if err := recordSuperuser(ctx, t, su.Username); err != nil {
		return "", err
	}
	t.superuserMade = true
	return "check, migrate, collectstatic and createsuperuser passed", nil
}

// pendingSuperuser returns the superuser still to be created, or nil:
// none was asked for, or it was made (its password is then forgotten).
func pendingSuperuser(t *Task) *store.Superuser {
	su := t.Project.Spec.Superuser
	if su == nil || su.Password == "" {
		return nil
	}
	return su
}

// recordSuperuser forgets the password of the superuser just created and
// notes it in the status. A status-like change: the generation does not
// move. A crash before this runs leaves the password in the spec, so the
// next run creates the superuser again, which privd's driver treats as
// done when that user exists.
func recordSuperuser(ctx context.Context, t *Task, username string) error {
	return t.Update(ctx, func(p *store.Project) {
		if p.Spec.Superuser != nil && p.Spec.Superuser.Username == username {
			p.Spec.Superuser.Password = ""
		}
		p.Status.Superuser = username
	})
}

// stepDropData drops the tables of removed apps whose owner asked for it
// (Spec.DropAppData). "migrate APP zero" needs the app still installed, so
// this runs before the sources and render steps take it out: the code
// directory and opus.json still have it. Apps dealt with leave
// DropAppData (a status-like change: the generation does not move), so a
// later run never drops the tables of an app added again.
func stepDropData(ctx context.Context, t *Task) (string, error) {
	drop := t.Project.Spec.DropAppData
	if len(drop) == 0 {
		return "no app data to drop", nil
	}
	installed, err := django.InstalledApps(t.Layout.Code)
	if err != nil {
		return "", err
	}
	var done, notes []string
	for _, app := range drop {
		if t.Project.Spec.App(app) != nil {
			// Added back since: its data stays.
			done = append(done, app)
			continue
		}
		if !slices.Contains(installed, app) || !isDir(filepath.Join(t.Layout.Code, app)) {
			done = append(done, app)
			notes = append(notes, app+" is not installed: no tables to drop")
			continue
		}
		res, err := runManage(ctx, t, &privdv1.RunManageRequest{
			Commands:   []privdv1.ManageCommand{privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE},
			MigrateApp: app, MigrateTarget: "zero",
		})
		if err != nil {
			if res != nil && strings.Contains(res.GetOutput(), "does not have migrations") {
				done = append(done, app)
				notes = append(notes, app+" has no migrations: no tables to drop")
				continue
			}
			return "", fmt.Errorf("drop the tables of %s: %w", app, err)
		}
		done = append(done, app)
		notes = append(notes, "dropped the tables of "+app)
	}
	if err := t.Update(ctx, func(p *store.Project) {
		var keep []string
		for _, a := range p.Spec.DropAppData {
			if !slices.Contains(done, a) {
				keep = append(keep, a)
			}
		}
		p.Spec.DropAppData = keep
	}); err != nil {
		return "", err
	}
	return strings.Join(notes, "; "), nil
}

// stepSuperuser reports the superuser. The migrate step normally created
// it in its own Python process; this step says so, or fails with that
// createsuperuser's error. It runs createsuperuser itself only when the
// migrate step did not try (a step list without it, as in tests).
func stepSuperuser(ctx context.Context, t *Task) (string, error) {
	switch su := t.Project.Spec.Superuser; {
	case t.superuserErr != nil:
		return "", t.superuserErr
	case su == nil:
		return "no superuser requested", nil
	case t.superuserMade:
		return fmt.Sprintf("superuser %s created", su.Username), nil
	case su.Password == "":
		return fmt.Sprintf("superuser %s exists", su.Username), nil
	}
	su := t.Project.Spec.Superuser
	_, err := runManage(ctx, t, &privdv1.RunManageRequest{
		Commands:          []privdv1.ManageCommand{privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER},
		SuperuserUsername: su.Username, SuperuserEmail: su.Email, SuperuserPassword: su.Password,
	})
	if err != nil {
		return "", err
	}
	if err := recordSuperuser(ctx, t, su.Username); err != nil {
		return "", err
	}
	return fmt.Sprintf("superuser %s created", su.Username), nil
}
