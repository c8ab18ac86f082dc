package service

import (
	"fmt"
	"strings"
	"unicode"

	"google.golang.org/grpc/codes"

	"github.com/opus-hosting/opus/internal/excerpt"
	"github.com/opus-hosting/opus/internal/gitsrc"
	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/pack"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/store"
)

// maxOrigin bounds an upload's origin as recorded, in bytes (before the
// "..." of a cut).
const maxOrigin = 1024

func validateProject(field, name string) error {
	if err := names.ValidateProject(name); err != nil {
		return invalid(field, "%v", err)
	}
	return nil
}

// appSpec validates one requested app of a project owned by projectOwner
// and turns it into the stored form.
func (s *Service) appSpec(c caller, projectOwner uint32, field string, a *opusv1.AppSpec) (store.AppSpec, error) {
	if a == nil {
		return store.AppSpec{}, invalid(field, "is missing")
	}
	if err := names.ValidateAppName(a.GetName()); err != nil {
		return store.AppSpec{}, invalid(field+".name", "%v", err)
	}
	src, err := s.source(c, projectOwner, field+".source", a.GetSource())
	if err != nil {
		return store.AppSpec{}, err
	}
	src.Name = a.GetName()
	return src, nil
}

// source validates an app source of a project owned by projectOwner; the
// returned AppSpec has no name.
func (s *Service) source(c caller, projectOwner uint32, field string, src *opusv1.AppSource) (store.AppSpec, error) {
	spec := store.AppSpec{ByUID: c.uid}
	switch k := src.GetKind().(type) {
	case *opusv1.AppSource_Git:
		local, err := gitsrc.CheckURL(k.Git.GetUrl())
		if err != nil {
			return spec, invalid(field+".git.url", "%v", err)
		}
		if local && !c.admin {
			return spec, fieldError(codes.PermissionDenied, field+".git.url", fmt.Sprintf("only admins may name a repository on this host (%q); push it somewhere opusd can fetch, or give the directory itself (opusctl packs and sends it)", excerpt.Short(k.Git.GetUrl())))
		}
		if err := source.CheckSSHAuth(k.Git.GetUrl()); err != nil {
			return spec, invalid(field+".git.url", "%v", err)
		}
		if err := gitsrc.CheckRef(k.Git.GetRef()); err != nil {
			return spec, invalid(field+".git.ref", "%v", err)
		}
		spec.Git = &store.GitSource{URL: k.Git.GetUrl(), Ref: k.Git.GetRef()}
	case *opusv1.AppSource_Upload:
		d := k.Upload.GetDigest()
		if err := pack.ValidateDigest(d); err != nil {
			return spec, invalid(field+".upload.digest", "%v", err)
		}
		uploader, ok := s.uploadOwner(c, projectOwner, d)
		if !ok {
			// The same answer whether nobody or somebody else sent it.
			return spec, invalid(field+".upload.digest", "you have no upload %s on this host; send it first (opusctl sends a local directory itself; an upload can be used only by whoever sent it)", d)
		}
		// The caller's text (a path, a browser's file name), shown to
		// the project's owner and admins on pages and terminals.
		origin := excerpt.Line(k.Upload.GetOrigin(), maxOrigin)
		spec.Upload = &store.UploadSource{Digest: d, Origin: origin, UploaderUID: &uploader}
	default:
		return spec, invalid(field, "is missing: give a git url or an upload digest")
	}
	return spec, nil
}

// validateSuperuser checks the superuser of a CreateProjectRequest.
func validateSuperuser(su *opusv1.Superuser) error {
	if su == nil {
		return nil
	}
	u := su.GetUsername()
	if u == "" || len(u) > 150 {
		return invalid("superuser.username", "must be 1 to 150 characters")
	}
	for _, r := range u {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("@.+-_", r)) {
			return invalid("superuser.username", "%q: Django allows letters, digits and @.+-_ only", excerpt.Short(u))
		}
	}
	// Checked here, before anything is made: createsuperuser would only
	// refuse it after the migrations.
	if err := names.ValidateSuperuserEmail(su.GetEmail()); err != nil {
		return invalid("superuser.email", "%v", err)
	}
	p := su.GetPassword()
	if p == "" {
		return invalid("superuser.password", "is empty; a superuser needs a password")
	}
	if len(p) > 4096 || strings.ContainsRune(p, 0) {
		return invalid("superuser.password", "must be at most 4096 bytes without NUL")
	}
	return nil
}
