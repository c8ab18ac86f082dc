package tenantdir

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const limit = 4 << 10

// outside is a file beyond the directory a planted link points at: the
// other project's secrets of the attack.
func outside(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "victim.json")
	if err := os.WriteFile(p, []byte(`{"secret_key": "VICTIM"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func openDir(t *testing.T, path string) *Dir {
	t.Helper()
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestReadFile: only a plain regular file within the bound is read; every
// thing a tenant can plant instead is refused (or missing), quickly, and
// says what it is.
func TestReadFile(t *testing.T) {
	cases := []struct {
		name    string
		plant   func(t *testing.T, path string)
		want    string // content read; "" with refused or missing
		refused string // in the error when refused
		missing bool
	}{
		{name: "regular file", plant: func(t *testing.T, p string) { write(t, p, "hello") }, want: "hello"},
		{name: "empty file", plant: func(t *testing.T, p string) { write(t, p, "") }, want: ""},
		{name: "exactly the bound", plant: func(t *testing.T, p string) { write(t, p, strings.Repeat("x", limit)) }, want: strings.Repeat("x", limit)},
		{name: "missing", plant: func(*testing.T, string) {}, missing: true},
		{name: "too big", plant: func(t *testing.T, p string) { write(t, p, strings.Repeat("x", limit+1)) }, refused: "more than 4096"},
		{name: "link to another project's file", plant: func(t *testing.T, p string) { symlink(t, outside(t), p) }, refused: "symbolic link"},
		{name: "link to /dev/zero", plant: func(t *testing.T, p string) { symlink(t, "/dev/zero", p) }, refused: "symbolic link"},
		{name: "dangling link", plant: func(t *testing.T, p string) { symlink(t, "/nonexistent/x", p) }, refused: "symbolic link"},
		{name: "relative link inside the directory", plant: func(t *testing.T, p string) {
			write(t, filepath.Join(filepath.Dir(p), "real"), "inside")
			symlink(t, "real", p)
		}, refused: "symbolic link"},
		{name: "FIFO", plant: func(t *testing.T, p string) { mkfifo(t, p) }, refused: "FIFO"},
		{name: "hard link", plant: func(t *testing.T, p string) {
			o := filepath.Join(filepath.Dir(p), "other-name")
			write(t, o, "shared")
			if err := os.Link(o, p); err != nil {
				t.Fatal(err)
			}
		}, refused: "2 hard links"},
		{name: "directory", plant: func(t *testing.T, p string) { os.Mkdir(p, 0o755) }, refused: "directory"},
		{name: "socket", plant: func(t *testing.T, p string) {
			l, err := net.Listen("unix", p)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		}, refused: "socket"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			c.plant(t, filepath.Join(dir, "secrets.json"))
			d := openDir(t, dir)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			got, err := d.ReadFile(ctx, "secrets.json", limit)
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("took %v", took)
			}
			switch {
			case c.missing:
				if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrRefused) {
					t.Fatalf("err = %v, want not exist", err)
				}
			case c.refused != "":
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.refused) {
					t.Fatalf("err = %v, want refused with %q", err, c.refused)
				}
				if got != nil {
					t.Errorf("refused, yet returned %q", got)
				}
			default:
				if err != nil || string(got) != c.want {
					t.Fatalf("got %q, %v; want %q", got, err, c.want)
				}
			}
		})
	}
}

// TestReadFileCancelled: a read whose context has ended is not started.
func TestReadFileCancelled(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "f"), "x")
	d := openDir(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.ReadFile(ctx, "f", limit); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

// TestNames: only one plain entry name is accepted; nothing reaches beyond
// the directory.
func TestNames(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "parent.txt"), "parent")
	d := openDir(t, sub)
	for _, name := range []string{"", ".", "..", "../parent.txt", "a/b", "/etc/passwd", "x\x00y"} {
		if _, err := d.ReadFile(context.Background(), name, limit); err == nil {
			t.Errorf("ReadFile(%q) accepted", name)
		}
		if err := d.WriteFile(name, []byte("x"), 0o600); err == nil {
			t.Errorf("WriteFile(%q) accepted", name)
		}
	}
	if got := entries(t, sub); len(got) != 0 {
		t.Errorf("refused names left %v", got)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "parent.txt")); string(b) != "parent" {
		t.Errorf("parent.txt = %q", b)
	}
}

// TestWriteFile: whatever the tenant put at the name, the write replaces
// the entry itself with a new regular file of the mode asked for, never
// writes through it, never blocks, and leaves no temporary file.
func TestWriteFile(t *testing.T) {
	cases := []struct {
		name  string
		plant func(t *testing.T, path string) (check func(t *testing.T))
	}{
		{name: "nothing", plant: func(*testing.T, string) func(*testing.T) { return nil }},
		{name: "regular file", plant: func(t *testing.T, p string) func(*testing.T) { write(t, p, "old"); return nil }},
		{name: "link to another project's file", plant: func(t *testing.T, p string) func(*testing.T) {
			o := outside(t)
			symlink(t, o, p)
			return func(t *testing.T) { unchanged(t, o, `{"secret_key": "VICTIM"}`) }
		}},
		{name: "dangling link", plant: func(t *testing.T, p string) func(*testing.T) {
			target := filepath.Join(t.TempDir(), "made-through-link")
			symlink(t, target, p)
			return func(t *testing.T) {
				if _, err := os.Lstat(target); err == nil {
					t.Error("the write created the link's target")
				}
			}
		}},
		{name: "link to /dev/zero", plant: func(t *testing.T, p string) func(*testing.T) { symlink(t, "/dev/zero", p); return nil }},
		{name: "FIFO", plant: func(t *testing.T, p string) func(*testing.T) { mkfifo(t, p); return nil }},
		{name: "hard link", plant: func(t *testing.T, p string) func(*testing.T) {
			o := filepath.Join(t.TempDir(), "other-name")
			write(t, o, "other's")
			if err := os.Link(o, p); err != nil {
				t.Fatal(err)
			}
			return func(t *testing.T) { unchanged(t, o, "other's") }
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "secrets.json")
			check := c.plant(t, p)
			d := openDir(t, dir)
			done := make(chan error, 1)
			go func() { done <- d.WriteFile("secrets.json", []byte("new"), 0o640) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("WriteFile blocked")
			}
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o640 || fi.Sys().(*syscall.Stat_t).Nlink != 1 {
				t.Errorf("entry is %v with %d links, want a regular 0640 file", fi.Mode(), fi.Sys().(*syscall.Stat_t).Nlink)
			}
			unchanged(t, p, "new")
			if check != nil {
				check(t)
			}
			if got := entries(t, dir); !slices.Equal(got, []string{"secrets.json"}) {
				t.Errorf("directory holds %v", got)
			}
		})
	}
}

// TestWriteFileOverDirectory: a directory at the name fails the write and
// is left alone, with no temporary file behind.
func TestWriteFileOverDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "secrets.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := openDir(t, dir)
	if err := d.WriteFile("secrets.json", []byte("new"), 0o640); err == nil {
		t.Fatal("write over a directory succeeded")
	}
	if fi, err := os.Lstat(filepath.Join(dir, "secrets.json")); err != nil || !fi.IsDir() {
		t.Errorf("directory changed: %v %v", fi, err)
	}
	if got := entries(t, dir); !slices.Equal(got, []string{"secrets.json"}) {
		t.Errorf("directory holds %v", got)
	}
}

// TestWriteFileMode: only permission bits are accepted.
func TestWriteFileMode(t *testing.T) {
	d := openDir(t, t.TempDir())
	if err := d.WriteFile("f", nil, fs.ModeSetuid|0o755); err == nil {
		t.Error("setuid mode accepted")
	}
}

// TestOpen: the directory itself must not be a link.
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	symlink(t, real, filepath.Join(dir, "link"))
	if _, err := Open(filepath.Join(dir, "link")); !errors.Is(err, ErrRefused) {
		t.Errorf("Open(link to a directory) = %v, want refused", err)
	}
	write(t, filepath.Join(dir, "file"), "x")
	if _, err := Open(filepath.Join(dir, "file")); !errors.Is(err, ErrRefused) {
		t.Errorf("Open(file) = %v, want refused", err)
	}
	if _, err := Open(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(missing) = %v, want not exist", err)
	}
}

// FuzzNames: whatever the name, WriteFile either refuses it or makes
// exactly that one entry in the directory, and ReadFile reads it back.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"secrets.json", "..", "../x", "a/b", ".", "", "x\x00", ".secrets.json.tmp-1", " ", "\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		base := t.TempDir()
		dir := filepath.Join(base, "d")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		d := openDir(t, dir)
		err := d.WriteFile(name, []byte("v"), 0o600)
		if got := entries(t, base); !slices.Equal(got, []string{"d"}) {
			t.Fatalf("WriteFile(%q) changed the parent: %v", name, got)
		}
		got := entries(t, dir)
		if err != nil {
			if len(got) != 0 {
				t.Fatalf("refused WriteFile(%q) left %v", name, got)
			}
			return
		}
		if !slices.Equal(got, []string{name}) {
			t.Fatalf("WriteFile(%q) made %v", name, got)
		}
		if b, err := d.ReadFile(context.Background(), name, 10); err != nil || string(b) != "v" {
			t.Fatalf("ReadFile(%q) = %q, %v", name, b, err)
		}
	})
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func mkfifo(t *testing.T, p string) {
	t.Helper()
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
}

func unchanged(t *testing.T, p, want string) {
	t.Helper()
	if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, []byte(want)) {
		t.Errorf("%s = %q, %v; want %q", p, b, err, want)
	}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
