package source

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestValidateApp(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		setup func(t *testing.T, dir string)
		want  string
		urls  bool
	}{
		{name: "startapp layout", files: map[string]string{"__init__.py": "", "models.py": "", "urls.py": "", "migrations/__init__.py": ""}, urls: true},
		{name: "no urls", files: map[string]string{"__init__.py": "", "models.py": ""}},
		{name: "nested package", files: map[string]string{"README.md": "", "blog/__init__.py": ""},
			want: "the app's files must be at the top level; found a directory blog/ containing __init__.py"},
		{name: "no init", files: map[string]string{"models.py": ""}, want: "no __init__.py at the top level"},
		{name: "symlink", files: map[string]string{"__init__.py": ""}, setup: func(t *testing.T, dir string) {
			if err := os.Symlink("/etc/shadow", filepath.Join(dir, "shadow")); err != nil {
				t.Fatal(err)
			}
		}, want: "shadow is a symbolic link"},
		{name: "fifo", files: map[string]string{"__init__.py": ""}, setup: func(t *testing.T, dir string) {
			if err := syscall.Mkfifo(filepath.Join(dir, "p"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, want: "p is not a regular file or directory"},
		{name: "init is a dir", files: map[string]string{"__init__.py/x": ""}, want: "no __init__.py"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			err := ValidateApp(dir, "blog")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if HasURLs(dir) != tc.urls {
					t.Errorf("HasURLs = %v", !tc.urls)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ValidateApp = %v, want %q", err, tc.want)
			}
		})
	}
	if err := ValidateApp(t.TempDir(), "Bad"); err == nil || !strings.Contains(err.Error(), "uppercase") {
		t.Errorf("bad name accepted: %v", err)
	}
}
