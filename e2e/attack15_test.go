package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
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
