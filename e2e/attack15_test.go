package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Issue 15 step 2, attacked: a hostile tenant (its code in manage.py and
// in its backend's mod_wsgi daemon) and hostile local users against the
// per-project backends.

// sysvIPCOf returns the System V IPC objects of the host's IPC namespace
// (the one privd and this test run in) that uid owns, as "shm ID",
// "sem ID" and "msg ID".
func sysvIPCOf(t *testing.T, uid uint32) []string {
	t.Helper()
	var out []string
	for _, kind := range []string{"shm", "sem", "msg"} {
		data, err := os.ReadFile("/proc/sysvipc/" + kind)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		head := strings.Fields(lines[0])
		idCol, uidCol := 1, -1
		for i, h := range head {
			if h == "uid" {
				uidCol = i
			}
		}
		if uidCol < 0 {
			t.Fatalf("/proc/sysvipc/%s has no uid column: %q", kind, lines[0])
		}
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) > uidCol && f[uidCol] == strconv.FormatUint(uint64(uid), 10) {
				out = append(out, kind+" "+f[idCol])
			}
		}
	}
	return out
}

// mqExists reports whether the host's IPC namespace has the POSIX message
// queue name (without its leading slash).
func mqExists(t *testing.T, name string) bool {
	t.Helper()
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		t.Fatal(err)
	}
	fd, _, errno := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(p)), uintptr(unix.O_RDONLY), 0, 0, 0, 0)
	if errno != 0 {
		return false
	}
	unix.Close(int(fd))
	return true
}

func mqUnlink(name string) {
	p, err := unix.BytePtrFromString(name)
	if err == nil {
		unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(p)), 0, 0)
	}
}

// TestAttack15IPCGoesWithTheProject: System V shared memory, semaphores
// and message queues and POSIX message queues are not files: the private
// /tmp and /dev/shm do not hold them, and a segment no process has
// attached lives on in the kernel after its creator, its user and its
// project are gone. The tenant's code, in manage.py and in its mod_wsgi
// daemon, makes one of each and leaves them: the host's IPC namespace
// must hold none of them, neither while the project runs (another tenant
// could attach to a well-known key) nor after destroy (memory held for
// ever by a deleted uid). Before the fix the confined processes shared the
// host's IPC namespace, and every object outlived destroy.
func TestAttack15IPCGoesWithTheProject(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	mq := "opus-test-" + name
	// The tenant's objects, whatever happens below: what a failing run
	// leaves is removed (the test owns what it made the tenant make).
	var uid uint32
	t.Cleanup(func() {
		if uid == 0 {
			return
		}
		for _, o := range sysvIPCOf(t, uid) {
			kind, id, _ := strings.Cut(o, " ")
			flag := map[string]string{"shm": "-m", "sem": "-s", "msg": "-q"}[kind]
			_ = exec.Command("ipcrm", flag, id).Run()
		}
		for _, where := range []string{"manage", "daemon"} {
			mqUnlink(mq + "-" + where)
		}
	})
	h.mustCtl(t, 0, "create", name, "--app", hostileApp(t, "ipc", fmt.Sprintf(`
    import ctypes, json
    where = "daemon" if "mod_wsgi" in sys.modules else "manage"
    libc = ctypes.CDLL(None, use_errno=True)
    got = {}
    # IPC_PRIVATE, IPC_CREAT | 0600: new objects no one removes.
    got["shm"] = libc.shmget(0, 1 << 20, 0o1600)
    got["sem"] = libc.semget(0, 1, 0o1600)
    got["msg"] = libc.msgget(0, 0o1600)
    got["mq"] = libc.mq_open(("/%s-" + where).encode(), os.O_CREAT | os.O_RDWR, 0o600, None)
    (PROJECT_ROOT / "data" / ("ipc-" + where + ".json")).write_text(json.dumps(got))
`, mq)))
	uid, _ = projectIDs(t, name)
	mustGet(t, webClient(), h.url(name, "http", "/ipc/"), "hostile ipc")
	// The attack did happen, in the tenant's own view, in both places.
	for _, where := range []string{"manage", "daemon"} {
		data, err := os.ReadFile(filepath.Join(h.cfg.BaseDir, "projects", name, "data", "ipc-"+where+".json"))
		if err != nil {
			t.Fatalf("%s did not report: %v", where, err)
		}
		var got map[string]int
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		for k, v := range got {
			if v < 0 {
				t.Errorf("in %s, the tenant could not make its %s (%d): the test proves nothing", where, k, v)
			}
		}
	}
	if left := sysvIPCOf(t, uid); len(left) > 0 {
		t.Errorf("while %s runs, the host's IPC namespace holds its objects %v", name, left)
	}
	for _, where := range []string{"manage", "daemon"} {
		if mqExists(t, mq+"-"+where) {
			t.Errorf("while %s runs, the host has its message queue /%s-%s", name, mq, where)
		}
	}
	h.mustCtl(t, 0, "destroy", name, "--yes")
	if left := sysvIPCOf(t, uid); len(left) > 0 {
		t.Errorf("after destroy, the host's IPC namespace still holds %s's objects %v (uid %d is gone)", name, left, uid)
	}
	for _, where := range []string{"manage", "daemon"} {
		if mqExists(t, mq+"-"+where) {
			t.Errorf("after destroy, the host still has %s's message queue /%s-%s", name, mq, where)
		}
	}
}

// TestAttack15SlowBackendDoesNotStallTheFront: a project whose views never
// answer (its code sleeps) must not stall the front for the others. The
// front proxies synchronously: each request in flight to a backend holds
// one of the front's threads until the backend answers or the proxy
// times out. Anyone who can reach the front opens more requests to the
// slow project than the front has threads (400 by default); a bystander's
// request must still be answered at once.
func TestAttack15SlowBackendDoesNotStallTheFront(t *testing.T) {
	h := needHost(t)
	slow, bystander := h.newProject(t), h.newProject(t)
	// ready() swaps the app's view (urls.py reads it later) for one that
	// sleeps, bounded so the test's leftovers end by themselves.
	h.mustCtl(t, 0, "create", slow, "--app", hostileApp(t, "slow", `
    import time
    from django.http import HttpResponse
    from . import views
    def index(request):
        time.sleep(120)
        return HttpResponse("late")
    views.index = index
`))
	h.mustCtl(t, 0, "create", bystander, "--app", localApp(t, "hello"))
	byURL := h.url(bystander, "http", "/")
	mustGet(t, webClient(), byURL, "")

	const flood = 450 // more than the front's default MaxRequestWorkers (400)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true, ServerName: slow + h.cfg.ServerSuffix}
	// Over both of the project's routes, HTTP and HTTPS.
	slowURLs := []string{fmt.Sprintf("http://127.0.0.1:%d/slow/", h.cfg.HTTPPort), fmt.Sprintf("https://127.0.0.1:%d/slow/", h.cfg.HTTPSPort)}
	var mu sync.Mutex
	codes := map[int]int{}
	for i := range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The attacker asks again as soon as it is answered.
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", slowURLs[i%2], nil)
				req.Host = slow + h.cfg.ServerSuffix
				resp, err := tr.RoundTrip(req)
				if err != nil {
					continue
				}
				resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	// Give the front time to take every request it will take (it starts
	// more processes as its threads fill, a few per second).
	time.Sleep(15 * time.Second)
	c := webClient()
	c.Timeout = 10 * time.Second
	var worst time.Duration
	for range 5 {
		start := time.Now()
		code, body := get(t, c, byURL)
		took := time.Since(start)
		worst = max(worst, took)
		if code != http.StatusOK || took > 5*time.Second {
			t.Errorf("while %s's views hang, the bystander %s answers %d %.100q after %s; want 200 at once", slow, bystander, code, body, took)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	mu.Lock()
	t.Logf("the bystander answered in %s at worst while %d clients flooded %s, whose requests got %v", worst, flood, slow, codes)
	mu.Unlock()
	cancel()
	wg.Wait()
	for _, p := range []string{slow, bystander} {
		h.mustCtl(t, 0, "destroy", p, "--yes")
	}
}

// TestAttack15ProjectUserCannotCallOpus: a project's user is its code, not
// a person. Running as it (as manage.py and the mod_wsgi daemon do; on a
// host opusd's socket in /run/opus is in their mount namespace, in the
// harness the private /tmp hides the run's, so the test calls as the
// project's uid from outside), tenant code asks opusd for a project of
// its own. opusd must refuse: such a project would belong to a uid that
// goes with its parent, would outlive the parent's destroy running the
// tenant's code, and could ask for more in turn, each with a fresh upload
// quota, until the project uid range, which is never reused, is spent.
func TestAttack15ProjectUserCannotCallOpus(t *testing.T) {
	h := needHost(t)
	parent, child := h.newProject(t), h.newProject(t)
	h.mustCtl(t, 0, "create", parent, "--empty")
	uid, _ := projectIDs(t, parent)
	before := hostState(t)
	r := h.ctl(t, uid, "", "create", child, "--empty")
	if r.code == 0 {
		t.Errorf("%s's user (uid %d) created project %s", parent, uid, child)
	}
	if !strings.Contains(r.err, "project") {
		t.Errorf("the refusal does not say why: %q", r.err)
	}
	var all struct {
		Projects []projectJSON `json:"projects"`
	}
	if err := json.Unmarshal([]byte(h.mustCtl(t, 0, "ls", "-o", "json")), &all); err != nil {
		t.Fatal(err)
	}
	for _, p := range all.Projects {
		if p.Name == child || p.OwnerUID == int64(uid) {
			t.Errorf("opusd holds project %s of owner %d", p.Name, p.OwnerUID)
		}
	}
	if hostState(t) != before {
		t.Errorf("the host's accounts changed")
	}
	h.mustCtl(t, 0, "destroy", parent, "--yes")
	h.ctl(t, 0, "", "destroy", child, "--yes")
}
