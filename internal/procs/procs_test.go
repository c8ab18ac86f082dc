package procs

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	dir := t.TempDir()
	proc := func(pid, uidLine string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, pid, "status"), []byte("Name:\tx\nUid:\t"+uidLine+"\nGid:\t0\t0\t0\t0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	proc("10", "70001\t70001\t70001\t70001")
	proc("11", "1000\t70001\t70001\t70001") // setuid program of 70001, started by 1000
	proc("12", "70002\t70002\t70002\t70002")
	proc("13", "0\t0\t0\t0")
	proc("self", "70001\t70001\t70001\t70001") // not a pid
	proc("14", "garbage")
	// A zombie of 70001: exited, its parent has not reaped it yet.
	if err := os.MkdirAll(filepath.Join(dir, "15"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "15", "status"), []byte("Name:\tsh\nState:\tZ (zombie)\nUid:\t70001\t70001\t70001\t70001\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tab := Table{Dir: dir}
	got := tab.Of(70001, 0)
	slices.Sort(got)
	if !slices.Equal(got, []int{10, 11}) {
		t.Errorf("Of(70001) = %v, want [10 11]", got)
	}
	if got := tab.Of(70001, 1); len(got) != 1 {
		t.Errorf("Of(70001, 1) = %v, want one pid", got)
	}
	if got := tab.Of(0, 0); got != nil {
		t.Errorf("Of(0) = %v, want nothing", got)
	}
	all := tab.UIDs()
	if len(all) != 4 || !slices.Equal(all[11], []uint32{1000, 70001}) || !slices.Equal(all[12], []uint32{70002}) {
		t.Errorf("UIDs() = %v", all)
	}
	if got := (Table{Dir: filepath.Join(dir, "missing")}).Of(70001, 0); got != nil {
		t.Errorf("a missing /proc: %v", got)
	}
	// The real /proc: this process is found by its own uid.
	if uid := uint32(os.Getuid()); uid != 0 && !slices.Contains(Table{}.Of(uid, 0), os.Getpid()) {
		t.Errorf("the real /proc does not list this process under uid %d", uid)
	}
}

func TestCmdlineAndMatching(t *testing.T) {
	dir := t.TempDir()
	write := func(pid, cmd string) {
		if err := os.MkdirAll(filepath.Join(dir, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, pid, "cmdline"), []byte(cmd), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10", "/usr/sbin/apache2\x00-f\x00/srv/a/httpd.conf\x00")
	write("11", "(wsgi:blog)       \x00-f\x00/srv/a/httpd.conf\x00")
	write("12", strings.Repeat("x", MaxCmdline*3))
	tb := Table{Dir: dir}
	if b, err := tb.Cmdline(12); err != nil || len(b) != MaxCmdline {
		t.Errorf("Cmdline of a long command line: %d bytes, %v; want %d", len(b), err, MaxCmdline)
	}
	got := tb.Matching(func(c []byte) bool { return bytes.Contains(c, []byte("/srv/a/")) })
	slices.Sort(got)
	if !slices.Equal(got, []int{10, 11}) {
		t.Errorf("Matching = %v, want [10 11]", got)
	}
}
