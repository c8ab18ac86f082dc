package reconcile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/pack"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/store"
)

// stepSources materializes every app of the spec into code/<app>. Each app
// is built in a hidden sibling (code/.<app>.new), checked with
// source.ValidateApp, and swapped in only when it differs from what is
// deployed, so a bad source never replaces a good app and an unchanged one
// is not rewritten (mod_wsgi and Python see the same files). Apps no
// longer in the spec leave code/. Replaced and removed trees are kept
// aside (code/.<app>.old) until the run ends, so a failed run can put
// them back (restore.go); what was deployed is recorded in the status
// only when the run succeeds.
func stepSources(ctx context.Context, t *Task) (string, error) {
	code := t.Layout.Code
	if err := cleanScratch(code); err != nil {
		return "", err
	}
	var notes []string
	for _, app := range t.Project.Spec.Apps {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		note, err := materialize(ctx, t, app)
		if err != nil {
			return "", err
		}
		notes = append(notes, note)
	}
	removed, err := removeStaleApps(ctx, t)
	if err != nil {
		return "", err
	}
	notes = append(notes, removed...)
	if len(notes) == 0 {
		return "no apps", nil
	}
	return strings.Join(notes, "; "), nil
}

// cleanScratch removes what an interrupted earlier run left in the code
// directory: hidden build, swap and temporary entries. Nothing else of
// this project runs while a step does, so none is in use.
func cleanScratch(code string) error {
	ents, err := os.ReadDir(code)
	if err != nil {
		return fmt.Errorf("sources: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			if err := os.RemoveAll(filepath.Join(code, e.Name())); err != nil {
				return fmt.Errorf("sources: remove leftover %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// materialize brings one app to its spec and returns a note for the step.
func materialize(ctx context.Context, t *Task, app store.AppSpec) (string, error) {
	dir := filepath.Join(t.Layout.Code, app.Name)
	staged := filepath.Join(t.Layout.Code, "."+app.Name+".new")
	prev := t.Project.Status.Apps[app.Name]
	exists := isDir(dir)

	var resolved, subject string
	switch {
	case app.Upload != nil:
		resolved = app.Upload.Digest
		if exists && resolved == prev.ResolvedCommit {
			t.apply(app, resolved, subject)
			return fmt.Sprintf("%s unchanged (%s)", app.Name, short(resolved)), nil
		}
		if t.opt.Uploads == nil {
			return "", fmt.Errorf("app %s: opusd has no upload store configured", app.Name)
		}
		if app.Upload.UploaderUID == nil {
			// Adopted at start (service.AdoptLegacyUploads); only a
			// record that start-up could not adopt is left without.
			return "", fmt.Errorf("app %s: its upload %s was recorded before uploads had owners and is not stored any more; upload the directory again", app.Name, resolved)
		}
		if err := t.opt.Uploads.Extract(ctx, *app.Upload.UploaderUID, resolved, staged); err != nil {
			return "", fmt.Errorf("app %s: %w", app.Name, err)
		}
	case app.Git != nil:
		if t.opt.Git == nil {
			return "", fmt.Errorf("app %s: opusd has no git fetcher configured", app.Name)
		}
		// Local paths were allowed (for admins only) when the spec was
		// accepted; the reconciler does not second-guess that decision.
		commit, err := t.opt.Git.Fetch(ctx, app.Git.URL, app.Git.Ref, true, staged)
		if err != nil {
			os.RemoveAll(staged)
			return "", fmt.Errorf("app %s: %w", app.Name, err)
		}
		resolved, subject = commit.Hash, commit.Subject
		if exists && resolved == prev.ResolvedCommit {
			if err := os.RemoveAll(staged); err != nil {
				return "", fmt.Errorf("app %s: %w", app.Name, err)
			}
			t.apply(app, resolved, subject)
			return fmt.Sprintf("%s unchanged at %s", app.Name, short(resolved)), nil
		}
	default:
		return "", fmt.Errorf("app %s has no source", app.Name)
	}
	if err := source.ValidateApp(staged, app.Name); err != nil {
		os.RemoveAll(staged)
		return "", err
	}
	if err := t.swapIn(app.Name, staged, dir); err != nil {
		return "", fmt.Errorf("app %s: %w", app.Name, err)
	}
	t.codeChanged = true
	t.appsChanged = true
	t.apply(app, resolved, subject)
	if prev.ResolvedCommit == "" {
		return fmt.Sprintf("%s at %s", app.Name, short(resolved)), nil
	}
	return fmt.Sprintf("%s %s → %s", app.Name, short(prev.ResolvedCommit), short(resolved)), nil
}

// apply notes what the run deployed for app (subject: its git commit's),
// for the status on success.
func (t *Task) apply(app store.AppSpec, resolved, subject string) {
	if t.live.applied == nil {
		t.live.applied = map[string]applied{}
	}
	a := applied{requested: app.RequestedRef(), resolved: resolved, subject: subject, by: app.ByUID, rollbackOf: app.RollbackTo}
	switch {
	case app.Git != nil:
		a.url = app.Git.URL
	case app.Upload != nil:
		a.uploader, a.origin = app.Upload.UploaderUID, app.Upload.Origin
	}
	t.live.applied[app.Name] = a
}

// swapIn puts staged in place of dir. The previous tree is renamed aside
// first, so dir always holds a complete tree, and kept until the run ends
// (see liveChange): a failed run puts it back. The change is journaled
// before it is made.
func (t *Task) swapIn(app, staged, dir string) error {
	if err := t.noteApp(app, isDir(dir)); err != nil {
		return err
	}
	old, err := keepAside(dir)
	if err != nil {
		return err
	}
	if err := os.Rename(staged, dir); err != nil {
		if old != "" {
			os.Rename(old, dir)
		}
		return err
	}
	return nil
}

// removeStaleApps removes code directories of apps that left the spec,
// and their status. Only directories named like an app are candidates:
// the rendered project package and files stay.
func removeStaleApps(ctx context.Context, t *Task) ([]string, error) {
	want := map[string]bool{}
	for _, a := range t.Project.Spec.Apps {
		want[a.Name] = true
	}
	ents, err := os.ReadDir(t.Layout.Code)
	if err != nil {
		return nil, fmt.Errorf("sources: %w", err)
	}
	var gone []string
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() || want[n] || n == layout.PackageName || names.ValidateAppName(n) != nil {
			continue
		}
		// Kept aside until the run succeeds: a failed run puts it back.
		if err := t.noteApp(n, true); err != nil {
			return nil, err
		}
		if _, err := keepAside(filepath.Join(t.Layout.Code, n)); err != nil {
			return nil, fmt.Errorf("sources: remove app %s: %w", n, err)
		}
		gone = append(gone, n)
	}
	for n := range t.Project.Status.Apps {
		if !want[n] {
			t.live.gone = append(t.live.gone, n)
		}
	}
	if len(gone) == 0 {
		return nil, nil
	}
	t.codeChanged = true
	return []string{"removed " + strings.Join(gone, ", ")}, nil
}

func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// short abbreviates a commit or digest for step messages.
func short(s string) string {
	s = strings.TrimPrefix(s, pack.DigestPrefix)
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
