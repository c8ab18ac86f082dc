package snapshot

import (
	"sort"

	"github.com/opus-hosting/opus/unprivd/store"
)

// Owned is one data snapshot of one of a user's projects, as the
// per-user snapshot quota (snapshot_quota) sees it.
type Owned struct {
	Project string
	store.Snapshot
	// Pinned says a pending restore needs it (its project's
	// Spec.RestoreSnapshot names it): it is never dropped.
	Pinned bool
}

// OfUser lists the snapshots of a user's projects, each marked pinned
// when its project's spec waits to restore it.
func OfUser(projects []*store.Project) []Owned {
	var out []Owned
	for _, p := range projects {
		for _, s := range p.Snapshots {
			out = append(out, Owned{Project: p.Name, Snapshot: s, Pinned: s.ID == p.Spec.RestoreSnapshot})
		}
	}
	return out
}

// Held is the bytes of the pinned snapshots among snaps: what no new
// snapshot can take the place of.
func Held(snaps []Owned) int64 {
	var n int64
	for _, s := range snaps {
		if s.Pinned {
			n += s.Bytes()
		}
	}
	return n
}

// FitQuota decides which of a user's snapshots go so that all of them fit
// quota bytes: the oldest first, never a pinned one nor the one of project
// newProject called newID (the snapshot just taken, which the quota
// admitted). fits is false when even dropping every one it may leaves the
// user over quota (then drop is everything it may drop). quota 0 is no
// quota: nothing goes.
func FitQuota(snaps []Owned, quota int64, newProject, newID string) (drop []Owned, fits bool) {
	if quota <= 0 {
		return nil, true
	}
	var total int64
	var candidates []Owned
	for _, s := range snaps {
		total += s.Bytes()
		if !s.Pinned && !(s.Project == newProject && s.ID == newID) {
			candidates = append(candidates, s)
		}
	}
	sort.SliceStable(candidates, func(i, j int) bool { return candidates[i].Time.Before(candidates[j].Time) })
	for _, s := range candidates {
		if total <= quota {
			break
		}
		drop = append(drop, s)
		total -= s.Bytes()
	}
	return drop, total <= quota
}
