package store

import (
	"reflect"
	"testing"
)

// TestTrimRevisions: the keep newest revisions of each app stay, and so
// does every older one a kept data snapshot pins; numbers never change;
// what goes is returned.
func TestTrimRevisions(t *testing.T) {
	revs := func(nums ...int) []Revision {
		var out []Revision
		for _, n := range nums {
			out = append(out, Revision{Resolved: string(rune('a' + n)), Number: n})
		}
		return out
	}
	numbers := func(rs []Revision) []int {
		var out []int
		for _, r := range rs {
			out = append(out, r.Number)
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		apps        map[string][]Revision
		snaps       []Snapshot
		keep        int
		wantKept    map[string][]int
		wantDropped map[string][]int
	}{
		{"within the bound", map[string][]Revision{"a": revs(1, 2, 3)}, nil, 3,
			map[string][]int{"a": {1, 2, 3}}, nil},
		{"oldest go", map[string][]Revision{"a": revs(1, 2, 3, 4, 5)}, nil, 2,
			map[string][]int{"a": {4, 5}}, map[string][]int{"a": {1, 2, 3}}},
		{"keep 0 trims nothing", map[string][]Revision{"a": revs(1, 2, 3)}, nil, 0,
			map[string][]int{"a": {1, 2, 3}}, nil},
		{"a snapshot pins its revision", map[string][]Revision{"a": revs(1, 2, 3, 4, 5)},
			[]Snapshot{{ID: "s", Revisions: map[string]int{"a": 2}}}, 2,
			map[string][]int{"a": {2, 4, 5}}, map[string][]int{"a": {1, 3}}},
		{"a pin of another app keeps nothing here", map[string][]Revision{"a": revs(1, 2, 3), "b": revs(1, 2, 3)},
			[]Snapshot{{ID: "s", Revisions: map[string]int{"b": 1}}}, 1,
			map[string][]int{"a": {3}, "b": {1, 3}}, map[string][]int{"a": {1, 2}, "b": {2}}},
		{"numbers gaps kept", map[string][]Revision{"a": revs(4, 7, 9, 12)}, nil, 3,
			map[string][]int{"a": {7, 9, 12}}, map[string][]int{"a": {4}}},
		{"unnumbered records get their positions", map[string][]Revision{"a": {{Resolved: "x"}, {Resolved: "y"}, {Resolved: "z"}}},
			[]Snapshot{{ID: "s", Revisions: map[string]int{"a": 1}}}, 1,
			map[string][]int{"a": {1, 3}}, map[string][]int{"a": {2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &Project{Status: Status{Apps: map[string]AppStatus{}}, Snapshots: tc.snaps}
			for app, rs := range tc.apps {
				p.Status.Apps[app] = AppStatus{Revisions: append([]Revision(nil), rs...)}
			}
			dropped := p.TrimRevisions(tc.keep)
			gotKept := map[string][]int{}
			for app, st := range p.Status.Apps {
				gotKept[app] = numbers(st.Revisions)
			}
			if !reflect.DeepEqual(gotKept, tc.wantKept) {
				t.Errorf("kept %v, want %v", gotKept, tc.wantKept)
			}
			var gotDropped map[string][]int
			for app, rs := range dropped {
				if gotDropped == nil {
					gotDropped = map[string][]int{}
				}
				gotDropped[app] = numbers(rs)
			}
			if !reflect.DeepEqual(gotDropped, tc.wantDropped) {
				t.Errorf("dropped %v, want %v", gotDropped, tc.wantDropped)
			}
		})
	}
}
