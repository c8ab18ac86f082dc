package store

import (
	"bytes"
	"sync"
)

// maxCachedBytes bounds the decode cache: the stored (JSON) size of the
// records it holds. With the copy of those bytes and the decoded record,
// the cache costs about 2.5 times this in heap (measured), at most about
// 5 MiB however many projects there are: 2 MiB is some 6,000 projects
// as created, or some 400 with long app histories. Records that do not
// fit are decoded on every read, as without the cache.
const maxCachedBytes = 2 << 20

// decodeCache keeps project records decoded, so reads (the API's
// GetProject and ListProjects, the reconciler's) do not pay a JSON decode
// per project per call: with a thousand projects that decode was most of
// a list's time and allocation. Its records are shared by every reader,
// so none of them leaves the package: reads hand out deep copies (see
// Tx.record).
//
// An entry keeps a copy of the exact bytes it was decoded from and is
// used only when the stored bytes are still identical (compared in full),
// so it can never be stale, whatever the order of concurrent readers and
// writers: a changed record simply misses and is decoded again. Entries of
// projects a commit wrote or deleted are dropped after that commit, only
// to give their room back.
type decodeCache struct {
	mu    sync.RWMutex
	m     map[string]cachedProject
	bytes int
}

type cachedProject struct {
	raw []byte
	p   *Project
}

// get returns the record decoded from raw for project name, or nil.
func (c *decodeCache) get(name, raw []byte) *Project {
	c.mu.RLock()
	e, ok := c.m[string(name)]
	c.mu.RUnlock()
	if ok && bytes.Equal(e.raw, raw) {
		return e.p
	}
	return nil
}

// put remembers p as decoded from raw (copied) for project name, unless
// the cache is full, and reports whether it did: from then on p is
// shared and must not be changed.
func (c *decodeCache) put(name string, raw []byte, p *Project) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[name]; ok {
		c.bytes -= len(old.raw)
		delete(c.m, name)
	}
	if c.bytes+len(raw) > maxCachedBytes {
		return false
	}
	if c.m == nil {
		c.m = make(map[string]cachedProject)
	}
	c.m[name] = cachedProject{raw: bytes.Clone(raw), p: p}
	c.bytes += len(raw)
	return true
}

// forget drops the entries of the named projects.
func (c *decodeCache) forget(names []string) {
	if len(names) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, name := range names {
		if old, ok := c.m[name]; ok {
			c.bytes -= len(old.raw)
			delete(c.m, name)
		}
	}
}

// size reports the entries and stored bytes held (for tests).
func (c *decodeCache) size() (entries, bytes int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m), c.bytes
}
