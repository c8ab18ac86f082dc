package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/testrun"
)

// Issue 19's Debian package, tested for real without touching the host.
//
// `apt-get install` of the package changes the host's dpkg database,
// /etc/passwd and /etc/opus, and the package's daemons use /var/lib/opus,
// /run/opus and ports 8080/8443, where `make demo`'s stack may be running.
// So the whole cycle — install, deploy the sample project through the
// installed binaries and units, purge — runs in a sandbox: a private mount,
// PID, network, IPC and UTS namespace whose root is an overlay of the
// host's / with its upper layer on a tmpfs of the namespace's own. The
// sandbox sees the host's files (Debian's apache2, mod_wsgi, Django, dpkg's
// database) and every change it makes lands in the upper layer, which
// vanishes with the namespace; its processes die with its PID 1; its
// loopback is its own, so the default ports collide with nothing.
//
// "Finds the host as it was" is then checked where the package ran: every
// path in the upper layer after the purge must be as it was before the
// install (same type, mode, owner, content), except the logs, caches and
// journals of dpkg and apt themselves.

// sandboxEnv selects the sandbox's PID 1 mode of the test binary: its value
// is the directory to build the sandbox in (see runSandbox).
const sandboxEnv = "OPUS_E2E_SANDBOX"

// runSandbox is PID 1 of a sandbox, started in new mount, PID, network,
// IPC and UTS namespaces: it mounts a tmpfs on dir, an overlay of / on
// dir/root with its layers in the tmpfs, the kernel filesystems, a private
// /run, /tmp and /dev/shm, brings up loopback, chroots into the overlay,
// prints "ready FD" (FD: an open descriptor of the upper layer, which the
// test reads through /proc/PID/fd/FD) and reaps orphans until SIGTERM.
// When it exits the kernel kills everything else in the namespace.
func runSandbox(dir string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return 1
	}
	// Nothing mounted here propagates to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail(fmt.Errorf("make / private: %w", err))
	}
	// On its own filesystem the upper layer is not beneath the lower one
	// (/), which overlayfs would refuse.
	if err := unix.Mount("opus-sandbox", dir, "tmpfs", 0, "mode=0700,size=4g"); err != nil {
		return fail(fmt.Errorf("tmpfs on %s: %w", dir, err))
	}
	upper, work, newRoot := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "root")
	for _, d := range []string{upper, work, newRoot} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fail(err)
		}
	}
	// xino: every file reports the overlay's device, as on one filesystem
	// (privd's tree walk refuses to cross into another).
	if err := unix.Mount("opus-sandbox", newRoot, "overlay", 0, "lowerdir=/,upperdir="+upper+",workdir="+work+",xino=on"); err != nil {
		return fail(fmt.Errorf("overlay of /: %w", err))
	}
	mounts := []struct {
		source, target, fstype string
		flags                  uintptr
		data                   string
	}{
		{"proc", "proc", "proc", 0, ""},
		{"sysfs", "sys", "sysfs", unix.MS_RDONLY, ""},
		// The host's control groups: privd makes each backend's beneath
		// its own (the run's: its user_prefix names the parent, which
		// the run notes for cleanup), as it would on a host.
		{"/sys/fs/cgroup", "sys/fs/cgroup", "", unix.MS_BIND | unix.MS_REC, ""},
		{"/dev", "dev", "", unix.MS_BIND | unix.MS_REC, ""},
		{"opus-sandbox", "dev/shm", "tmpfs", 0, "mode=1777"},
		{"opus-sandbox", "run", "tmpfs", 0, "mode=0755"},
		{"opus-sandbox", "tmp", "tmpfs", 0, "mode=1777"},
	}
	for _, m := range mounts {
		if err := unix.Mount(m.source, filepath.Join(newRoot, m.target), m.fstype, m.flags, m.data); err != nil {
			return fail(fmt.Errorf("mount %s on /%s: %w", m.source, m.target, err))
		}
	}
	if _, err := quick("/usr/sbin/ip", "link", "set", "lo", "up"); err != nil {
		return fail(fmt.Errorf("ip link set lo up: %w", err))
	}
	fd, err := unix.Open(upper, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fail(err)
	}
	if err := unix.Chroot(newRoot); err != nil {
		return fail(err)
	}
	if err := os.Chdir("/"); err != nil {
		return fail(err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	fmt.Printf("ready %d\n", fd)
	os.Stdout.Close()
	for {
		select {
		case <-stop:
			return 0
		default:
		}
		var ws unix.WaitStatus
		if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); err != nil || pid == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// quick runs a short host command (a minute at most) and returns its
// standard output (bounded) and error.
func quick(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	out := &cappedBuffer{max: 1 << 20}
	cmd.Stdout = out
	err := cmd.Run()
	if out.dropped > 0 && err == nil {
		err = fmt.Errorf("%s: more than %d bytes of output", name, out.max)
	}
	return out.buf.Bytes(), err
}

// sandbox is a running sandbox (runSandbox) seen from the test.
type sandbox struct {
	init   *exec.Cmd
	exited chan error
	upper  string // the upper layer, through /proc/PID/fd
	root   string // the sandbox's /, through /proc/PID/root
	logs   string // host directory for the sandbox's daemons' output
}

// newSandbox starts a sandbox in a directory of the run; it is ended (and
// with it everything in it) when the test ends.
func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	dir, err := os.MkdirTemp(root, "sandbox")
	if err != nil {
		t.Fatal(err)
	}
	s := &sandbox{logs: filepath.Join(dir, "logs"), exited: make(chan error, 1)}
	if err := os.Mkdir(s.logs, 0o755); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	s.init = exec.Command(os.Args[0], "-test.run=^$")
	s.init.Env = []string{sandboxEnv + "=" + mnt}
	s.init.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
		Pdeathsig:  syscall.SIGKILL,
	}
	stderr := &cappedBuffer{max: 64 << 10}
	s.init.Stderr = stderr
	stdout, err := s.init.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.init.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- l
		s.exited <- s.init.Wait()
	}()
	t.Cleanup(func() { s.end(t) })
	var ready string
	select {
	case ready = <-line:
	case <-time.After(30 * time.Second):
		t.Fatalf("sandbox not ready within 30s: %s", stderr)
	}
	fd, ok := strings.CutPrefix(strings.TrimSpace(ready), "ready ")
	if !ok {
		t.Fatalf("sandbox did not start: %q %s", ready, stderr)
	}
	pid := s.init.Process.Pid
	s.upper = fmt.Sprintf("/proc/%d/fd/%s/.", pid, fd)
	s.root = fmt.Sprintf("/proc/%d/root", pid)
	return s
}

// end stops the sandbox's PID 1; the kernel kills the rest with it, and
// the namespace's mounts, upper layer included, go away.
func (s *sandbox) end(t *testing.T) {
	if s.init.Process == nil {
		return
	}
	_ = s.init.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.init.Process.Kill()
		t.Errorf("sandbox PID 1 still running 30s after SIGTERM")
		<-s.exited
	}
}

// path is p inside the sandbox, as the test reaches it.
func (s *sandbox) path(p string) string { return s.root + p }

// sandboxEnviron is what commands in the sandbox get: systemd's PATH, no
// terminal, no locale.
var sandboxEnviron = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root", "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive", "TERM=dumb",
}

// command is args run inside the sandbox (as root) by nsenter.
func (s *sandbox) command(ctx context.Context, args ...string) *exec.Cmd {
	ns := []string{"--target", strconv.Itoa(s.init.Process.Pid), "--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd", "--"}
	cmd := exec.CommandContext(ctx, "nsenter", append(ns, args...)...)
	cmd.Env = sandboxEnviron
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs args in the sandbox with stdin, within 5 minutes, and returns
// its combined output (bounded) and error.
func (s *sandbox) run(stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := s.command(ctx, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	out := &cappedBuffer{max: 256 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	return out.String(), err
}

// must is run for commands that must succeed.
func (s *sandbox) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.run(nil, args...)
	if err != nil {
		t.Fatalf("in the sandbox, %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// sh runs a shell script in the sandbox; it must succeed.
func (s *sandbox) sh(t *testing.T, script string, args ...string) string {
	t.Helper()
	return s.must(t, append([]string{"/bin/sh", "-euc", script, "sh"}, args...)...)
}

// processes lists the sandbox's processes other than its PID 1, as
// "pid cmdline".
func (s *sandbox) processes() []string {
	entries, _ := os.ReadDir(s.path("/proc"))
	var out []string
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err != nil || pid == 1 {
			continue
		}
		cmdline, _ := os.ReadFile(s.path("/proc/" + e.Name() + "/cmdline"))
		if len(cmdline) == 0 {
			continue // a kernel thread, or a zombie about to be reaped
		}
		out = append(out, e.Name()+" "+strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))))
	}
	return out
}

// unitFile is a unit file's settings, "Section.Key" → values in order.
type unitFile map[string][]string

// readUnitFile reads a unit in systemd's syntax (ours use no line
// continuations and no quoting).
func readUnitFile(t *testing.T, path string) unitFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u, section := unitFile{}, ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %q is not KEY=VALUE", path, line)
			}
			u[section+"."+strings.TrimSpace(k)] = append(u[section+"."+strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

// one is the single value of key, failing the test unless it is set once.
func (u unitFile) one(t *testing.T, key string) string {
	t.Helper()
	if len(u[key]) != 1 {
		t.Fatalf("unit: %s is %q, want one value", key, u[key])
	}
	return u[key][0]
}

// unitDaemon is a daemon of the installed package started in the sandbox
// as its installed units say.
type unitDaemon struct {
	name   string
	cmd    *exec.Cmd
	exited chan error
}

// startUnit starts SERVICE.service from the sandbox's /lib/systemd/system
// as systemd would through SERVICE.socket, which PID 1 here is not: the
// socket's directory (DirectoryMode=), the socket held by
// systemd-socket-activate at ListenStream= with SocketUser=, SocketGroup=
// and SocketMode=, and on the first connection the service's ExecStart=
// as User= and Group= (with the user's groups) with Environment=.
func (s *sandbox) startUnit(t *testing.T, service string) *unitDaemon {
	t.Helper()
	svc := readUnitFile(t, s.path("/lib/systemd/system/"+service+".service"))
	sock := readUnitFile(t, s.path("/lib/systemd/system/"+service+".socket"))
	listen := sock.one(t, "Socket.ListenStream")
	dirMode := "0755"
	if v := sock["Socket.DirectoryMode"]; len(v) == 1 {
		dirMode = v[0]
	}
	s.must(t, "install", "-d", "-m", dirMode, filepath.Dir(listen))
	// What a stopped daemon left (systemd unlinks it before binding too):
	// the wait below is for the new socket.
	s.must(t, "rm", "-f", listen)

	args := []string{"systemd-socket-activate", "--listen=" + listen, "--setenv=PATH=" + strings.TrimPrefix(sandboxEnviron[0], "PATH=")}
	for _, e := range svc["Service.Environment"] {
		args = append(args, "--setenv="+e)
	}
	if u := svc["Service.User"]; len(u) == 1 {
		group := svc.one(t, "Service.Group")
		args = append(args, "setpriv", "--reuid="+u[0], "--regid="+group, "--init-groups", "--")
	}
	argv := strings.Fields(svc.one(t, "Service.ExecStart"))
	// The program is the package's own (not, say, a `make install`
	// copy the host has under /usr/local), and so is the documentation.
	if out := s.must(t, "dpkg", "-S", argv[0]); !strings.HasPrefix(out, "opus: ") {
		t.Errorf("%s.service runs %s, which dpkg says is %q, not opus's", service, argv[0], out)
	}
	for _, doc := range svc["Unit.Documentation"] {
		if p, ok := strings.CutPrefix(doc, "file://"); ok {
			if out := s.must(t, "dpkg", "-S", p); !strings.HasPrefix(out, "opus: ") {
				t.Errorf("%s.service's Documentation=%s is not opus's: %q", service, doc, out)
			}
		}
	}
	args = append(args, argv...)

	logf, err := os.OpenFile(filepath.Join(s.logs, service+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	d := &unitDaemon{name: service, exited: make(chan error, 1)}
	d.cmd = s.command(context.Background(), args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() { d.kill() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if fi, err := os.Lstat(s.path(listen)); err == nil && fi.Mode().Type() == fs.ModeSocket {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket at %s 20s after starting %s\n%s", listen, service, s.log(service))
		}
	}
	s.must(t, "chown", sock.one(t, "Socket.SocketUser")+":"+sock.one(t, "Socket.SocketGroup"), listen)
	s.must(t, "chmod", sock.one(t, "Socket.SocketMode"), listen)
	return d
}

// pid is the daemon's host pid: nsenter's child, which execs
// systemd-socket-activate, then (setpriv and) the daemon.
func (d *unitDaemon) pid() int {
	p := d.cmd.Process.Pid
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p, p))
	child, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return child
}

// stop sends SIGTERM, as systemctl stop does, and fails the test unless
// the daemon exits cleanly within 40 s.
func (d *unitDaemon) stop(t *testing.T) {
	t.Helper()
	pid := d.pid()
	if pid == 0 {
		t.Fatalf("%s is not running", d.name)
	}
	// Until a client connects, the pid is still systemd-socket-activate
	// (as systemd's socket would be): it ends by the signal.
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	activated := !strings.HasSuffix(exe, "/systemd-socket-activate")
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case err := <-d.exited:
		d.exited <- err
		if err != nil && activated {
			t.Errorf("%s after SIGTERM: %v", d.name, err)
		}
	case <-time.After(40 * time.Second):
		t.Errorf("%s still running 40s after SIGTERM", d.name)
		d.kill()
	}
}

func (d *unitDaemon) kill() {
	if pid := d.pid(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func (s *sandbox) log(name string) string {
	data, _ := os.ReadFile(filepath.Join(s.logs, name+".log"))
	if len(data) > 6000 {
		data = data[len(data)-6000:]
	}
	return fmt.Sprintf("--- %s ---\n%s", name, data)
}

// layer describes each path of the upper layer (relative, "/"-rooted):
// type, mode, owner, and for a file its size and digest, for a link its
// target; a whiteout (a path the sandbox deleted) is "absent".
type layer map[string]string

// describePath says what is at path (lstat'd), or "absent".
func describePath(path string) (string, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "absent", nil
	}
	if err != nil {
		return "", err
	}
	st := fi.Sys().(*syscall.Stat_t)
	d := fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
	switch {
	case fi.Mode()&fs.ModeCharDevice != 0 && st.Rdev == 0:
		return "absent", nil // an overlayfs whiteout
	case fi.Mode().IsRegular():
		data, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		d += fmt.Sprintf(" %d bytes sha256:%x", len(data), sha256.Sum256(data))
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			return "", err
		}
		d += " -> " + target
	}
	return d, nil
}

// upperLayer reads the sandbox's upper layer.
func (s *sandbox) upperLayer(t *testing.T) layer {
	t.Helper()
	l := layer{}
	// WalkDir cleans the paths it gives: "/proc/PID/fd/FD/etc/passwd".
	base := filepath.Clean(s.upper)
	err := filepath.WalkDir(s.upper, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, ok := strings.CutPrefix(p, base+"/")
		if !ok {
			return nil // the layer's root
		}
		rel = "/" + rel
		d, err := describePath(p)
		if err != nil {
			return err
		}
		if opaque, _ := unix.Lgetxattr(p, "trusted.overlay.opaque", make([]byte, 4)); opaque > 0 {
			d += " opaque"
		}
		l[rel] = d
		return nil
	})
	if err != nil {
		t.Fatalf("reading the sandbox's upper layer: %v", err)
	}
	return l
}

// bookkeeping is what dpkg, apt, debconf, man-db and the shadow tools
// write on any install and purge, for themselves: their logs, caches and
// locks, dpkg's journals (its status file and its info/ are compared),
// the account files' backups.
func bookkeeping(p string) bool {
	if p == "/var/lib/dpkg/status" || strings.HasPrefix(p, "/var/lib/dpkg/info/") {
		return false
	}
	for _, prefix := range []string{"/var/log/apt/", "/var/cache/apt/", "/var/cache/debconf/", "/var/cache/man/", "/var/lib/apt/", "/var/lib/dpkg/"} {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return slices.Contains([]string{"/var/log/dpkg.log", "/var/log/alternatives.log", "/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-"}, p)
}

// changesSince lists what differs between before (the upper layer then)
// and after (now), ignoring bookkeeping: a path only in one of them is
// compared with the host's own file beneath (the lower layer).
func changesSince(t *testing.T, before, after layer) []string {
	t.Helper()
	state := func(l layer, p string) string {
		if d, ok := l[p]; ok {
			return strings.TrimSuffix(d, " opaque")
		}
		d, err := describePath(p)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	var paths []string
	for p := range before {
		paths = append(paths, p)
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	var changes []string
	for _, p := range paths {
		if bookkeeping(p) {
			continue
		}
		b, a := state(before, p), state(after, p)
		// A directory copied up (because something in it changed) is
		// unchanged itself if it is the same directory; its entries are
		// compared one by one.
		if b != a {
			changes = append(changes, fmt.Sprintf("%s: before %q, after %q", p, b, a))
		}
	}
	return changes
}

// freeIDs is the first of n consecutive ids of the run's own account range
// (testrun.AccountIDs) that no user and no group of the host has.
func freeIDs(t *testing.T, n uint32) uint32 {
	t.Helper()
	r := testRun.AccountIDs()
	free := func(id uint32) bool {
		s := strconv.FormatUint(uint64(id), 10)
		_, errUser := quick("getent", "passwd", s)
		_, errGroup := quick("getent", "group", s)
		return id <= r.Last && errUser != nil && errGroup != nil
	}
next:
	for range 100 {
		first := testrun.MustFreeID(t, r)
		for id := first + 1; id < first+n; id++ {
			if !free(id) {
				continue next
			}
		}
		return first
	}
	t.Fatalf("no %d free consecutive ids in %s", n, r)
	return 0
}

// buildDeb runs `make deb` (with VERSION=version unless empty) into a
// directory of the run and returns the package's path.
func buildDeb(t *testing.T, version string) string {
	t.Helper()
	out, err := os.MkdirTemp(root, "deb")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "deb")
	cmd.Dir = ".."
	for _, e := range os.Environ() {
		if k, _, _ := strings.Cut(e, "="); !slices.Contains([]string{"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DEB_OUT", "VERSION", "DEB_MAINTAINER"}, k) {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, "DEB_OUT="+out)
	if version != "" {
		cmd.Env = append(cmd.Env, "VERSION="+version)
	}
	buf := &cappedBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Run(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, buf)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "opus_*_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %q in %s, want one opus_VERSION_ARCH.deb\n%s", debs, out, buf)
	}
	if got := strings.TrimSpace(buf.String()); !strings.HasSuffix(got, debs[0]) {
		t.Errorf("make deb printed %q, want the package's path %s", got, debs[0])
	}
	return debs[0]
}

// debField is a control field of the package.
func debField(t *testing.T, deb, field string) string {
	t.Helper()
	out, err := quick("dpkg-deb", "--field", deb, field)
	if err != nil {
		t.Fatalf("dpkg-deb --field %s: %v", field, err)
	}
	return strings.TrimSpace(string(out))
}

// debContents is `dpkg-deb --contents` as "MODE OWNER PATH" lines, without
// the sizes and dates that change from build to build.
func debContents(t *testing.T, deb string) string {
	t.Helper()
	out, err := quick("dpkg-deb", "--contents", deb)
	if err != nil {
		t.Fatalf("dpkg-deb --contents: %v", err)
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb --contents line %q", line)
		}
		fmt.Fprintf(&b, "%s %s %s\n", f[0], f[1], strings.Join(f[5:], " "))
	}
	return b.String()
}

// TestDebPackage is issue 19's Debian package: `make deb` builds
// opus_VERSION_ARCH.deb, lintian finds nothing at warning level or above,
// its contents are the expected list (testdata/deb-contents.txt) and its
// control fields the promised ones. Then, in a sandbox (see above), the
// real cycle: `apt-get install ./opus_*.deb` (user, groups, state
// directory; the postinst run again changes nothing); the installed
// daemons started from the installed units' lines, the sample project
// deployed with the installed opusctl and answering over HTTP; `apt-get
// purge` refused while the project exists, keeping its state, accounts and
// site; installed again, the project destroyed, the daemons stopped,
// purged: no process left, and every file and account as before the
// install.
func TestDebPackage(t *testing.T) {
	// Beside the etcd tests, after the others (see joinGroup): it
	// touches none of the run's hosts.
	t.Parallel()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	for _, tool := range []string{"make", "dpkg-deb", "dpkg-shlibdeps", "lintian", "apt-get", "nsenter", "setpriv", "systemd-socket-activate", "curl", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (make deps installs it): %v", tool, err)
		}
	}
	// The host must not change: no dpkg entry, none of Opus's paths or
	// accounts. TestInstallOnHost (another test binary's, maybe) changes
	// them while it holds this lock.
	lock, err := os.OpenFile("/tmp/opus-install.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	hostBefore := snapshotHost(t)
	hostDpkg := func() string {
		out, _ := quick("dpkg-query", "-W", "-f=${Status}", "opus")
		return string(out)
	}
	dpkgBefore := hostDpkg()
	t.Cleanup(func() {
		if d := hostBefore.diff(snapshotHost(t)); d != "" {
			t.Errorf("the host changed:\n%s", d)
		}
		if got := hostDpkg(); got != dpkgBefore {
			t.Errorf("the host's dpkg status of opus changed: %q → %q", dpkgBefore, got)
		}
	})

	deb := buildDeb(t, "")
	version := debField(t, deb, "Version")
	t.Logf("built %s", deb)
	// The next release's, for the upgrade.
	newer := buildDeb(t, "99.0.0")
	newVersion := debField(t, newer, "Version")
	if out, err := quick("dpkg", "--compare-versions", newVersion, "gt", version); err != nil {
		t.Fatalf("%s does not sort after %s: %v %s", newVersion, version, err, out)
	}

	t.Run("lintian", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "lintian", "--fail-on", "warning,error", deb).CombinedOutput()
		if err != nil {
			t.Errorf("lintian --fail-on warning,error: %v\n%s", err, out)
		}
	})
	t.Run("contents", func(t *testing.T) {
		want, err := os.ReadFile("testdata/deb-contents.txt")
		if err != nil {
			t.Fatal(err)
		}
		if got := debContents(t, deb); got != string(want) {
			t.Errorf("dpkg-deb --contents:\n%s\nwant (testdata/deb-contents.txt):\n%s", got, want)
		}
		if want := "opus_" + version + "_" + debField(t, deb, "Architecture") + ".deb"; filepath.Base(deb) != want {
			t.Errorf("package file %s, want %s", filepath.Base(deb), want)
		}
		depends := debField(t, deb, "Depends")
		for _, p := range []string{"apache2", "libapache2-mod-wsgi-py3", "python3-django", "adduser"} {
			if !slices.Contains(strings.Split(strings.ReplaceAll(depends, " ", ""), ","), p) {
				t.Errorf("Depends: %s lacks %s", depends, p)
			}
		}
		conffiles, err := quick("dpkg-deb", "--info", deb, "conffiles")
		if err != nil || strings.TrimSpace(string(conffiles)) != config.DefaultPath {
			t.Errorf("conffiles: %q (%v), want %s", conffiles, err, config.DefaultPath)
		}
	})

	s := newSandbox(t)
	// The sandbox starts as a host without Opus: the host's own Opus
	// traces (make demo's or make install's accounts and state, other
	// runs' project users) hidden in the sandbox's copy. The ids adduser
	// may give are the run's own, so that no process of the sandbox shares
	// a uid with one of the host's.
	// id and id+1 for the package's accounts, the next 10 for projects
	// (project_uids below).
	id := freeIDs(t, 12)
	s.sh(t, `
rm -rf /etc/opus /var/lib/opus /var/lib/opus-apache
projects=$(getent passwd | awk -F: 'index($5, "Opus project ") == 1 { print $1 }')
for f in passwd group shadow gshadow; do
	awk -F: -v p="$projects" 'BEGIN { n = split(p, a, "\n"); for (i = 1; i <= n; i++) drop[a[i]] = 1; drop["opus"] = 1; drop["opus-admin"] = 1 }
		!($1 in drop)' /etc/$f >/tmp/$f
	cat /tmp/$f >/etc/$f
done
sed -i -E "s/^#?(FIRST_SYSTEM_UID|LAST_SYSTEM_UID|FIRST_SYSTEM_GID)=.*/\1=$1/; s/^#?LAST_SYSTEM_GID=.*/LAST_SYSTEM_GID=$2/" /etc/adduser.conf
cat /var/lib/dpkg/status >/tmp/status && cat /tmp/status >/var/lib/dpkg/status
`, strconv.FormatUint(uint64(id), 10), strconv.FormatUint(uint64(id+1), 10))
	before := s.upperLayer(t)

	// Into the sandbox: its /tmp is its own.
	copyIn := func(deb string) string {
		t.Helper()
		data, err := os.ReadFile(deb)
		if err != nil {
			t.Fatal(err)
		}
		in := "/tmp/" + filepath.Base(deb)
		if out, err := s.run(data, "/bin/sh", "-c", "cat >"+in); err != nil {
			t.Fatalf("copy the package into the sandbox: %v %s", err, out)
		}
		return in
	}
	inDeb, inNewer := copyIn(deb), copyIn(newer)
	install := func(deb, version string) {
		t.Helper()
		out := s.must(t, "apt-get", "install", "-y", deb)
		t.Logf("apt-get install:\n%s", out)
		if st := s.must(t, "dpkg-query", "-W", "-f=${Status} ${Version}", "opus"); st != "install ok installed "+version {
			t.Fatalf("after apt-get install, opus is %q", st)
		}
	}
	install(inDeb, version)

	// The postinst's accounts and state directory, and the package's
	// files as shipped (dpkg --verify checks them against md5sums).
	accounts := func() string {
		return s.sh(t, `getent passwd opus; getent group opus opus-admin; stat -c '%U:%G %a' /var/lib/opus; cat /etc/opus/.package-created`)
	}
	got := accounts()
	want := fmt.Sprintf("opus:x:%d:%d:Opus deployment daemon,,,:/var/lib/opus:/usr/sbin/nologin\nopus:x:%d:\nopus-admin:x:%d:\nopus:opus 755\nadmin-group\nuser\nstate-dir\napache-dir\n",
		id, id+1, id+1, id)
	if got != want {
		t.Errorf("after install:\n%s\nwant:\n%s", got, want)
	}
	if out, err := s.run(nil, "dpkg", "--verify", "opus"); err != nil || out != "" {
		t.Errorf("dpkg --verify opus: %v %s", err, out)
	}
	if a, b := readFile(t, s.path(config.DefaultPath)), readFile(t, "../systemd/opus.conf"); a != b {
		t.Errorf("installed %s differs from systemd/opus.conf", config.DefaultPath)
	}
	// Maintainer scripts are idempotent: configure again (as dpkg would),
	// and a reinstall (prerm upgrade, postinst configure VERSION).
	for range 2 {
		s.must(t, "env", "DPKG_MAINTSCRIPT_PACKAGE=opus", "DPKG_MAINTSCRIPT_NAME=postinst",
			"/var/lib/dpkg/info/opus.postinst", "configure", version)
	}
	s.must(t, "apt-get", "install", "-y", "--reinstall", inDeb)
	if again := accounts(); again != got {
		t.Errorf("postinst run again changed the accounts or record:\n%s\nwas:\n%s", again, got)
	}

	// The administrator's settings: project ids of the run's own.
	uids := config.UIDRange{First: id + 2, Last: id + 11}
	editConf := func() {
		t.Helper()
		s.sh(t, `printf '\n# the administrator'"'"'s\nuser_prefix %s\nproject_uids %s\n' "$1" "$2" >>/etc/opus/opus.conf`,
			testRun.UserPrefix(), uids.String())
	}
	editConf()
	cfg, err := config.Load(s.path(config.DefaultPath), false)
	if err != nil {
		t.Fatal(err)
	}

	// Sample app into the sandbox (its /tmp is its own).
	tarball, err := quick("tar", "-C", "../examples", "-c", "hello", "notes")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := s.run(tarball, "/bin/sh", "-c", "mkdir /tmp/examples && tar -x -C /tmp/examples"); err != nil {
		t.Fatalf("copy examples into the sandbox: %v %s", err, out)
	}

	ctl := func(args ...string) (string, error) {
		return s.run(nil, append([]string{"/usr/bin/opusctl"}, args...)...)
	}
	name := projPrefix
	for range 3 {
		name += string(rune('a' + rand.IntN(26)))
	}
	projectUser := cfg.UserPrefix + name
	url := fmt.Sprintf("http://%s%s:%d/hello/", name, cfg.ServerSuffix, cfg.HTTPPort)
	fetch := func() (string, error) {
		host := fmt.Sprintf("%s%s:%d:127.0.0.1", name, cfg.ServerSuffix, cfg.HTTPPort)
		return s.run(nil, "curl", "-sS", "--max-time", "10", "--resolve", host, "-w", "\n%{http_code}", url)
	}

	privd := s.startUnit(t, "opus-privd")
	opusd := s.startUnit(t, "opusd")
	if out, err := ctl("create", name, "--app", "/tmp/examples/hello", "--app", "/tmp/examples/notes"); err != nil {
		t.Fatalf("installed opusctl create: %v\n%s\n%s\n%s", err, out, s.log("opusd"), s.log("opus-privd"))
	}
	pw := strings.Split(strings.TrimSpace(s.must(t, "getent", "passwd", projectUser)), ":")
	projectID, err := strconv.ParseUint(pw[2], 10, 32)
	if err != nil || !uids.Contains(uint32(projectID)) {
		t.Fatalf("project user %q: uid not in project_uids %s", pw, uids)
	}
	wantBody := fmt.Sprintf("Hello from Opus: project served as uid %d ", projectID)
	if out, err := fetch(); err != nil || !strings.Contains(out, wantBody) || !strings.HasSuffix(out, "\n200") {
		t.Fatalf("GET %s in the sandbox: %v\n%s\nwant 200 with %q", url, err, out, wantBody)
	}

	// Upgrade to the next release with the project deployed and the
	// daemons running (a host without systemd: they are restarted by
	// hand): the administrator's opus.conf, the accounts and the project
	// are kept, and it serves throughout.
	conf := readFile(t, s.path(config.DefaultPath))
	install(inNewer, newVersion)
	if got := readFile(t, s.path(config.DefaultPath)); got != conf {
		t.Errorf("the upgrade changed the administrator's opus.conf:\n%s", got)
	}
	if again := accounts(); again != got {
		t.Errorf("the upgrade changed the accounts or record:\n%s\nwas:\n%s", again, got)
	}
	if out, err := fetch(); err != nil || !strings.Contains(out, wantBody) {
		t.Errorf("during the upgrade, GET %s: %v\n%s", url, err, out)
	}
	opusd.stop(t)
	privd.stop(t)
	privd = s.startUnit(t, "opus-privd")
	opusd = s.startUnit(t, "opusd")
	if out, err := ctl("version"); err != nil || !strings.Contains(out, newVersion) {
		t.Errorf("installed opusctl version after the upgrade: %v %q, want %s", err, out, newVersion)
	}
	if out, err := ctl("show", name); err != nil || !strings.Contains(out, name) {
		t.Errorf("opusctl show %s after the upgrade: %v\n%s", name, err, out)
	}
	if out, err := fetch(); err != nil || !strings.Contains(out, wantBody) {
		t.Errorf("after the upgrade, GET %s: %v\n%s", url, err, out)
	}
	opusd.stop(t)
	privd.stop(t)

	// Purge while the project exists: refused, and its state, accounts
	// and site are kept.
	keptBefore := s.sh(t, `getent passwd "$1"; getent passwd opus; getent group opus-admin; ls /var/lib/opus/projects; test -f /var/lib/opus/opusd.db && echo store`, projectUser)
	out, err := s.run(nil, "apt-get", "purge", "-y", "opus")
	if err == nil || !strings.Contains(out, "purge refused") || !strings.Contains(out, projectUser) {
		t.Errorf("apt-get purge with project %s deployed: %v, want a refusal naming %s\n%s", name, err, projectUser, out)
	}
	if kept := s.sh(t, `getent passwd "$1"; getent passwd opus; getent group opus-admin; ls /var/lib/opus/projects; test -f /var/lib/opus/opusd.db && echo store`, projectUser); kept != keptBefore {
		t.Errorf("the refused purge changed Opus's state or accounts:\n%s\nwas:\n%s", kept, keptBefore)
	}
	if out, err := fetch(); err != nil || !strings.Contains(out, wantBody) {
		t.Errorf("after the refused purge, GET %s: %v\n%s", url, err, out)
	}

	// The way out the refusal names: install again, destroy, purge.
	install(inNewer, newVersion)
	// dpkg removed the edited conffile before the refused purge ran, and
	// installs the default again (README: re-apply your changes).
	if readFile(t, s.path(config.DefaultPath)) != readFile(t, "../systemd/opus.conf") {
		t.Errorf("after a refused purge and a new install, %s is not the default", config.DefaultPath)
	}
	editConf()
	privd = s.startUnit(t, "opus-privd")
	opusd = s.startUnit(t, "opusd")
	if out, err := ctl("destroy", name, "--yes"); err != nil {
		t.Fatalf("installed opusctl destroy: %v\n%s\n%s\n%s", err, out, s.log("opusd"), s.log("opus-privd"))
	}
	if out, err := s.run(nil, "getent", "passwd", projectUser); err == nil {
		t.Errorf("project user still there after destroy: %s", out)
	}
	opusd.stop(t)
	privd.stop(t)
	out = s.must(t, "apt-get", "purge", "-y", "opus")
	t.Logf("apt-get purge:\n%s", out)

	if left := s.processes(); len(left) > 0 {
		t.Errorf("processes left in the sandbox after purge (the front Apache?):\n%s", strings.Join(left, "\n"))
	}
	if _, err := os.Lstat(s.path("/run/opus")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("/run/opus after purge: %v", err)
	}
	if st, err := s.run(nil, "dpkg-query", "-W", "-f=${Status}", "opus"); err == nil {
		t.Errorf("dpkg still knows opus after purge: %s", st)
	}
	after := s.upperLayer(t)
	t.Logf("upper layer: %d paths before the install, %d after the purge", len(before), len(after))
	if changes := changesSince(t, before, after); len(changes) > 0 {
		t.Errorf("install, deploy, destroy and purge left the sandbox's host changed:\n%s", strings.Join(changes, "\n"))
	}

	// A state directory the host had before the package (`make
	// install`'s, say) is not the package's: purge keeps it and says so,
	// and with it the opus user it belongs to, still written down as the
	// package's for a later purge.
	s.must(t, "install", "-d", "/var/lib/opus")
	install(inNewer, newVersion)
	out = s.must(t, "apt-get", "purge", "-y", "opus")
	for _, want := range []string{"keeping /var/lib/opus: it was there before opus was installed", "keeping the opus user"} {
		if !strings.Contains(out, want) {
			t.Errorf("purge with a /var/lib/opus from before the install does not say %q:\n%s", want, out)
		}
	}
	if got, want := s.sh(t, `test -d /var/lib/opus && echo state; getent passwd opus | cut -d: -f1; getent group opus-admin || true; cat /etc/opus/.package-created`), "state\nopus\nuser\n"; got != want {
		t.Errorf("after that purge: %q, want %q", got, want)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestDebBookkeeping: what TestDebPackage forgives after a purge is only
// the package tools' own files, never a file the package could leave.
func TestDebBookkeeping(t *testing.T) {
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/var/log/dpkg.log", true},
		{"/var/log/apt/history.log", true},
		{"/var/cache/man/index.db", true},
		{"/var/cache/debconf/config.dat", true},
		{"/var/lib/dpkg/status-old", true},
		{"/var/lib/dpkg/triggers/Lock", true},
		{"/etc/passwd-", true},
		{"/var/lib/dpkg/status", false},
		{"/var/lib/dpkg/info/opus.postrm", false},
		{"/var/lib/dpkg/info/opus.list", false},
		{"/var/log/opus/privd.log", false},
		{"/var/cache/opus", false},
		{"/var/lib/opus/opusd.db", false},
		{"/etc/passwd", false},
		{"/etc/opus/opus.conf", false},
	} {
		if got := bookkeeping(tc.path); got != tc.want {
			t.Errorf("bookkeeping(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
}
