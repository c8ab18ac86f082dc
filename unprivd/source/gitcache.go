package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// CacheKey is the name of rawURL's cache repository in Git.CacheDir.
func CacheKey(rawURL string) string {
	sum := sha256.Sum256([]byte(rawURL))
	return hex.EncodeToString(sum[:])
}

// isCacheKey reports whether name is one CacheKey makes.
func isCacheKey(name string) bool {
	if len(name) != sha256.Size*2 {
		return false
	}
	_, err := hex.DecodeString(name)
	return err == nil
}

// maxCacheEntries bounds the files one cache's size is counted over; a
// cache with more is counted as at least what was seen, and is over any
// sensible bound anyway (go-git keeps a handful of packs and refs).
const maxCacheEntries = 100_000

// Cache is one repository's git cache as the disk pruner and the usage
// report see it.
type Cache struct {
	// Key is its CacheKey.
	Key string
	// Bytes is the size of its files; at least that when Partial.
	Bytes   int64
	Partial bool
	// LastUsed is when a fetch last used it.
	LastUsed time.Time
}

// CacheSize measures rawURL's cache; zero when there is none.
func (g *Git) CacheSize(ctx context.Context, rawURL string) (Cache, error) {
	return g.measure(ctx, CacheKey(rawURL))
}

func (g *Git) measure(ctx context.Context, key string) (Cache, error) {
	c := Cache{Key: key}
	dir := filepath.Join(g.CacheDir, key)
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("git cache: %w", err)
	}
	c.LastUsed = fi.ModTime()
	n := 0
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if n++; n > maxCacheEntries {
			c.Partial = true
			return fs.SkipAll
		}
		// WalkDir never follows a link; opusd makes none here anyway.
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			c.Bytes += info.Size()
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return c, fmt.Errorf("git cache: %w", err)
	}
	return c, nil
}

// touchCache records that a fetch used the cache at key now (the idle
// bound counts from it).
func touchCache(key string) {
	now := time.Now()
	os.Chtimes(key, now, now)
}

// CachePolicy says which git caches the disk pruner drops.
type CachePolicy struct {
	// InUse are the repository URLs some app or kept revision names:
	// the cache of any other goes.
	InUse map[string]bool
	// MaxBytes drops a cache larger than it; 0 is no bound.
	MaxBytes int64
	// Idle drops a cache no fetch used for longer; 0 is no bound.
	Idle time.Duration
	// Now is the time Idle counts back from.
	Now time.Time
	// Limit bounds the caches one pass measures; 0 is no bound.
	Limit int
}

// Why says why the policy drops cache c, or "" when it keeps it.
func (p CachePolicy) Why(c Cache, used bool) string {
	switch {
	case !used:
		return "no app or kept revision uses its repository"
	case p.MaxBytes > 0 && c.Bytes > p.MaxBytes:
		return fmt.Sprintf("larger than git_cache_max_bytes (%d bytes)", p.MaxBytes)
	case p.Idle > 0 && !c.LastUsed.IsZero() && p.Now.Sub(c.LastUsed) > p.Idle:
		return fmt.Sprintf("unused for longer than git_cache_idle (%s)", p.Idle)
	}
	return ""
}

// Pruned is a cache the pruner dropped, and why.
type Pruned struct {
	Cache
	Why string
}

// PruneCaches drops the caches policy says go, each under its repository's
// lock (a fetch in progress finishes first; the next one fetches afresh),
// and the temporary leftovers of interrupted fetches. Anything in CacheDir
// that is not a cache repository is left alone. It returns what it
// dropped.
func (g *Git) PruneCaches(ctx context.Context, policy CachePolicy) ([]Pruned, error) {
	if g.CacheDir == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(g.CacheDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("git cache: %w", err)
	}
	used := map[string]bool{}
	for u := range policy.InUse {
		used[CacheKey(u)] = true
	}
	var keys []string
	for _, e := range ents {
		if e.IsDir() && isCacheKey(e.Name()) {
			keys = append(keys, e.Name())
		}
	}
	// A bounded pass goes on where the last one stopped, so every cache
	// is looked at in turn.
	g.mu.Lock()
	cursor := g.pruneCursor
	g.mu.Unlock()
	start, _ := slices.BinarySearch(keys, cursor)
	if cursor != "" && start < len(keys) && keys[start] == cursor {
		start++
	}
	keys = slices.Concat(keys[start:], keys[:start])
	if policy.Limit > 0 && len(keys) > policy.Limit {
		keys = keys[:policy.Limit]
	}
	var out []Pruned
	for _, name := range keys {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		g.mu.Lock()
		g.pruneCursor = name
		g.mu.Unlock()
		p, err := g.pruneOne(ctx, name, used[name], policy)
		if err != nil {
			return out, err
		}
		if p != nil {
			out = append(out, *p)
		}
	}
	return out, nil
}
func (g *Git) pruneOne(ctx context.Context, name string, used bool, policy CachePolicy) (*Pruned, error) {
	key := filepath.Join(g.CacheDir, name)
	unlock := g.lock(key)
	defer unlock()
	c, err := g.measure(ctx, name)
	if err != nil {
		return nil, err
	}
	why := policy.Why(c, used)
	if why == "" {
		removeTempFiles(key)
		return nil, nil
	}
	if err := os.RemoveAll(key); err != nil {
		return nil, fmt.Errorf("git cache: %w", err)
	}
	return &Pruned{Cache: c, Why: why}, nil
}
