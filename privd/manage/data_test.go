package manage

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/opus-hosting/opus/internal/layout"
)

// TestCheckDatabase: privd looks at data/db.sqlite3 without opening it and
// refuses anything but a plain file within the bound: a symlink (to a
// file, whatever it points to), a FIFO, a directory, a hard-linked file, a
// data directory that is itself a link, and an oversized database.
func TestCheckDatabase(t *testing.T) {
	const max = 1000
	tests := []struct {
		name    string
		setup   func(t *testing.T, data string)
		want    error
		wantLen int64
	}{
		{name: "plain file", setup: func(t *testing.T, data string) { write(t, filepath.Join(data, layout.SQLiteFile), 100) }, wantLen: 100},
		{name: "at the bound", setup: func(t *testing.T, data string) { write(t, filepath.Join(data, layout.SQLiteFile), max) }, wantLen: max},
		{name: "missing", setup: func(t *testing.T, data string) {}, want: ErrNoDatabase},
		{name: "too large", setup: func(t *testing.T, data string) { write(t, filepath.Join(data, layout.SQLiteFile), max+1) }, want: ErrDataTooLarge},
		{name: "symlink", setup: func(t *testing.T, data string) {
			write(t, filepath.Join(data, "x"), 10)
			must(t, os.Symlink("x", filepath.Join(data, layout.SQLiteFile)))
		}, want: ErrNotDatabaseFile},
		{name: "symlink to /etc/shadow", setup: func(t *testing.T, data string) {
			must(t, os.Symlink("/etc/shadow", filepath.Join(data, layout.SQLiteFile)))
		}, want: ErrNotDatabaseFile},
		{name: "fifo", setup: func(t *testing.T, data string) {
			must(t, syscall.Mkfifo(filepath.Join(data, layout.SQLiteFile), 0o600))
		}, want: ErrNotDatabaseFile},
		{name: "directory", setup: func(t *testing.T, data string) { must(t, os.Mkdir(filepath.Join(data, layout.SQLiteFile), 0o700)) }, want: ErrNotDatabaseFile},
		{name: "hard link", setup: func(t *testing.T, data string) {
			write(t, filepath.Join(data, "x"), 10)
			must(t, os.Link(filepath.Join(data, "x"), filepath.Join(data, layout.SQLiteFile)))
		}, want: ErrNotDatabaseFile},
		{name: "data dir is a link", setup: func(t *testing.T, data string) {
			other := t.TempDir()
			write(t, filepath.Join(other, layout.SQLiteFile), 10)
			must(t, os.Remove(data))
			must(t, os.Symlink(other, data))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			data := layout.For(base, "blog").Data
			must(t, os.MkdirAll(data, 0o700))
			tt.setup(t, data)
			n, err := CheckDatabase(base, "blog", max)
			if tt.name == "data dir is a link" {
				// openat2 refuses the link (ELOOP), never follows it.
				if err == nil || errors.Is(err, ErrNoDatabase) {
					t.Fatalf("CheckDatabase through a linked data directory = %d, %v; want a refusal", n, err)
				}
				return
			}
			if !errors.Is(err, tt.want) || (tt.want == nil && n != tt.wantLen) {
				t.Fatalf("CheckDatabase = %d, %v; want %d, %v", n, err, tt.wantLen, tt.want)
			}
		})
	}
	if _, err := CheckDatabase(t.TempDir(), "../etc", max); err == nil {
		t.Error("CheckDatabase took a project name that is a path")
	}
}

func write(t *testing.T, path string, size int) {
	t.Helper()
	must(t, os.WriteFile(path, make([]byte, size), 0o600))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
