package source

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCachePolicy: a cache goes when no app uses its repository, when it
// is over the size bound, or when no fetch used it for the idle time.
func TestCachePolicy(t *testing.T) {
	now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	p := CachePolicy{MaxBytes: 100, Idle: time.Hour, Now: now}
	for _, tc := range []struct {
		name string
		c    Cache
		used bool
		want string
	}{
		{"used, small, fresh", Cache{Bytes: 100, LastUsed: now.Add(-time.Minute)}, true, ""},
		{"no app uses it", Cache{Bytes: 1, LastUsed: now}, false, "no app"},
		{"too large", Cache{Bytes: 101, LastUsed: now}, true, "git_cache_max_bytes"},
		{"idle", Cache{Bytes: 1, LastUsed: now.Add(-2 * time.Hour)}, true, "git_cache_idle"},
		{"no bounds", Cache{Bytes: 1 << 40, LastUsed: now.Add(-1000 * time.Hour)}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol := p
			if tc.name == "no bounds" {
				pol = CachePolicy{Now: now}
			}
			got := pol.Why(tc.c, tc.used)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("Why = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPruneCaches: on disk, the caches the policy drops go whole, the
// others stay (their interrupted fetches' temporary files removed), and
// what is not a cache is left alone; a bounded pass goes on where the
// last one stopped.
func TestPruneCaches(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	g := &Git{CacheDir: dir}
	now := time.Now()
	mk := func(url string, size int, age time.Duration) string {
		t.Helper()
		key := filepath.Join(dir, CacheKey(url))
		pack := filepath.Join(key, "shallow", "objects", "pack")
		if err := os.MkdirAll(pack, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pack, "pack-1.pack"), make([]byte, size), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pack, "tmp_pack_1"), []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(key, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
		return key
	}
	kept := mk("https://example.com/kept.git", 10, time.Minute)
	unused := mk("https://example.com/gone.git", 10, time.Minute)
	large := mk("https://example.com/large.git", 1000, time.Minute)
	idle := mk("https://example.com/idle.git", 10, 48*time.Hour)
	other := filepath.Join(dir, "not-a-cache")
	if err := os.Mkdir(other, 0o750); err != nil {
		t.Fatal(err)
	}
	inUse := map[string]bool{"https://example.com/kept.git": true, "https://example.com/large.git": true, "https://example.com/idle.git": true}
	pol := CachePolicy{InUse: inUse, MaxBytes: 500, Idle: 24 * time.Hour, Now: now}
	pruned, err := g.PruneCaches(ctx, pol)
	if err != nil {
		t.Fatal(err)
	}
	var gone []string
	for _, p := range pruned {
		gone = append(gone, filepath.Join(dir, p.Key))
	}
	slices.Sort(gone)
	want := []string{unused, large, idle}
	slices.Sort(want)
	if !slices.Equal(gone, want) {
		t.Errorf("pruned %v, want %v", gone, want)
	}
	for _, p := range want {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there (%v)", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(kept, "shallow", "objects", "pack", "pack-1.pack")); err != nil {
		t.Errorf("kept cache: %v", err)
	}
	if _, err := os.Stat(filepath.Join(kept, "shallow", "objects", "pack", "tmp_pack_1")); !os.IsNotExist(err) {
		t.Errorf("a kept cache's temporary file stayed (%v)", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("something not a cache was removed: %v", err)
	}
	if c, err := g.CacheSize(ctx, "https://example.com/kept.git"); err != nil || c.Bytes != 10 {
		t.Errorf("CacheSize = %+v, %v; want 10 bytes", c, err)
	}

	// Bounded passes of one cache each see every cache in turn.
	g2 := &Git{CacheDir: t.TempDir()}
	dir = g2.CacheDir
	var urls []string
	for _, u := range []string{"a", "b", "c"} {
		urls = append(urls, "https://example.com/"+u)
		mk("https://example.com/"+u, 1, 0)
	}
	for i := 0; i < 3; i++ {
		p, err := g2.PruneCaches(ctx, CachePolicy{InUse: map[string]bool{}, Now: now, Limit: 1})
		if err != nil || len(p) != 1 {
			t.Fatalf("pass %d: %v, %v; want one cache dropped", i, p, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("after 3 passes of 1: %v left", ents)
	}
}
