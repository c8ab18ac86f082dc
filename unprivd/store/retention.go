package store

import "slices"

// DefaultRevisionsKeep is how many revisions of each app are kept when
// nothing configures it (revisions_keep in opus.conf).
const DefaultRevisionsKeep = 10

// PinnedRevisions are, per app, the numbers of the revisions p's data
// snapshots were taken with: a rollback with data to such a revision
// needs both the snapshot and the revision, so neither goes while the
// other is kept.
func (p *Project) PinnedRevisions() map[string]map[int]bool {
	out := map[string]map[int]bool{}
	for _, s := range p.Snapshots {
		for app, n := range s.Revisions {
			if out[app] == nil {
				out[app] = map[int]bool{}
			}
			out[app][n] = true
		}
	}
	return out
}

// TrimRevisions drops, from each app's history, the revisions past the
// keep newest, except those a kept data snapshot pins (PinnedRevisions)
// and the running one (always the newest). It returns, per app, the
// revisions it dropped, oldest first; nothing when keep < 1.
//
// What a dropped revision referred to (its uploaded archive, the git
// cache of a repository no app uses any more) is no longer needed by it:
// the disk pruner removes it once nothing else needs it either.
func (p *Project) TrimRevisions(keep int) map[string][]Revision {
	if keep < 1 {
		return nil
	}
	pinned := p.PinnedRevisions()
	out := map[string][]Revision{}
	for name, st := range p.Status.Apps {
		n := len(st.Revisions)
		if n <= keep {
			continue
		}
		for i := range st.Revisions {
			// Numbered before any goes, so numbers stay the same.
			st.Revisions[i].Number = st.RevisionNumber(i)
		}
		var kept, dropped []Revision
		for i, r := range st.Revisions {
			if i >= n-keep || pinned[name][r.Number] {
				kept = append(kept, r)
			} else {
				dropped = append(dropped, r)
			}
		}
		if len(dropped) == 0 {
			continue
		}
		st.Revisions = slices.Clip(kept)
		p.Status.Apps[name] = st
		out[name] = dropped
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
