package confine

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/opus-hosting/opus/internal/testrun"
)

func TestMain(m *testing.M) {
	// The test binary is the child's executable, as opus-privd is.
	MaybeRunChild()
	os.Exit(testrun.Main(m))
}

func TestCommandRefusesRoot(t *testing.T) {
	for _, s := range []Spec{{UID: 0, GID: 1000, Path: "/bin/true", Args: []string{"true"}}, {UID: 1000, GID: 0, Path: "/bin/true", Args: []string{"true"}}, {UID: 1000, GID: 1000}} {
		if _, err := Command(context.Background(), "/proc/self/exe", s); err == nil {
			t.Errorf("Command(%+v) accepted", s)
		}
	}
}

// TestConfined runs a shell confined as a user of the test run and checks
// what it sees: its own /tmp, /var/tmp and /dev/shm (empty tmpfs, nothing
// of it on the host's), a kept directory under /tmp still there and
// writable as before, no new privileges, the limits, the user's ids and no
// supplementary groups, and mount and IPC namespaces other than the host's.
func TestConfined(t *testing.T) {
	run := testrun.Need(t, "creates a user and runs a program as it in a mount namespace")
	_, uid, gid := run.NewUser(t, "c")
	keep := run.TempDir(t) // under /tmp, like the tests' project trees
	if err := os.Chown(keep, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	hostMark := filepath.Join("/tmp", "opus-confine-test-"+run.ID)
	if err := run.NotePath(hostMark); err != nil {
		t.Fatal(err)
	}
	script := `set -e
echo "tmp=$(ls -A /tmp | tr '\n' ' ')"
echo "vartmp=$(ls -A /var/tmp | tr '\n' ' ')"
echo "shm=$(ls -A /dev/shm | tr '\n' ' ')"
echo left > ` + hostMark + `
echo kept > "$1/from-inside"
sed -n 's/^\(NoNewPrivs\|Uid\|Gid\|Groups\):[[:space:]]*\(.*\)/\1=\2/p' /proc/self/status | tr '\t' ' '
sed -n 's/^Max processes *\([0-9]*\).*/nproc=\1/p; s/^Max file size *\([0-9]*\).*/fsize=\1/p; s/^Max open files *\([0-9]*\).*/nofile=\1/p' /proc/self/limits
echo "mnt=$(readlink /proc/self/ns/mnt)"
echo "ipc=$(readlink /proc/self/ns/ipc)"
echo "tmpfs=$(grep ' /tmp ' /proc/self/mounts | cut -d' ' -f3,4)"
`
	cmd, err := Command(context.Background(), "/proc/self/exe", Spec{UID: uid, GID: gid, Path: "/bin/sh",
		Args: []string{"sh", "-c", script, "sh", keep}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/", Keep: []string{keep},
		Limits: Limits{TmpBytes: 8 << 20, Tasks: 100, Files: 256, FileBytes: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("confined shell: %v\n%s", err, out)
	}
	t.Logf("confined shell:\n%s", out)
	got := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			got[k] = strings.TrimSpace(v)
		}
	}
	hostMnt, _ := os.Readlink("/proc/self/ns/mnt")
	u, g := strconv.Itoa(int(uid)), strconv.Itoa(int(gid))
	// /tmp holds only the first component of the kept directory's path.
	first := strings.Split(strings.TrimPrefix(keep, "/tmp/"), "/")[0]
	want := map[string]string{
		"tmp": first, "vartmp": "", "shm": "",
		"NoNewPrivs": "1", "Uid": u + " " + u + " " + u + " " + u, "Gid": g + " " + g + " " + g + " " + g, "Groups": "",
		"nproc": "100", "fsize": strconv.Itoa(1 << 20), "nofile": "256",
		"tmpfs": "tmpfs rw,nosuid,nodev,relatime,size=8192k",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("inside, %s = %q; want %q", k, got[k], v)
		}
	}
	if got["mnt"] == "" || got["mnt"] == hostMnt {
		t.Errorf("the confined shell's mount namespace is %q; want its own, not the host's %s", got["mnt"], hostMnt)
	}
	hostIPC, _ := os.Readlink("/proc/self/ns/ipc")
	if got["ipc"] == "" || got["ipc"] == hostIPC {
		t.Errorf("the confined shell's IPC namespace is %q; want its own, not the host's %s", got["ipc"], hostIPC)
	}
	if _, err := os.Stat(hostMark); err == nil {
		t.Errorf("%s, written inside, is on the host's /tmp", hostMark)
	}
	if data, err := os.ReadFile(filepath.Join(keep, "from-inside")); err != nil || string(data) != "kept\n" {
		t.Errorf("the kept directory did not get the file written inside: %q %v", data, err)
	}
}
