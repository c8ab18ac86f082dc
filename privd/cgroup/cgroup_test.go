package cgroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeRoot is a Root on a temporary directory laid out as cgroupfs would
// be (files made as the kernel would make them are written by the test).
func fakeRoot(t *testing.T, v2 bool) *Root {
	t.Helper()
	r := &Root{Mount: t.TempDir(), V2: v2, own: map[string]string{}}
	if v2 {
		r.own[""] = "/opusd.service"
	} else {
		for _, c := range v1Controllers {
			r.own[c] = "/process_api/x"
		}
	}
	for c, own := range r.own {
		if err := os.MkdirAll(filepath.Join(r.Mount, c, own), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestGroupNames(t *testing.T) {
	r := fakeRoot(t, false)
	for _, bad := range []string{"", "a//b", "../x", "a/./b", "a/..", "/a"} {
		if _, err := r.Group(bad); err == nil {
			t.Errorf("Group(%q) accepted", bad)
		}
	}
	if _, err := r.Group("opus.opus/blog"); err != nil {
		t.Error(err)
	}
}

// TestEnsureV1: a group in each v1 hierarchy beneath this process's own,
// with the limits in each controller's files; zero is no limit.
func TestEnsureV1(t *testing.T) {
	r := fakeRoot(t, false)
	g, _ := r.Group("opus.opus/blog")
	if g.Exists() {
		t.Fatal("a group exists before Ensure")
	}
	if err := g.Ensure(Limits{MemoryBytes: 256 << 20, Tasks: 128, CPUPercent: 50}); err != nil {
		t.Fatal(err)
	}
	dir := func(c string) string { return filepath.Join(r.Mount, c, "process_api/x/opus.opus/blog") }
	for file, want := range map[string]string{
		dir("memory") + "/memory.limit_in_bytes": strconv.Itoa(256 << 20),
		dir("pids") + "/pids.max":                "128",
		dir("cpu") + "/cpu.cfs_quota_us":         "50000",
		dir("cpu") + "/cpu.cfs_period_us":        "100000",
	} {
		if got := read(t, file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	if !g.Exists() {
		t.Error("Exists is false after Ensure")
	}
	if err := g.Ensure(Limits{}); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		dir("memory") + "/memory.limit_in_bytes": "-1",
		dir("pids") + "/pids.max":                "max",
		dir("cpu") + "/cpu.cfs_quota_us":         "-1",
	} {
		if got := read(t, file); got != want {
			t.Errorf("unbounded: %s = %q, want %q", file, got, want)
		}
	}
	files := g.ProcsFiles()
	if len(files) != 3 {
		t.Errorf("ProcsFiles = %v, want one per hierarchy", files)
	}
	for _, f := range files {
		if !strings.HasSuffix(f, "/opus.opus/blog/cgroup.procs") {
			t.Errorf("ProcsFiles has %s", f)
		}
	}
}

// TestEnsureV2: on the unified hierarchy the controllers are enabled on
// every level above the group, and the limits are set in v2's files.
func TestEnsureV2(t *testing.T) {
	r := fakeRoot(t, true)
	g, _ := r.Group("opus.opus/blog")
	if err := g.Ensure(Limits{MemoryBytes: 1 << 30, CPUPercent: 200}); err != nil {
		t.Fatal(err)
	}
	own := filepath.Join(r.Mount, "opusd.service")
	for file, want := range map[string]string{
		own + "/cgroup.subtree_control":           "+memory +pids +cpu",
		own + "/opus.opus/cgroup.subtree_control": "+memory +pids +cpu",
		own + "/opus.opus/blog/memory.max":        strconv.Itoa(1 << 30),
		own + "/opus.opus/blog/pids.max":          "max",
		own + "/opus.opus/blog/cpu.max":           "200000 100000",
	} {
		if got := read(t, file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
}

// TestKillAndRemove: Kill ends the processes a group's cgroup.procs lists
// (a real child here), and Remove and RemoveTree take the groups away.
func TestKillAndRemove(t *testing.T) {
	r := fakeRoot(t, false)
	g, _ := r.Group("opus.opus/blog")
	if err := g.Ensure(Limits{}); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sleeper.Wait() }()
	procs := filepath.Join(r.Mount, "memory/process_api/x/opus.opus/blog/cgroup.procs")
	if err := os.WriteFile(procs, []byte(strconv.Itoa(sleeper.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := g.Pids(); len(got) != 1 || got[0] != sleeper.Process.Pid {
		t.Fatalf("Pids = %v, want [%d]", got, sleeper.Process.Pid)
	}
	// The fake cgroup.procs does not empty itself as the kernel's does:
	// one round of signals (wait 0), and the pid is still listed.
	if left := g.Kill(0); left != 1 {
		t.Errorf("Kill left %d listed, want the fake's 1", left)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the group's process survived Kill")
	}
	// cgroupfs removes a group's files with it; a temporary directory
	// needs them gone first.
	for _, c := range v1Controllers {
		d := filepath.Join(r.Mount, c, "process_api/x/opus.opus/blog")
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			os.Remove(filepath.Join(d, e.Name()))
		}
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	if g.Exists() {
		t.Error("the group exists after Remove")
	}
	if err := r.RemoveTree("opus.opus"); err != nil {
		t.Fatal(err)
	}
	for _, c := range v1Controllers {
		if _, err := os.Stat(filepath.Join(r.Mount, c, "process_api/x/opus.opus")); !os.IsNotExist(err) {
			t.Errorf("%s: the parent group is left: %v", c, err)
		}
	}
}
