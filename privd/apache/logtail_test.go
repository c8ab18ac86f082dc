package apache

import (
	"cmp"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/opus-hosting/opus/internal/config"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// TestLinesAfter follows a log through appends, partial lines, the
// bounds of one call, rotation and truncation: every complete line comes
// exactly once, in order.
func TestLinesAfter(t *testing.T) {
	notice := "[t] [core:notice] [pid 1] AH00094: Command line: 'apache2'\n"
	// A step changes the log, then reads after the last position.
	type step struct {
		do       func(t *testing.T, path string)
		n        int
		limit    int64
		want     []string
		wantMore bool
	}
	appendLog := func(s string) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString(s); err != nil {
				t.Fatal(err)
			}
		}
	}
	// replaceLog makes a new file (a new inode) at path, as a rotation does.
	replaceLog := func(s string) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			tmp := path + ".new"
			if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}
	}
	truncateLog := func(s string) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(s), 0o600); err != nil { // same inode
				t.Fatal(err)
			}
		}
	}
	nothing := func(*testing.T, string) {}
	for _, tc := range []struct {
		name    string
		initial string
		steps   []step
	}{
		{"appended lines come once", "old 1\nold 2\n", []step{
			{do: nothing, want: []string{}},
			{do: appendLog("new 1\nnew 2\n"), want: []string{"new 1", "new 2"}},
			{do: nothing, want: []string{}},
			{do: appendLog("new 3\n"), want: []string{"new 3"}},
		}},
		{"a line not yet ended waits for its newline", "", []step{
			{do: appendLog("half"), want: []string{}},
			{do: appendLog(" and the rest\nnext"), want: []string{"half and the rest"}},
			{do: appendLog("\n"), want: []string{"next"}},
		}},
		{"at most n lines a call, the rest next", "", []step{
			{do: appendLog("a\nb\nc\nd\ne\n"), n: 2, want: []string{"a", "b"}, wantMore: true},
			{do: nothing, n: 2, want: []string{"c", "d"}, wantMore: true},
			{do: nothing, n: 2, want: []string{"e"}},
		}},
		{"at most limit bytes a call", "", []step{
			{do: appendLog("aaaa\nbbbb\ncccc\n"), limit: 12, want: []string{"aaaa", "bbbb"}, wantMore: true},
			{do: nothing, limit: 12, want: []string{"cccc"}},
		}},
		{"a line longer than limit comes in pieces", "", []step{
			{do: appendLog("0123456789abcdef\nz\n"), limit: 8, want: []string{"01234567"}, wantMore: true},
			{do: nothing, limit: 8, want: []string{"89abcdef"}, wantMore: true},
			{do: nothing, limit: 8, want: []string{"z"}},
		}},
		{"a line of exactly limit bytes is whole", "", []step{
			{do: appendLog("01234567\nz\n"), limit: 8, want: []string{"01234567"}, wantMore: true},
			{do: nothing, limit: 8, want: []string{"z"}},
		}},
		{"server notices are left out but passed", "", []step{
			{do: appendLog(notice + "mine\n" + notice), want: []string{"mine"}},
			{do: appendLog("after\n"), want: []string{"after"}},
		}},
		{"rotated: the new file from its start", "old\n", []step{
			{do: appendLog("before\n"), want: []string{"before"}},
			{do: replaceLog("fresh 1\nfresh 2\n"), want: []string{"fresh 1", "fresh 2"}},
			{do: appendLog("fresh 3\n"), want: []string{"fresh 3"}},
		}},
		{"truncated: from the start", "a long old line\nanother long one\n", []step{
			{do: truncateLog("short\n"), want: []string{"short"}},
			{do: appendLog("more\n"), want: []string{"more"}},
		}},
		{"removed then made again", "old\n", []step{
			{do: func(t *testing.T, path string) { os.Remove(path) }, want: []string{}},
			{do: appendLog("new\n"), want: []string{"new"}},
		}},
		{"not UTF-8", "", []step{
			{do: appendLog("\xff raw\n"), want: []string{"\uFFFD raw"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "blog.error.log")
			if tc.initial != "" {
				appendLog(tc.initial)(t, path)
			}
			// Following starts where a tail of the log ends.
			_, pos, err := tailLog(path, 10, 1<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.steps {
				s.do(t, path)
				n, limit := cmp.Or(s.n, 100), cmp.Or(s.limit, 1<<20)
				res, err := linesAfter(path, pos, n, limit, func(l string) bool { return !serverNotice.MatchString(l) })
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if !slices.Equal(res.GetLines(), s.want) || res.GetMore() != s.wantMore {
					t.Fatalf("step %d: lines %q more %v; want %q more %v", i, res.GetLines(), res.GetMore(), s.want, s.wantMore)
				}
				pos = res.GetNext()
			}
		})
	}
}

// TestTailLogNext: the position a tail answers is the end of what it
// read, so that following from it misses and repeats nothing.
func TestTailLogNext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("a\nb\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lines, next, err := tailLog(path, 1, 1000, nil)
	if err != nil || !slices.Equal(lines, []string{"b"}) || next.GetOffset() != 4 || next.GetInode() == 0 {
		t.Fatalf("tail: %q %v %v; want [b] at offset 4 of the file", lines, next, err)
	}
	if lines, next, err = tailLog(filepath.Join(t.TempDir(), "none"), 1, 1000, nil); err != nil || len(lines) != 0 || next.GetInode() != 0 {
		t.Fatalf("no log: %q %v %v; want nothing at the zero position", lines, next, err)
	}
}

// TestLogRefusesLinksAndFIFOs: a log that is a symbolic link (to a file
// the caller may not read) or a FIFO (which would block a plain open) is
// refused, by the tail and the follow alike, without hanging.
func TestLogRefusesLinksAndFIFOs(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("root's secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link, fifo := filepath.Join(dir, "link.error.log"), filepath.Join(dir, "fifo.error.log")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, fifo} {
		if lines, err := tailFile(p, 10, 1000, nil); err == nil {
			t.Errorf("tail of %s: %q, want an error", filepath.Base(p), lines)
		}
		if res, err := linesAfter(p, &privdv1.LogPosition{}, 10, 1000, nil); err == nil {
			t.Errorf("follow of %s: %q, want an error", filepath.Base(p), res.GetLines())
		}
	}
}

// TestTailLogAfter: Sites.TailLog with a position answers what was
// appended since the tail it came from, and refuses a negative offset.
func TestTailLogAfter(t *testing.T) {
	s := NewSites(config.Config{ApacheDir: t.TempDir()}, nil, Options{})
	ctx := context.Background()
	if err := os.MkdirAll(s.paths.Logs(), 0o750); err != nil {
		t.Fatal(err)
	}
	path := s.paths.ErrorLog("blog")
	if err := os.WriteFile(path, []byte("one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	first, err := s.TailLog(ctx, &privdv1.TailLogRequest{Project: "blog"})
	if err != nil || !slices.Equal(first.GetLines(), []string{"one"}) {
		t.Fatalf("tail: %v %v", first, err)
	}
	if err := os.WriteFile(path, []byte("one\ntwo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := s.TailLog(ctx, &privdv1.TailLogRequest{Project: "blog", After: first.GetNext()})
	if err != nil || strings.Join(res.GetLines(), ",") != "two" {
		t.Fatalf("after: %v %v; want [two]", res, err)
	}
	if _, err := s.TailLog(ctx, &privdv1.TailLogRequest{Project: "blog", After: &privdv1.LogPosition{Offset: -1}}); err == nil {
		t.Error("a negative offset was accepted")
	}
}
