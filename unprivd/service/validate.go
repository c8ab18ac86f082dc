package service

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/names"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// invalid is an InvalidArgument error naming the request field at fault.
func invalid(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, args...))
}

func validateProject(field, name string) error {
	if err := names.ValidateProject(name); err != nil {
		return invalid(field, "%v", err)
	}
	return nil
}

// validateAppNameLocal is the stand-in for source.ValidateAppName used when
// Config.ValidateAppName is nil: a lowercase Python identifier that is not
// a keyword and does not shadow the project package.
func validateAppNameLocal(name string) error {
	if name == "" {
		return fmt.Errorf("app name is empty")
	}
	if len(name) > 64 {
		return fmt.Errorf("app name %q is longer than 64 characters", name[:64]+"...")
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r == '_' || (i > 0 && r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("app name %q is not a lowercase Python identifier (a-z, 0-9, _, not starting with a digit)", name)
		}
	}
	if names.IsPythonKeyword(name) {
		return fmt.Errorf("app name %q is a Python keyword", name)
	}
	return nil
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// validateDigest checks the form of an upload digest.
func validateDigest(d string) error {
	if !digestRE.MatchString(d) {
		return fmt.Errorf("%q is not a digest of the form sha256:<64 lowercase hex digits> as UploadSource returns", trunc(d))
	}
	return nil
}

// helperRE matches git's "<transport>::<address>" remote helper syntax.
var helperRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*::`)

var scpLikeRE = regexp.MustCompile(`^([A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:[^/].*$|^([A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:/.+$`)

// validateGitURL checks a git URL. It returns (local, err): local is true
// for a repository path on this host, which only an admin may name,
// because opusd would read it with its own rights.
func validateGitURL(raw string) (local bool, err error) {
	switch {
	case raw == "":
		return false, fmt.Errorf("git url is empty")
	case len(raw) > 2048:
		return false, fmt.Errorf("git url is longer than 2048 bytes")
	case strings.HasPrefix(raw, "-"):
		return false, fmt.Errorf("git url %q starts with '-'", trunc(raw))
	case helperRE.MatchString(raw):
		// Said before anything else: "ext::" runs a command, whatever
		// else is wrong with the URL.
		return false, fmt.Errorf("git url %q uses the remote transport helper %q, which is not allowed (it could run commands); use https://, ssh://, git:// or user@host:path",
			trunc(raw), strings.SplitN(raw, "::", 2)[0]+"::")
	}
	for _, r := range raw {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return false, fmt.Errorf("git url %q contains a space or control character", trunc(raw))
		}
	}
	if strings.HasPrefix(raw, "/") {
		return true, nil
	}
	if strings.HasPrefix(raw, "file:") {
		if !strings.HasPrefix(raw, "file:///") {
			return false, fmt.Errorf("git url %q: a file URL must name an absolute path (file:///...)", trunc(raw))
		}
		return true, nil
	}
	if i := strings.Index(raw, "://"); i > 0 {
		u, err := url.Parse(raw)
		if err != nil {
			return false, fmt.Errorf("git url %q: %v", trunc(raw), err)
		}
		switch u.Scheme {
		case "https", "ssh", "git":
		case "http":
			// Refused here, not only by the fetcher, so that a create
			// with such an app fails before anything is made on the host.
			return false, fmt.Errorf("git url %q uses plain http, which anyone on the way could tamper with; use https://", trunc(raw))
		default:
			return false, fmt.Errorf("git url %q: scheme %q is not one of https, ssh, git", trunc(raw), u.Scheme)
		}
		if u.Host == "" {
			return false, fmt.Errorf("git url %q has no host", trunc(raw))
		}
		return false, nil
	}
	if scpLikeRE.MatchString(raw) && !strings.Contains(raw, "::") {
		return false, nil
	}
	return false, fmt.Errorf("git url %q is neither a URL (https://, ssh://, git://), user@host:path, nor an absolute path", trunc(raw))
}

// validateRef checks a git ref: optional; a branch, tag or commit name.
func validateRef(ref string) error {
	if ref == "" {
		return nil
	}
	if len(ref) > 256 || strings.HasPrefix(ref, "-") || strings.Contains(ref, "..") {
		return fmt.Errorf("ref %q is not a branch, tag or commit name", trunc(ref))
	}
	for _, r := range ref {
		if unicode.IsControl(r) || unicode.IsSpace(r) || strings.ContainsRune("~^:?*[\\", r) {
			return fmt.Errorf("ref %q contains %q, which git does not allow in a ref", trunc(ref), r)
		}
	}
	return nil
}

// appSpec validates one requested app of a project owned by projectOwner
// and turns it into the stored form.
func (s *Service) appSpec(c caller, projectOwner uint32, field string, a *opusv1.AppSpec) (store.AppSpec, error) {
	if a == nil {
		return store.AppSpec{}, invalid(field, "app is missing")
	}
	if err := s.validateAppName(a.GetName()); err != nil {
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
		local, err := validateGitURL(k.Git.GetUrl())
		if err != nil {
			return spec, invalid(field+".git.url", "%v", err)
		}
		if local && !c.admin {
			return spec, status.Errorf(codes.PermissionDenied, "%s.git.url: only admins may name a repository on this host (%q); push it somewhere opusd can fetch, or pack the directory with an upload", field, trunc(k.Git.GetUrl()))
		}
		if err := validateRef(k.Git.GetRef()); err != nil {
			return spec, invalid(field+".git.ref", "%v", err)
		}
		spec.Git = &store.GitSource{URL: k.Git.GetUrl(), Ref: k.Git.GetRef()}
	case *opusv1.AppSource_Upload:
		d := k.Upload.GetDigest()
		if err := validateDigest(d); err != nil {
			return spec, invalid(field+".upload.digest", "%v", err)
		}
		uploader, ok := s.uploadOwner(c, projectOwner, d)
		if !ok {
			// The same answer whether nobody or somebody else sent it.
			return spec, invalid(field+".upload.digest", "you have no upload %s on this host; send the archive with UploadSource first (an upload can be used only by whoever sent it)", d)
		}
		origin := k.Upload.GetOrigin()
		if len(origin) > 1024 {
			origin = origin[:1024]
		}
		spec.Upload = &store.UploadSource{Digest: d, Origin: origin, UploaderUID: &uploader}
	default:
		return spec, invalid(field, "source is missing: give a git url or an upload digest")
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
			return invalid("superuser.username", "%q: Django allows letters, digits and @.+-_ only", trunc(u))
		}
	}
	if e := su.GetEmail(); e != "" {
		if len(e) > 254 || strings.Count(e, "@") != 1 || strings.IndexFunc(e, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0 {
			return invalid("superuser.email", "%q is not an email address", trunc(e))
		}
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

func trunc(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
