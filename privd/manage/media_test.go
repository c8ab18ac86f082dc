package manage

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runMediaProgram runs one of the media programs as the test's own user
// (the confinement and the project user are Runner's, tested end to
// end): what is tested here is what the program accepts and makes.
func runMediaProgram(t *testing.T, program, path string, max int64, stdin []byte) (stdout []byte, code int, stderr string) {
	t.Helper()
	py, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		t.Skip("no /usr/bin/python3")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{"-I", "-c", program, path, strconv.FormatInt(max, 10)}, mediaArgs()...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("the program hung: %v", ctx.Err())
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), code, errb.String()
}

func tarEntries(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		body, _ := io.ReadAll(tr)
		if h.Typeflag == tar.TypeDir {
			out[strings.TrimSuffix(h.Name, "/")+"/"] = ""
			continue
		}
		out[h.Name] = string(body)
	}
}

// TestDumpMedia: the media directory becomes a tar of its directories and
// regular files; a missing one an empty tar; a link (whatever it points
// to), FIFO or socket anywhere in it is refused by name (exit 4) without
// being followed or opened, at once; more bytes than the bound exit 3
// without reading (a sparse terabyte).
func TestDumpMedia(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, media string)
		want     map[string]string
		wantCode int
		wantErr  string
	}{
		{name: "files and directories", setup: func(t *testing.T, media string) {
			must(t, os.MkdirAll(filepath.Join(media, "a", "b"), 0o700))
			must(t, os.WriteFile(filepath.Join(media, "top.txt"), []byte("top"), 0o600))
			must(t, os.WriteFile(filepath.Join(media, "a", "b", "deep.bin"), []byte("deep"), 0o600))
		}, want: map[string]string{"a/": "", "a/b/": "", "a/b/deep.bin": "deep", "top.txt": "top"}},
		{name: "missing", setup: func(t *testing.T, media string) { must(t, os.Remove(media)) }, want: map[string]string{}},
		{name: "link to /etc/shadow", setup: func(t *testing.T, media string) {
			must(t, os.Symlink("/etc/shadow", filepath.Join(media, "shadow")))
		}, wantCode: exitRefused, wantErr: "media/shadow is a symbolic link"},
		{name: "link to a directory", setup: func(t *testing.T, media string) {
			must(t, os.Symlink("/etc", filepath.Join(media, "etc")))
		}, wantCode: exitRefused, wantErr: "media/etc is a symbolic link"},
		{name: "media is a link", setup: func(t *testing.T, media string) {
			must(t, os.Remove(media))
			must(t, os.Symlink("/etc", media))
		}, wantCode: exitRefused, wantErr: "is a symbolic link"},
		{name: "fifo deep down", setup: func(t *testing.T, media string) {
			must(t, os.MkdirAll(filepath.Join(media, "x"), 0o700))
			must(t, syscall.Mkfifo(filepath.Join(media, "x", "pipe"), 0o600))
		}, wantCode: exitRefused, wantErr: "media/x/pipe is a FIFO"},
		{name: "too large", setup: func(t *testing.T, media string) {
			f, err := os.Create(filepath.Join(media, "huge"))
			must(t, err)
			must(t, f.Truncate(1<<40))
			f.Close()
		}, wantCode: exitTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			media := filepath.Join(t.TempDir(), "media")
			must(t, os.Mkdir(media, 0o700))
			tt.setup(t, media)
			out, code, stderr := runMediaProgram(t, dumpMediaProgram, media, 1<<20, nil)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("exit %d %q, want %d and %q", code, stderr, tt.wantCode, tt.wantErr)
			}
			if tt.want == nil {
				return
			}
			if got := tarEntries(t, out); !equalMaps(got, tt.want) {
				t.Errorf("tar holds %v, want %v", got, tt.want)
			}
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

type entry struct {
	name, body string
	typ        byte
	size       int64 // when not len(body)
}

func makeTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		switch e.typ {
		case tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
			h.Size = 0
			h.Linkname = e.body
		}
		must(t, tw.WriteHeader(h))
		if h.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	must(t, tw.Close())
	return b.Bytes()
}

// treeOf lists dir: names (directories with a trailing /) and contents.
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case fi.IsDir():
			out[rel+"/"] = ""
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			out[rel] = string(b)
		default:
			out[rel] = "?" + fi.Mode().String()
		}
		return nil
	})
	return out
}

// TestLoadMedia: a tar of directories and regular files replaces the
// media directory whole (a link planted at data/media included, which is
// removed, not followed); anything else (a name leaving media, an
// absolute one, a link, a hard link, a FIFO, more than the bound, not a
// tar) fails and leaves the media as they were, and nothing of the tar
// outside the data directory.
func TestLoadMedia(t *testing.T) {
	good := []entry{{name: "a/", typ: tar.TypeDir}, {name: "a/x.txt", body: "x", typ: tar.TypeReg}, {name: "y/z.txt", body: "z", typ: tar.TypeReg}}
	tests := []struct {
		name     string
		setup    func(t *testing.T, data string)
		tar      []byte
		wantCode int
		wantErr  string
	}{
		{name: "replaces", tar: makeTar(t, good...)},
		{name: "over a link", setup: func(t *testing.T, data string) {
			must(t, os.RemoveAll(filepath.Join(data, "media")))
			must(t, os.Symlink("/etc", filepath.Join(data, "media")))
		}, tar: makeTar(t, good...)},
		{name: "no media yet", setup: func(t *testing.T, data string) { must(t, os.RemoveAll(filepath.Join(data, "media"))) }, tar: makeTar(t, good...)},
		{name: "dot dot", tar: makeTar(t, entry{name: "../evil", body: "x", typ: tar.TypeReg}), wantCode: 1, wantErr: "not a path inside media"},
		{name: "dot dot inside", tar: makeTar(t, entry{name: "a/../../evil", body: "x", typ: tar.TypeReg}), wantCode: 1, wantErr: "not a path inside media"},
		{name: "absolute", tar: makeTar(t, entry{name: "/tmp/evil", body: "x", typ: tar.TypeReg}), wantCode: 1, wantErr: "not a path inside media"},
		{name: "symlink", tar: makeTar(t, entry{name: "s", body: "/etc/shadow", typ: tar.TypeSymlink}), wantCode: 1, wantErr: "not a regular file"},
		{name: "hard link", tar: makeTar(t, entry{name: "h", body: "/etc/shadow", typ: tar.TypeLink}), wantCode: 1, wantErr: "not a regular file"},
		{name: "fifo", tar: makeTar(t, entry{name: "f", typ: tar.TypeFifo}), wantCode: 1, wantErr: "not a regular file"},
		{name: "file through a link in the tar", tar: makeTar(t, entry{name: "a", body: "/tmp", typ: tar.TypeSymlink}, entry{name: "a/x", body: "x", typ: tar.TypeReg}), wantCode: 1, wantErr: "not a regular file"},
		{name: "too large", tar: makeTar(t, entry{name: "big", body: string(make([]byte, 2000)), typ: tar.TypeReg}), wantCode: exitTooLarge},
		{name: "not a tar", tar: []byte("hello, this is no tar at all, not even close to 512 bytes"), wantCode: 1, wantErr: "not a sound tar"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			must(t, os.MkdirAll(filepath.Join(data, "media", "old"), 0o700))
			must(t, os.WriteFile(filepath.Join(data, "media", "old", "keep.txt"), []byte("old"), 0o600))
			if tt.setup != nil {
				tt.setup(t, data)
			}
			before := treeOf(t, data)
			_, code, stderr := runMediaProgram(t, loadMediaProgram, data, 1000, tt.tar)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("exit %d %q, want %d and %q", code, stderr, tt.wantCode, tt.wantErr)
			}
			got := treeOf(t, data)
			if tt.wantCode != 0 {
				// The previous media stay; the scratch directory may too
				// (the next load removes it), but nothing else.
				for k := range got {
					if _, ok := before[k]; !ok && !strings.HasPrefix(k, ".media.new") {
						t.Errorf("a refused load left %s", k)
					}
				}
				for k, v := range before {
					if got[k] != v {
						t.Errorf("a refused load changed %s", k)
					}
				}
				return
			}
			want := map[string]string{"media/": "", "media/a/": "", "media/a/x.txt": "x", "media/y/": "", "media/y/z.txt": "z"}
			if !equalMaps(got, want) {
				keys := slices.Sorted(func(yield func(string) bool) {
					for k := range got {
						if !yield(k) {
							return
						}
					}
				})
				t.Errorf("data holds %v, want %v", keys, want)
			}
		})
	}
}
