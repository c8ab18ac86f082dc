package store

import (
	"maps"
	"slices"
)

// Clone returns a deep copy of p: it shares no slice, map or pointer with
// p (strings, immutable, are shared), so either may be changed without
// the other seeing it. It is how Tx.Project, Tx.Projects and
// Tx.EachProject hand out records from the decode cache. TestCloneIsDeep fails for a field added
// to any record type without its copy here.
func (p *Project) Clone() *Project {
	if p == nil {
		return nil
	}
	c := *p
	c.own()
	return &c
}

// own replaces every slice, map and pointer p holds, at every depth, by a
// copy: p is then a deep copy of what it was. The nested records are made
// p's own in place: copying them out and back would copy the large Spec
// and Status structs twice more.
func (p *Project) own() {
	p.Spec.own()
	p.Status.own()
	p.Secrets = clonePlain(p.Secrets)
	if p.Applied != nil {
		a := *p.Applied
		a.own()
		p.Applied = &a
	}
	p.Snapshots = cloneEach(p.Snapshots, Snapshot.Clone)
	if p.Move != nil {
		m := *p.Move
		m.Files, m.Last = slices.Clone(m.Files), slices.Clone(m.Last)
		p.Move = &m
	}
}

// Clone returns a deep copy of s (see Project.Clone).
func (s Snapshot) Clone() Snapshot {
	s.Revisions = maps.Clone(s.Revisions)
	return s
}

// Clone returns a deep copy of s (see Project.Clone).
func (s Spec) Clone() Spec {
	s.own()
	return s
}

// own makes s a deep copy of what it was (see Project.own).
func (s *Spec) own() {
	s.Apps = cloneEach(s.Apps, AppSpec.Clone)
	s.Superuser = clonePlain(s.Superuser)
	s.Certificate = s.Certificate.Clone()
	s.DropAppData = slices.Clone(s.DropAppData)
	s.Settings.own()
	s.Database = clonePlain(s.Database)
}

// Clone returns a deep copy of s (see Project.Clone).
func (s Settings) Clone() Settings {
	s.own()
	return s
}

// own makes s a deep copy of what it was (see Project.own).
func (s *Settings) own() {
	s.Hosts = slices.Clone(s.Hosts)
	s.Env = maps.Clone(s.Env)
}

// Clone returns a deep copy of a (see Project.Clone).
func (a AppSpec) Clone() AppSpec {
	a.Git = clonePlain(a.Git)
	a.Upload = a.Upload.Clone()
	return a
}

// Clone returns a deep copy of u (see Project.Clone).
func (u *UploadSource) Clone() *UploadSource {
	if u == nil {
		return nil
	}
	c := *u
	c.UploaderUID = clonePlain(u.UploaderUID)
	return &c
}

// Clone returns a deep copy of c (see Project.Clone).
func (c *OwnerCertificate) Clone() *OwnerCertificate {
	if c == nil {
		return nil
	}
	return &OwnerCertificate{CertificatePEM: slices.Clone(c.CertificatePEM), KeyPEM: slices.Clone(c.KeyPEM)}
}

// own makes s a deep copy of what it was (see Project.own).
func (s *Status) own() {
	s.LastFailure = clonePlain(s.LastFailure)
	if s.Apps == nil {
		return
	}
	apps := make(map[string]AppStatus, len(s.Apps))
	for name, a := range s.Apps {
		apps[name] = a.Clone()
	}
	s.Apps = apps
}

// Clone returns a deep copy of a (see Project.Clone).
func (a AppStatus) Clone() AppStatus {
	a.Revisions = cloneEach(a.Revisions, Revision.Clone)
	return a
}

// Clone returns a deep copy of r (see Project.Clone).
func (r Revision) Clone() Revision {
	r.UploaderUID = clonePlain(r.UploaderUID)
	return r
}

// clonePlain copies what p points to, for types with no slice, map or
// pointer of their own (TestCloneIsDeep checks they have none).
func clonePlain[T any](p *T) *T {
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

// cloneEach copies s, each element by clone; nil stays nil, empty stays
// empty (as decoded).
func cloneEach[T any](s []T, clone func(T) T) []T {
	if s == nil {
		return nil
	}
	c := make([]T, len(s))
	for i, v := range s {
		c[i] = clone(v)
	}
	return c
}
