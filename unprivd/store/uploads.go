package store

// UploadRef names one stored upload: its uploader and its digest.
type UploadRef struct {
	UID    uint32
	Digest string
}

// UploadsInUse calls fn for every upload p needs kept: the ones its apps'
// specs name, and those of every revision its apps keep (a rollback may
// return to any listed revision; revisions_keep bounds how many there are,
// see TrimRevisions). Uploads recorded before uploads had owners name no
// uploader and are not reported.
func (p *Project) UploadsInUse(fn func(UploadRef)) {
	for _, a := range p.Spec.Apps {
		if u := a.Upload; u != nil && u.UploaderUID != nil {
			fn(UploadRef{UID: *u.UploaderUID, Digest: u.Digest})
		}
	}
	for _, st := range p.Status.Apps {
		for _, r := range st.Revisions {
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
