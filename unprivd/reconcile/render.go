package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/opus-hosting/opus/unprivd/django"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/store"
	"github.com/opus-hosting/opus/unprivd/tenantdir"
	"golang.org/x/sys/unix"
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

// stepRender writes the Django project skeleton and the project's secrets
// file.
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
	note, err := writeSecrets(ctx, t)
	if err != nil {
		return "", err
	}
	return msg + "; " + note, nil
}

// Bounds of the one read opusd makes in a project's secrets directory:
// taking over the secret key of a project made before the store kept it.
const (
	importMaxBytes = 4 << 10
	importTimeout  = 5 * time.Second
)

// secretsMode is the secrets file's mode until privd secures it.
const secretsMode = 0o640

// writeSecrets writes the project's secrets file from what the store says:
// the secret key kept in the project's record (made once, never rotated)
// and the database password of its spec. The secrets directory belongs to
// the project's user, whose code may have put anything in place of the
// file (a link to another project's secrets, a FIFO, a link to
// /dev/zero), so the file is never read: it is replaced, every run, by a
// new one renamed over whatever is there (package tenantdir). Whether the
// content changed, which restarts the project's daemon, is what the store
// says was written last.
func writeSecrets(ctx context.Context, t *Task) (string, error) {
	dir, err := tenantdir.Open(t.Layout.Secrets)
	if err != nil {
		return "", fmt.Errorf("secrets: %w", err)
	}
	defer dir.Close()
	var notes []string
	if t.Project.Secrets == nil || t.Project.Secrets.SecretKey == "" {
		key, note, err := firstSecretKey(ctx, t, dir)
		if err != nil {
			return "", err
		}
		// Kept before it is written to the project: after a crash in
		// between, the next run writes this key, never another.
		if err := t.Update(ctx, func(p *store.Project) { p.Secrets = &store.Secrets{SecretKey: key} }); err != nil {
			return "", err
		}
		notes = append(notes, note)
	}
	dbPassword := ""
	if db := t.Project.Spec.Database; db != nil {
		dbPassword = db.Password
	}
	data, err := django.SecretsJSON(django.Secrets{SecretKey: t.Project.Secrets.SecretKey, DBPassword: dbPassword})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	written := hex.EncodeToString(sum[:])
	if written == t.Project.Secrets.Written && secretsInPlace(dir, t, len(data)) {
		// Nothing to write: rewriting would only make the file opus's
		// (unreadable to the project) until the secure step, and a
		// daemon starting meanwhile would fail.
		return strings.Join(append(notes, "secrets unchanged"), "; "), nil
	}
	if err := dir.WriteFile(django.SecretsFile, data, secretsMode); err != nil {
		return "", fmt.Errorf("secrets: %w", err)
	}
	if written == t.Project.Secrets.Written {
		return strings.Join(append(notes, "secrets written, unchanged"), "; "), nil
	}
	t.codeChanged = true
	if err := t.Update(ctx, func(p *store.Project) {
		if p.Secrets != nil {
			p.Secrets.Written = written
		}
	}); err != nil {
		return "", err
	}
	return strings.Join(append(notes, "secrets written, changed"), "; "), nil
}

// secretsInPlace reports whether the secrets entry still looks like what
// the last run wrote and the secure step gave the project: a regular file
// of size bytes, one link, the project's, mode secretsMode. Its content is
// not read: whatever a tenant changed in its own secrets concerns only
// itself, and anything else it put there (a link, a FIFO) is rewritten.
func secretsInPlace(dir *tenantdir.Dir, t *Task, size int) bool {
	st, err := dir.Lstat(django.SecretsFile)
	return err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1 && st.Size == int64(size) &&
		st.Uid == t.Project.Status.UID && t.Project.Status.UID != 0 && st.Mode&0o7777 == uint32(secretsMode)
}

// firstSecretKey is the secret key of a project the store keeps none for:
// a new project's is new; a project made before opusd kept the key has it
// only in its secrets file, which is read once, safely (beneath the held
// directory, no link, regular file with one link, bounded in size and
// time, never blocking). A file that cannot be taken over that way, for
// whatever reason its tenant may have made, gives a new key, and says so.
func firstSecretKey(ctx context.Context, t *Task, dir *tenantdir.Dir) (key, note string, err error) {
	rctx, cancel := context.WithTimeout(ctx, importTimeout)
	defer cancel()
	data, err := dir.ReadFile(rctx, django.SecretsFile, importMaxBytes)
	if err == nil {
		var s django.Secrets
		if s, err = django.ParseSecrets(data); err == nil {
			t.Log.Info("secrets: took over the secret key of the existing secrets file")
			return s.SecretKey, "took over the secret key of the existing secrets file", nil
		}
	}
	if cerr := ctx.Err(); cerr != nil {
		return "", "", cerr
	}
	key, kerr := django.NewSecretKey()
	if kerr != nil {
		return "", "", kerr
	}
	if errors.Is(err, fs.ErrNotExist) {
		return key, "new secret key", nil
	}
	t.Log.Warn("secrets: the existing secrets file was not taken over; made a new secret key", "err", err)
	return key, fmt.Sprintf("warning: the existing secrets file was not taken over (%v); made a new secret key, so signed-in users must sign in again", err), nil
}
