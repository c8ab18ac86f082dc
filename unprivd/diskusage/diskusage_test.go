package diskusage

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMeasure: regular files are counted, links (to files, to
// directories, in loops) and FIFOs are neither followed nor opened, and
// every bound cuts the walk short with Partial and a reason.
func TestMeasure(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	outside := t.TempDir()
	write := func(p string, n int) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "a"), 100)
	write(filepath.Join(dir, "sub", "b"), 50)
	write(filepath.Join(dir, "sub", "deeper", "c"), 25)
	write(filepath.Join(outside, "big"), 1<<20)
	for link, target := range map[string]string{
		"to-outside":      outside,
		"to-big":          filepath.Join(outside, "big"),
		"loop":            ".",
		"sub/up":          "..",
		"sub/deeper/self": ".",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Measure(ctx, dir, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Bytes != 175 || got.Files != 3 || got.Partial {
		t.Fatalf("Measure = %+v, want 175 bytes in 3 files, whole", got)
	}

	for _, tc := range []struct {
		name string
		lim  Limits
		why  string
	}{
		{"entries", Limits{MaxEntries: 3}, "more than 3 entries"},
		{"depth", Limits{MaxDepth: 1}, "deeper than 1"},
		{"time", Limits{Timeout: time.Nanosecond}, "took longer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			many := dir
			if tc.name == "time" {
				// Enough entries to reach a time check.
				many = t.TempDir()
				for i := 0; i < 2048; i++ {
					write(filepath.Join(many, "f", strconv.Itoa(i)), 1)
				}
			}
			got, err := Measure(ctx, many, tc.lim)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Partial || !strings.Contains(got.Why, tc.why) {
				t.Errorf("Measure = %+v, want partial: %s", got, tc.why)
			}
		})
	}

	if got, err := Measure(ctx, filepath.Join(dir, "missing"), Limits{}); err != nil || got != (Size{}) {
		t.Errorf("missing directory: %+v, %v", got, err)
	}
	if _, err := Measure(ctx, filepath.Join(dir, "to-outside"), Limits{}); err == nil {
		t.Error("a link as the top directory was followed")
	}
}
