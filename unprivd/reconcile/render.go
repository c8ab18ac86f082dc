package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opus-hosting/opus/unprivd/django"
	"github.com/opus-hosting/opus/unprivd/source"
)

// djangoConfig is the variable part of the project's settings for t.
func djangoConfig(t *Task) django.Config {
	host := t.ServerName()
	cfg := django.Config{
		Project:      t.Project.Name,
		AllowedHosts: []string{host},
		Admin:        t.Project.Spec.Admin,
		Database:     django.Database{Engine: django.EngineSQLite},
	}
	if t.opt.HTTPPort > 0 {
		cfg.Origins = append(cfg.Origins, fmt.Sprintf("http://%s:%d", host, t.opt.HTTPPort))
	}
	if t.opt.HTTPSPort > 0 {
		cfg.Origins = append(cfg.Origins, fmt.Sprintf("https://%s:%d", host, t.opt.HTTPSPort))
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
	changed, err := django.Render(t.Layout.Code, djangoConfig(t))
	if err != nil {
		return "", err
	}
	msg := "project files unchanged"
	if changed {
		t.codeChanged = true
		msg = "project files rendered"
	}
	_, err = os.Stat(filepath.Join(t.Layout.Secrets, django.SecretsFile))
	switch {
	case err == nil:
		return msg + "; secrets kept", nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("secrets: %w", err)
	}
	key, err := django.NewSecretKey()
	if err != nil {
		return "", err
	}
	if err := django.WriteSecrets(t.Layout.Secrets, django.Secrets{SecretKey: key}); err != nil {
		return "", err
	}
	t.codeChanged = true
	return msg + "; new secret key written", nil
}
