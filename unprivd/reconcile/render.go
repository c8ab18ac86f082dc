package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/opus-hosting/opus/unprivd/django"
	"github.com/opus-hosting/opus/unprivd/source"
)

// djangoConfig is the variable part of the project's settings for t.
func djangoConfig(t *Task) django.Config {
	set := t.Project.Spec.Settings
	hosts := append([]string{t.ServerName()}, set.Hosts...)
	cfg := django.Config{
		Project:      t.Project.Name,
		AllowedHosts: hosts,
		Admin:        t.Project.Spec.Admin,
		Debug:        set.Debug,
		Env:          set.Env,
		Database:     django.Database{Engine: django.EngineSQLite},
	}
	if db := t.Project.Spec.Database; db != nil && db.Engine == django.EnginePostgreSQL {
		cfg.Database = django.Database{Engine: django.EnginePostgreSQL, Name: db.Name, User: db.User, Host: db.Host, Port: db.Port}
	}
	for _, host := range hosts {
		if t.opt.HTTPPort > 0 {
			cfg.Origins = append(cfg.Origins, fmt.Sprintf("http://%s:%d", host, t.opt.HTTPPort))
		}
		if t.opt.HTTPSPort > 0 {
			cfg.Origins = append(cfg.Origins, fmt.Sprintf("https://%s:%d", host, t.opt.HTTPSPort))
		}
	}
	for _, a := range t.Project.Spec.Apps {
		cfg.Apps = append(cfg.Apps, django.App{Name: a.Name, URLs: source.HasURLs(filepath.Join(t.Layout.Code, a.Name))})
	}
	return cfg
}

// stepRender writes the Django project skeleton and, once, the project's
// secrets. The secret key is made only when no secrets file exists: a
// redeploy never rotates it (that would log every user out and break
// signed data).
func stepRender(ctx context.Context, t *Task) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	// Journal what is rendered now, so a failed or interrupted run can
	// put it back.
	before, err := django.Snapshot(t.Layout.Code)
	if err != nil {
		return "", err
	}
	if err := t.journal(func(j *undoJournal) { j.Rendered = before }); err != nil {
		return "", err
	}
	changed, err := django.Render(t.Layout.Code, djangoConfig(t))
	if err != nil {
		return "", err
	}
	msg := "project files unchanged"
	if changed {
		t.codeChanged = true
		msg = "project files rendered"
	}
	dbPassword := ""
	if db := t.Project.Spec.Database; db != nil {
		dbPassword = db.Password
	}
	cur, err := django.ReadSecrets(t.Layout.Secrets)
	switch {
	case err == nil:
		if cur.DBPassword == dbPassword {
			return msg + "; secrets kept", nil
		}
		cur.DBPassword = dbPassword
		if err := django.WriteSecrets(t.Layout.Secrets, cur); err != nil {
			return "", err
		}
		t.codeChanged = true
		return msg + "; database password written to the secrets", nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("secrets: %w", err)
	}
	key, err := django.NewSecretKey()
	if err != nil {
		return "", err
	}
	if err := django.WriteSecrets(t.Layout.Secrets, django.Secrets{SecretKey: key, DBPassword: dbPassword}); err != nil {
		return "", err
	}
	t.codeChanged = true
	return msg + "; new secret key written", nil
}
