// Package cgroup gives each project's backend a control group of its own,
// where the host has them: memory, task and CPU limits, and a way to end
// every process of it (a tenant's detached processes included: they
// cannot leave their group). Groups are made beneath privd's own group in
// each hierarchy (cgroup v1: memory, pids, cpu; v2: the unified one), so
// privd's own limits, a container's or a systemd unit's, still hold
// around them.
//
// It writes cgroupfs directly (a few files per group) rather than through
// a library: runc's and containerd's cgroup packages bring their own
// systemd and D-Bus stacks for what is here a handful of writes.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Limits bound one group. Zero fields are not limited.
type Limits struct {
	// MemoryBytes bounds the group's memory (page cache included).
	MemoryBytes int64
	// Tasks bounds its processes and threads.
	Tasks int64
	// CPUPercent bounds its CPU time, in percent of one CPU.
	CPUPercent int
}

// Root is where groups are made: the cgroup filesystem's mount point and
// this process's own group in each hierarchy.
type Root struct {
	// Mount is the cgroup filesystem (/sys/fs/cgroup).
	Mount string
	// V2 is true on the unified hierarchy.
	V2 bool
	// own maps each controller directory (v1: "memory", "pids", "cpu";
	// v2: "") to this process's group in it.
	own map[string]string
}

// v1Controllers are the v1 hierarchies a group is made in.
var v1Controllers = []string{"memory", "pids", "cpu"}

// Detect finds the cgroup hierarchies at mount (/sys/fs/cgroup when
// empty) and this process's place in them. It returns an error when the
// host gives none that can be written.
func Detect(mount string) (*Root, error) {
	if mount == "" {
		mount = "/sys/fs/cgroup"
	}
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	r := &Root{Mount: mount, own: map[string]string{}}
	if _, err := os.Stat(filepath.Join(mount, "cgroup.controllers")); err == nil {
		r.V2 = true
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// hierarchy-ID:controller-list:path
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		if r.V2 {
			if f[0] == "0" {
				r.own[""] = f[2]
			}
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			for _, want := range v1Controllers {
				if c == want {
					r.own[want] = f[2]
				}
			}
		}
	}
	if r.V2 && r.own[""] == "" || !r.V2 && len(r.own) == 0 {
		return nil, errors.New("cgroup: this process is in no memory, pids or cpu group")
	}
	return r, nil
}

// Group is one backend's control group.
type Group struct {
	root *Root
	name string
}

// Group returns the group called name (a path of plain names, such as
// "opus/opus-blog") beneath this process's own groups; it is not made yet.
func (r *Root) Group(name string) (*Group, error) {
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return nil, fmt.Errorf("cgroup: bad group name %q", name)
		}
	}
	return &Group{root: r, name: name}, nil
}

// dirs returns the group's directory in each hierarchy.
func (g *Group) dirs() map[string]string {
	out := map[string]string{}
	for c, own := range g.root.own {
		out[c] = filepath.Join(g.root.Mount, c, own, g.name)
	}
	return out
}

// Exists reports whether the group is there (in every hierarchy).
func (g *Group) Exists() bool {
	for _, dir := range g.dirs() {
		if _, err := os.Stat(dir); err != nil {
			return false
		}
	}
	return true
}

// Ensure makes the group (where it is missing) and sets its limits.
func (g *Group) Ensure(l Limits) error {
	if g.root.V2 {
		return g.ensureV2(l)
	}
	for c, dir := range g.dirs() {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		switch c {
		case "memory":
			if err := write(dir, "memory.limit_in_bytes", limit(l.MemoryBytes)); err != nil {
				return err
			}
		case "pids":
			if err := write(dir, "pids.max", max0(l.Tasks)); err != nil {
				return err
			}
		case "cpu":
			quota := "-1"
			if l.CPUPercent > 0 {
				quota = strconv.Itoa(l.CPUPercent * 1000) // of a 100 ms period
			}
			if err := write(dir, "cpu.cfs_period_us", "100000"); err != nil {
				return err
			}
			if err := write(dir, "cpu.cfs_quota_us", quota); err != nil {
				return err
			}
		}
	}
	return nil
}

func (g *Group) ensureV2(l Limits) error {
	own := filepath.Join(g.root.Mount, g.root.own[""])
	dir := filepath.Join(own, g.name)
	// Controllers must be enabled on every level above the group.
	parts := strings.Split(g.name, "/")
	at := own
	for _, p := range parts {
		if err := write(at, "cgroup.subtree_control", "+memory +pids +cpu"); err != nil {
			return err
		}
		at = filepath.Join(at, p)
		if err := os.Mkdir(at, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cgroup: %w", err)
		}
	}
	cpu := "max 100000"
	if l.CPUPercent > 0 {
		cpu = fmt.Sprintf("%d 100000", l.CPUPercent*1000)
	}
	for file, v := range map[string]string{"memory.max": v2Max(l.MemoryBytes), "pids.max": v2Max(l.Tasks), "cpu.max": cpu} {
		if err := write(dir, file, v); err != nil {
			return err
		}
	}
	return nil
}

func limit(n int64) string {
	if n <= 0 {
		return "-1"
	}
	return strconv.FormatInt(n, 10)
}

func max0(n int64) string {
	if n <= 0 {
		return "max"
	}
	return strconv.FormatInt(n, 10)
}

func v2Max(n int64) string { return max0(n) }

func write(dir, file, value string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("cgroup: set %s/%s to %s: %w", dir, file, value, err)
	}
	return nil
}

// ProcsFiles are the files a process writes its pid to, to join the group
// (one per hierarchy): the confined child does, before it execs.
func (g *Group) ProcsFiles() []string {
	var out []string
	for _, dir := range g.dirs() {
		out = append(out, filepath.Join(dir, "cgroup.procs"))
	}
	return out
}

// Pids returns the processes in the group.
func (g *Group) Pids() []int { return pidsIn(slices.Collect(maps.Values(g.dirs()))) }

// pidsIn returns the processes in the group directories dirs.
func pidsIn(dirs []string) []int {
	seen := map[int]bool{}
	var out []int
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				out = append(out, pid)
			}
		}
	}
	return out
}

// Kill ends every process in the group (SIGKILL, at least once, and again
// until none is left, for at most wait: a process may fork while it is
// signalled) and reports how many are left.
func (g *Group) Kill(wait time.Duration) int {
	return killIn(slices.Collect(maps.Values(g.dirs())), wait)
}

func killIn(dirs []string, wait time.Duration) int {
	deadline := time.Now().Add(wait)
	for {
		pids := pidsIn(dirs)
		if len(pids) == 0 {
			return 0
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return len(pidsIn(dirs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Remove removes the group once it is empty (Kill first).
func (g *Group) Remove() error {
	var errs []error
	for _, dir := range g.dirs() {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cgroup: %w", err))
		}
	}
	return errors.Join(errs...)
}

// RemoveTree ends every process in group name and the groups beneath it,
// and removes them all (a test run's leftovers, say). A missing group is
// no error.
func (r *Root) RemoveTree(name string) error {
	top, err := r.Group(name)
	if err != nil {
		return err
	}
	var errs []error
	for _, dir := range top.dirs() {
		var groups []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				groups = append(groups, p)
			}
			return nil
		})
		// Deepest first: a group is removed once its children are.
		for i := len(groups) - 1; i >= 0; i-- {
			killIn([]string{groups[i]}, 5*time.Second)
			if err := os.Remove(groups[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("cgroup: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}
