package store

// UploadRef names one stored upload: its uploader and its digest.
type UploadRef struct {
	UID    uint32
	Digest string
}

// KeptUploadRevisions is how many of an app's latest revisions keep their
// uploaded archive: the deployed one and the one before it, the only two
// a rollback can return to (service.rollbackSource). Older revisions stay
// in the history, but their archives are not kept for them: otherwise an
// app updated often would pin up to its whole history (50 revisions)
// against its uploader's quota, with no way to free it.
const KeptUploadRevisions = 2

// UploadsInUse calls fn for every upload p needs kept: the ones its apps'
// specs name, and those of each app's kept revisions. Uploads recorded
// before uploads had owners name no uploader and are not reported.
func (p *Project) UploadsInUse(fn func(UploadRef)) {
	for _, a := range p.Spec.Apps {
		if u := a.Upload; u != nil && u.UploaderUID != nil {
			fn(UploadRef{UID: *u.UploaderUID, Digest: u.Digest})
		}
	}
	for _, st := range p.Status.Apps {
		revs := st.Revisions[max(0, len(st.Revisions)-KeptUploadRevisions):]
		for _, r := range revs {
			if r.URL == "" && r.UploaderUID != nil {
				fn(UploadRef{UID: *r.UploaderUID, Digest: r.Resolved})
			}
		}
	}
}

// UploadsInUse returns every upload some project needs kept (see
// Project.UploadsInUse), projects being deleted included until their
// record goes.
func (tx *Tx) UploadsInUse() (map[UploadRef]bool, error) {
	ps, err := tx.Projects()
	if err != nil {
		return nil, err
	}
	out := map[UploadRef]bool{}
	for _, p := range ps {
		p.UploadsInUse(func(r UploadRef) { out[r] = true })
	}
	return out, nil
}
