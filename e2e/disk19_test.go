package e2e

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Issue 19: disk hygiene. Old revisions are dropped past revisions_keep
// with what only they used (uploads, git caches); quotas bound uploads
// and data snapshots; opusctl df says what takes the space.

// diskUsage is the part of 'opusctl df -o json' these tests read.
type diskUsage struct {
	Projects []struct {
		Project       string    `json:"project"`
		Code          byteCount `json:"code"`
		Data          byteCount `json:"data"`
		SnapshotBytes string    `json:"snapshot_bytes"`
		UploadBytes   string    `json:"upload_bytes"`
		GitCacheBytes string    `json:"git_cache_bytes"`
		Revisions     int       `json:"revisions"`
	} `json:"projects"`
	Users []struct {
		UID           uint32    `json:"uid"`
		UploadBytes   string    `json:"upload_bytes"`
		UploadQuota   string    `json:"upload_quota"`
		SnapshotBytes string    `json:"snapshot_bytes"`
		Total         byteCount `json:"total"`
	} `json:"users"`
	RevisionsKeep int `json:"revisions_keep"`
}

type byteCount struct {
	Bytes   string `json:"bytes"`
	AtLeast bool   `json:"at_least"`
}

// jsonInt is a JSON int64 (a string in protojson), 0 when absent.
func jsonInt(s string) int64 {
	v, _ := strconv.ParseInt(s, 10, 64)
	return v
}

func (h *host) df(t *testing.T, uid uint32, args ...string) diskUsage {
	t.Helper()
	out := h.mustCtl(t, uid, append([]string{"df", "-o", "json"}, args...)...)
	var d diskUsage
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("df: %v\n%s", err, out)
	}
	return d
}

// filesSize is the apparent size of the regular files under dir (as
// root, not following links): what du --apparent-size -b counts of them.
func filesSize(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	return total
}

// TestDiskHygiene: with revisions_keep 3, an uploaded app updated four
// times keeps revisions 3 to 5; the archives of revisions 1 and 2 leave
// the disk, so five uploads of a quarter of the upload quota each fit,
// and the app rolls back to revision 3 (the oldest kept). An upload past
// the quota is refused and changes nothing; once the project is
// destroyed its uploads are pruned. opusctl df agrees with the disk: code,
// data and snapshots of the project, the user's uploads against the
// quota; a user sees only their own.
func TestDiskHygiene(t *testing.T) {
	h := needHost(t)
	const grace = 2 * time.Second
	h.opusdWith(t, "disk", "revisions_keep 3\nsnapshot_keep 1\nupload_quota 1048576\nupload_grace 2s\n")
	_, uid := addUser(t, "dh")
	app := sharedApp(t, "kept", 250<<10)
	name := h.newProject(t)
	url := h.url(name, "http", "/kept/")
	c := webClient()
	var digests []string
	deploy := func(version string, args ...string) {
		t.Helper()
		setVersion(t, app, version)
		h.mustCtl(t, uid, args...)
		mustGet(t, c, url, "uploaded kept "+version)
		digests = append(digests, h.uploadedDigest(t, name))
	}
	deploy("v1", "create", name, "--app", app)
	for _, v := range []string{"v2", "v3", "v4", "v5"} {
		deploy(v, "apps", "update", name, "kept", app)
	}

	p := h.rollbackView(t, name)
	var nums []string
	for _, r := range p.Apps[0].Revisions {
		nums = append(nums, r.Number)
	}
	slices.Sort(nums)
	if !slices.Equal(nums, []string{"3", "4", "5"}) {
		t.Fatalf("revisions kept %v, want 3, 4 and 5 (revisions_keep 3)", nums)
	}
	if revs := h.mustCtl(t, uid, "apps", "revisions", name, "kept"); rowOf(revs, "1") != "" || rowOf(revs, "2") != "" || rowOf(revs, "3") == "" {
		t.Errorf("apps revisions still lists dropped revisions, or not the kept ones:\n%s", revs)
	}
	deadline := time.Now().Add(5*grace + 10*time.Second)
	for h.uploadFile(t, uid, digests[0]) != "" || h.uploadFile(t, uid, digests[1]) != "" {
		if time.Now().After(deadline) {
			h.dumpLogs(t)
			t.Fatalf("the uploads of dropped revisions 1 and 2 are still stored: %v", h.storedUploads(t))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i := 2; i < 5; i++ {
		if h.uploadFile(t, uid, digests[i]) == "" {
			t.Fatalf("the upload of kept revision %d was pruned: %v", i+1, h.storedUploads(t))
		}
	}

	// df agrees with the disk.
	d := h.df(t, uid)
	if len(d.Projects) != 1 || d.Projects[0].Project != name || len(d.Users) != 1 || d.Users[0].UID != uid || d.RevisionsKeep != 3 {
		t.Fatalf("df as the owner: %+v", d)
	}
	dp, du := d.Projects[0], d.Users[0]
	proj := filepath.Join(h.cfg.BaseDir, "projects", name)
	if got, want := jsonInt(dp.Code.Bytes), filesSize(t, filepath.Join(proj, "code"))+filesSize(t, filepath.Join(proj, "static")); got != want || dp.Code.AtLeast {
		t.Errorf("df code %d bytes, the disk %d", got, want)
	}
	if got, want := jsonInt(dp.Data.Bytes), filesSize(t, filepath.Join(proj, "data")); got != want || dp.Data.AtLeast || want == 0 {
		t.Errorf("df data %d bytes, the disk %d", got, want)
	}
	if got, want := jsonInt(dp.SnapshotBytes), filesSize(t, filepath.Join(h.cfg.BaseDir, "snapshots", name)); got != want || want == 0 {
		t.Errorf("df snapshots %d bytes, the disk %d", got, want)
	}
	userUploads := filesSize(t, filepath.Join(h.cfg.BaseDir, "sources", fmt.Sprint(uid)))
	if got := jsonInt(du.UploadBytes); got != userUploads || jsonInt(dp.UploadBytes) != userUploads || jsonInt(du.UploadQuota) != 1<<20 {
		t.Errorf("df uploads: user %s, project %s, quota %s; the disk %d", du.UploadBytes, dp.UploadBytes, du.UploadQuota, userUploads)
	}
	if jsonInt(du.Total.Bytes) != jsonInt(dp.Code.Bytes)+jsonInt(dp.Data.Bytes)+jsonInt(dp.SnapshotBytes)+userUploads {
		t.Errorf("df total %s is not the sum of its parts: %+v", du.Total.Bytes, d)
	}
	if other := h.df(t, h.otherID); len(other.Projects) != 0 {
		t.Errorf("another user's df shows %+v", other.Projects)
	}
	if all := h.df(t, 0, name); len(all.Projects) != 1 || all.Projects[0].Project != name {
		t.Errorf("an admin's df of the project: %+v", all)
	}
	if r := h.ctl(t, h.otherID, "", "df", name); r.code == 0 || !strings.Contains(r.err, "not found") {
		t.Errorf("another user's df of the project: exit %d, %s", r.code, r.err)
	}
	if table := h.mustCtl(t, uid, "df"); !strings.Contains(table, "of 1.0 MiB") || rowOf(table, name) == "" {
		t.Errorf("df table:\n%s", table)
	}

	// Rollback to the oldest kept revision works: its archive is there.
	h.mustCtl(t, uid, "apps", "rollback", name, "kept", "--to", "3")
	mustGet(t, c, url, "uploaded kept v3")

	// Past the quota: 750 KiB stored, 600 KiB more is refused, nothing
	// changes.
	big := sharedApp(t, "big", 600<<10)
	files, accounts := h.storedUploads(t), hostState(t)
	r := h.ctl(t, uid, "", "apps", "add", name, big)
	if r.code == 0 || !strings.Contains(r.err, "past your upload quota of 1 MiB") {
		t.Fatalf("an upload past the quota: exit %d, %s", r.code, r.err)
	}
	if got := h.storedUploads(t); !slices.Equal(got, files) || hostState(t) != accounts {
		t.Errorf("the refused upload changed the store or the host: %v, was %v", got, files)
	}

	// Destroyed, the project's uploads go after the grace period.
	h.mustCtl(t, uid, "destroy", name, "--yes")
	deadline = time.Now().Add(5*grace + 10*time.Second)
	for filesSize(t, filepath.Join(h.cfg.BaseDir, "sources", fmt.Sprint(uid))) != 0 {
		if time.Now().After(deadline) {
			h.dumpLogs(t)
			t.Fatalf("the uploads of a destroyed project are still stored: %v", h.storedUploads(t))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if d := h.df(t, uid); len(d.Projects) != 0 || jsonInt(d.Users[0].UploadBytes) != 0 {
		t.Errorf("df after the destroy: %+v", d)
	}
}

// TestGitCachePruned: a git app's repository is cached by opusd; once no
// app or kept revision uses it (its project destroyed), the pruner drops
// the cache, while another project's repository keeps its own.
func TestGitCachePruned(t *testing.T) {
	h := needHost(t)
	gone, stays := newGitApp(t, "gone", "gone v1"), newGitApp(t, "stays", "stays v1")
	a, b := h.newProject(t), h.newProject(t)
	before := h.gitCaches(t)
	h.deploy(t, 0, a, gone.dir)
	goneCache := newCache(t, before, h.gitCaches(t))
	before = h.gitCaches(t)
	h.deploy(t, 0, b, stays.dir)
	staysCache := newCache(t, before, h.gitCaches(t))
	cache := func(g *gitApp) string {
		if g == gone {
			return goneCache
		}
		return staysCache
	}
	d := h.df(t, 0, b)
	if want := filesSize(t, cache(stays)); jsonInt(d.Projects[0].GitCacheBytes) != want || want == 0 {
		t.Errorf("df git cache of %s: %s, the disk %d", b, d.Projects[0].GitCacheBytes, want)
	}
	h.mustCtl(t, 0, "destroy", a, "--yes")
	deadline := time.Now().Add(30 * time.Second)
	for exists(cache(gone)) {
		if time.Now().After(deadline) {
			h.dumpLogs(t)
			t.Fatalf("the git cache of a repository no app uses is still there: %s", cache(gone))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !exists(cache(stays)) {
		t.Error("the git cache of a repository in use was dropped")
	}
}

// TestDiskUsageHostileData: a tenant that fills its data directory with
// links (to / and in loops), a FIFO and a directory nesting past the walk's
// bound cannot make df hang, follow a link or open the FIFO: df answers
// at once, counts at least the tenant's own bytes and says the walk was
// cut short.
func TestDiskUsageHostileData(t *testing.T) {
	h := needHost(t)
	app := hostileApp(t, "dfbomb", `
    data = PROJECT_ROOT / "data" / "bomb"
    try:
        data.mkdir(exist_ok=True)
        (data / "payload").write_bytes(b"x" * 4096)
        for name, target in (("root", "/"), ("loop", "."), ("up", "..")):
            if not (data / name).is_symlink():
                (data / name).symlink_to(target)
        if not (data / "fifo").exists():
            os.mkfifo(data / "fifo")
        deep = data
        for i in range(80):
            deep = deep / "d"
        deep.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
`)
	name := h.newProject(t)
	h.mustCtl(t, 0, "create", name, "--app", app)
	if _, err := os.Lstat(filepath.Join(h.cfg.BaseDir, "projects", name, "data", "bomb", "fifo")); err != nil {
		t.Fatalf("the attack did not run: %v", err)
	}
	start := time.Now()
	d := h.df(t, 0, name)
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("df took %s", took)
	}
	data := d.Projects[0].Data
	if !data.AtLeast || jsonInt(data.Bytes) < 4096 || jsonInt(data.Bytes) > 64<<20 {
		t.Errorf("df data of a hostile tree: %+v; want at least the payload, cut short, and nothing of / counted", data)
	}
	if table := h.mustCtl(t, 0, "df", name); !strings.Contains(rowOf(table, name), ">=") {
		t.Errorf("df table does not say the data size is a lower bound:\n%s", table)
	}
}

// gitCaches lists opusd's git cache repositories.
func (h *host) gitCaches(t *testing.T) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(h.cfg.BaseDir, "git", "*"))
	return m
}

// newCache is the one cache in after that is not in before.
func newCache(t *testing.T, before, after []string) string {
	t.Helper()
	var added []string
	for _, c := range after {
		if !slices.Contains(before, c) {
			added = append(added, c)
		}
	}
	if len(added) != 1 {
		t.Fatalf("git caches made by a deploy: %v, want one", added)
	}
	return added[0]
}
