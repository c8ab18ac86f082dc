package source

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/pack"
)

const (
	uidA = 1001
	uidB = 1002
)

// fakeClock is a settable clock for grace periods.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newClock() *fakeClock { return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

// appArchive is a valid app archive whose one file holds n random
// (incompressible) bytes, so its size is what the quota counts.
func appArchive(t *testing.T, n int) []byte {
	t.Helper()
	body := make([]byte, n)
	rand.Read(body)
	return mkTar(t, false, ent{name: "__init__.py"}, ent{name: "data.bin", body: string(body)})
}

func digestOfBytes(b []byte) string {
	sum := sha256.Sum256(b)
	return pack.DigestPrefix + hex.EncodeToString(sum[:])
}

func newTestStore(t *testing.T, quota int64, clock *fakeClock) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sources")
	s, err := NewStore(dir, StoreOptions{Limits: testLimits, Quota: quota, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func mustPut(t *testing.T, s *Store, uid uint32, arch []byte) string {
	t.Helper()
	d, n, err := s.Put(context.Background(), uid, bytes.NewReader(arch))
	if err != nil || n != int64(len(arch)) || d != digestOfBytes(arch) {
		t.Fatalf("Put as %d = %q, %d, %v", uid, d, n, err)
	}
	return d
}

// files lists the regular files under dir, relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	slices.Sort(out)
	return out
}

// An upload is reachable only through its uploader's uid: another uid
// has, uses and extracts nothing by its digest until it sends the same
// archive itself, and then it has its own copy.
func TestStoreUploadsBelongToUploader(t *testing.T) {
	clock := newClock()
	s, dir := newTestStore(t, 0, clock)
	arch := appArchive(t, 100)
	d := mustPut(t, s, uidA, arch)
	hexName := strings.TrimPrefix(d, pack.DigestPrefix) + ".tar"
	if got := files(t, dir); !slices.Equal(got, []string{"1001/sha256/" + hexName}) {
		t.Fatalf("stored files %v", got)
	}
	if !s.Has(uidA, d) || !s.Use(uidA, d) {
		t.Fatal("the uploader does not have its upload")
	}
	if s.Has(uidB, d) || s.Use(uidB, d) {
		t.Fatal("another uid has the upload")
	}
	if err := s.Extract(context.Background(), uidB, d, filepath.Join(t.TempDir(), "x")); err == nil || !strings.Contains(err.Error(), "not stored") {
		t.Fatalf("Extract as another uid: %v", err)
	}
	if got := s.Uploaders(d); !slices.Equal(got, []uint32{uidA}) {
		t.Fatalf("Uploaders = %v", got)
	}
	mustPut(t, s, uidB, arch)
	if got := s.Uploaders(d); !slices.Equal(got, []uint32{uidA, uidB}) {
		t.Fatalf("Uploaders after B's upload = %v", got)
	}
	if err := s.Extract(context.Background(), uidB, d, filepath.Join(t.TempDir(), "x")); err != nil {
		t.Fatalf("Extract of B's own copy: %v", err)
	}
	// Removing A's copy leaves B's.
	clock.Add(DefaultGrace + time.Second)
	if _, _, err := s.Prune(context.Background(), func(uint32, string) bool { return false }, uidA); err != nil {
		t.Fatal(err)
	}
	if got := files(t, dir); !slices.Equal(got, []string{"1002/sha256/" + hexName}) {
		t.Fatalf("stored files after pruning A = %v", got)
	}
	if s.Uploaders("sha256:../1001") != nil {
		t.Fatal("Uploaders accepted a malformed digest")
	}
}

// The quota bounds what an uploader keeps stored: the upload that would
// pass it is refused and leaves nothing; the same archive again costs
// nothing; other uploaders are not affected; pruning makes room.
func TestStoreQuota(t *testing.T) {
	clock := newClock()
	a1, a2 := appArchive(t, 3000), appArchive(t, 3000)
	quota := int64(len(a1) + len(a2) - 1)
	s, dir := newTestStore(t, quota, clock)
	d1 := mustPut(t, s, uidA, a1)
	_, _, err := s.Put(context.Background(), uidA, bytes.NewReader(a2))
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Partial || qe.Stored != int64(len(a1)) || qe.Size != int64(len(a2)) || qe.Quota != quota || qe.Grace != DefaultGrace {
		t.Fatalf("Put past the quota: %#v", err)
	}
	for _, want := range []string{"past your upload quota", "deleted 1h0m0s after"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("quota error %q lacks %q", err, want)
		}
	}
	if got := files(t, dir); len(got) != 1 {
		t.Fatalf("refused upload left files: %v", got)
	}
	// The same archive again: already stored and counted, so accepted.
	if d := mustPut(t, s, uidA, a1); d != d1 {
		t.Fatal("digest changed")
	}
	if u, _ := s.Usage(uidA); u != int64(len(a1)) {
		t.Fatalf("usage %d after storing the same archive twice, want %d", u, len(a1))
	}
	// The quota is per uploader.
	mustPut(t, s, uidB, a2)
	// An archive larger than the whole quota is cut off while arriving.
	big := appArchive(t, int(quota))
	_, _, err = s.Put(context.Background(), uidB, bytes.NewReader(big))
	if !errors.As(err, &qe) || !qe.Partial || qe.Receiving != 0 || !strings.Contains(err.Error(), "larger than your upload quota") {
		t.Fatalf("Put of an archive larger than the quota: %#v", err)
	}
	// Once A's first upload is pruned, the second fits.
	clock.Add(DefaultGrace + time.Second)
	if n, b, err := s.Prune(context.Background(), func(uint32, string) bool { return false }, uidA); err != nil || n != 1 || b != int64(len(a1)) {
		t.Fatalf("Prune = %d files, %d bytes, %v", n, b, err)
	}
	mustPut(t, s, uidA, a2)
	if got := files(t, filepath.Join(dir, "tmp")); len(got) != 0 {
		t.Fatalf("tmp holds %v", got)
	}
}

// gatedReader hands out data until the gate, then waits for open.
type gatedReader struct {
	data []byte
	gate int
	open chan struct{}
}

func (r *gatedReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	if r.gate == 0 {
		<-r.open
		r.gate = -1
	}
	n := len(r.data)
	if r.gate > 0 {
		n = min(n, r.gate)
	}
	n = copy(p, r.data[:n])
	r.data = r.data[n:]
	if r.gate > 0 {
		r.gate -= n
	}
	return n, nil
}

// Uploads arriving at once count together against the quota, so many
// parallel uploads cannot fill the disk with temporary files.
func TestStoreQuotaCountsArrivingUploads(t *testing.T) {
	first, second := appArchive(t, 3000), appArchive(t, 3000)
	// Either fits alone, not both at once.
	quota := int64(len(first) + len(second)/2)
	s, dir := newTestStore(t, quota, newClock())
	slow := &gatedReader{data: first, gate: len(first) - 100, open: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, _, err := s.Put(context.Background(), uidA, slow)
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		n := s.receiving[uidA]
		s.mu.Unlock()
		if n == int64(len(first)-100) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first upload's %d bytes never arrived (%d counted)", len(first)-100, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, _, err := s.Put(context.Background(), uidA, bytes.NewReader(second))
	var qe *QuotaError
	if !errors.As(err, &qe) || !qe.Partial || qe.Receiving != int64(len(first)-100) || !strings.Contains(err.Error(), "other uploads arriving now") {
		t.Fatalf("second upload while the first arrives: %#v", err)
	}
	// Another uploader is not held back by A's uploads.
	mustPut(t, s, uidB, second)
	close(slow.open)
	if err := <-done; err != nil {
		t.Fatalf("first upload: %v", err)
	}
	s.mu.Lock()
	left := len(s.receiving)
	s.mu.Unlock()
	if left != 0 {
		t.Fatalf("arriving bytes still counted after the uploads ended: %v", s.receiving)
	}
	if got := files(t, dir); len(got) != 2 {
		t.Fatalf("stored %v, want A's first and B's upload", got)
	}
}

// Prune removes an upload only when nothing needs it and it is older than
// the grace period, counted from its upload or its last Use; it touches
// only the uids asked for, and removes the parts of the store it empties.
func TestStorePrune(t *testing.T) {
	clock := newClock()
	s, dir := newTestStore(t, 0, clock)
	a1 := mustPut(t, s, uidA, appArchive(t, 10))
	a2 := mustPut(t, s, uidA, appArchive(t, 11))
	b1 := mustPut(t, s, uidB, appArchive(t, 12))
	none := func(uint32, string) bool { return false }
	prune := func(keep func(uint32, string) bool, uids ...uint32) int {
		t.Helper()
		n, _, err := s.Prune(context.Background(), keep, uids...)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	clock.Add(30 * time.Minute)
	if n := prune(none); n != 0 {
		t.Fatalf("pruned %d uploads inside the grace period", n)
	}
	clock.Add(20 * time.Minute)
	if !s.Use(uidA, a1) {
		t.Fatal("Use of a stored upload failed")
	}
	clock.Add(20 * time.Minute) // a2, b1: 70 min old; a1: used 20 min ago
	needed := func(uid uint32, d string) bool { return uid == uidA && d == a2 }
	if n := prune(needed); n != 1 || !s.Has(uidA, a1) || !s.Has(uidA, a2) || s.Has(uidB, b1) {
		t.Fatalf("prune at 70 min removed %d: a1 %v, a2 %v, b1 %v; want only b1 gone", n, s.Has(uidA, a1), s.Has(uidA, a2), s.Has(uidB, b1))
	}
	if _, err := os.Stat(filepath.Join(dir, "1002")); !os.IsNotExist(err) {
		t.Fatalf("B's emptied part of the store is still there: %v", err)
	}
	b2 := mustPut(t, s, uidB, appArchive(t, 13))
	clock.Add(2 * time.Hour)
	if n := prune(none, uidA); n != 2 || s.Has(uidA, a1) || s.Has(uidA, a2) {
		t.Fatalf("prune of A removed %d", n)
	}
	if !s.Has(uidB, b2) {
		t.Fatal("pruning A removed B's upload")
	}
	if got := files(t, dir); !slices.Equal(got, []string{"1002/sha256/" + strings.TrimPrefix(b2, pack.DigestPrefix) + ".tar"}) {
		t.Fatalf("left %v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "1001")); !os.IsNotExist(err) {
		t.Fatalf("A's emptied part of the store is still there: %v", err)
	}
	// Names the store does not write are left alone.
	stray := filepath.Join(dir, "1002", "sha256", "notes.txt")
	if err := os.WriteFile(stray, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(stray, time.Unix(0, 0), time.Unix(0, 0))
	if n := prune(none); n != 1 || s.Has(uidB, b2) || !exists(stray) {
		t.Fatalf("prune removed %d (b2 stored: %v), stray file kept: %v; want b2 gone and the stray file kept", n, s.Has(uidB, b2), exists(stray))
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// Uploads of the shared layout of before uploads had owners are adopted
// by their owners (a link, keeping their age) and then dropped; the store
// no longer makes that layout.
func TestStoreLegacy(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sources")
	arch := appArchive(t, 50)
	d := digestOfBytes(arch)
	legacy := filepath.Join(dir, "sha256", strings.TrimPrefix(d, pack.DigestPrefix)+".tar")
	if err := os.MkdirAll(filepath.Dir(legacy), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(legacy, arch, 0o640); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	os.Chtimes(legacy, old, old)
	stale := filepath.Join(dir, "tmp", "upload-123")
	os.MkdirAll(filepath.Dir(stale), 0o750)
	os.WriteFile(stale, []byte("half"), 0o600)
	clock := newClock()
	s, err := NewStore(dir, StoreOptions{Limits: testLimits, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if exists(stale) {
		t.Error("a crashed upload's temporary file was kept")
	}
	got, err := s.LegacyDigests()
	if err != nil || !slices.Equal(got, []string{d}) {
		t.Fatalf("LegacyDigests = %v, %v", got, err)
	}
	if s.Has(uidA, d) || s.Uploaders(d) != nil {
		t.Fatal("a legacy upload is usable before it is adopted")
	}
	for range 2 { // adopting twice is harmless
		if ok, err := s.AdoptLegacy(d, uidA); !ok || err != nil {
			t.Fatalf("AdoptLegacy = %v, %v", ok, err)
		}
	}
	if ok, err := s.AdoptLegacy(digestOfBytes([]byte("nothing")), uidA); ok || err != nil {
		t.Fatalf("adopting a missing legacy upload: %v, %v", ok, err)
	}
	if err := s.DropLegacy(); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(dir, "sha256")) {
		t.Fatal("the legacy layout is still there")
	}
	if !s.Has(uidA, d) || !slices.Equal(s.Uploaders(d), []uint32{uidA}) {
		t.Fatal("the adopted upload is not its owner's")
	}
	if err := s.Extract(context.Background(), uidA, d, filepath.Join(t.TempDir(), "app")); err != nil {
		t.Fatalf("Extract of the adopted upload: %v", err)
	}
	// It kept its age: nothing needs it, so it goes at the next prune.
	if n, _, err := s.Prune(context.Background(), func(uint32, string) bool { return false }); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v", n, err)
	}
	if got, _ := s.LegacyDigests(); got != nil {
		t.Fatalf("LegacyDigests after DropLegacy = %v", got)
	}
}
