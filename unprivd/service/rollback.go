package service

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/excerpt"
	"github.com/opus-hosting/opus/internal/gitsrc"
	"github.com/opus-hosting/opus/internal/pack"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/snapshot"
	"github.com/opus-hosting/opus/unprivd/store"
)

// RollbackApp moves an app back to one of its recorded revisions: the one
// req.To names, or by default the one before the running revision. It
// records an operation of kind ROLLBACK; asking for the revision the app
// already runs and asks for records nothing (Unchanged).
func (s *Service) RollbackApp(ctx context.Context, req *opusv1.RollbackAppRequest) (*opusv1.Operation, error) {
	if err := validateProjectApp(req.GetProject(), req.GetApp()); err != nil {
		return nil, err
	}
	to, err := parseRevisionRef(req.GetTo())
	if err != nil {
		return nil, err
	}
	if req.GetDataSnapshot() != "" && !req.GetWithData() {
		return nil, invalid("data_snapshot", "names the snapshot a rollback with data restores; it needs with_data")
	}
	var snap *store.Snapshot
	var proj *store.Project
	op, err := s.mutate(ctx, opusv1.Opus_RollbackApp_FullMethodName, req.GetProject(), store.OpRollback, func(c caller, p *store.Project) error {
		a := p.Spec.App(req.GetApp())
		if a == nil {
			return status.Errorf(codes.NotFound, "project %q has no app %q", p.Name, req.GetApp())
		}
		src, err := s.rollbackSource(c, p, *a, to)
		if errors.Is(err, errUnchanged) && req.GetWithData() {
			// The code runs that revision already, but its data may
			// have moved on: the restore is the change.
			// The data is that of the revision asked for (it may be an
			// earlier one of the same commit: revision 4 rolled back to
			// 2), else of the running one.
			as := st(p, a.Name)
			i := len(as.Revisions) - 1
			if to != (revisionRef{}) {
				if j, err := findRevision(as, to); err == nil {
					i = j
				}
			}
			src, err = *a, nil
			src.RollbackTo = as.RevisionNumber(i)
		}
		if err != nil {
			return err
		}
		if req.GetWithData() {
			if snap, err = rollbackSnapshot(p, a.Name, src.RollbackTo, req.GetDataSnapshot()); err != nil {
				return err
			}
			p.Spec.RestoreSnapshot = snap.ID
		}
		*a = src
		if req.GetValidateOnly() {
			proj = p
			return errValidateOnly
		}
		return nil
	})
	if proj != nil {
		out := &opusv1.Operation{Project: proj.Name, Kind: opKinds[store.OpRollback], Generation: proj.Generation, OwnerUid: proj.OwnerUID, OwnerName: proj.OwnerName}
		if snap != nil {
			out.DataSnapshot = toDataSnapshot(*snap)
		}
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	if snap != nil {
		op.DataSnapshot = toDataSnapshot(*snap)
	}
	return op, nil
}

// errValidateOnly ends a validate_only rollback's transaction without
// writing anything (a status, so that it passes through as it is).
var errValidateOnly = status.Error(codes.Aborted, "validate only: nothing changed")

func st(p *store.Project, app string) store.AppStatus { return p.Status.Apps[app] }

// rollbackSnapshot is the data snapshot a rollback of app to revision rev
// with data restores (snapshot.ForRollback); confirmed, when set, is the
// one the caller was shown and agreed to lose the data since.
func rollbackSnapshot(p *store.Project, app string, rev int, confirmed string) (*store.Snapshot, error) {
	snap := snapshot.ForRollback(p.Snapshots, app, rev)
	switch {
	case snap == nil:
		return nil, status.Errorf(codes.FailedPrecondition, "no data snapshot of %q was kept from when app %q ran revision %d (snapshots are taken before changes that run migrations, and only the last ones are kept); roll back without --with-data to move the code alone", p.Name, app, rev)
	case confirmed != "" && confirmed != snap.ID:
		return nil, status.Errorf(codes.FailedPrecondition, "the data snapshot to restore is now %s, not %s as confirmed; ask again", snap.ID, confirmed)
	}
	return snap, nil
}

// revisionRef is what a rollback names as its target: a revision number,
// a prefix of a commit or digest, or (zero) the default.
type revisionRef struct {
	number int
	// prefix is lowercase hex: the start of a commit, or of the hex part
	// of a "sha256:" digest.
	prefix string
}

// minRevisionPrefix is the shortest commit or digest prefix taken (git's
// own default abbreviation); shorter digit strings are revision numbers.
const minRevisionPrefix = 7

// revisionRefHelp says what a rollback's target may be.
const revisionRefHelp = "give a revision number as the app's revisions list them (1 is its first), or at least 7 hex digits of the revision's commit or upload digest"

// parseRevisionRef reads a rollback's target: "" (the default), a revision
// number (digits, fewer than minRevisionPrefix), or a commit or digest
// prefix of minRevisionPrefix to 64 hex digits, "sha256:" optional.
func parseRevisionRef(s string) (revisionRef, error) {
	if s == "" {
		return revisionRef{}, nil
	}
	if len(s) < minRevisionPrefix && allIn(s, "0123456789") {
		n, _ := strconv.Atoi(s)
		if n == 0 {
			return revisionRef{}, invalid("to", "revisions are numbered from 1; %s", revisionRefHelp)
		}
		return revisionRef{number: n}, nil
	}
	hex := strings.ToLower(strings.TrimPrefix(s, "sha256:"))
	if len(hex) >= minRevisionPrefix && len(hex) <= 64 && allIn(hex, "0123456789abcdef") {
		return revisionRef{prefix: hex}, nil
	}
	return revisionRef{}, invalid("to", "%q names no revision; %s", excerpt.Short(s), revisionRefHelp)
}

func allIn(s, set string) bool {
	for _, r := range s {
		if !strings.ContainsRune(set, r) {
			return false
		}
	}
	return s != ""
}

// findRevision returns the index in st.Revisions of the revision ref
// names. A prefix may match several revisions of the same commit or
// digest (a rollback records its target's commit again): the oldest is
// taken, the one that first deployed it. A prefix of several different
// commits or digests is ambiguous. Errors say which revisions there are.
func findRevision(st store.AppStatus, ref revisionRef) (int, error) {
	revs := st.Revisions
	if ref.number > 0 {
		for i := range revs {
			if st.RevisionNumber(i) == ref.number {
				return i, nil
			}
		}
		return 0, fmt.Errorf("there is no revision %d; %s", ref.number, revisionRange(st))
	}
	found, matched := -1, map[string]bool{}
	var candidates []string
	for i, r := range revs {
		if !strings.HasPrefix(strings.TrimPrefix(r.Resolved, "sha256:"), ref.prefix) {
			continue
		}
		if found < 0 {
			found = i
		}
		if !matched[r.Resolved] {
			matched[r.Resolved] = true
			candidates = append(candidates, fmt.Sprintf("%d (%s)", st.RevisionNumber(i), excerpt.Short(r.Resolved)))
		}
	}
	switch {
	case found < 0:
		return 0, fmt.Errorf("no revision's commit or digest starts with %s; %s", ref.prefix, revisionRange(st))
	case len(matched) > 1:
		return 0, fmt.Errorf("%s is the start of several revisions' commits or digests: %s; give more digits or the revision number", ref.prefix, strings.Join(candidates, ", "))
	}
	return found, nil
}

// revisionRange says which revision numbers st has.
func revisionRange(st store.AppStatus) string {
	switch n := len(st.Revisions); n {
	case 0:
		return "the app has no deployed revision yet"
	case 1:
		return fmt.Sprintf("the app's only revision is %d", st.RevisionNumber(0))
	default:
		return fmt.Sprintf("the app's revisions are %d to %d", st.RevisionNumber(0), st.RevisionNumber(n-1))
	}
}

// rollbackSource returns the source a rollback of app a to the revision
// to names moves to.
//
// Without a target: when the app's spec is ahead of what is deployed (an
// update that failed or has not run yet), the rollback goes back to what
// is deployed: that is the version the owner saw working. Otherwise it
// goes to the revision before the current one. A git app is pinned to the
// revision's commit, so a branch that moved since does not carry the
// rollback elsewhere; an upload goes back to its digest, which must still
// be stored (the upload store keeps the archives of every listed
// revision: store.Project.UploadsInUse). The revision's archive stays its
// uploader's, whoever rolls back: it was deployed in this project already.
//
// Asking for the revision the app runs, when its spec asks for that too
// and the project serves its spec, is errUnchanged.
func (s *Service) rollbackSource(c caller, p *store.Project, a store.AppSpec, to revisionRef) (store.AppSpec, error) {
	st := p.Status.Apps[a.Name]
	revs := st.Revisions
	if len(revs) == 0 {
		return a, status.Errorf(codes.FailedPrecondition, "app %q of %q has no deployed revision to roll back to", a.Name, p.Name)
	}
	last := len(revs) - 1
	cur := revs[last]
	var i int
	switch {
	case to != (revisionRef{}):
		var err error
		if i, err = findRevision(st, to); err != nil {
			return a, invalid("to", "app %q of %q: %v", a.Name, p.Name, err)
		}
	case !specIsRevision(a, cur):
		i = last
	case len(revs) < 2:
		return a, status.Errorf(codes.FailedPrecondition, "app %q of %q has only one revision (%s); there is nothing before it to roll back to", a.Name, p.Name, excerpt.Short(cur.Resolved))
	default:
		i = last - 1
	}
	target := revs[i]
	if target.URL == cur.URL && target.Resolved == cur.Resolved && specIsRevision(a, cur) && deployed(p) {
		return a, errUnchanged
	}
	out := store.AppSpec{Name: a.Name, ByUID: c.uid, RollbackTo: st.RevisionNumber(i)}
	switch {
	case target.URL != "":
		local, err := gitsrc.CheckURL(target.URL)
		if err != nil {
			return a, status.Errorf(codes.FailedPrecondition, "the repository of revision %d is no longer acceptable: %v", out.RollbackTo, err)
		}
		if local && !c.admin {
			return a, status.Errorf(codes.PermissionDenied, "revision %d came from a repository on this host (%q), which only admins may name", out.RollbackTo, excerpt.Short(target.URL))
		}
		out.Git = &store.GitSource{URL: target.URL, Ref: target.Resolved}
	case pack.ValidateDigest(target.Resolved) == nil:
		uploader := target.UploaderUID
		if s.uploads == nil || uploader == nil || !s.uploads.Use(*uploader, target.Resolved) {
			return a, status.Errorf(codes.FailedPrecondition, "the upload %s of revision %d is no longer stored; upload the directory again with apps update", target.Resolved, out.RollbackTo)
		}
		origin := target.Origin
		if origin == "" && a.Upload != nil {
			origin = a.Upload.Origin
		}
		uid := *uploader
		out.Upload = &store.UploadSource{Digest: target.Resolved, Origin: origin, UploaderUID: &uid}
	default:
		return a, status.Errorf(codes.FailedPrecondition, "revision %d (%s) of app %q does not say where it came from; update the app to a ref instead", out.RollbackTo, excerpt.Short(target.Resolved), a.Name)
	}
	return out, nil
}

// specIsRevision reports whether app's spec asks for what rev deployed.
func specIsRevision(a store.AppSpec, rev store.Revision) bool {
	switch {
	case a.Git != nil:
		return a.Git.URL == rev.URL && (a.Git.Ref == rev.RequestedRef || a.Git.Ref == rev.Resolved)
	case a.Upload != nil:
		return rev.URL == "" && a.Upload.Digest == rev.Resolved
	}
	return false
}
