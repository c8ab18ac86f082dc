package snapshot

import (
	"reflect"
	"testing"
	"time"

	"github.com/opus-hosting/opus/unprivd/store"
)

// TestFitQuota: over the quota, a user's oldest snapshots go first, across
// their projects; pinned ones and the new one never go; when nothing more
// may go and the user is still over, it says the new one does not fit.
func TestFitQuota(t *testing.T) {
	at := func(min int) time.Time { return time.Date(2026, 1, 1, 0, min, 0, 0, time.UTC) }
	snap := func(project, id string, min int, size int64, pinned bool) Owned {
		return Owned{Project: project, Snapshot: store.Snapshot{ID: id, Time: at(min), Size: size}, Pinned: pinned}
	}
	ids := func(os []Owned) []string {
		var out []string
		for _, o := range os {
			out = append(out, o.Project+"/"+o.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		snaps    []Owned
		quota    int64
		newP     string
		newID    string
		wantDrop []string
		wantFits bool
	}{
		{"no quota", []Owned{snap("a", "1", 1, 100, false), snap("a", "2", 2, 100, false)}, 0, "a", "2", nil, true},
		{"within", []Owned{snap("a", "1", 1, 100, false), snap("a", "2", 2, 100, false)}, 200, "a", "2", nil, true},
		{"oldest across projects first", []Owned{
			snap("a", "1", 3, 100, false), snap("b", "1", 1, 100, false), snap("b", "2", 2, 100, false), snap("a", "2", 4, 100, false),
		}, 250, "a", "2", []string{"b/1", "b/2"}, true},
		{"pinned stays, the next oldest goes", []Owned{
			snap("b", "1", 1, 100, true), snap("a", "1", 2, 100, false), snap("a", "2", 3, 100, false),
		}, 200, "a", "2", []string{"a/1"}, true},
		{"the new one never goes", []Owned{snap("a", "1", 1, 100, false), snap("a", "2", 2, 300, false)}, 300, "a", "2", []string{"a/1"}, true},
		{"does not fit beside pinned ones", []Owned{
			snap("b", "1", 1, 200, true), snap("a", "1", 2, 50, false), snap("a", "2", 3, 100, false),
		}, 250, "a", "2", []string{"a/1"}, false},
		{"same id in another project is not the new one", []Owned{snap("b", "2", 1, 100, false), snap("a", "2", 2, 100, false)}, 100, "a", "2", []string{"b/2"}, true},
		// A restore from a backup keeps the media files beside the
		// database: their bytes are on the disk too, and count.
		{"media files count", []Owned{withMedia(snap("b", "1", 1, 10, false), 200), snap("a", "1", 2, 100, false)}, 250, "a", "1", []string{"b/1"}, true},
		{"media files of the new one count", []Owned{snap("b", "1", 1, 10, true), withMedia(snap("a", "1", 2, 100, false), 200)}, 250, "a", "1", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			drop, fits := FitQuota(tc.snaps, tc.quota, tc.newP, tc.newID)
			if got := ids(drop); !reflect.DeepEqual(got, tc.wantDrop) || fits != tc.wantFits {
				t.Errorf("FitQuota = %v, %v; want %v, %v", got, fits, tc.wantDrop, tc.wantFits)
			}
		})
	}
}

func withMedia(o Owned, n int64) Owned {
	o.Media, o.MediaSize = true, n
	return o
}

// TestOfUserHeld: a snapshot a pending restore names is pinned, and Held
// counts only those.
func TestOfUserHeld(t *testing.T) {
	ps := []*store.Project{
		{Name: "a", Spec: store.Spec{RestoreSnapshot: "x"}, Snapshots: []store.Snapshot{{ID: "x", Size: 10, Media: true, MediaSize: 5}, {ID: "y", Size: 20}}},
		{Name: "b", Snapshots: []store.Snapshot{{ID: "x", Size: 40}}},
	}
	got := OfUser(ps)
	if len(got) != 3 || !got[0].Pinned || got[1].Pinned || got[2].Pinned {
		t.Fatalf("OfUser = %+v", got)
	}
	if h := Held(got); h != 15 {
		t.Fatalf("Held = %d, want 15 (the pinned one's database and media files)", h)
	}
}
