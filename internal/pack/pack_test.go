package pack

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func list(t *testing.T, arch []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(arch))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out = append(out, h.Name+"="+string(b)+"@"+string(rune('0'+h.Mode&7)))
	}
	return strings.Join(out, "|")
}

func TestPack(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{
		"__init__.py": "", "views.py": "v", "migrations/0001_initial.py": "m",
		"__pycache__/views.cpython-311.pyc": "junk", ".git/HEAD": "ref", "old.pyc": "junk",
	})
	var a, b bytes.Buffer
	if err := Pack(context.Background(), dir, &a); err != nil {
		t.Fatal(err)
	}
	got := list(t, a.Bytes())
	want := "__init__.py=@4|migrations/=@5|migrations/0001_initial.py=m@4|views.py=v@4"
	if got != want {
		t.Errorf("archive\n got %s\nwant %s", got, want)
	}
	// Deterministic: same tree, same bytes (so uploads deduplicate).
	if err := Pack(context.Background(), dir, &b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("packing twice gave different bytes")
	}
}

func TestPackRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"symlink", func(t *testing.T, dir string) {
			if err := os.Symlink("/etc/passwd", filepath.Join(dir, "passwd")); err != nil {
				t.Fatal(err)
			}
		}, "passwd is a symbolic link"},
		{"fifo", func(t *testing.T, dir string) {
			if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "fifo is not a regular file or directory"},
		{"not a dir", func(t *testing.T, dir string) {}, "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, map[string]string{"__init__.py": ""})
			tc.setup(t, dir)
			target := dir
			if tc.name == "not a dir" {
				target = filepath.Join(dir, "__init__.py")
			}
			var buf bytes.Buffer
			err := Pack(context.Background(), target, &buf)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Pack = %v, want %q", err, tc.want)
			}
		})
	}
}
