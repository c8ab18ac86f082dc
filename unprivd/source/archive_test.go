package source

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/pack"
	"github.com/opus-hosting/opus/internal/pack/packtest"
)

// ent is one tar entry of a test archive.
type ent struct {
	name, body, link string
	typ              byte
	size             int64 // declared size when body is not written in full
}

func mkTar(t testing.TB, gz bool, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	var tw *tar.Writer
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		tw = tar.NewWriter(zw)
	} else {
		tw = tar.NewWriter(&buf)
	}
	for _, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		size := int64(len(e.body))
		if typ != tar.TypeReg {
			size = 0
		}
		if e.size > 0 {
			size = e.size
		}
		hdr := &tar.Header{Typeflag: typ, Name: e.name, Linkname: e.link, Size: size, Mode: 0o777}
		if typ == tar.TypeXGlobalHeader {
			hdr = &tar.Header{Typeflag: typ, Name: e.name, PAXRecords: map[string]string{"comment": "0123abcd"}}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if e.size > 0 {
				// A bomb: stream zeros without holding them in memory.
				zero := make([]byte, 1<<16)
				for left := e.size; left > 0; {
					n := min(left, int64(len(zero)))
					if _, err := tw.Write(zero[:n]); err != nil {
						t.Fatal(err)
					}
					left -= n
				}
			} else if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

var testLimits = Limits{MaxCompressed: 1 << 20, MaxUnpacked: 1 << 20, MaxEntries: 50, MaxFile: 512 << 10}

// testUID uploads in the tests that are not about owners.
const testUID = 1000

// listTree returns "path" for files (with content) and "path/" for dirs.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case p == dir:
		case fi.IsDir():
			if fi.Mode().Perm() != 0o755 {
				t.Errorf("%s: mode %v, want 0755", rel, fi.Mode().Perm())
			}
			out = append(out, rel+"/")
		case fi.Mode().IsRegular():
			if fi.Mode().Perm() != 0o644 {
				t.Errorf("%s: mode %v, want 0644", rel, fi.Mode().Perm())
			}
			b, _ := os.ReadFile(p)
			out = append(out, rel+"="+string(b))
		default:
			out = append(out, rel+"?"+fi.Mode().String())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestStorePutExtract(t *testing.T) {
	for _, gz := range []bool{false, true} {
		dir := t.TempDir()
		s, err := NewStore(filepath.Join(dir, "store"), StoreOptions{Limits: testLimits})
		if err != nil {
			t.Fatal(err)
		}
		arch := mkTar(t, gz,
			ent{name: "./", typ: tar.TypeDir},
			ent{name: "__init__.py", body: ""},
			ent{name: "views.py", body: "x = 1\n"},
			ent{name: "templates/blog/index.html", body: "<p>hi</p>"},
			ent{name: "migrations/", typ: tar.TypeDir},
			ent{name: "migrations/__init__.py", body: "#"},
			ent{name: "g", typ: tar.TypeXGlobalHeader},
		)
		digest, size, err := s.Put(context.Background(), testUID, bytes.NewReader(arch))
		if err != nil {
			t.Fatalf("gz=%v: Put: %v", gz, err)
		}
		if size != int64(len(arch)) || pack.ValidateDigest(digest) != nil || !s.Has(testUID, digest) {
			t.Fatalf("Put = %q, %d", digest, size)
		}
		// Same bytes again: same digest, still one file.
		d2, _, err := s.Put(context.Background(), testUID, bytes.NewReader(arch))
		if err != nil || d2 != digest {
			t.Fatalf("second Put = %q, %v", d2, err)
		}
		stored, _ := filepath.Glob(filepath.Join(dir, "store", "1000", "sha256", "*"))
		wantExt := ".tar"
		if gz {
			wantExt = ".tar.gz"
		}
		if len(stored) != 1 || !strings.HasSuffix(stored[0], wantExt) {
			t.Fatalf("stored files %v", stored)
		}
		dest := filepath.Join(dir, "app")
		if err := s.Extract(context.Background(), testUID, digest, dest); err != nil {
			t.Fatalf("Extract: %v", err)
		}
		got := strings.Join(listTree(t, dest), "|")
		want := "__init__.py=|migrations/|migrations/__init__.py=#|templates/|templates/blog/|templates/blog/index.html=<p>hi</p>|views.py=x = 1\n"
		if got != want {
			t.Errorf("tree\n got %q\nwant %q", got, want)
		}
		// An existing non-empty destination is refused and left alone.
		if err := s.Extract(context.Background(), testUID, digest, dest); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Errorf("Extract into non-empty dir: %v", err)
		}
		if got2 := strings.Join(listTree(t, dest), "|"); got2 != want {
			t.Errorf("destination changed by refused Extract")
		}
	}
}

func TestStoreRefuses(t *testing.T) {
	big := testLimits.MaxUnpacked + 1
	for _, tc := range []struct {
		name string
		arch []byte
		want string
	}{
		{"dotdot", mkTar(t, true, ent{name: "../evil.py", body: "x"}), `entry "../evil.py": ".." components are not allowed`},
		{"dotdot inside", mkTar(t, false, ent{name: "a/../../evil.py", body: "x"}), `".." components`},
		{"absolute", mkTar(t, false, ent{name: "/etc/cron.d/evil", body: "x"}), "absolute paths are not allowed"},
		{"symlink to shadow", mkTar(t, true, ent{name: "__init__.py"}, ent{name: "shadow", typ: tar.TypeSymlink, link: "/etc/shadow"}), `entry "shadow" is a symbolic link (to "/etc/shadow")`},
		{"hard link", mkTar(t, false, ent{name: "a.py", body: "x"}, ent{name: "b.py", typ: tar.TypeLink, link: "a.py"}), `entry "b.py" is a hard link`},
		{"char device", mkTar(t, false, ent{name: "null", typ: tar.TypeChar}), `entry "null" is a device node`},
		{"block device", mkTar(t, false, ent{name: "sda", typ: tar.TypeBlock}), "device node"},
		{"fifo", mkTar(t, false, ent{name: "p", typ: tar.TypeFifo}), "FIFO"},
		{"bomb past the cap", mkTar(t, true, ent{name: "a.py", body: "x"}, ent{name: "zeros", size: 400 << 10}, ent{name: "zeros2", size: 400 << 10}, ent{name: "zeros3", size: 400 << 10}), "unpacked size exceeds 1048576 bytes"},
		{"single file too big", mkTar(t, true, ent{name: "zeros", size: big}), "a single file may have at most"},
		{"file where dir expected", mkTar(t, false, ent{name: "a", body: "x"}, ent{name: "a/b.py", body: "y"}), `"a" is a file where a directory is expected`},
		{"dir entry over file", mkTar(t, false, ent{name: "a", body: "x"}, ent{name: "a/", typ: tar.TypeDir}), "file where a directory is expected"},
		{"file over dir", mkTar(t, false, ent{name: "a/", typ: tar.TypeDir}, ent{name: "a", body: "x"}), "is a directory"},
		{"duplicate file", mkTar(t, false, ent{name: "a.py", body: "x"}, ent{name: "./a.py", body: "y"}), "duplicate entry"},
		{"too many entries", mkTar(t, false, func() []ent {
			var es []ent
			for i := 0; i < 60; i++ {
				es = append(es, ent{name: strings.Repeat("f", i+1), body: "x"})
			}
			return es
		}()...), "more than 50 entries"},
		{"garbage", []byte("this is not an archive at all, not even close......"), "not a valid tar archive"},
		{"broken gzip", []byte{0x1f, 0x8b, 1, 2, 3}, "gzip"},
		{"empty tar", mkTar(t, false), "no entries"},
		{"empty input", nil, "archive is empty"},
		{"backslash", mkTar(t, false, ent{name: `a\..\b`, body: "x"}), "backslashes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := NewStore(filepath.Join(dir, "store"), StoreOptions{Limits: testLimits})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = s.Put(context.Background(), testUID, bytes.NewReader(tc.arch))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Put error %v, want %q", err, tc.want)
			}
			// Nothing stored, no temporary file left.
			for _, sub := range []string{"1000", "tmp"} {
				if ents, _ := os.ReadDir(filepath.Join(dir, "store", sub)); len(ents) != 0 {
					t.Errorf("%s not empty after refusal: %v", sub, ents)
				}
			}
			// ExtractArchive directly refuses too and leaves nothing.
			if len(tc.arch) > 0 {
				dest := filepath.Join(dir, "out")
				err = ExtractArchive(context.Background(), bytes.NewReader(tc.arch), dest, testLimits)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("ExtractArchive error %v, want %q", err, tc.want)
				}
				if ents, _ := os.ReadDir(dir); len(ents) != 1 {
					t.Errorf("extraction left files behind: %v", ents)
				}
			}
			if _, err := os.Lstat("/etc/cron.d/evil"); err == nil {
				t.Fatal("wrote outside the destination")
			}
		})
	}
}

func TestStoreTooLargeCompressed(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir, StoreOptions{Limits: Limits{MaxCompressed: 100, MaxUnpacked: 1 << 20, MaxEntries: 10, MaxFile: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Put(context.Background(), testUID, bytes.NewReader(make([]byte, 101)))
	if err == nil || !strings.Contains(err.Error(), "larger than 100 bytes") {
		t.Fatalf("Put: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Errorf("tmp not empty: %v", ents)
	}
}

func TestDigest(t *testing.T) {
	good := "sha256:" + strings.Repeat("ab", 32)
	s, err := NewStore(t.TempDir(), StoreOptions{Limits: testLimits})
	if err != nil {
		t.Fatal(err)
	}
	// The one table every caller of pack.ValidateDigest is tested against
	// (the API is, in unprivd/service): the store looks up only what the
	// rule accepts.
	for _, tc := range packtest.Digests {
		err := pack.ValidateDigest(tc.D)
		if tc.OK() != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.Why) {
			t.Errorf("pack.ValidateDigest(%q) = %v, want %q", tc.D, err, tc.Why)
		}
		if _, err := find(t.TempDir(), tc.D); tc.OK() != (err == nil) {
			t.Errorf("find(%q) = %v, want ok=%v", tc.D, err, tc.OK())
		}
		if s.Has(testUID, tc.D) {
			t.Errorf("Has(%q) on an empty store", tc.D)
		}
	}
	if err := s.Extract(context.Background(), testUID, good, filepath.Join(t.TempDir(), "x")); err == nil || !strings.Contains(err.Error(), "not stored") {
		t.Errorf("Extract of missing digest: %v", err)
	}
}

func FuzzExtract(f *testing.F) {
	f.Add(mkTar(f, false, ent{name: "__init__.py", body: "x"}, ent{name: "a/b.py", body: "y"}))
	f.Add(mkTar(f, true, ent{name: "d/", typ: tar.TypeDir}, ent{name: "d/x", body: "z"}))
	f.Add(mkTar(f, false, ent{name: "../x", body: "x"}))
	f.Add(mkTar(f, false, ent{name: "/abs", body: "x"}))
	f.Add(mkTar(f, false, ent{name: "l", typ: tar.TypeSymlink, link: "/etc/shadow"}))
	f.Add(mkTar(f, false, ent{name: "a", body: "x"}, ent{name: "a/b", body: "y"}))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		dest := filepath.Join(dir, "out")
		err := ExtractArchive(context.Background(), bytes.NewReader(data), dest, testLimits)
		ents, _ := os.ReadDir(dir)
		if err != nil {
			if len(ents) != 0 {
				t.Fatalf("refused archive left %v", ents)
			}
			return
		}
		// Whatever was accepted is only regular files and dirs inside dest.
		err = filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if !fi.IsDir() && !fi.Mode().IsRegular() {
				t.Fatalf("%s has mode %v", p, fi.Mode())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 {
			t.Fatalf("extraction wrote beside dest: %v", ents)
		}
	})
}
