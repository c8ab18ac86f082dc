// Package procs finds processes by the user they run as, from /proc, within
// bounds: both daemons ask it (opusd before it deletes a project's user and
// when it looks for what destroyed projects left running; privd before it
// hands out an id and when it ends a project's processes). A process counts
// for a uid when its real, effective or saved uid is that uid: a setuid
// program of the id acts for it whoever started it. Zombies (exited, not
// yet reaped by their parent) run nothing and count for no one.
package procs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MaxScan bounds the /proc entries one call reads.
const MaxScan = 1 << 20

// Table reads processes from a /proc directory.
type Table struct {
	// Dir is /proc when empty (tests point it elsewhere).
	Dir string
}

func (t Table) dir() string {
	if t.Dir == "" {
		return "/proc"
	}
	return t.Dir
}

// UIDs maps the pid of every process to its uids: real, effective and
// saved (one entry when they are the same).
func (t Table) UIDs() map[int][]uint32 {
	out := map[int][]uint32{}
	t.each(func(pid int, uids []uint32) bool {
		out[pid] = uids
		return true
	})
	return out
}

// Of returns up to max pids (all when max <= 0) of processes that run as
// uid. uid 0 is never asked for: it returns nothing.
func (t Table) Of(uid uint32, max int) []int {
	if uid == 0 {
		return nil
	}
	var pids []int
	t.each(func(pid int, uids []uint32) bool {
		for _, u := range uids {
			if u == uid {
				pids = append(pids, pid)
				break
			}
		}
		return max <= 0 || len(pids) < max
	})
	return pids
}

// each calls fn with every process's pid and uids until it returns false.
func (t Table) each(fn func(pid int, uids []uint32) bool) {
	d, err := os.Open(t.dir())
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(MaxScan)
	d.Close()
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(t.dir(), n, "status"))
		if err != nil {
			continue // gone meanwhile
		}
		uids, ok := parseUIDs(b)
		if ok && !fn(pid, uids) {
			return
		}
	}
}

// parseUIDs reads the "Uid:" line of a /proc/PID/status: real, effective,
// saved and filesystem uid; it returns the distinct ones of the first
// three. A zombie's or dead task's status gives none.
func parseUIDs(status []byte) ([]uint32, bool) {
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "State:" && (f[1] == "Z" || f[1] == "X") {
			return nil, false
		}
		if len(f) < 4 || f[0] != "Uid:" {
			continue
		}
		var out []uint32
		for _, s := range f[1:4] {
			v, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return nil, false
			}
			seen := false
			for _, u := range out {
				seen = seen || u == uint32(v)
			}
			if !seen {
				out = append(out, uint32(v))
			}
		}
		return out, true
	}
	return nil, false
}

// MaxCmdline bounds what is read of a command line: a process writes its
// own (a tenant's, several MiB if it likes).
const MaxCmdline = 16 << 10

// Cmdline returns at most MaxCmdline bytes of pid's command line (its
// arguments, each ended by a NUL).
func (t Table) Cmdline(pid int) ([]byte, error) {
	f, err := os.Open(filepath.Join(t.dir(), strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, MaxCmdline) // one allocation, whatever the length
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:n], nil
}

// Matching returns the pids of the processes whose command line (read as
// Cmdline does) match accepts.
func (t Table) Matching(match func(cmdline []byte) bool) []int {
	d, err := os.Open(t.dir())
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(MaxScan)
	d.Close()
	var pids []int
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		if cmd, err := t.Cmdline(pid); err == nil && match(cmd) {
			pids = append(pids, pid)
		}
	}
	return pids
}
