package reconcile

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/django"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Bounds of the manage.py output quoted in an error.
const (
	outputLines    = 30
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
		return res, fmt.Errorf("manage.py %s failed (exit code %d):\n%s", manageCommandNames[fc], res.GetExitCode(), tailLines(res.GetOutput(), outputLines))
	}
	return res, nil
}

// stepMigrate checks the project (which imports every URLconf, so a
// SyntaxError in an app's urls.py surfaces here rather than as a 500),
// applies migrations and collects static files.
func stepMigrate(ctx context.Context, t *Task) (string, error) {
	_, err := runManage(ctx, t, &privdv1.RunManageRequest{Commands: []privdv1.ManageCommand{
		privdv1.ManageCommand_MANAGE_COMMAND_CHECK,
		privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE,
		privdv1.ManageCommand_MANAGE_COMMAND_COLLECTSTATIC,
	}})
	if err != nil {
		return "", err
	}
	return "check, migrate and collectstatic passed", nil
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

// stepSuperuser creates the Django superuser once, then forgets its
// password: the spec keeps it no longer than needed. Clearing it is a
// status-like change, so the generation does not move.
func stepSuperuser(ctx context.Context, t *Task) (string, error) {
	su := t.Project.Spec.Superuser
	if su == nil {
		return "no superuser requested", nil
	}
	if su.Password == "" {
		return fmt.Sprintf("superuser %s exists", su.Username), nil
	}
	_, err := runManage(ctx, t, &privdv1.RunManageRequest{
		Commands:          []privdv1.ManageCommand{privdv1.ManageCommand_MANAGE_COMMAND_CREATESUPERUSER},
		SuperuserUsername: su.Username, SuperuserEmail: su.Email, SuperuserPassword: su.Password,
	})
	if err != nil {
		return "", err
	}
	if err := t.Update(ctx, func(p *store.Project) {
		if p.Spec.Superuser != nil && p.Spec.Superuser.Username == su.Username {
			p.Spec.Superuser.Password = ""
		}
		p.Status.Superuser = su.Username
	}); err != nil {
		return "", err
	}
	return fmt.Sprintf("superuser %s created", su.Username), nil
}
