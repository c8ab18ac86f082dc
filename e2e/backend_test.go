package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/privd/apache"
	"github.com/opus-hosting/opus/privd/cgroup"
)

// Issue 15: every project's mod_wsgi daemon runs under an Apache of its
// own (its backend), started confined by privd; the front terminates TLS
// and routes to it, and loads no Python.

// backendPids returns the processes of project's backend: its master and
// workers (whose command line names its configuration) and its mod_wsgi
// daemons ((wsgi:NAME)).
func (h *host) backendPids(project string) []int {
	conf := []byte(filepath.Join(h.cfg.ApacheDir, "backends", project) + "/")
	return pidsWhere(func(cmd []byte) bool {
		return bytes.Contains(cmd, conf) || bytes.HasPrefix(cmd, []byte("(wsgi:"+project+")"))
	})
}

// TestBackendIsConfined: the project's code, as its mod_wsgi daemon runs
// it, runs in a mount namespace of its own (its backend's): what it writes
// to /tmp, /var/tmp, /dev/shm or /run/lock never reaches the host's, it
// has no new privileges and runs under limits, as the project's user
// with no group but its own. Before, the daemon was a child of the one
// Apache every tenant shares and wrote into the host's /tmp.
func TestBackendIsConfined(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	var marks []string
	for _, d := range []string{"/tmp", "/var/tmp", "/dev/shm", "/run/lock"} {
		if exists(d) {
			m := filepath.Join(d, "opus-test-backend-"+testRun.ID)
			marks = append(marks, m)
			if err := testRun.NotePath(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	h.mustCtl(t, 0, "create", name, "--app", hostileApp(t, "bconf", fmt.Sprintf(`
    import json, resource, shutil
    if "mod_wsgi" in sys.modules:
        wrote = []
        for m in %s:
            try:
                shutil.copy("/usr/bin/python3", m)
                os.chmod(m, 0o4755)
                wrote.append(m)
            except OSError:
                pass
        status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
        (PROJECT_ROOT / "data" / "backend.json").write_text(json.dumps({
            "wrote": wrote,
            "uid": os.getuid(),
            "no_new_privs": status["NoNewPrivs"].strip(),
            "mnt": os.readlink("/proc/self/ns/mnt"),
            "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
            "groups": os.getgroups(),
            "cgroup": open("/proc/self/cgroup").read(),
        }))
`, mustJSON(t, marks))))
	mustGet(t, webClient(), h.url(name, "http", "/bconf/"), "hostile bconf")
	uid, gid := projectIDs(t, name)
	data, err := os.ReadFile(filepath.Join(h.cfg.BaseDir, "projects", name, "data", "backend.json"))
	if err != nil {
		t.Fatalf("the daemon did not report: %v", err)
	}
	var got struct {
		Wrote      []string
		UID        uint32
		NoNewPrivs string `json:"no_new_privs"`
		Mnt        string
		NProc      int64
		Groups     []int
		Cgroup     string
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	h.checkBackendCgroup(t, name, got.Cgroup)
	// The attack did happen, in the daemon's own view.
	if !slices.Equal(got.Wrote, marks) {
		t.Errorf("the daemon wrote %v, want all of %v (in its own namespace)", got.Wrote, marks)
	}
	for _, m := range marks {
		if exists(m) {
			t.Errorf("the daemon's %s reached the host's", m)
		}
	}
	hostMnt, _ := os.Readlink("/proc/self/ns/mnt")
	// Apache's initgroups gives the daemon its user's own group, none other.
	otherGroup := slices.ContainsFunc(got.Groups, func(g int) bool { return uint32(g) != gid })
	if got.UID != uid || got.NoNewPrivs != "1" || got.Mnt == "" || got.Mnt == hostMnt || got.NProc <= 0 || otherGroup {
		t.Errorf("the daemon ran with %s; want uid %d, NoNewPrivs 1, a mount namespace of its own (host's %s), a task limit, no group but its own %d", data, uid, hostMnt, gid)
	}
	h.mustCtl(t, 0, "destroy", name, "--yes")
	if left := h.backendPids(name); len(left) > 0 {
		t.Errorf("backend processes %v survived destroy", left)
	}
}

// groupLimits is what a process's control groups bound it to, read from
// cgroupfs for /proc/PID/cgroup's text, on v1 (memory, pids, cpu
// hierarchies) or v2: the groups' paths, and memory bytes, tasks and CPU
// quota (µs of 100,000) as the kernel's files say them.
type groupLimits struct {
	paths                []string
	memory, tasks, quota string
}

func readGroupLimits(t *testing.T, text string) groupLimits {
	t.Helper()
	read := func(parts ...string) string {
		b, err := os.ReadFile(filepath.Join(append([]string{"/sys/fs/cgroup"}, parts...)...))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	v1 := map[string]string{}
	var v2 string
	for _, l := range strings.Split(text, "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 {
			if f[0] == "0" {
				v2 = f[2]
			}
			for _, c := range strings.Split(f[1], ",") {
				v1[c] = f[2]
			}
		}
	}
	if v1["memory"] == "" {
		cpu := strings.Fields(read(v2, "cpu.max"))
		return groupLimits{paths: []string{v2}, memory: read(v2, "memory.max"), tasks: read(v2, "pids.max"), quota: cpu[0]}
	}
	return groupLimits{paths: []string{v1["memory"], v1["pids"], v1["cpu"]},
		memory: read("memory", v1["memory"], "memory.limit_in_bytes"), tasks: read("pids", v1["pids"], "pids.max"),
		quota: read("cpu", v1["cpu"], "cpu.cfs_quota_us")}
}

// checkBackendCgroup checks, on a host with control groups (this one and
// CI's), that a process of project's backend whose /proc/self/cgroup is
// text is in the backend's own groups, bounded by the host's defaults.
func (h *host) checkBackendCgroup(t *testing.T, project, text string) {
	t.Helper()
	if _, err := cgroup.Detect(""); err != nil {
		t.Logf("this host gives no control groups; not checking them: %v", err)
		return
	}
	g := readGroupLimits(t, text)
	suffix := "/" + apache.CgroupParent(h.cfg.UserPrefix) + "/" + project
	for _, p := range g.paths {
		if !strings.HasSuffix(p, suffix) {
			t.Errorf("the daemon is in group %q, want one ending %q", p, suffix)
		}
	}
	want := groupLimits{memory: strconv.FormatInt(h.cfg.BackendMemory, 10), tasks: strconv.Itoa(h.cfg.BackendTasks), quota: strconv.Itoa(h.cfg.BackendCPU * 1000)}
	if g.memory != want.memory || g.tasks != want.tasks || g.quota != want.quota {
		t.Errorf("the daemon's group bounds memory %s, tasks %s, CPU quota %s; want %s, %s, %s", g.memory, g.tasks, g.quota, want.memory, want.tasks, want.quota)
	}
}

// keyPatterns returns byte strings any copy of the project's private key
// in a process's memory would hold: the PEM text's first base64 line, the
// key's DER, and its private scalar big- and little-endian (OpenSSL keeps
// it as little-endian words).
func (h *host) keyPatterns(t *testing.T, project string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.cfg.ApacheDir, "tls", project+".key"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s's key is not PEM", project)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		ek, err2 := x509.ParseECPrivateKey(block.Bytes)
		if err2 != nil {
			t.Fatalf("%s's key: %v / %v", project, err, err2)
		}
		k = ek
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("%s's key is a %T, want ECDSA (Opus's self-signed)", project, k)
	}
	be := ec.D.FillBytes(make([]byte, 32))
	le := slices.Clone(be)
	slices.Reverse(le)
	lines := strings.Split(string(data), "\n")
	return [][]byte{[]byte(lines[1]), block.Bytes, be, le}
}

// memHolds reports whether the readable memory of pid holds any of pats,
// reading at most 1 GiB of it.
func memHolds(t *testing.T, pid int, pats [][]byte) bool {
	t.Helper()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return false // gone
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return false
	}
	defer mem.Close()
	budget := int64(1 << 30)
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[1][0] != 'r' || strings.Contains(line, "[vvar]") || strings.Contains(line, "[vsyscall]") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		n := min(int64(end-start), budget)
		budget -= n
		buf := make([]byte, n)
		got, _ := io.ReadFull(io.NewSectionReader(mem, int64(start), n), buf)
		for _, p := range pats {
			if bytes.Contains(buf[:got], p) {
				return true
			}
		}
		if budget <= 0 {
			break
		}
	}
	return false
}

// TestNoTenantHoldsAnotherKey: as root, the memory of every process of one
// project's backend (its master, workers and mod_wsgi daemon) holds no
// other project's TLS private key, nor its own: the backends never load
// keys, and are never forked from the front that does. The same scan of
// the front's master finds both keys, so it can find them. Before, every
// daemon was forked from the one Apache holding every project's key.
func TestNoTenantHoldsAnotherKey(t *testing.T) {
	h := needHost(t)
	a, b := h.newProject(t), h.newProject(t)
	for _, p := range []string{a, b} {
		h.mustCtl(t, 0, "create", p, "--app", localApp(t, "hello"))
		mustGet(t, webClient(), h.url(p, "https", "/"), "")
	}
	keyA, keyB := h.keyPatterns(t, a), h.keyPatterns(t, b)
	front := h.frontPid(t)
	if !memHolds(t, front, keyB) || !memHolds(t, front, keyA) {
		t.Fatalf("the front's master (pid %d) holds neither key as scanned: the scan cannot find a key", front)
	}
	pids := h.backendPids(a)
	if len(wsgiPids(a)) == 0 || len(pids) < 3 {
		t.Fatalf("%s's backend has processes %v; want a master, a worker and a daemon", a, pids)
	}
	for _, pid := range pids {
		if memHolds(t, pid, keyB) {
			t.Errorf("process %d of %s's backend holds %s's private key", pid, a, b)
		}
		if memHolds(t, pid, keyA) {
			t.Errorf("process %d of %s's backend holds its own private key", pid, a)
		}
	}
	for _, p := range []string{a, b} {
		h.mustCtl(t, 0, "destroy", p, "--yes")
	}
}

// frontPid is the managed front's master.
func (h *host) frontPid(t testing.TB) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.cfg.ApacheDir, "run", "httpd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestChangesRestartNoOtherProject: creating a project, changing another's
// host names, updating it and destroying a third restart no bystander's
// Python (its mod_wsgi daemon keeps its pids), and the bystander answers
// 200 to every request throughout. Before, each of these was a graceful
// restart of the one Apache, which restarted every project's daemon.
func TestChangesRestartNoOtherProject(t *testing.T) {
	h := needHost(t)
	bystander, a := h.newProject(t), h.newProject(t)
	for _, p := range []string{bystander, a} {
		h.mustCtl(t, 0, "create", p, "--app", localApp(t, "hello"))
	}
	url := h.url(bystander, "https", "/")
	mustGet(t, webClient(), url, "")
	before := wsgiPids(bystander)
	if len(before) == 0 {
		t.Fatalf("no (wsgi:%s) daemon", bystander)
	}

	stop := make(chan struct{})
	type probe struct {
		n, bad int
		worst  time.Duration
		first  string
	}
	done := make(chan probe)
	go func() {
		var p probe
		c := webClient()
		for {
			select {
			case <-stop:
				done <- p
				return
			default:
			}
			start := time.Now()
			code, body := get(t, c, url)
			p.n++
			p.worst = max(p.worst, time.Since(start))
			if code != http.StatusOK {
				p.bad++
				if p.first == "" {
					p.first = fmt.Sprintf("%d %.200q", code, body)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	c := h.newProject(t)
	h.mustCtl(t, 0, "create", c, "--app", localApp(t, "hello"))
	h.mustCtl(t, 0, "set", a, "hosts=www."+a+".example.org")
	h.mustCtl(t, 0, "set", a, "debug=true")
	h.mustCtl(t, 0, "destroy", c, "--yes")
	close(stop)
	p := <-done
	t.Logf("%d probes of %s, worst %s", p.n, bystander, p.worst)
	if p.bad > 0 {
		t.Errorf("%d of %d probes of %s failed during the others' changes; first: %s", p.bad, p.n, bystander, p.first)
	}
	if after := wsgiPids(bystander); !slices.Equal(after, before) {
		t.Errorf("%s's daemon pids went from %v to %v: its Python was restarted by other projects' changes", bystander, before, after)
	}
	for _, p := range []string{bystander, a} {
		h.mustCtl(t, 0, "destroy", p, "--yes")
	}
}

// TestBackendComesBack: a backend that dies (every process of it killed)
// is started again by privd within seconds, and serves.
func TestBackendComesBack(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	h.mustCtl(t, 0, "create", name, "--app", localApp(t, "hello"))
	url := h.url(name, "http", "/")
	mustGet(t, webClient(), url, "")
	old := h.backendPids(name)
	for _, pid := range old {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _ := get(t, webClient(), url)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer 200 within 20s of its backend's death (last %d)", name, code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, pid := range h.backendPids(name) {
		if slices.Contains(old, pid) {
			t.Errorf("process %d of the killed backend is still there", pid)
		}
	}
	h.mustCtl(t, 0, "destroy", name, "--yes")
}

// TestBackendDirectGivesNothingMore: a local user who connects to a
// project's backend directly, past the front, gets what the public URL
// gives and nothing more: another project's host name gets no other
// project's site, and the project's tree outside its WSGI script and
// static files is refused.
func TestBackendDirectGivesNothingMore(t *testing.T) {
	h := needHost(t)
	a, b := h.newProject(t), h.newProject(t)
	for _, p := range []string{a, b} {
		h.mustCtl(t, 0, "create", p, "--app", localApp(t, "hello"))
	}
	uidA, _ := projectIDs(t, a)
	addr := h.cfg.BackendAddr(uidA).String()
	direct := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: nil, DisableKeepAlives: true,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
	ask := func(host, path string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Host = host
		resp, err := direct.Do(req)
		if err != nil {
			t.Fatalf("GET %s%s at %s's backend: %v", host, path, a, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(body)
	}
	// The public view, for comparison: the backend serves it as well.
	publicCode, publicBody := get(t, webClient(), h.url(a, "http", "/"))
	if code, body := ask(a+h.cfg.ServerSuffix, "/"); code != publicCode || body != publicBody {
		t.Errorf("%s's backend answers %d %.100q, the public URL %d %.100q", a, code, body, publicCode, publicBody)
	}
	_, bBody := get(t, webClient(), h.url(b, "http", "/"))
	if code, body := ask(b+h.cfg.ServerSuffix, "/"); code == http.StatusOK && body == bBody && body != publicBody {
		t.Errorf("%s's backend serves %s's site", a, b)
	}
	for _, path := range []string{"/settings.py", "/manage.py", "/static/../secrets/secrets.json", "/server-status"} {
		if code, body := ask(a+h.cfg.ServerSuffix, path); code == http.StatusOK && !strings.Contains(publicBody, body) {
			if pc, _ := get(t, webClient(), h.url(a, "http", path)); pc != http.StatusOK {
				t.Errorf("%s at %s's backend: 200 %.100q; the public URL answers %d", path, a, body, pc)
			}
		}
	}
	for _, p := range []string{a, b} {
		h.mustCtl(t, 0, "destroy", p, "--yes")
	}
}

// TestDoctorReportsMissingBackend: a deployed project whose backend is
// gone (its directory removed, its processes killed, as a lost disk or a
// hand would leave it) is named by `opusctl doctor` (kind backend, exit 1);
// the project's next change brings the backend back and doctor is clean.
func TestDoctorReportsMissingBackend(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	h.mustCtl(t, 0, "create", name, "--app", localApp(t, "hello"))
	h.doctorClean(t)
	// The directory first: privd's supervision starts only configured
	// backends.
	if err := os.RemoveAll(filepath.Join(h.cfg.ApacheDir, "backends", name)); err != nil {
		t.Fatal(err)
	}
	for _, pid := range h.backendPids(name) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if !hasDrift(h.ourDrift(t), "backend", name) {
		t.Errorf("doctor does not report %s's missing backend", name)
	}
	h.mustCtl(t, 0, "set", name, "debug=true")
	mustGet(t, webClient(), h.url(name, "http", "/"), "")
	h.doctorClean(t)
	h.mustCtl(t, 0, "destroy", name, "--yes")
}

// daemonLimits is groupLimits of project's first mod_wsgi daemon.
func daemonLimits(t *testing.T, project string) groupLimits {
	t.Helper()
	pids := wsgiPids(project)
	if len(pids) == 0 {
		t.Fatalf("no (wsgi:%s) daemon", project)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pids[0]))
	if err != nil {
		t.Fatal(err)
	}
	return readGroupLimits(t, string(data))
}

// TestBackendLimitsPerProject: an admin bounds one project's backend in
// place of the host's defaults (opusctl set NAME memory= tasks= cpu=), and
// the running backend's group takes the bounds; the project's owner may
// not (PermissionDenied, nothing changed); --unset goes back to the
// host's defaults.
func TestBackendLimitsPerProject(t *testing.T) {
	h := needHost(t)
	if _, err := cgroup.Detect(""); err != nil {
		t.Skipf("needs control groups, which this host does not give: %v", err)
	}
	name := h.newProject(t)
	h.mustCtl(t, h.otherID, "create", name, "--empty")
	mustGet(t, webClient(), h.url(name, "http", "/"), "")
	def := strconv.FormatInt(h.cfg.BackendMemory, 10)
	if got := daemonLimits(t, name).memory; got != def {
		t.Fatalf("memory limit %s, want the host's default %s", got, def)
	}

	r := h.ctl(t, h.otherID, "", "set", name, "memory=8G")
	if r.code == 0 || !strings.Contains(r.out+r.err, "only an admin") {
		t.Errorf("the owner's memory=8G: exit %d %s%s, want a refusal naming admins", r.code, r.out, r.err)
	}
	if got := daemonLimits(t, name).memory; got != def {
		t.Errorf("memory limit %s after a refused change, want %s", got, def)
	}

	out := h.mustCtl(t, 0, "set", name, "memory=256M", "tasks=128", "cpu=50")
	if !strings.Contains(out, "256 MiB") {
		t.Errorf("set did not show the new memory bound:\n%s", out)
	}
	mustGet(t, webClient(), h.url(name, "http", "/"), "")
	if g := daemonLimits(t, name); g.memory != strconv.Itoa(256<<20) || g.tasks != "128" || g.quota != "50000" {
		t.Errorf("the group bounds memory %s, tasks %s, CPU quota %s; want %d, 128, 50000", g.memory, g.tasks, g.quota, 256<<20)
	}

	h.mustCtl(t, 0, "set", name, "--unset", "memory", "--unset", "tasks", "--unset", "cpu")
	mustGet(t, webClient(), h.url(name, "http", "/"), "")
	if got := daemonLimits(t, name).memory; got != def {
		t.Errorf("memory limit %s after --unset, want the host's default %s", got, def)
	}
	h.mustCtl(t, 0, "destroy", name, "--yes")
}
