package drift

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/opus-hosting/opus/internal/colondb"
	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/procs"
)

// Bounds of the id checks, so a host with a huge /tmp or process table
// cannot make a check slow or large.
const (
	maxScanEntries  = 100_000 // per directory read (/proc, each temp dir)
	maxShownPerKind = 20      // pids or files named per finding
)

// checkIDs reports the accounts in project_uids that are no project's
// (users: project name → uid, the marked ones), and the processes and
// temporary files of an id of the range that no project user has now.
func (h Host) checkIDs(users map[string]uint32) ([]Finding, error) {
	ids := h.UIDs
	if ids == (config.UIDRange{}) {
		return nil, nil
	}
	current := map[uint32]bool{}
	ours := map[string]bool{}
	for p, uid := range users {
		current[uid] = true
		ours[h.user(p)] = true
	}
	var out []Finding
	add := func(kind, format string, args ...any) {
		out = append(out, Finding{Kind: kind, Detail: fmt.Sprintf(format, args...)})
	}
	for _, db := range []struct {
		path, what string
		fields     int
	}{{h.passwdPath(), "user", colondb.PasswdFields}, {h.groupPath(), "group", colondb.GroupFields}} {
		err := colondb.Scan(db.path, db.fields, func(f []string) bool {
			id, err := strconv.ParseUint(f[2], 10, 32)
			if err != nil || !ids.Contains(uint32(id)) || ours[f[0]] {
				return true
			}
			add(KindUID, "%s %s has id %d inside project_uids %s, which Opus owns: Opus skips ids in use, but the range should be Opus's alone; give the %s another id or move project_uids", db.what, f[0], id, ids, db.what)
			return true
		})
		if err != nil {
			return nil, fmt.Errorf("drift: %w", err)
		}
	}

	stale := func(uid uint32) bool { return ids.Contains(uid) && !current[uid] }
	running := map[uint32][]string{}
	for pid, uids := range (procs.Table{Dir: h.ProcDir}).UIDs() {
		for _, uid := range uids {
			if stale(uid) {
				running[uid] = append(running[uid], strconv.Itoa(pid))
			}
		}
	}
	for _, uid := range sortedKeys(running) {
		pids := running[uid]
		sort.Strings(pids)
		add(KindLeftover, "processes of uid %d still run (pids %s); no project has that id now: a destroyed project left them; kill them", uid, shortList(pids))
	}
	files := map[uint32][]string{}
	for _, dir := range h.tempDirs() {
		d, err := os.Open(dir)
		if err != nil {
			continue
		}
		names, _ := d.Readdirnames(maxScanEntries)
		d.Close()
		for _, n := range names {
			p := filepath.Join(dir, n)
			fi, err := os.Lstat(p)
			if err != nil {
				continue
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && stale(st.Uid) {
				files[st.Uid] = append(files[st.Uid], p)
			}
		}
	}
	for _, uid := range sortedKeys(files) {
		fs := files[uid]
		sort.Strings(fs)
		add(KindLeftover, "files of uid %d are in the shared temporary directories (%s); no project has that id now: a destroyed project left them; remove them", uid, shortList(fs))
	}
	return out, nil
}

func (h Host) passwdPath() string {
	if h.PasswdPath == "" {
		return "/etc/passwd"
	}
	return h.PasswdPath
}

func (h Host) groupPath() string {
	if h.GroupPath == "" {
		return "/etc/group"
	}
	return h.GroupPath
}

func (h Host) tempDirs() []string {
	if h.TempDirs == nil {
		return []string{"/tmp", "/var/tmp", "/dev/shm", "/run/lock"}
	}
	return h.TempDirs
}

func sortedKeys[V any](m map[uint32]V) []uint32 {
	keys := make([]uint32, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

func shortList(s []string) string {
	if len(s) > maxShownPerKind {
		return strings.Join(s[:maxShownPerKind], ", ") + fmt.Sprintf(" and %d more", len(s)-maxShownPerKind)
	}
	return strings.Join(s, ", ")
}
