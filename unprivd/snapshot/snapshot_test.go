package snapshot

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/unprivd/store"
)

func snaps(sizes ...int64) []store.Snapshot {
	var out []store.Snapshot
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, s := range sizes {
		out = append(out, store.Snapshot{ID: string(rune('a' + i)), Size: s, Time: t0.Add(time.Duration(i) * time.Hour)})
	}
	return out
}

func ids(ss []store.Snapshot) string {
	var b strings.Builder
	for _, s := range ss {
		b.WriteString(s.ID)
	}
	return b.String()
}

// TestRetain: the newest snapshots are kept within the count and the
// bytes, pinned ones always, the newest always.
func TestRetain(t *testing.T) {
	tests := []struct {
		name        string
		sizes       []int64
		keep        int
		max         int64
		pinned      []string
		kept, dropd string
	}{
		{"none", nil, 5, 100, nil, "", ""},
		{"under both bounds", []int64{10, 10, 10}, 5, 100, nil, "abc", ""},
		{"count", []int64{1, 1, 1, 1, 1, 1, 1}, 5, 100, nil, "cdefg", "ab"},
		{"bytes", []int64{40, 40, 40}, 5, 100, nil, "bc", "a"},
		{"exactly the bytes", []int64{50, 50}, 5, 100, nil, "ab", ""},
		{"newest alone past the bytes", []int64{10, 200}, 5, 100, nil, "b", "a"},
		{"no gap for a smaller older one", []int64{1, 90, 20}, 5, 100, nil, "c", "ab"},
		{"pinned oldest kept past the count", []int64{1, 1, 1, 1}, 2, 100, []string{"a"}, "ad", "bc"},
		{"pinned counts toward the bytes", []int64{60, 30, 30}, 5, 100, []string{"a"}, "ac", "b"},
		{"keep one", []int64{1, 1, 1}, 1, 100, nil, "c", "ab"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kept, dropped := Retain(snaps(tt.sizes...), tt.keep, tt.max, tt.pinned...)
			if ids(kept) != tt.kept || ids(dropped) != tt.dropd {
				t.Fatalf("Retain = kept %q dropped %q; want %q, %q", ids(kept), ids(dropped), tt.kept, tt.dropd)
			}
		})
	}
}

// TestRetainCountsMedia: a snapshot's media files (a restore from a
// backup) count toward the project's bytes like its database.
func TestRetainCountsMedia(t *testing.T) {
	ss := snaps(10, 10, 10)
	ss[1].Media, ss[1].MediaSize = true, 90
	kept, dropped := Retain(ss, 5, 100)
	if ids(kept) != "c" || ids(dropped) != "ab" {
		t.Fatalf("Retain = kept %q dropped %q; want \"c\", \"ab\"", ids(kept), ids(dropped))
	}
}

// TestForRollback: a rollback to revision R of an app restores the newest
// snapshot taken while the app ran R.
func TestForRollback(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(id string, h int, revs map[string]int) store.Snapshot {
		return store.Snapshot{ID: id, Time: t0.Add(time.Duration(h) * time.Hour), Revisions: revs}
	}
	// notes 1→2 (s1), 2→3 (s2), other app updated while notes ran 3 (s3),
	// notes rolled back 3→1 (s4), notes 1→4 (s5).
	all := []store.Snapshot{
		at("s1", 1, map[string]int{"notes": 1}),
		at("s2", 2, map[string]int{"notes": 2}),
		at("s3", 3, map[string]int{"notes": 3, "shop": 1}),
		at("s4", 4, map[string]int{"notes": 3, "shop": 2}),
		at("s5", 5, map[string]int{"notes": 5, "shop": 2}),
	}
	tests := []struct {
		app  string
		rev  int
		want string
	}{
		{"notes", 1, "s1"},
		{"notes", 2, "s2"},
		{"notes", 3, "s4"}, // the newest while notes ran 3
		{"notes", 4, ""},   // never snapshotted (pruned, or too large)
		{"shop", 1, "s3"},
		{"blog", 1, ""},
	}
	for _, tt := range tests {
		got := ForRollback(all, tt.app, tt.rev)
		if (got == nil && tt.want != "") || (got != nil && got.ID != tt.want) {
			t.Errorf("ForRollback(%s, %d) = %v, want %q", tt.app, tt.rev, got, tt.want)
		}
	}
}

// TestDirWriteBounded: a copy past the bound leaves no file; a whole one
// is there under its id, 0600 in a 0700 directory; Prune removes what the
// records do not name; ids that could be paths are refused.
func TestDirWriteBounded(t *testing.T) {
	base := t.TempDir()
	d := NewDir(base)
	n, err := d.Write("blog", "one", 10, func(w io.Writer) error { _, err := w.Write([]byte("0123456789")); return err })
	if err != nil || n != 10 {
		t.Fatalf("Write at the bound = %d, %v", n, err)
	}
	if _, err := d.Write("blog", "two", 10, func(w io.Writer) error { _, err := w.Write(make([]byte, 11)); return err }); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Write past the bound = %v, want ErrTooLarge", err)
	}
	dir := filepath.Join(base, "snapshots", "blog")
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "one" {
		t.Fatalf("snapshot directory holds %v, want only one", entries)
	}
	fi, _ := os.Stat(filepath.Join(dir, "one"))
	di, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o600 || di.Mode().Perm() != 0o700 {
		t.Errorf("modes: file %v dir %v, want 0600 and 0700", fi.Mode(), di.Mode())
	}
	f, err := d.Open("blog", "one")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, []byte("0123456789")) {
		t.Errorf("read back %q", got)
	}
	for _, bad := range []string{"../x", "", "a/b", ".new-1"} {
		if _, err := d.Open("blog", bad); err == nil {
			t.Errorf("Open(%q) accepted", bad)
		}
	}
	if _, err := d.Open("../etc", "one"); err == nil {
		t.Error("Open of a project name that is a path accepted")
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Open("blog", "link"); err == nil {
		t.Error("Open followed a link")
	}
	if err := d.Prune("blog", []store.Snapshot{{ID: "one"}}); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("after Prune: %v", entries)
	}
	if err := d.RemoveAll("blog"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("RemoveAll left %s", dir)
	}
}
