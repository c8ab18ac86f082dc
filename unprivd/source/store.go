package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opus-hosting/opus/internal/pack"
)

// DefaultGrace is how long an upload nothing needs is kept when
// StoreOptions.Grace is 0: long enough for the create or update call that
// follows an upload, short enough that abandoned uploads do not pile up.
const DefaultGrace = time.Hour

// StoreOptions configures a Store.
type StoreOptions struct {
	// Limits bound every archive: its size as sent and what it unpacks to.
	Limits Limits
	// Quota bounds the bytes one uploader may keep stored, and separately
	// the bytes of their uploads being received at once; 0 means no quota.
	Quota int64
	// Grace is how long an upload is kept, from when it was sent or last
	// named by Use, even when nothing needs it; 0 means DefaultGrace.
	Grace time.Duration
	// Now tells the time of uploads and of pruning; nil means time.Now.
	Now func() time.Time
}

// Store keeps uploaded app archives, each in its uploader's part of the
// store: DIR/<uid>/sha256/<hex>.tar or .tar.gz. Every way to an archive
// names the uploader's uid with the digest, so knowing a digest reaches
// nobody else's upload; whose upload a caller may name is the service's
// decision (its uploader's, or anyone's for an admin). Two users sending
// the same archive each keep their own copy, counted against their own
// quota.
//
// Only archives that passed a full dry-run extraction are stored, so a
// stored digest always extracts (within the same limits). Uploads nothing
// needs are removed by Prune once they are older than the grace period.
//
// DIR/sha256/ is the shared layout of before uploads had owners (legacy):
// nothing is stored there any more; AdoptLegacy and DropLegacy move its
// archives to their owners once, at start-up.
type Store struct {
	dir string
	opt StoreOptions

	// mu orders the short steps that read or change what is stored (the
	// quota check and rename of Put, Use's refresh, Prune's removals), so
	// that a Prune never removes an upload that a Use has just claimed.
	// Receiving and checking an archive happen outside it.
	mu sync.Mutex
	// receiving is, per uploader, the bytes of their uploads being
	// received now, bounded by the quota as they arrive.
	receiving map[uint32]int64
}

// NewStore opens (creating if needed) an archive store in dir. Temporary
// files of uploads interrupted by a crash are removed.
func NewStore(dir string, opt StoreOptions) (*Store, error) {
	if opt.Grace <= 0 {
		opt.Grace = DefaultGrace
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	for _, d := range []string{dir, filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("archive store: %w", err)
		}
	}
	stale, _ := filepath.Glob(filepath.Join(dir, "tmp", "upload-*"))
	for _, f := range stale {
		os.Remove(f)
	}
	return &Store{dir: dir, opt: opt, receiving: map[uint32]int64{}}, nil
}

// Grace is how long an upload nothing needs is kept.
func (s *Store) Grace() time.Duration { return s.opt.Grace }

// QuotaError refuses an upload that would take its uploader past the
// quota.
type QuotaError struct {
	// Stored is what the uploader keeps stored, in bytes.
	Stored int64
	// Receiving is the bytes of the uploader's other uploads arriving at
	// the same time.
	Receiving int64
	// Size is the archive's size, or what had arrived of it when it was
	// cut off (Partial).
	Size    int64
	Partial bool
	Quota   int64
	// Grace is how long uploads nothing needs are kept.
	Grace time.Duration
}

func (e *QuotaError) Error() string {
	switch {
	case e.Partial && e.Receiving == 0:
		return fmt.Sprintf("this archive is larger than your upload quota of %s", sizeText(e.Quota))
	case e.Partial:
		return fmt.Sprintf("this archive (over %s) and your other uploads arriving now (%s) exceed your upload quota of %s",
			sizeText(e.Size), sizeText(e.Receiving), sizeText(e.Quota))
	}
	return fmt.Sprintf("your stored uploads take %s; this archive (%s) would take them to %s, past your upload quota of %s; uploads no project uses are deleted %s after they were sent",
		sizeText(e.Stored), sizeText(e.Size), sizeText(e.Stored+e.Size), sizeText(e.Quota), e.Grace)
}

// QuotaExceeded marks the error as a quota refusal, for callers that do
// not import this package.
func (e *QuotaError) QuotaExceeded() bool { return true }

// Put reads an archive (tar, optionally gzipped) from r, hashing it as it
// goes, refuses it if it is larger than the compressed limit, would not
// extract safely within the limits or would take uid past the quota
// (*QuotaError), and stores it as uid's. Storing the same archive twice is
// harmless: the copy kept is the first, and its grace period starts again.
func (s *Store) Put(ctx context.Context, uid uint32, r io.Reader) (digest string, size int64, err error) {
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("archive store: %w", err)
	}
	defer func() {
		tmp.Close()
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	// The count comes first, so bytes past the quota never reach the disk.
	count := &receiveCounter{s: s, uid: uid}
	defer count.release()
	n, err := io.Copy(io.MultiWriter(count, tmp, h), &ctxReader{ctx: ctx, r: io.LimitReader(r, s.opt.Limits.MaxCompressed+1)})
	if qe := (*QuotaError)(nil); errors.As(err, &qe) {
		return "", 0, qe
	}
	if err != nil {
		return "", 0, fmt.Errorf("receive archive: %w", err)
	}
	if n > s.opt.Limits.MaxCompressed {
		return "", 0, fmt.Errorf("archive is larger than %d bytes", s.opt.Limits.MaxCompressed)
	}
	if n == 0 {
		return "", 0, errors.New("archive is empty")
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return "", 0, fmt.Errorf("archive store: %w", err)
	}
	gz, err := walkArchive(tmp, newTreeWriter(ctx, nil, s.opt.Limits))
	if err != nil {
		return "", 0, fmt.Errorf("archive refused: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("archive store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("archive store: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o640); err != nil {
		return "", 0, fmt.Errorf("archive store: %w", err)
	}
	name := hex.EncodeToString(h.Sum(nil)) + ".tar"
	if gz {
		name += ".gz"
	}
	if err := s.keep(uid, tmp.Name(), name, n); err != nil {
		return "", 0, err
	}
	return pack.DigestPrefix + strings.TrimSuffix(strings.TrimSuffix(name, ".gz"), ".tar"), n, nil
}

// keep moves the checked archive tmp of n bytes to uid's part of the store
// as name, unless uid has it already, within the quota.
func (s *Store) keep(uid uint32, tmp, name string, n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := s.userDir(uid)
	final := filepath.Join(dir, name)
	if fi, err := os.Lstat(final); err == nil && fi.Mode().IsRegular() {
		// Already stored (and counted): keep that copy, claimed afresh.
		os.Remove(tmp)
		return s.touch(final)
	}
	if s.opt.Quota > 0 {
		stored, err := s.usage(uid)
		if err != nil {
			return err
		}
		if stored+n > s.opt.Quota {
			return &QuotaError{Stored: stored, Size: n, Quota: s.opt.Quota, Grace: s.opt.Grace}
		}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("archive store: %w", err)
	}
	// The grace period counts from now on the store's clock.
	if err := s.touch(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("archive store: %w", err)
	}
	return nil
}

// receiveCounter counts an upload's bytes as they arrive against the
// uploader's quota, across all of their uploads arriving at once, so that
// the temporary files of many parallel uploads stay within the quota too.
type receiveCounter struct {
	s   *Store
	uid uint32
	n   int64
}

func (c *receiveCounter) Write(p []byte) (int, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	others := s.receiving[c.uid] - c.n
	if s.opt.Quota > 0 && others+c.n+int64(len(p)) > s.opt.Quota {
		return 0, &QuotaError{Receiving: others, Size: c.n, Partial: true, Quota: s.opt.Quota, Grace: s.opt.Grace}
	}
	c.n += int64(len(p))
	s.receiving[c.uid] += int64(len(p))
	return len(p), nil
}

// release forgets the upload's bytes once it is stored or refused.
func (c *receiveCounter) release() {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.receiving[c.uid] -= c.n; s.receiving[c.uid] <= 0 {
		delete(s.receiving, c.uid)
	}
}

// userDir is where uid's uploads are.
func (s *Store) userDir(uid uint32) string {
	return filepath.Join(s.dir, strconv.FormatUint(uint64(uid), 10), "sha256")
}

// legacyDir is where uploads were kept before they had owners.
func (s *Store) legacyDir() string { return filepath.Join(s.dir, "sha256") }

// find returns the stored file of digest in dir, or "" if there is none.
func find(dir, digest string) (string, error) {
	if err := pack.ValidateDigest(digest); err != nil {
		return "", err
	}
	base := filepath.Join(dir, strings.TrimPrefix(digest, pack.DigestPrefix))
	for _, p := range []string{base + ".tar.gz", base + ".tar"} {
		fi, err := os.Lstat(p)
		if err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", nil
}

// digestOf returns the digest a stored file's name stands for, or "" for
// any other name.
func digestOf(name string) string {
	d := pack.DigestPrefix + strings.TrimSuffix(strings.TrimSuffix(name, ".gz"), ".tar")
	if !strings.HasSuffix(name, ".tar") && !strings.HasSuffix(name, ".tar.gz") || pack.ValidateDigest(d) != nil {
		return ""
	}
	return d
}

// touch restarts the grace period of the stored file p.
func (s *Store) touch(p string) error {
	now := s.opt.Now()
	if err := os.Chtimes(p, now, now); err != nil {
		return fmt.Errorf("archive store: %w", err)
	}
	return nil
}

// Has reports whether uid has an upload of digest stored.
func (s *Store) Has(uid uint32, digest string) bool {
	p, err := find(s.userDir(uid), digest)
	return err == nil && p != ""
}

// Use reports whether uid has an upload of digest stored and, if so,
// restarts its grace period: a spec that is about to name it finds it
// still there when the reconciler needs it, even if no project used it
// before. Prune cannot remove it in between: both hold the store's lock.
func (s *Store) Use(uid uint32, digest string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := find(s.userDir(uid), digest)
	if err != nil || p == "" {
		return false
	}
	return s.touch(p) == nil
}

// Uploaders returns, in ascending order, the uids that have an upload of
// digest stored.
func (s *Store) Uploaders(digest string) []uint32 {
	if pack.ValidateDigest(digest) != nil {
		return nil
	}
	var out []uint32
	for _, uid := range s.uids() {
		if s.Has(uid, digest) {
			out = append(out, uid)
		}
	}
	return out
}

// uids lists the uploaders with a part of the store, ascending.
func (s *Store) uids() []uint32 {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil
	}
	var out []uint32
	for _, e := range ents {
		uid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err == nil && e.IsDir() && strconv.FormatUint(uid, 10) == e.Name() {
			out = append(out, uint32(uid))
		}
	}
	slices.Sort(out)
	return out
}

// Size returns the size of uid's upload digest, 0 when it is not stored.
func (s *Store) Size(uid uint32, digest string) int64 {
	p, err := find(s.userDir(uid), digest)
	if err != nil || p == "" {
		return 0
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Usage returns the bytes uid keeps stored.
func (s *Store) Usage(uid uint32) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usage(uid)
}

func (s *Store) usage(uid uint32) (int64, error) {
	ents, err := os.ReadDir(s.userDir(uid))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("archive store: %w", err)
	}
	var total int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			total += fi.Size()
		}
	}
	return total, nil
}

// Open opens uid's stored archive digest for reading (a backup embeds
// it). It is a tar, gzipped or not, as it was uploaded.
func (s *Store) Open(uid uint32, digest string) (*os.File, error) {
	p, err := find(s.userDir(uid), digest)
	if err != nil {
		return nil, err
	}
	if p == "" {
		return nil, fmt.Errorf("archive %s is not stored", digest)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", digest, err)
	}
	return f, nil
}

// Extract unpacks uid's stored archive digest into dest, which must not
// exist or be an empty directory. The tree appears at dest complete or not
// at all.
func (s *Store) Extract(ctx context.Context, uid uint32, digest, dest string) error {
	p, err := find(s.userDir(uid), digest)
	if err != nil {
		return err
	}
	if p == "" {
		return fmt.Errorf("archive %s is not stored; upload it again", digest)
	}
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("archive %s: %w", digest, err)
	}
	defer f.Close()
	return ExtractArchive(ctx, f, dest, s.opt.Limits)
}

// Prune removes the uploads that are older than the grace period (since
// they were sent or last named by Use) and that keep says nothing needs,
// and then the parts of the store left empty. Only the uploads of uids
// are considered, or everyone's when none is given. It returns how many
// files and bytes it removed. keep is called with the store locked and
// must not call the Store.
func (s *Store) Prune(ctx context.Context, keep func(uid uint32, digest string) bool, uids ...uint32) (files int, bytes int64, err error) {
	if len(uids) == 0 {
		uids = s.uids()
	}
	for _, uid := range uids {
		if err := ctx.Err(); err != nil {
			return files, bytes, err
		}
		p, err := s.pruneUser(uid, keep)
		files += p.files
		bytes += p.bytes
		if err != nil {
			return files, bytes, err
		}
	}
	return files, bytes, nil
}

// pruned counts what a prune removed.
type pruned struct {
	files int
	bytes int64
}

func (s *Store) pruneUser(uid uint32, keep func(uid uint32, digest string) bool) (pruned, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out pruned
	dir := s.userDir(uid)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("archive store: %w", err)
	}
	cutoff := s.opt.Now().Add(-s.opt.Grace)
	left := 0
	for _, e := range ents {
		d := digestOf(e.Name())
		fi, err := e.Info()
		if d == "" || err != nil || !fi.Mode().IsRegular() || keep(uid, d) || fi.ModTime().After(cutoff) {
			left++
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return out, fmt.Errorf("archive store: %w", err)
		}
		out.files++
		out.bytes += fi.Size()
	}
	if left == 0 {
		// Put makes them again, under the same lock.
		os.Remove(dir)
		os.Remove(filepath.Dir(dir))
	}
	return out, nil
}

// LegacyDigests lists the archives of the shared layout of before uploads
// had owners.
func (s *Store) LegacyDigests() ([]string, error) {
	ents, err := os.ReadDir(s.legacyDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("archive store: %w", err)
	}
	var out []string
	for _, e := range ents {
		if d := digestOf(e.Name()); d != "" && e.Type().IsRegular() {
			out = append(out, d)
		}
	}
	return out, nil
}

// AdoptLegacy makes the legacy archive digest uid's upload too (a hard
// link: no copy, and each owner's quota counts it), and reports false if
// there is no such legacy archive. The archive keeps its age, so Prune
// removes it at once unless something needs it.
func (s *Store) AdoptLegacy(digest string, uid uint32) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	src, err := find(s.legacyDir(), digest)
	if err != nil || src == "" {
		return false, err
	}
	dir := s.userDir(uid)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return false, fmt.Errorf("archive store: %w", err)
	}
	if err := os.Link(src, filepath.Join(dir, filepath.Base(src))); err != nil && !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("archive store: adopt %s: %w", digest, err)
	}
	return true, nil
}

// DropLegacy removes the shared layout of before uploads had owners, once
// its archives have been adopted.
func (s *Store) DropLegacy() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.RemoveAll(s.legacyDir()); err != nil {
		return fmt.Errorf("archive store: %w", err)
	}
	return nil
}
