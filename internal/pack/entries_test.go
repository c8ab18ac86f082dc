package pack

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/pack/packtest"
)

// fromZip converts a zip and lists the result (list, from pack_test.go).
func fromZip(t *testing.T, z []byte, lim Limits) (string, string, error) {
	t.Helper()
	var out bytes.Buffer
	top, err := FromZip(context.Background(), bytes.NewReader(z), int64(len(z)), &out, lim)
	if err != nil {
		return "", top, err
	}
	return list(t, out.Bytes()), top, nil
}

func TestFromZip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ents    []packtest.ZipEntry
		want    string
		wantTop string
	}{
		{"contents at the root", []packtest.ZipEntry{{Name: "views.py", Body: "v"}, {Name: "__init__.py"}, {Name: "migrations/", Mode: fs.ModeDir | 0o755}, {Name: "migrations/0001_initial.py", Body: "m"}},
			"__init__.py=@4|migrations/=@5|migrations/0001_initial.py=m@4|views.py=v@4", ""},
		{"one top folder, as Compress folder makes", []packtest.ZipEntry{{Name: "blog/", Mode: fs.ModeDir | 0o755}, {Name: "blog/__init__.py"}, {Name: "blog/views.py", Body: "v"}},
			"__init__.py=@4|views.py=v@4", "blog"},
		{"as macOS's Compress makes it", []packtest.ZipEntry{{Name: "blog/__init__.py"}, {Name: "__MACOSX/blog/.___init__.py", Body: "fork"}, {Name: "blog/views.py", Body: "v"}, {Name: "__MACOSX/._blog", Body: "fork"}},
			"__init__.py=@4|views.py=v@4", "blog"},
		{"left out: caches and git", []packtest.ZipEntry{{Name: "__init__.py"}, {Name: "__pycache__/x.pyc", Body: "j"}, {Name: "old.pyc"}, {Name: ".git/HEAD", Body: "r"}, {Name: "a/b.py", Body: "b"}},
			"__init__.py=@4|a/=@5|a/b.py=b@4", ""},
		{"empty folders are implied, not kept", []packtest.ZipEntry{{Name: "__init__.py"}, {Name: "static/", Mode: fs.ModeDir | 0o755}},
			"__init__.py=@4", ""},
		{"messy names are cleaned", []packtest.ZipEntry{{Name: "./__init__.py"}, {Name: "a//b.py", Body: "b"}},
			"__init__.py=@4|a/=@5|a/b.py=b@4", ""},
		{"walk order, not string order", []packtest.ZipEntry{{Name: "a-c.py", Body: "1"}, {Name: "a/b.py", Body: "2"}, {Name: "a.py", Body: "3"}},
			"a/=@5|a/b.py=2@4|a-c.py=1@4|a.py=3@4", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, top, err := fromZip(t, packtest.Zip(t, tc.ents...), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || top != tc.wantTop {
				t.Errorf("archive\n got %s (top %q)\nwant %s (top %q)", got, top, tc.want, tc.wantTop)
			}
		})
	}
}

// TestFromZipSameAsPack: a zip of a folder and the folder itself give the
// same bytes, so the console's upload and opusctl's deduplicate.
func TestFromZipSameAsPack(t *testing.T) {
	files := map[string]string{"__init__.py": "", "views.py": "v", "migrations/__init__.py": "", "migrations/0001_initial.py": "m", "a-b.py": "x", "templates/blog/x.html": "<p>"}
	dir := t.TempDir()
	write(t, dir, files)
	var fromDir bytes.Buffer
	if err := Pack(context.Background(), dir, &fromDir); err != nil {
		t.Fatal(err)
	}
	var ents []packtest.ZipEntry
	for n, b := range files {
		ents = append(ents, packtest.ZipEntry{Name: "blog/" + n, Body: b})
	}
	z := packtest.Zip(t, ents...)
	var fromZipped bytes.Buffer
	if _, err := FromZip(context.Background(), bytes.NewReader(z), int64(len(z)), &fromZipped, Limits{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fromDir.Bytes(), fromZipped.Bytes()) {
		t.Errorf("zip gave\n%s\ndirectory gave\n%s", list(t, fromZipped.Bytes()), list(t, fromDir.Bytes()))
	}
}

// lyingZip has one entry that says it holds declared bytes but inflates
// to n zero bytes.
func lyingZip(t testing.TB, declared uint64, n int) []byte {
	t.Helper()
	var data bytes.Buffer
	fw, _ := flate.NewWriter(&data, flate.BestCompression)
	zeros := make([]byte, n)
	fw.Write(zeros)
	fw.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: "__init__.py", Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(zeros[:declared]),
		CompressedSize64: uint64(data.Len()), UncompressedSize64: declared}
	h.SetMode(0o644)
	w, err := zw.CreateRaw(h)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data.Bytes())
	zw.Close()
	return buf.Bytes()
}

func TestFromZipRefuses(t *testing.T) {
	small := Limits{MaxEntries: 10, MaxBytes: 1 << 20, MaxFile: 512 << 10, MaxName: 100, MaxDepth: 4}
	for _, tc := range []struct {
		name string
		zip  []byte
		want string
	}{
		{"symlink", packtest.Zip(t, packtest.ZipEntry{Name: "__init__.py"}, packtest.ZipEntry{Name: "passwd", Body: "/etc/passwd", Mode: fs.ModeSymlink | 0o777}), "passwd is a symbolic link"},
		{"symlink under the top folder", packtest.Zip(t, packtest.ZipEntry{Name: "blog/__init__.py"}, packtest.ZipEntry{Name: "blog/settings.py", Body: "/etc/passwd", Mode: fs.ModeSymlink | 0o777}), "settings.py is a symbolic link"},
		{"device", packtest.Zip(t, packtest.ZipEntry{Name: "__init__.py"}, packtest.ZipEntry{Name: "null", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o666}), "null is not a regular file"},
		{"fifo", packtest.Zip(t, packtest.ZipEntry{Name: "__init__.py"}, packtest.ZipEntry{Name: "p", Mode: fs.ModeNamedPipe | 0o666}), "p is not a regular file"},
		{"dot dot", packtest.Zip(t, packtest.ZipEntry{Name: "__init__.py"}, packtest.ZipEntry{Name: "../x", Body: "x"}), `".." components are not allowed`},
		{"dot dot inside", packtest.Zip(t, packtest.ZipEntry{Name: "a/../../x", Body: "x"}), `".." components are not allowed`},
		{"dot dot folder", packtest.Zip(t, packtest.ZipEntry{Name: "__init__.py"}, packtest.ZipEntry{Name: "../", Mode: fs.ModeDir | 0o755}), `".." components are not allowed`},
		{"absolute", packtest.Zip(t, packtest.ZipEntry{Name: "/etc/cron.d/x", Body: "x"}), "absolute paths are not allowed"},
		{"backslash", packtest.Zip(t, packtest.ZipEntry{Name: `a\..\b`, Body: "x"}), "backslashes"},
		{"NUL", packtest.Zip(t, packtest.ZipEntry{Name: "a\x00b", Body: "x"}), "NUL"},
		{"duplicate", packtest.Zip(t, packtest.ZipEntry{Name: "__init__.py"}, packtest.ZipEntry{Name: "views.py", Body: "1"}, packtest.ZipEntry{Name: "views.py", Body: "2"}), "views.py appears twice"},
		{"duplicate once cleaned", packtest.Zip(t, packtest.ZipEntry{Name: "a/b.py"}, packtest.ZipEntry{Name: "a//b.py"}), "a/b.py appears twice"},
		{"file and folder", packtest.Zip(t, packtest.ZipEntry{Name: "a", Body: "1"}, packtest.ZipEntry{Name: "a/b.py", Body: "2"}), "a is a file and also a folder"},
		{"bomb, as declared", packtest.Zip(t, packtest.ZipEntry{Name: "__init__.py", Body: strings.Repeat("0", 2<<20)}), "more than 1048576 bytes unpacked"},
		{"bomb in many files", packtest.Zip(t, packtest.ZipEntry{Name: "a.py", Body: strings.Repeat("0", 400<<10)}, packtest.ZipEntry{Name: "b.py", Body: strings.Repeat("0", 400<<10)}, packtest.ZipEntry{Name: "c.py", Body: strings.Repeat("0", 400<<10)}), "more than 1048576 bytes unpacked"},
		{"bomb that lies about its size", lyingZip(t, 10, 4<<20), "__init__.py: zip: not a valid zip file"},
		{"one file too big", packtest.Zip(t, packtest.ZipEntry{Name: "__init__.py", Body: strings.Repeat("0", 600<<10)}), "a single file may have at most 524288 bytes"},
		{"too many entries", packtest.Zip(t, func() []packtest.ZipEntry {
			var e []packtest.ZipEntry
			for _, c := range "abcdefghijkl" {
				e = append(e, packtest.ZipEntry{Name: string(c) + ".py"})
			}
			return e
		}()...), "at most 10 files and folders"},
		{"a list of files too long to read", func() []byte {
			var e []packtest.ZipEntry
			for i := range 2000 {
				e = append(e, packtest.ZipEntry{Name: fmt.Sprintf("f%04d", i)})
			}
			return packtest.Zip(t, e...)
		}(), "list of files is longer than 10 files and folders need"},
		{"too many with folders", packtest.Zip(t, packtest.ZipEntry{Name: "a/b/c/d.py"}, packtest.ZipEntry{Name: "e/f/g/h.py"}, packtest.ZipEntry{Name: "i/j/k/l.py"}), "more than 10 files and folders"},
		{"too deep", packtest.Zip(t, packtest.ZipEntry{Name: "__init__.py"}, packtest.ZipEntry{Name: "a/b/c/d/e.py"}), "a/b/c/d/e.py is 5 folders deep"},
		{"name too long", packtest.Zip(t, packtest.ZipEntry{Name: strings.Repeat("x", 101)}), "longer than 100 bytes"},
		{"not a zip", []byte("this is not a zip"), "not a zip archive"},
		{"nothing but folders", packtest.Zip(t, packtest.ZipEntry{Name: "blog/", Mode: fs.ModeDir | 0o755}), "no files to pack"},
		{"nothing but caches", packtest.Zip(t, packtest.ZipEntry{Name: "x.pyc"}), "no files to pack"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := fromZip(t, tc.zip, small)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("FromZip = %v (%s), want an error containing %q", err, got, tc.want)
			}
		})
	}
}

// TestWriteEntriesFolder: a browser's folder, "blog/…" names in any
// order, packs as the folder's contents.
func TestWriteEntriesFolder(t *testing.T) {
	ent := func(name, body string) Entry {
		return Entry{Name: name, Size: int64(len(body)), Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }}
	}
	var out bytes.Buffer
	top, err := WriteEntries(context.Background(), &out, []Entry{ent("blog/views.py", "v"), ent("blog/__init__.py", ""), ent("blog/__pycache__/v.pyc", "j")}, Limits{}, StripTop)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := list(t, out.Bytes()), "__init__.py=@4|views.py=v@4"; got != want || top != "blog" {
		t.Errorf("got %s (top %q), want %s (top blog)", got, top, want)
	}
	for _, tc := range []struct {
		name string
		ents []Entry
		want string
	}{
		{"two folders", []Entry{ent("a/x.py", ""), ent("b/y.py", "")}, "do not all sit in one folder"},
		{"a file beside the folder", []Entry{ent("a/x.py", ""), ent("y.py", "")}, "do not all sit in one folder"},
		{"a bare file", []Entry{ent("x.py", "")}, "do not all sit in one folder"},
		{"nothing", nil, "no files to pack"},
		{"nothing but caches", []Entry{ent("a/__pycache__/x.pyc", ""), ent("a/y.pyc", "")}, "no files to pack"},
		{"a short file", []Entry{{Name: "a/x.py", Size: 10, Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("abc")), nil }}}, "10 bytes announced, 3 read"},
		{"cannot open", []Entry{{Name: "a/x.py", Size: 1, Open: func() (io.ReadCloser, error) { return nil, errors.New("gone") }}}, "x.py: gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := WriteEntries(context.Background(), io.Discard, tc.ents, Limits{}, StripTop)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("WriteEntries = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	// In the order a directory walk visits them.
	ordered := []string{"a", "a/b", "a/b/c", "a/c", "a-b", "a.py", "b"}
	for i := range ordered {
		for j := range ordered {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := Compare(ordered[i], ordered[j]); got != want {
				t.Errorf("Compare(%q, %q) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
}

func TestCleanName(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"a/b.py", "a/b.py", ""},
		{"./a//b.py", "a/b.py", ""},
		{"a/", "a", ""},
		{"./", "", ""},
		{"", "", "empty name"},
		{"/etc/passwd", "", "absolute"},
		{"../x", "", `".."`},
		{"a/../../x", "", `".."`},
		{"a/..", "", `".."`},
		{`a\b`, "", "backslash"},
		{"a\x00", "", "NUL"},
	} {
		got, err := CleanName(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("CleanName(%q) = %q, %v; want an error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("CleanName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "/x", `a\b`, "./", "a//b/", "a/./b", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		clean, err := CleanName(name)
		if err != nil {
			return
		}
		if clean == "" {
			return
		}
		if !filepath.IsLocal(clean) || strings.Contains(clean, `\`) || strings.ContainsRune(clean, 0) || strings.HasPrefix(clean, "/") {
			t.Fatalf("CleanName(%q) = %q, which is not a clean local name", name, clean)
		}
		for _, part := range strings.Split(clean, "/") {
			if part == ".." || part == "." || part == "" {
				t.Fatalf("CleanName(%q) = %q has component %q", name, clean, part)
			}
		}
		if again, err := CleanName(clean); err != nil || again != clean {
			t.Fatalf("CleanName(%q) = %q, but CleanName of that = %q, %v", name, clean, again, err)
		}
	})
}

// FuzzFromZip: whatever the zip, FromZip either refuses it or writes an
// archive of clean names in Compare order, regular files and directories
// only, within the limits.
func FuzzFromZip(f *testing.F) {
	f.Add(packtest.Zip(f, packtest.ZipEntry{Name: "blog/__init__.py"}, packtest.ZipEntry{Name: "blog/views.py", Body: "v"}))
	f.Add(packtest.Zip(f, packtest.ZipEntry{Name: "__init__.py"}, packtest.ZipEntry{Name: "l", Body: "/etc/passwd", Mode: fs.ModeSymlink | 0o777}))
	f.Add(packtest.Zip(f, packtest.ZipEntry{Name: "../x", Body: "x"}))
	f.Add(packtest.Zip(f, packtest.ZipEntry{Name: "a"}, packtest.ZipEntry{Name: "a/b"}))
	f.Add(lyingZip(f, 10, 1<<16))
	lim := Limits{MaxEntries: 50, MaxBytes: 1 << 20, MaxFile: 1 << 19, MaxName: 200, MaxDepth: 8}
	f.Fuzz(func(t *testing.T, z []byte) {
		var out bytes.Buffer
		if _, err := FromZip(context.Background(), bytes.NewReader(z), int64(len(z)), &out, lim); err != nil {
			return
		}
		zr, err := gzip.NewReader(&out)
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		var prev string
		var n, total int64
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n++
			name := strings.TrimSuffix(h.Name, "/")
			if clean, err := CleanName(name); err != nil || clean != name {
				t.Fatalf("entry %q is not clean (%q, %v)", h.Name, clean, err)
			}
			if prev != "" && Compare(prev, name) >= 0 {
				t.Fatalf("entry %q after %q", name, prev)
			}
			prev = name
			switch h.Typeflag {
			case tar.TypeReg:
				total += h.Size
				if Skipped(name) {
					t.Fatalf("%q should have been left out", name)
				}
			case tar.TypeDir:
			default:
				t.Fatalf("entry %q has type %c", h.Name, h.Typeflag)
			}
		}
		if n > lim.MaxEntries || total > lim.MaxBytes {
			t.Fatalf("%d entries, %d bytes: past the limits", n, total)
		}
	})
}

// TestPackOmitsEmptyFolders: directories are implied by their files, as a
// browser sends a folder (it cannot send an empty one).
func TestPackOmitsEmptyFolders(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{"__init__.py": "", "cache/x.pyc": "j"})
	if err := os.Mkdir(filepath.Join(dir, "static"), 0o755); err != nil {
		t.Fatal(err)
	}
	var a bytes.Buffer
	if err := Pack(context.Background(), dir, &a); err != nil {
		t.Fatal(err)
	}
	if got, want := list(t, a.Bytes()), "__init__.py=@4"; got != want {
		t.Errorf("archive %s, want %s", got, want)
	}
}
