package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/opus-hosting/opus/client"
	"github.com/opus-hosting/opus/internal/datasize"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

func (c *cli) appsRevisionsCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "revisions NAME APP",
		Aliases: []string{"revs", "history"},
		Short:   "List an app's revisions and which one runs",
		Long: `apps revisions lists the revisions of app APP of project NAME, newest first:
each deploy that moved the app to other code. A revision's number (1 for the
app's first) stays the same for as long as it is listed; give it to
'opusctl apps rollback NAME APP --to REVISION' to go back to it. REF is what
was asked for (a rollback's is the ref of the revision it went back to), COMMIT
the git commit or upload digest deployed, and (running) marks the one the app
runs; SUBJECT is a git commit's subject. Below, the project's data snapshots: copies of its database taken before
changes that ran migrations, with the revision APP ran then; 'apps rollback
--with-data' to a revision restores the newest one taken while it ran. With
-o json it prints the app, revisions included.`,
		Example: `  opusctl apps revisions blog news
  opusctl apps rollback blog news --to 2`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeProjects,
		RunE: func(cmd *cobra.Command, args []string) error {
			var snaps []*opusv1.DataSnapshot
			return query(c, cmd, func(ctx context.Context, cl *client.Client) (*opusv1.App, error) {
				p, err := cl.GetProject(ctx, args[0])
				if err != nil {
					return nil, err
				}
				snaps = p.GetDataSnapshots()
				return findApp(p, args[1])
			}, func(a *opusv1.App) error {
				if err := writeAppRevisions(c.stdout, args[0], a); err != nil {
					return err
				}
				return writeDataSnapshots(c.stdout, a.GetName(), snaps)
			})
		},
	}
}

// revisionNumber is revision i of a's: its number, or for an opusd that
// did not number them, its position from 1.
func revisionNumber(a *opusv1.App, i int) int64 {
	if n := a.GetRevisions()[i].GetNumber(); n > 0 {
		return n
	}
	return int64(i + 1)
}

// runningIndex is the index in a's revisions of the one it runs, or -1
// before its first deploy.
func runningIndex(a *opusv1.App) int {
	revs := a.GetRevisions()
	if n := a.GetRunningRevision(); n > 0 {
		for i := range revs {
			if revisionNumber(a, i) == n {
				return i
			}
		}
	}
	// An opusd that does not say: the last one deployed runs.
	if len(revs) > 0 && revs[len(revs)-1].GetResolved() == a.GetResolvedCommit() {
		return len(revs) - 1
	}
	return -1
}

// revisionAsked is what revision i of a asked for: its ref, or for a
// rollback which revision it went back to (and that one's ref).
func revisionAsked(a *opusv1.App, i int) string {
	r := a.GetRevisions()[i]
	of := r.GetRollbackOf()
	if of == 0 {
		if r.GetUrl() == "" && r.GetRequestedRef() == r.GetResolved() {
			// An upload: it asked for the digest COMMIT shows.
			return "-"
		}
		return orDash(shortCommit(r.GetRequestedRef()))
	}
	for j, o := range a.GetRevisions() {
		if revisionNumber(a, j) == of && o.GetRequestedRef() != "" && o.GetRequestedRef() != o.GetResolved() {
			return fmt.Sprintf("%s (rollback to %d)", shortCommit(o.GetRequestedRef()), of)
		}
	}
	return fmt.Sprintf("rollback to %d", of)
}

// revisionSource is where revision i of a came from: its repository, or
// the directory an upload was packed from.
func revisionSource(a *opusv1.App, i int) string {
	r := a.GetRevisions()[i]
	switch {
	case r.GetUrl() != "":
		return r.GetUrl()
	case r.GetOrigin() != "":
		return "upload " + r.GetOrigin()
	case a.GetSource().GetUpload().GetDigest() == r.GetResolved():
		// Recorded before revisions kept their origin: the app's
		// source is this revision's.
		return sourceString(a.GetSource())
	}
	return "-"
}

// askedString is what an app's source asks for, for people.
func askedString(a *opusv1.App) string {
	switch k := a.GetSource().GetKind().(type) {
	case *opusv1.AppSource_Git:
		ref := shortCommit(k.Git.GetRef())
		if k.Git.GetRef() == "" {
			ref = "the default branch"
		}
		return ref + " of " + k.Git.GetUrl()
	case *opusv1.AppSource_Upload:
		return "upload " + orDash(k.Upload.GetOrigin()) + " (" + shortCommit(k.Upload.GetDigest()) + ")"
	}
	return "-"
}

// writeAppTable lists p's apps as they run: each one's running revision,
// then a note for each app whose source asks for something else.
func writeAppTable(w io.Writer, p *opusv1.Project, indent string) error {
	tw := newTable(w)
	writeRow(tw, indent+"NAME", "REVISION", "COMMIT", "REF", "DEPLOYED", "SOURCE", "SUBJECT")
	var notes []string
	deploying := p.GetPhase() == opusv1.Phase_PHASE_PENDING || p.GetPhase() == opusv1.Phase_PHASE_DEPLOYING
	for _, a := range p.GetApps() {
		i := runningIndex(a)
		if i < 0 {
			writeRow(tw, indent+a.GetName(), "-", "-", orDash(shortCommit(a.GetRequestedRef())), "-", sourceString(a.GetSource()), "-")
		} else {
			r := a.GetRevisions()[i]
			writeRow(tw, indent+a.GetName(), strconv.FormatInt(revisionNumber(a, i), 10), shortCommit(r.GetResolved()), revisionAsked(a, i), formatTime(r.GetTime()), revisionSource(a, i), orDash(r.GetSubject()))
		}
		if !a.GetPending() {
			continue
		}
		switch {
		case i < 0 && deploying:
			notes = append(notes, fmt.Sprintf("%s: deploying %s; not running yet", a.GetName(), askedString(a)))
		case i < 0:
			notes = append(notes, fmt.Sprintf("%s: asks for %s, which is not deployed", a.GetName(), askedString(a)))
		case deploying:
			notes = append(notes, fmt.Sprintf("%s: deploying %s; revision %d runs until it is done", a.GetName(), askedString(a), revisionNumber(a, i)))
		default:
			notes = append(notes, fmt.Sprintf("%s: asks for %s, which is not deployed; revision %d runs", a.GetName(), askedString(a), revisionNumber(a, i)))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		if _, err := fmt.Fprintln(w, indent+printable(n)); err != nil {
			return err
		}
	}
	return nil
}

// writeRevisions lists each app's revisions, newest first: what was asked
// for, the commit or digest deployed, when and by whom, and which one runs.
func writeRevisions(w io.Writer, apps []*opusv1.App) error {
	tw := newTable(w)
	any := false
	for _, a := range apps {
		revs := a.GetRevisions()
		if len(revs) == 0 {
			continue
		}
		if !any {
			writeRow(tw, "Revisions:")
			writeRow(tw, "  APP", "#", "REF", "COMMIT", "DEPLOYED", "BY", "SUBJECT")
			any = true
		}
		running := runningIndex(a)
		for i := len(revs) - 1; i >= 0; i-- {
			r := revs[i]
			writeRow(tw, "  "+a.GetName(), strconv.FormatInt(revisionNumber(a, i), 10), revisionAsked(a, i), shortCommit(r.GetResolved())+runningMark(i, running), formatTime(r.GetTime()), userName(r.GetByUid()), orDash(r.GetSubject()))
		}
	}
	if !any {
		return nil
	}
	return tw.Flush()
}

func runningMark(i, running int) string {
	if i == running {
		return " (running)"
	}
	return ""
}

// writeAppRevisions lists one app's revisions, newest first.
func writeAppRevisions(w io.Writer, project string, a *opusv1.App) error {
	revs := a.GetRevisions()
	if len(revs) == 0 {
		_, err := fmt.Fprintf(w, "App %s of %s has no revision yet: it has not been deployed.\n", printable(a.GetName()), printable(project))
		return err
	}
	tw := newTable(w)
	writeRow(tw, "REVISION", "COMMIT", "REF", "DEPLOYED", "BY", "SOURCE", "SUBJECT")
	running := runningIndex(a)
	for i := len(revs) - 1; i >= 0; i-- {
		r := revs[i]
		writeRow(tw, strconv.FormatInt(revisionNumber(a, i), 10), shortCommit(r.GetResolved())+runningMark(i, running), revisionAsked(a, i), formatTime(r.GetTime()), userName(r.GetByUid()), revisionSource(a, i), orDash(r.GetSubject()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if a.GetPending() {
		if _, err := fmt.Fprintf(w, "The app's source asks for %s, which is not running.\n", printable(askedString(a))); err != nil {
			return err
		}
	}
	return nil
}

// writeDataSnapshots lists the project's data snapshots, newest first,
// with the revision app ran when each was taken.
func writeDataSnapshots(w io.Writer, app string, snaps []*opusv1.DataSnapshot) error {
	if len(snaps) == 0 {
		_, err := fmt.Fprintln(w, "\nNo data snapshot is kept: 'apps rollback --with-data' has nothing to restore.")
		return err
	}
	if _, err := fmt.Fprintln(w, "\nData snapshots (restored by 'apps rollback --with-data' to the revision shown):"); err != nil {
		return err
	}
	tw := newTable(w)
	writeRow(tw, "SNAPSHOT", "TAKEN", "SIZE", "REVISION OF "+app, "ENGINE")
	for i := len(snaps) - 1; i >= 0; i-- {
		s := snaps[i]
		rev := "-"
		for _, r := range s.GetRevisions() {
			if r.GetApp() == app {
				rev = strconv.FormatInt(r.GetNumber(), 10)
			}
		}
		writeRow(tw, s.GetId(), formatTime(s.GetTime()), datasize.Text(s.GetSizeBytes()), rev, s.GetEngine())
	}
	return tw.Flush()
}
