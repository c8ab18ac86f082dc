package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/testrun"
)

// passwdLine returns the /etc/passwd line of user name, or "".
func passwdLine(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, name+":") {
			return l
		}
	}
	return ""
}

// fileState is what a refusal test checks did not change.
type fileState struct {
	uid, gid uint32
	mode     fs.FileMode
	sum      [32]byte
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	s := fileState{uid: st.Uid, gid: st.Gid, mode: fi.Mode()}
	if fi.Mode().IsRegular() {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s.sum = sha256.Sum256(data)
	}
	return s
}

// hostState digests the accounts a refused call of this run could have
// made: every passwd, group and shadow line whose name carries the run's
// marker or whose id lies in a project uid range of one of its hosts. Other accounts
// are not the test's to judge: anything else on the host (`make demo`'s
// stack, a real Opus) may add users meanwhile.
func hostState(t *testing.T) [32]byte {
	t.Helper()
	var b bytes.Buffer
	// Project uids of every host the run may start.
	var ids []config.UIDRange
	for n := range testrun.MaxHosts {
		ids = append(ids, testRun.HostUIDs(n))
	}
	for _, f := range []string{"/etc/passwd", "/etc/group", "/etc/shadow"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			fields := strings.Split(line, ":")
			mine := strings.HasPrefix(fields[0], "t"+testRun.ID)
			if len(fields) > 2 && f != "/etc/shadow" {
				if id, err := strconv.ParseUint(fields[2], 10, 32); err == nil && slices.ContainsFunc(ids, func(r config.UIDRange) bool { return r.Contains(uint32(id)) }) {
					mine = true
				}
			}
			if mine {
				fmt.Fprintf(&b, "%s:%s\n", f, line)
			}
		}
	}
	return sha256.Sum256(b.Bytes())
}

// hostStateOf is hostState for the accounts of hosts alone (their
// project users: by user prefix or project uid): what a test in the
// parallel phase judges, while tests of other groups (on other hosts)
// make and remove their own.
func hostStateOf(t *testing.T, hosts ...*host) [32]byte {
	t.Helper()
	var b bytes.Buffer
	for _, f := range []string{"/etc/passwd", "/etc/group", "/etc/shadow"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			fields := strings.Split(line, ":")
			mine := slices.ContainsFunc(hosts, func(h *host) bool {
				if strings.HasPrefix(fields[0], h.cfg.UserPrefix) {
					return true
				}
				id, err := strconv.ParseUint(fields[min(2, len(fields)-1)], 10, 32)
				return len(fields) > 2 && f != "/etc/shadow" && err == nil && h.cfg.ProjectUIDs.Contains(uint32(id))
			})
			if mine {
				fmt.Fprintf(&b, "%s:%s\n", f, line)
			}
		}
	}
	return sha256.Sum256(b.Bytes())
}

// checkOwner asserts path's owner, group and permission bits.
func checkOwner(t *testing.T, path string, uid, gid uint32, perm fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != uid || st.Gid != gid || fi.Mode().Perm() != perm {
		t.Errorf("%s: owner %d:%d mode %#o, want %d:%d %#o", path, st.Uid, st.Gid, fi.Mode().Perm(), uid, gid, perm)
	}
}

func projectIDs(t *testing.T, name string) (uint32, uint32) {
	t.Helper()
	uid, gid, err := lookupIDs(projUser(name))
	if err != nil {
		t.Fatalf("project user: %v", err)
	}
	return uid, gid
}

// TestCreateShowListDestroy is the daemon pair's whole life of a project:
// the user appears with the marker, the tree gets the policy, and destroy
// leaves nothing.
func TestCreateShowListDestroy(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	h.mustCtl(t, 0, "create", name, "--empty")

	line := passwdLine(t, projUser(name))
	if line == "" {
		t.Fatalf("user opus-%s is not in /etc/passwd", name)
	}
	f := strings.Split(line, ":")
	if f[4] != "Opus project "+name || f[6] != "/usr/sbin/nologin" {
		t.Errorf("passwd line %q: want GECOS %q and shell /usr/sbin/nologin", line, "Opus project "+name)
	}
	if exists(f[5]) && f[5] != filepath.Join(h.cfg.BaseDir, "projects", name) {
		t.Errorf("home %q is not the project root", f[5])
	}

	puid, pgid := projectIDs(t, name)
	rootDir := filepath.Join(h.cfg.BaseDir, "projects", name)
	checkOwner(t, rootDir, h.opusUID, pgid, 0o751)
	checkOwner(t, filepath.Join(rootDir, "code"), h.opusUID, pgid, 0o751)
	checkOwner(t, filepath.Join(rootDir, "secrets"), puid, h.opusGID, 0o770)
	checkOwner(t, filepath.Join(rootDir, "data"), puid, h.opusGID, 0o770)
	checkOwner(t, filepath.Join(rootDir, "static"), h.opusUID, pgid, 0o775)

	if out := h.mustCtl(t, 0, "ls"); !strings.Contains(out, name) {
		t.Errorf("ls does not list %s:\n%s", name, out)
	}
	var p struct {
		Name  string `json:"name"`
		Phase string `json:"phase"`
	}
	if err := json.Unmarshal([]byte(h.mustCtl(t, 0, "show", name, "-o", "json")), &p); err != nil {
		t.Fatalf("show -o json: %v", err)
	}
	if p.Name != name || p.Phase != "PHASE_READY" {
		t.Errorf("show: name %q phase %q, want %q PHASE_READY", p.Name, p.Phase, name)
	}

	h.mustCtl(t, 0, "destroy", name, "--yes")
	if l := passwdLine(t, projUser(name)); l != "" {
		t.Errorf("user still there after destroy: %s", l)
	}
	if _, err := user.LookupGroup(projUser(name)); err == nil {
		t.Errorf("group opus-%s still there after destroy", name)
	}
	if exists(rootDir) {
		t.Errorf("project tree %s still there after destroy", rootDir)
	}
	if r := h.ctl(t, 0, "", "show", name); r.code == 0 {
		t.Errorf("show after destroy succeeded:\n%s", r.out)
	}
}

// TestOwnersSeeOnlyTheirOwn: a project of one uid is invisible to and
// unchangeable by another non-admin uid, and visible to root.
func TestOwnersSeeOnlyTheirOwn(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	h.mustCtl(t, h.otherID, "create", name, "--empty")

	if out := h.mustCtl(t, h.otherID, "ls"); !strings.Contains(out, name) {
		t.Errorf("owner's ls lacks %s:\n%s", name, out)
	}
	const nobody = 65534
	if out := h.mustCtl(t, nobody, "ls"); strings.Contains(out, name) {
		t.Errorf("nobody's ls shows %s:\n%s", name, out)
	}
	if r := h.ctl(t, nobody, "", "show", name); r.code == 0 || strings.Contains(r.out, name) {
		t.Errorf("nobody can show %s (exit %d)", name, r.code)
	}
	before := hostState(t)
	if r := h.ctl(t, nobody, "", "destroy", name, "--yes"); r.code == 0 {
		t.Errorf("nobody destroyed %s", name)
	}
	if hostState(t) != before || passwdLine(t, projUser(name)) == "" {
		t.Errorf("host changed after a refused destroy")
	}
	if out := h.mustCtl(t, 0, "ls"); !strings.Contains(out, name) {
		t.Errorf("root's ls lacks %s:\n%s", name, out)
	}
	var p struct {
		OwnerUID uint32 `json:"owner_uid"`
	}
	if err := json.Unmarshal([]byte(h.mustCtl(t, 0, "show", name, "-o", "json")), &p); err != nil {
		t.Fatal(err)
	}
	if p.OwnerUID != h.otherID {
		t.Errorf("owner uid %d, want %d", p.OwnerUID, h.otherID)
	}
	h.mustCtl(t, h.otherID, "destroy", name, "--yes")
}

// TestPrivdServesOnlyOpus: every uid but the configured opus uid, root
// included, is refused before any handler runs, and nothing changes.
func TestPrivdServesOnlyOpus(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	sock := h.cfg.PrivdSocket()
	before := hostState(t)

	// The socket's own mode keeps nobody out at connect time.
	ans := asUID(t, 65534, 65534, privdCall{Socket: sock, Method: "EnsureUser", Project: name})
	if ans.Code == "OK" {
		t.Fatalf("nobody got through to privd")
	}
	// With the socket opened to everyone, peer credentials still refuse.
	openPrivdToAll(t, h)
	for _, c := range []struct {
		uid, gid uint32
	}{{65534, 65534}, {h.otherID, h.otherGID}, {0, 0}} {
		for _, m := range []string{"EnsureUser", "SecureTree", "RemoveTree", "DeleteUser"} {
			ans := asUID(t, c.uid, c.gid, privdCall{Socket: sock, Method: m, Project: name})
			if ans.Code != "PermissionDenied" {
				t.Errorf("uid %d %s: %s %s, want PermissionDenied", c.uid, m, ans.Code, ans.Message)
			}
		}
	}
	if hostState(t) != before {
		t.Errorf("users or groups changed after refused calls")
	}
	if exists(filepath.Join(h.cfg.BaseDir, "projects", name)) {
		t.Errorf("a project tree appeared after refused calls")
	}
}

// TestPrivdRefusesBadNamesAndForeignUsers: invalid names are refused, and
// privd will not delete a user it did not make.
func TestPrivdRefusesBadNamesAndForeignUsers(t *testing.T) {
	h := needHost(t)
	sock := h.cfg.PrivdSocket()
	before := hostState(t)
	for _, bad := range []string{"../x", "Root", "a b", strings.Repeat("a", 40), "", "x\ny", "é"} {
		for _, m := range []string{"EnsureUser", "DeleteUser", "SecureTree", "RemoveTree"} {
			ans := asUID(t, h.opusUID, h.opusGID, privdCall{Socket: sock, Method: m, Project: bad})
			if ans.Code != "InvalidArgument" {
				t.Errorf("%s(%q): %s %s, want InvalidArgument", m, bad, ans.Code, ans.Message)
			}
		}
	}
	if hostState(t) != before {
		t.Fatalf("users or groups changed after refused names")
	}

	// A user that looks like Opus's but was made by hand.
	name := h.newProject(t)
	if err := testRun.AddUser(projUser(name)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run("userdel", projUser(name)) })
	before = hostState(t)
	ans := asUID(t, h.opusUID, h.opusGID, privdCall{Socket: sock, Method: "DeleteUser", Project: name})
	if ans.Code != "FailedPrecondition" && ans.Code != "PermissionDenied" {
		t.Errorf("DeleteUser of a hand-made user: %s %s, want FailedPrecondition", ans.Code, ans.Message)
	}
	if passwdLine(t, projUser(name)) == "" || hostState(t) != before {
		t.Errorf("the hand-made user opus-%s was changed", name)
	}
	ans = asUID(t, h.opusUID, h.opusGID, privdCall{Socket: sock, Method: "EnsureUser", Project: name})
	if ans.Code == "OK" {
		t.Errorf("EnsureUser adopted a hand-made user")
	}
	// Nor will it install a vhost whose mod_wsgi daemon runs as that user.
	crt, key, err := cert.SelfSigned([]string{name + h.cfg.ServerSuffix}, time.Now(), 24*time.Hour, h.cfg.TLSSecurityLevel)
	if err != nil {
		t.Fatal(err)
	}
	ans = asUID(t, h.opusUID, h.opusGID, privdCall{Socket: sock, Method: "InstallSite", Project: name, Cert: string(crt), Key: string(key)})
	if ans.Code != "FailedPrecondition" {
		t.Errorf("InstallSite for a hand-made user: %s %s, want FailedPrecondition", ans.Code, ans.Message)
	}
	for _, f := range []string{filepath.Join("sites", name+".conf"), filepath.Join("tls", name+".key"), filepath.Join("tls", name+".crt")} {
		if exists(filepath.Join(h.cfg.ApacheDir, f)) {
			t.Errorf("InstallSite for a hand-made user wrote %s", f)
		}
	}
	if passwdLine(t, projUser(name)) == "" || hostState(t) != before {
		t.Errorf("the hand-made user %s was changed", projUser(name))
	}
}

// runAs runs a shell command as a project's user.
func runAs(t *testing.T, uid, gid uint32, script string) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as uid %d: %s: %v\n%s", uid, script, err, out)
	}
}

// TestTreeAttacks: what a project's user plants in its tree can neither
// make privd change files outside it nor survive a destroy.
func TestTreeAttacks(t *testing.T) {
	h := needHost(t)
	name := h.newProject(t)
	h.mustCtl(t, 0, "create", name, "--empty")
	puid, pgid := projectIDs(t, name)
	rootDir := filepath.Join(h.cfg.BaseDir, "projects", name)
	data := filepath.Join(rootDir, "data")

	// The project user plants links and files of its own.
	runAs(t, puid, pgid, fmt.Sprintf("ln -s /etc/shadow %[1]s/shadow && ln -s /etc %[1]s/etc && mkfifo %[1]s/fifo && mkdir -p %[1]s/own/deep && echo x > %[1]s/own/deep/f", data))
	// A hard link to a file outside the tree (root can make one anywhere).
	outside := filepath.Join(root, "outside-"+name)
	if err := os.WriteFile(outside, []byte("outside"), 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(outside)
	if err := os.Link(outside, filepath.Join(data, "hard")); err != nil {
		t.Fatal(err)
	}
	shadow, etc, out := stateOf(t, "/etc/shadow"), stateOf(t, "/etc"), stateOf(t, outside)

	ans := asUID(t, h.opusUID, h.opusGID, privdCall{Socket: h.cfg.PrivdSocket(), Method: "SecureTree", Project: name})
	if ans.Code != "OK" {
		t.Fatalf("SecureTree: %s %s", ans.Code, ans.Message)
	}
	for _, want := range []string{"data/shadow", "data/etc", "data/fifo", "data/hard"} {
		if !contains(ans.Refusals, want) {
			t.Errorf("SecureTree did not report %s; refusals: %v", want, ans.Refusals)
		}
	}
	if stateOf(t, "/etc/shadow") != shadow || stateOf(t, "/etc") != etc || stateOf(t, outside) != out {
		t.Fatalf("a file outside the tree changed")
	}

	h.mustCtl(t, 0, "destroy", name, "--yes")
	if exists(rootDir) {
		t.Errorf("tree %s survived destroy", rootDir)
	}
	// userdel rewrites /etc/shadow's content; its owner and mode, and /etc's,
	// must stay.
	for _, c := range []struct {
		path string
		was  fileState
	}{{"/etc/shadow", shadow}, {"/etc", etc}} {
		if got := stateOf(t, c.path); got.uid != c.was.uid || got.gid != c.was.gid || got.mode != c.was.mode {
			t.Errorf("destroy changed %s: %+v, was %+v", c.path, got, c.was)
		}
	}
	if !exists("/etc/passwd") {
		t.Errorf("destroy removed /etc/passwd")
	}
	if got := stateOf(t, outside); got.uid != out.uid || got.mode != out.mode || got.sum != out.sum {
		t.Errorf("destroy changed the hard-linked outside file")
	}
}
