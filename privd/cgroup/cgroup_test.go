package cgroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/testrun"
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
	// The fake hierarchy's files are made with mode 0 (write creates
	// none on a real one): readable by the test when not run as root.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
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

// TestMain: a killed run's groups are removed by the next run.
func TestMain(m *testing.M) {
	os.Exit(testrun.Main(m, testrun.Cleaner{Kind: "cgroup", Clean: func(_ string, groups []string) error {
		root, err := Detect("")
		if err != nil {
			return nil
		}
		for _, g := range groups {
			if err := root.RemoveTree(g); err != nil {
				return err
			}
		}
		return nil
	}}))
}

// TestKillAndRemove, on the host's real control groups: a group is made
// beneath this process's own with its limits, a process started into it
// (and one it detaches) is ended by Kill, and Remove and RemoveTree take
// the groups away.
func TestKillAndRemove(t *testing.T) {
	run := testrun.Need(t, "makes control groups and processes in them")
	r, err := Detect("")
	if err != nil {
		t.Skipf("this host gives no control groups: %v", err)
	}
	parent := "opus.t" + run.ID
	if err := run.Note("cgroup", parent); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.RemoveTree(parent) })
	g, _ := r.Group(parent + "/blog")
	if err := g.Ensure(Limits{MemoryBytes: 256 << 20, Tasks: 64, CPUPercent: 50}); err != nil {
		t.Fatal(err)
	}
	if !g.Exists() {
		t.Fatal("the group does not exist after Ensure")
	}
	// A shell that joins the group, then leaves a detached sleeper.
	join := ""
	for _, f := range g.ProcsFiles() {
		join += "echo $$ > " + f + "; "
	}
	sh := exec.Command("/bin/sh", "-c", join+"setsid sleep 60 & sleep 60")
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sh.Wait() }()
	for deadline := time.Now().Add(5 * time.Second); len(g.Pids()) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the group holds %v, want the shell and its sleepers", g.Pids())
		}
	}
	if left := g.Kill(5 * time.Second); left != 0 {
		t.Fatalf("Kill left %d processes", left)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the group's shell survived Kill")
	}
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	if g.Exists() {
		t.Error("the group exists after Remove")
	}
	if err := r.RemoveTree(parent); err != nil {
		t.Fatal(err)
	}
	if p, _ := r.Group(parent); p.Exists() {
		t.Error("the parent group is left after RemoveTree")
	}
}
