package reconcile

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opus-hosting/opus/internal/atomicfile"
	"github.com/opus-hosting/opus/internal/names"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/django"
	"github.com/opus-hosting/opus/unprivd/store"
)

// liveChange is what one run changed in a live project's code directory,
// kept until the run ends.
//
// Why keep the previous trees instead of re-materializing the last applied
// revisions on failure: the previous code is already on disk, complete,
// validated and secured; moving it back is a rename, cannot fail on a
// network or an unreachable repository, and leaves the exact bytes the
// daemon was running. The status (store.Status.Apps) is written only when
// a run succeeds, so it always names what is live.
//
// What the run changed is also written to an undo journal in the code
// directory (code/.undo.json) before each change is made, so a run cut
// short by a crash is undone by the next run's recover step: every run
// starts from the last good state, and so a failure always restores to it.
type liveChange struct {
	undo undoJournal
	// applied is, per app of the spec, what this run deployed: written to
	// the status when the run succeeds.
	applied map[string]applied
	// gone are apps this run removed: their status goes when it succeeds.
	gone []string
}

// undoJournal is how to put back what a run changed.
type undoJournal struct {
	// Apps are the app trees the run replaces, adds or removes, in order.
	Apps []undoApp `json:"apps,omitempty"`
	// Rendered is the content of the rendered project files before the
	// run's render (a nil value: the file did not exist); nil when the
	// render step has not run.
	Rendered map[string][]byte `json:"rendered,omitempty"`
}

// undoApp is one app tree a run changes. With Kept, the previous tree is
// (or is about to be) at code/.<Name>.old; without, there was none.
type undoApp struct {
	Name string `json:"name"`
	Kept bool   `json:"kept"`
}

// applied is what a run deployed for one app.
type applied struct {
	url, requested, resolved, origin string
	subject                          string
	by                               uint32
	uploader                         *uint32
	rollbackOf                       int
}

// journalFile is the undo journal's name in the code directory. Hidden, so
// it is never taken for an app, and owned by opus like the rest of the
// code: the project's user cannot write it.
const journalFile = ".undo.json"

func keptPath(code, app string) string { return filepath.Join(code, "."+app+".old") }

// journal records one more change in the undo journal, before it is made.
func (t *Task) journal(fn func(*undoJournal)) error {
	fn(&t.live.undo)
	data, err := json.Marshal(t.live.undo)
	if err != nil {
		return fmt.Errorf("undo journal: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(t.Layout.Code, journalFile), data, 0o640); err != nil {
		return fmt.Errorf("undo journal: %w", err)
	}
	return nil
}

// noteApp journals that app's tree is about to change.
func (t *Task) noteApp(app string, kept bool) error {
	return t.journal(func(j *undoJournal) { j.Apps = append(j.Apps, undoApp{Name: app, Kept: kept}) })
}

// keepAside renames dir to code/.<app>.old, where it stays until the run
// ends. It returns the new path, or "" when there was no dir.
func keepAside(dir string) (string, error) {
	old := keptPath(filepath.Dir(dir), filepath.Base(dir))
	if err := os.RemoveAll(old); err != nil {
		return "", err
	}
	if err := os.Rename(dir, old); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return "", err
	}
	return old, nil
}

// finish drops the kept trees and the journal of a run that succeeded.
func (t *Task) finish() {
	code := t.Layout.Code
	for _, a := range t.live.undo.Apps {
		if a.Kept {
			if err := os.RemoveAll(keptPath(code, a.Name)); err != nil {
				t.Log.Warn("remove replaced app tree", "app", a.Name, "err", err)
			}
		}
	}
	if err := os.Remove(filepath.Join(code, journalFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Log.Warn("remove undo journal", "err", err)
	}
	t.live.undo = undoJournal{}
}

// undo puts back what j records in code: app trees in reverse order, then
// the rendered files. It reports whether anything changed and what could
// not be put back. Entries whose change never happened (the run stopped
// right after journaling it) are left alone.
func undo(code string, j undoJournal) (changed bool, problems []string) {
	for i := len(j.Apps) - 1; i >= 0; i-- {
		a := j.Apps[i]
		if names.ValidateAppName(a.Name) != nil {
			problems = append(problems, fmt.Sprintf("journal names %q, which is not an app", a.Name))
			continue
		}
		dir, old := filepath.Join(code, a.Name), keptPath(code, a.Name)
		if a.Kept && !isDir(old) {
			continue // never moved aside: dir is still the previous tree
		}
		if isDir(dir) {
			if err := os.RemoveAll(dir); err != nil {
				problems = append(problems, fmt.Sprintf("remove new %s: %v", a.Name, err))
				continue
			}
			changed = true
		}
		if a.Kept {
			if err := os.Rename(old, dir); err != nil {
				problems = append(problems, fmt.Sprintf("put back %s: %v", a.Name, err))
				continue
			}
			changed = true
		}
	}
	if j.Rendered != nil {
		c, err := django.Restore(code, j.Rendered)
		if err != nil {
			problems = append(problems, err.Error())
		}
		changed = changed || c
	}
	return changed, problems
}

// stepRecover undoes a run that opusd did not finish (it crashed or was
// killed between changing the code and recording the outcome), using the
// journal that run left: this run then starts from the last good state.
func stepRecover(ctx context.Context, t *Task) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	path := filepath.Join(t.Layout.Code, journalFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "nothing to recover", nil
	}
	if err != nil {
		return "", fmt.Errorf("recover: %w", err)
	}
	var j undoJournal
	if err := json.Unmarshal(data, &j); err != nil {
		// Written atomically, so this is not a torn write: leave it for
		// the host administrator rather than guess.
		return "", fmt.Errorf("recover: undo journal %s is unreadable: %w", path, err)
	}
	changed, problems := undo(t.Layout.Code, j)
	if len(problems) > 0 {
		return "", fmt.Errorf("recover the previous version after an interrupted run: %s", strings.Join(problems, "; "))
	}
	if err := os.Remove(path); err != nil {
		return "", fmt.Errorf("recover: %w", err)
	}
	if !changed {
		return "an interrupted run had changed nothing", nil
	}
	return "put back the previous version an interrupted run had replaced", nil
}

// commitApplied records in p's status what the run deployed: each app's
// requested ref and resolved commit or digest, with a new revision when it
// moved, and forgets the removed apps. It runs in the transaction that
// marks the run successful.
func (t *Task) commitApplied(p *store.Project) {
	if len(t.live.applied) == 0 && len(t.live.gone) == 0 {
		return
	}
	if p.Status.Apps == nil {
		p.Status.Apps = map[string]store.AppStatus{}
	}
	for name, a := range t.live.applied {
		if p.Spec.App(name) == nil {
			continue
		}
		st := p.Status.Apps[name]
		st.RequestedRef = a.requested
		if st.ResolvedCommit != a.resolved {
			st.ResolvedCommit = a.resolved
			st.AddRevision(store.Revision{URL: a.url, RequestedRef: a.requested, Resolved: a.resolved, Subject: a.subject,
				Time: t.Clock.Now(), ByUID: a.by, UploaderUID: a.uploader, Origin: a.origin, RollbackOf: a.rollbackOf}, 0)
		}
		p.Status.Apps[name] = st
	}
	// What the dropped revisions referred to (uploads, git caches) goes
	// at the disk pruner's next pass, which a successful run starts.
	for app, dropped := range p.TrimRevisions(cmp.Or(t.opt.RevisionsKeep, store.DefaultRevisionsKeep)) {
		t.Log.Info("old revisions dropped", "app", app, "revisions", len(dropped), "keep", cmp.Or(t.opt.RevisionsKeep, store.DefaultRevisionsKeep))
	}
	for _, name := range t.live.gone {
		if p.Spec.App(name) == nil {
			delete(p.Status.Apps, name)
		}
	}
}

// restore puts back what a failed run changed in the code directory: the
// app trees it replaced, added or removed and the rendered project files.
// The files get the file policy again and wsgi.py is touched so the
// project's daemon (and only it) runs the previous code. It returns runErr
// with what restore did, or why it could not.
func (t *Task) restore(ctx context.Context, runErr error) error {
	j := t.live.undo
	t.live = liveChange{}
	journal := filepath.Join(t.Layout.Code, journalFile)
	if len(j.Apps) == 0 && j.Rendered == nil {
		return runErr
	}
	if t.Project.Status.ObservedGeneration == 0 {
		// Never deployed: there is no previous version to go back to,
		// and what this run made helps the owner see what went wrong.
		// The kept trees are scratch for the next run's cleanScratch.
		os.Remove(journal)
		return runErr
	}
	ctx = context.WithoutCancel(ctx)
	changed, problems := undo(t.Layout.Code, j)
	if len(problems) == 0 {
		if err := os.Remove(journal); err != nil && !errors.Is(err, fs.ErrNotExist) {
			problems = append(problems, err.Error())
		}
	}
	if !changed && len(problems) == 0 {
		return runErr
	}
	if _, err := t.Privd.SecureTree(ctx, &privdv1.SecureTreeRequest{Project: t.Project.Name}); err != nil {
		problems = append(problems, privdErr("SecureTree", err).Error())
	}
	now := time.Now()
	if err := os.Chtimes(t.Layout.WSGI(), now, now); err != nil && !errors.Is(err, fs.ErrNotExist) {
		problems = append(problems, fmt.Sprintf("restart the project's daemon: %v", err))
	}
	if len(problems) > 0 {
		t.Log.Error("restore after a failed run", "problems", problems)
		return fmt.Errorf("%w\n(restoring the previous version failed: %s)", runErr, strings.Join(problems, "; "))
	}
	// The error stays the run's own: that the change is undone whole is
	// the reconciler's to say (undoFailed), once.
	t.Log.Info("restored the previous version after a failed run")
	return runErr
}
