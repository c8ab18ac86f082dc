package service

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/excerpt"
	"github.com/opus-hosting/opus/internal/gitsrc"
	"github.com/opus-hosting/opus/internal/pack"
	"github.com/opus-hosting/opus/unprivd/store"
)

// rollbackSource returns the source a rollback of app a moves to.
//
// When the app's spec is ahead of what is deployed (an update that failed
// or has not run yet), the rollback goes back to what is deployed: that
// is the version the owner saw working. Otherwise it goes to the revision
// before the current one. A git app is pinned to the revision's commit,
// so a branch that moved since does not carry the rollback elsewhere; an
// upload goes back to its digest, which must still be stored (the upload
// store keeps the archives of those two revisions:
// store.KeptUploadRevisions). The revision's archive stays its uploader's,
// whoever rolls back: it was deployed in this project already.
func (s *Service) rollbackSource(c caller, p *store.Project, a store.AppSpec) (store.AppSpec, error) {
	st := p.Status.Apps[a.Name]
	revs := st.Revisions
	if len(revs) == 0 {
		return a, status.Errorf(codes.FailedPrecondition, "app %q of %q has no deployed revision to roll back to", a.Name, p.Name)
	}
	cur := revs[len(revs)-1]
	var target store.Revision
	if !specIsRevision(a, cur) {
		target = cur
	} else {
		if len(revs) < 2 {
			return a, status.Errorf(codes.FailedPrecondition, "app %q of %q has only one revision (%s); there is nothing before it to roll back to", a.Name, p.Name, excerpt.Short(cur.Resolved))
		}
		target = revs[len(revs)-2]
	}
	out := store.AppSpec{Name: a.Name, ByUID: c.uid}
	switch {
	case target.URL != "":
		local, err := gitsrc.CheckURL(target.URL)
		if err != nil {
			return a, status.Errorf(codes.FailedPrecondition, "the revision's repository is no longer acceptable: %v", err)
		}
		if local && !c.admin {
			return a, status.Errorf(codes.PermissionDenied, "the revision came from a repository on this host (%q), which only admins may name", excerpt.Short(target.URL))
		}
		out.Git = &store.GitSource{URL: target.URL, Ref: target.Resolved}
	case pack.ValidateDigest(target.Resolved) == nil:
		uploader := target.UploaderUID
		if s.uploads == nil || uploader == nil || !s.uploads.Use(*uploader, target.Resolved) {
			return a, status.Errorf(codes.FailedPrecondition, "the upload %s of the previous revision is no longer stored; upload the directory again with apps update", target.Resolved)
		}
		origin := ""
		if a.Upload != nil {
			origin = a.Upload.Origin
		}
		uid := *uploader
		out.Upload = &store.UploadSource{Digest: target.Resolved, Origin: origin, UploaderUID: &uid}
	default:
		return a, status.Errorf(codes.FailedPrecondition, "revision %s of app %q does not say where it came from; update the app to a ref instead", excerpt.Short(target.Resolved), a.Name)
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
