package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/opus-hosting/opus/internal/pack"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Uploads is the store of uploaded app archives (implemented by
// unprivd/source.Store). Every upload belongs to its uploader: each way to
// an archive names the uploader's uid with the digest.
type Uploads interface {
	// Put stores the archive read from r as uid's upload and returns its
	// digest ("sha256:<hex>") and size. An archive that would take uid
	// past the upload quota is refused with an error that has a
	// QuotaExceeded method (quotaExceeded).
	Put(ctx context.Context, uid uint32, r io.Reader) (digest string, size int64, err error)
	// Use reports whether uid has an upload of digest and, if so, keeps it
	// from being pruned for the grace period, so that the spec about to
	// name it finds it when the reconciler needs it.
	Use(uid uint32, digest string) bool
	// Uploaders returns the uids that have an upload of digest.
	Uploaders(digest string) []uint32
	// Prune removes the uploads of uids (everyone's when none is given)
	// that keep says nothing needs and that are older than the grace
	// period, and returns how many files and bytes it removed.
	Prune(ctx context.Context, keep func(uid uint32, digest string) bool, uids ...uint32) (files int, bytes int64, err error)
}

// quotaExceeded is the behaviour of the error Uploads.Put returns for an
// archive that would take its uploader past the upload quota
// (source.QuotaError; its message says the usage and the quota).
type quotaExceeded interface {
	error
	QuotaExceeded() bool
}

// uploadOwner decides whose upload of digest caller c names for a project
// owned by projectOwner, claiming it (Uploads.Use): the caller's own;
// else, for an admin, the project owner's, or else any uploader's. A plain
// user may name only their own uploads. false means there is none c may
// use, and is the same answer whether nobody or only somebody else sent
// that archive: knowing a digest reveals nothing and reaches nothing.
func (s *Service) uploadOwner(c caller, projectOwner uint32, digest string) (uint32, bool) {
	if s.uploads == nil {
		return 0, false
	}
	if s.uploads.Use(c.uid, digest) {
		return c.uid, true
	}
	if !c.admin {
		return 0, false
	}
	if projectOwner != c.uid && s.uploads.Use(projectOwner, digest) {
		return projectOwner, true
	}
	for _, uid := range s.uploads.Uploaders(digest) {
		if s.uploads.Use(uid, digest) {
			return uid, true
		}
	}
	return 0, false
}

// PruneUploads removes the uploads of uids (everyone's when none is given)
// that no project needs (store.Tx.UploadsInUse: named by a spec or by one
// of an app's kept revisions) once they are past the upload store's grace
// period.
func (s *Service) PruneUploads(ctx context.Context, uids ...uint32) error {
	if s.uploads == nil {
		return nil
	}
	var inUse map[store.UploadRef]bool
	err := s.st.View(ctx, func(tx *store.Tx) error {
		var err error
		inUse, err = tx.UploadsInUse()
		return err
	})
	if err != nil {
		return fmt.Errorf("prune uploads: %w", err)
	}
	// An upload named after this snapshot was claimed by Use (under the
	// upload store's lock), so it is inside its grace period and kept.
	files, bytes, err := s.uploads.Prune(ctx, func(uid uint32, digest string) bool {
		return inUse[store.UploadRef{UID: uid, Digest: digest}]
	}, uids...)
	if files > 0 {
		s.log.InfoContext(ctx, "uploads pruned", "files", files, "bytes", bytes, "uids", uids)
	}
	if err != nil {
		return fmt.Errorf("prune uploads: %w", err)
	}
	return nil
}

// PruneInterval is how often the disk pruner runs for an upload grace
// period: often enough that an unused upload lives little longer than its
// grace period, at most every 10 minutes and at least every second.
func PruneInterval(grace time.Duration) time.Duration {
	return min(max(grace/2, time.Second), 10*time.Minute)
}

// LegacyUploads is the upload store's view of the archives kept before
// uploads had owners (implemented by source.Store).
type LegacyUploads interface {
	// LegacyDigests lists them.
	LegacyDigests() ([]string, error)
	// AdoptLegacy makes one of them uid's upload too, and reports false
	// if there is no such archive.
	AdoptLegacy(digest string, uid uint32) (bool, error)
	// DropLegacy removes them all.
	DropLegacy() error
}

// AdoptLegacyUploads gives the uploads recorded before uploads had owners
// to the owners of the projects that name them, once, at start-up, before
// anything else reads or changes the records: each spec and uploaded
// revision without an uploader gets its project's owner (whose project
// has been using the archive, and whose quota now counts it), the
// archives some project needs are moved into their owner's part of the
// store, and the shared layout goes, with the archives nothing needed.
// Run again after a crash, it finishes the work.
func AdoptLegacyUploads(ctx context.Context, st *store.Store, up LegacyUploads, log *slog.Logger) error {
	legacy, err := up.LegacyDigests()
	if err != nil {
		return fmt.Errorf("adopt legacy uploads: %w", err)
	}
	// Once done, every start finds nothing to do: say so without a write
	// transaction.
	var pending bool
	err = st.View(ctx, func(tx *store.Tx) error {
		ps, err := tx.Projects()
		pending = slices.ContainsFunc(ps, namesNoUploader)
		return err
	})
	if err != nil {
		return fmt.Errorf("adopt legacy uploads: %w", err)
	}
	if !pending && len(legacy) == 0 {
		return nil
	}
	var records, adopted, missing int
	err = st.Update(ctx, func(tx *store.Tx) error {
		ps, err := tx.Projects()
		if err != nil {
			return err
		}
		for _, p := range ps {
			given := giveUploadsOwner(p)
			if len(given) == 0 {
				continue
			}
			records++
			var adoptErr error
			p.UploadsInUse(func(r store.UploadRef) {
				if adoptErr != nil || r.UID != p.OwnerUID || !given[r.Digest] {
					return
				}
				given[r.Digest] = false // once per project
				switch ok, err := up.AdoptLegacy(r.Digest, r.UID); {
				case err != nil:
					adoptErr = err
				case ok:
					adopted++
				default:
					// Gone before: the app needs uploading again,
					// which the reconciler says when it needs it.
					missing++
				}
			})
			if adoptErr != nil {
				return adoptErr
			}
			if err := tx.PutProject(p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("adopt legacy uploads: %w", err)
	}
	if len(legacy) > 0 {
		if err := up.DropLegacy(); err != nil {
			return fmt.Errorf("adopt legacy uploads: %w", err)
		}
	}
	if records > 0 || len(legacy) > 0 {
		log.InfoContext(ctx, "uploads of before owners adopted", "projects", records, "adopted", adopted,
			"missing", missing, "legacy_archives_removed", len(legacy))
	}
	return nil
}

// namesNoUploader reports whether an upload of p names no uploader.
func namesNoUploader(p *store.Project) bool {
	for _, a := range p.Spec.Apps {
		if a.Upload != nil && a.Upload.UploaderUID == nil {
			return true
		}
	}
	for _, st := range p.Status.Apps {
		for _, r := range st.Revisions {
			if r.URL == "" && r.UploaderUID == nil && pack.ValidateDigest(r.Resolved) == nil {
				return true
			}
		}
	}
	return false
}

// giveUploadsOwner names p's owner as the uploader of every upload of p
// that names none, and returns the digests it gave.
func giveUploadsOwner(p *store.Project) map[string]bool {
	given := map[string]bool{}
	owner := func(digest string) *uint32 {
		given[digest] = true
		uid := p.OwnerUID
		return &uid
	}
	for i := range p.Spec.Apps {
		if u := p.Spec.Apps[i].Upload; u != nil && u.UploaderUID == nil {
			u.UploaderUID = owner(u.Digest)
		}
	}
	for name, st := range p.Status.Apps {
		for i := range st.Revisions {
			r := &st.Revisions[i]
			if r.URL == "" && r.UploaderUID == nil && pack.ValidateDigest(r.Resolved) == nil {
				r.UploaderUID = owner(r.Resolved)
			}
		}
		p.Status.Apps[name] = st
	}
	return given
}
