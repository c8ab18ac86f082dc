package store

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestUploadsInUse(t *testing.T) {
	uid := func(u uint32) *uint32 { return &u }
	d := func(c string) string { return "sha256:" + strings.Repeat(c, 64) }
	up := func(u uint32, digest string) Revision { return Revision{Resolved: digest, UploaderUID: uid(u)} }
	git := Revision{URL: "https://example.com/x.git", Resolved: strings.Repeat("1", 40)}
	for _, tc := range []struct {
		name string
		p    Project
		want []UploadRef
	}{
		{"nothing uploaded", Project{Spec: Spec{Apps: []AppSpec{{Name: "a", Git: &GitSource{URL: "https://example.com/a.git"}}}}}, nil},
		{"spec", Project{Spec: Spec{Apps: []AppSpec{{Name: "a", Upload: &UploadSource{Digest: d("a"), UploaderUID: uid(7)}}}}},
			[]UploadRef{{7, d("a")}}},
		{"every kept revision of each app", Project{Status: Status{Apps: map[string]AppStatus{
			"a": {Revisions: []Revision{up(7, d("a")), up(7, d("b")), up(8, d("c"))}},
			"b": {Revisions: []Revision{up(9, d("d"))}},
		}}}, []UploadRef{{7, d("a")}, {7, d("b")}, {8, d("c")}, {9, d("d")}}},
		{"a git revision among them", Project{Status: Status{Apps: map[string]AppStatus{
			"a": {Revisions: []Revision{up(7, d("a")), up(7, d("b")), git}},
		}}}, []UploadRef{{7, d("a")}, {7, d("b")}}},
		{"recorded before uploads had owners", Project{
			Spec:   Spec{Apps: []AppSpec{{Name: "a", Upload: &UploadSource{Digest: d("a")}}}},
			Status: Status{Apps: map[string]AppStatus{"a": {Revisions: []Revision{{Resolved: d("a")}}}}},
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []UploadRef
			tc.p.UploadsInUse(func(r UploadRef) { got = append(got, r) })
			gotSet, wantSet := map[UploadRef]bool{}, map[UploadRef]bool{}
			for _, r := range got {
				gotSet[r] = true
			}
			for _, r := range tc.want {
				wantSet[r] = true
			}
			if !reflect.DeepEqual(gotSet, wantSet) {
				t.Fatalf("UploadsInUse = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTxUploadsInUse(t *testing.T) {
	ctx := context.Background()
	st, err := Open(ctx, filepath.Join(t.TempDir(), "s.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, b := uint32(7), uint32(8)
	d := "sha256:" + strings.Repeat("a", 64)
	err = st.Update(ctx, func(tx *Tx) error {
		for _, p := range []*Project{
			{Name: "one", Spec: Spec{Apps: []AppSpec{{Name: "x", Upload: &UploadSource{Digest: d, UploaderUID: &a}}}}},
			{Name: "two", Deleting: true, Spec: Spec{Apps: []AppSpec{{Name: "x", Upload: &UploadSource{Digest: d, UploaderUID: &b}}}}},
		} {
			if err := tx.CreateProject(p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got map[UploadRef]bool
	if err := st.View(ctx, func(tx *Tx) error { got, err = tx.UploadsInUse(); return err }); err != nil {
		t.Fatal(err)
	}
	if want := map[UploadRef]bool{{a, d}: true, {b, d}: true}; !reflect.DeepEqual(got, want) {
		t.Fatalf("UploadsInUse = %v, want %v", got, want)
	}
}
