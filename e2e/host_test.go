// Package e2e holds Opus's end-to-end tests: they build the three binaries,
// start opus-privd (root) and opusd (as a dedicated unprivileged user) on
// temporary sockets, state and a managed Apache on free ports, and drive them
// with opusctl exactly as a user would. They need root, Apache + mod_wsgi and
// Debian's Django; without root they skip with a message.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/pgtest"
	"github.com/opus-hosting/opus/internal/procs"
	"github.com/opus-hosting/opus/internal/testrun"
	"github.com/opus-hosting/opus/privd/apache"
	"github.com/opus-hosting/opus/privd/cgroup"
)

// Names unique to this run (internal/testrun): everything the tests make
// on the host carries the run's id, so they touch nothing else — not a
// real Opus, not `make demo`'s stack — and a killed run is cleaned up by
// the next one.
var (
	testRun    *testrun.Run
	root       string // the run's directory: every file the tests make is under it
	daemonUser string // opusd runs as this user
	adminGroup string
	otherUser  string // a second, unprivileged client
	projPrefix string // every test project is projPrefix + 3 random letters
)

// projUser is the Linux user of the test project name on the shared host.
func projUser(name string) string { return names.User(testRun.UserPrefix(), name) }

// projUser is the Linux user of project name on h.
func (h *host) projUser(name string) string { return names.User(h.cfg.UserPrefix, name) }

// host is one running Opus: both daemons and their managed Apache.
type host struct {
	bin     string // directory with opusd, opus-privd, opusctl
	conf    string // config file both daemons read
	n       int    // the run's host number (testrun.HostUserPrefix): 0 is the shared host
	cfg     config.Config
	privd   *exec.Cmd
	opusd   *exec.Cmd
	logs    string
	opusUID uint32
	opusGID uint32
	otherID uint32
	// otherGID is otherUser's group: not always otherID (the host's other
	// accounts decide which ids are free).
	otherGID uint32
	webAddr  string // the web console's HOST:PORT (opusd --web-addr)
}

var (
	shared     *host
	sharedErr  error
	sharedOnce sync.Once
	skipReason string
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	if dir := os.Getenv(sandboxEnv); dir != "" {
		os.Exit(runSandbox(dir)) // deb19_test.go
	}
	flag.Parse()
	switch {
	case testing.Short():
		skipReason = "end-to-end tests create users and start daemons and Apache; -short (make unit) starts nothing"
	case os.Geteuid() != 0:
		skipReason = "end-to-end tests need root (they create users and start Apache); run `make test` as root"
	case !exists("/usr/sbin/apache2") || !exists("/usr/lib/apache2/modules/mod_wsgi.so"):
		skipReason = "end-to-end tests need apache2 and libapache2-mod-wsgi-py3 (run `make deps` as root)"
	case exec.Command("/usr/bin/python3", "-c", "import django").Run() != nil:
		skipReason = "end-to-end tests need python3-django for /usr/bin/python3 (run `make deps` as root)"
	}
	if skipReason != "" {
		fmt.Fprintln(os.Stderr, "e2e: skipping:", skipReason)
		os.Exit(m.Run())
	}
	var err error
	if testRun, err = testrun.StartWith(pgtest.Cleaner, cgroupCleaner, instanceCleaner); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	// The run's privds make a control group per backend beneath this one.
	if err := testRun.Note(cgroupKind, apache.CgroupParent(testRun.UserPrefix())); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	root = testRun.Dir
	daemonUser, adminGroup, otherUser = testRun.Account("d"), testRun.Account("a"), testRun.Account("b")
	projPrefix = "e" + testRun.ID
	code := m.Run()
	if shared != nil {
		shared.stop()
	}
	stopExtraHosts()
	stopEtcd()
	testRun.End()
	os.Exit(code)
}

// needHost returns the shared running host, starting it on first use.
func needHost(t *testing.T) *host {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	sharedOnce.Do(func() { shared, sharedErr = startHost() })
	if sharedErr != nil {
		t.Fatalf("starting opus: %v", sharedErr)
	}
	return shared
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// pidsWhere returns the processes (this one aside) whose command line
// (NUL-separated, as /proc has it) match accepts.
func pidsWhere(match func(cmdline []byte) bool) []int {
	pids := (procs.Table{}).Matching(match)
	return slices.DeleteFunc(pids, func(p int) bool { return p == os.Getpid() })
}

// killMatching kills every process whose command line mentions s.
func killMatching(s string) {
	for _, pid := range pidsWhere(func(cmd []byte) bool { return bytes.Contains(cmd, []byte(s)) }) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// freePort is a loopback TCP port nothing listens on now, and one this
// run has not handed out before.
func freePort() (int, error) {
	handedOut.mu.Lock()
	defer handedOut.mu.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		// The kernel may give a port just closed again: two calls in a
		// row (a host's HTTP and HTTPS ports) must not get the same one.
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port, nil
		}
	}
	return 0, errors.New("no free port that was not handed out already")
}

// handedOut are the ports freePort gave in this run.
var handedOut = struct {
	mu    sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

func lookupIDs(name string) (uint32, uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uint32(uid), uint32(gid), nil
}

// runBase is what every host of the run shares: the binaries and the
// accounts (the opus user, the admin group, a plain client), made once.
var (
	runBase     *host
	runBaseErr  error
	runBaseOnce sync.Once
)

// prepareRun builds the binaries and makes the run's accounts, once.
func prepareRun() (*host, error) {
	runBaseOnce.Do(func() { runBase, runBaseErr = buildAndAddAccounts() })
	return runBase, runBaseErr
}

func buildAndAddAccounts() (*host, error) {
	h := &host{bin: filepath.Join(root, "bin")}
	for _, d := range []string{root, h.bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, err
		}
	}
	// Build the binaries the way users get them.
	build := exec.Command("go", "build", "-o", h.bin+"/", "../cmd/opusd", "../cmd/opus-privd", "../cmd/opusctl")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %w\n%s", err, out)
	}
	if err := testRun.AddGroup(adminGroup); err != nil {
		return nil, err
	}
	if err := testRun.AddUser(daemonUser); err != nil {
		return nil, err
	}
	if err := testRun.AddUser(otherUser); err != nil {
		return nil, err
	}
	var err error
	if h.opusUID, h.opusGID, err = lookupIDs(daemonUser); err != nil {
		return nil, err
	}
	if h.otherID, h.otherGID, err = lookupIDs(otherUser); err != nil {
		return nil, err
	}
	return h, nil
}

// hostSpec is what sets one of the run's hosts apart from the others.
type hostSpec struct {
	// n is the run's host number: its user prefix and project uid range
	// are testRun.HostUserPrefix(n) and HostUIDs(n). 0 is the shared host.
	n int
	// dir holds the host's base, run and Apache directories, its logs
	// and its opus.conf.
	dir string
	// configure, if set, changes the host's configuration before it is
	// written (its state store, say).
	configure func(*config.Config)
}

// startHost starts the shared host: host 0, in the run's directory.
func startHost() (*host, error) { return startHostSpec(hostSpec{n: 0, dir: root}) }

// startHostSpec starts one of the run's hosts: opus-privd and opusd on
// its own configuration, with its own directories, Apache, web console
// and metrics ports, user prefix and project uids, and the run's
// binaries and accounts.
func startHostSpec(spec hostSpec) (*host, error) {
	base, err := prepareRun()
	if err != nil {
		return nil, err
	}
	h := &host{bin: base.bin, n: spec.n, logs: filepath.Join(spec.dir, "logs"),
		opusUID: base.opusUID, opusGID: base.opusGID, otherID: base.otherID, otherGID: base.otherGID}
	for _, d := range []string{spec.dir, h.logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, err
		}
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	httpsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := config.Default()
	cfg.BaseDir = filepath.Join(spec.dir, "base")
	cfg.RunDir = filepath.Join(spec.dir, "run")
	cfg.OpusUser = daemonUser
	cfg.AdminGroup = adminGroup
	cfg.ApacheDir = filepath.Join(spec.dir, "apache")
	cfg.HTTPPort, cfg.HTTPSPort = httpPort, httpsPort
	// Small enough that the hostile-source test's oversized repository is
	// cheap to build; every other test's repository is a few KiB.
	cfg.GitMaxBytes = 8 << 20
	cfg.UserPrefix = testRun.HostUserPrefix(spec.n)
	cfg.ProjectUIDs = testRun.HostUIDs(spec.n)
	if spec.n != 0 {
		// This host's privd makes its backends' control groups beneath
		// a group of its own (host 0's is noted at the run's start).
		if err := testRun.Note(cgroupKind, apache.CgroupParent(cfg.UserPrefix)); err != nil {
			return nil, err
		}
	}
	webPort, err := freePort()
	if err != nil {
		return nil, err
	}
	h.webAddr = fmt.Sprintf("127.0.0.1:%d", webPort)
	metricsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg.MetricsListen = fmt.Sprintf("127.0.0.1:%d", metricsPort)
	if spec.configure != nil {
		spec.configure(&cfg)
	}
	h.cfg = cfg
	conf := "# written by the e2e tests\n" + cfg.Format()
	h.conf = filepath.Join(spec.dir, "opus.conf")
	if err := os.WriteFile(h.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	// The directories a package install would make. The base dir belongs
	// to the opus user. In the run dir opusd creates its own socket there, privd its own: root-owned,
	// group opus may add entries (as with systemd's RuntimeDirectory).
	if err := os.MkdirAll(cfg.RunDir, 0o775); err != nil {
		return nil, err
	}
	if err := os.Chown(cfg.RunDir, 0, int(h.opusGID)); err != nil {
		return nil, err
	}
	if err := os.Chmod(cfg.RunDir, 0o775); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.BaseDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chown(cfg.BaseDir, int(h.opusUID), int(h.opusGID)); err != nil {
		return nil, err
	}
	if err := h.startPrivd(); err != nil {
		h.stop()
		return nil, err
	}
	if err := h.startOpusd(); err != nil {
		h.stop()
		return nil, err
	}
	return h, nil
}

// extraHosts are the hosts the run started beside the shared one; the
// run stops them at its end.
var extraHosts struct {
	mu    sync.Mutex
	hosts []*host
}

// startExtraHost starts host spec.n (not 0) for the rest of the run.
func startExtraHost(spec hostSpec) (*host, error) {
	if spec.n == 0 {
		return nil, errors.New("host 0 is the shared host (needHost)")
	}
	h, err := startHostSpec(spec)
	if err != nil {
		return nil, err
	}
	extraHosts.mu.Lock()
	extraHosts.hosts = append(extraHosts.hosts, h)
	extraHosts.mu.Unlock()
	return h, nil
}

// stopExtraHosts stops the daemons of every host startExtraHost started
// (the run's end kills what is left under its directory).
func stopExtraHosts() {
	extraHosts.mu.Lock()
	defer extraHosts.mu.Unlock()
	for _, h := range extraHosts.hosts {
		h.stop()
	}
}

func (h *host) startPrivd() error {
	log, err := os.OpenFile(filepath.Join(h.logs, "privd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	h.privd = exec.Command(filepath.Join(h.bin, "opus-privd"), "--config", h.conf)
	h.privd.Stdout, h.privd.Stderr = log, log
	// Start privd as a careless parent would, with stray descriptors that
	// are not close-on-exec: privd must not pass them on (TestNoInheritedFDs).
	stray, err := openStrayFiles()
	if err != nil {
		return err
	}
	h.privd.ExtraFiles = stray
	err = h.privd.Start()
	for _, f := range stray {
		f.Close()
	}
	if err != nil {
		return err
	}
	return h.withLog(waitSocket(h.cfg.PrivdSocket(), h.privd), "privd.log")
}

// withLog adds the tail of a daemon's log to a start-up error.
func (h *host) withLog(err error, name string) error {
	if err == nil {
		return nil
	}
	data, _ := os.ReadFile(filepath.Join(h.logs, name))
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return fmt.Errorf("%w\n--- %s ---\n%s", err, name, data)
}

func (h *host) startOpusd() error {
	log, err := os.OpenFile(filepath.Join(h.logs, "opusd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	h.opusd = exec.Command(filepath.Join(h.bin, "opusd"), "--config", h.conf, "--web-addr", h.webAddr)
	h.opusd.Stdout, h.opusd.Stderr = log, log
	h.opusd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: h.opusUID, Gid: h.opusGID, Groups: []uint32{}}}
	if err := h.opusd.Start(); err != nil {
		return err
	}
	return h.withLog(waitSocket(h.cfg.OpusdSocket(), h.opusd), "opusd.log")
}

// waitSocket waits until something accepts connections on path, or cmd exits.
func waitSocket(path string, cmd *exec.Cmd) error {
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			// cmd.Wait now belongs to the goroutine; keep its result.
			go func() { <-exited }()
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("%s exited before listening on %s: %v", cmd.Path, path, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not listen on %s within 20s", cmd.Path, path)
}

func (h *host) stop() {
	for _, c := range []*exec.Cmd{h.opusd, h.privd} {
		if c != nil && c.Process != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
	}
	time.Sleep(time.Second)
	for _, c := range []*exec.Cmd{h.opusd, h.privd} {
		if c != nil && c.Process != nil {
			_ = c.Process.Kill()
		}
	}
}

// dumpLogs prints the daemons' logs into a failing test's output.
func (h *host) dumpLogs(t *testing.T) {
	t.Helper()
	if !t.Failed() {
		return
	}
	for _, f := range []string{"privd.log", "opusd.log"} {
		data, _ := os.ReadFile(filepath.Join(h.logs, f))
		if len(data) > 8000 {
			data = data[len(data)-8000:]
		}
		t.Logf("--- %s (tail) ---\n%s", f, data)
	}
}

// result is what one opusctl run did.
type result struct {
	out, err string
	code     int
}

// credOf is the credential a process of user uid runs with: its uid, its
// primary group (not the number uid, which may be another group's on a
// host with other accounts) and no supplementary groups. A uid no user
// has keeps the gid of the same number.
func credOf(uid uint32) *syscall.Credential {
	gid := uid
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			gid = uint32(g)
		}
	}
	return &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
}

// ctl runs opusctl as uid (0 = root) with args and optional stdin.
func (h *host) ctl(t *testing.T, uid uint32, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.bin, "opusctl"), append([]string{"--socket", h.cfg.OpusdSocket()}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/"}
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: credOf(uid)}
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{out: out.String(), err: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("opusctl %v: %v", args, err)
	}
	t.Logf("opusctl %s (uid %d) → exit %d\n%s%s", strings.Join(args, " "), uid, r.code, r.out, r.err)
	return r
}

// mustCtl is ctl that fails the test on a non-zero exit.
func (h *host) mustCtl(t *testing.T, uid uint32, args ...string) string {
	t.Helper()
	r := h.ctl(t, uid, "", args...)
	if r.code != 0 {
		h.dumpLogs(t)
		t.Fatalf("opusctl %v failed (exit %d): %s", args, r.code, r.err)
	}
	return r.out
}

// pwnedPath is where a hostile test's attack would leave its mark: in
// /tmp, which every attacker can write, named by the run.
func pwnedPath() string { return "/tmp/opus-test-pwned-" + testRun.ID }

// addUser makes a plain user of the run, "t"+ID+role (testrun writes it
// down first, so a killed run's user is removed by the next), deletes it
// when the test ends, and returns its name and uid.
func addUser(t *testing.T, role string) (string, uint32) {
	t.Helper()
	return addUserWith(t, role, testRun.AddUser)
}

// addUserID is addUser with uid and gid id, one of testRun.AccountIDs()
// that no other user takes while the test holds it.
func addUserID(t *testing.T, role string, id uint32) (string, uint32) {
	t.Helper()
	return addUserWith(t, role, func(name string) error { return testRun.AddUserID(name, id) })
}

func addUserWith(t *testing.T, role string, add func(string) error) (string, uint32) {
	t.Helper()
	name := testRun.Account(role)
	if err := add(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = exec.Command("userdel", name).Run()
		_ = exec.Command("groupdel", name).Run()
	})
	uid, _, err := lookupIDs(name)
	if err != nil {
		t.Fatal(err)
	}
	return name, uid
}

// cgroupKind notes the control group that holds a run's backends' groups.
const cgroupKind = "cgroup"

// cgroupCleaner removes a run's backends' control groups (and ends what
// is in them) on a host that has them.
var cgroupCleaner = testrun.Cleaner{Kind: cgroupKind, Clean: func(_ string, groups []string) error {
	root, err := cgroup.Detect("")
	if err != nil {
		return nil // no control groups here: nothing was made
	}
	var errs []error
	for _, g := range groups {
		errs = append(errs, root.RemoveTree(g))
	}
	return errors.Join(errs...)
}}

// instanceKind notes the configuration directory of a Debian Apache
// instance the run starts (TestSystemApache).
const instanceKind = "apache-instance"

// instanceCleaner ends a run's Debian Apache instance: every process whose
// command line names its directory (apache2ctl passes -d DIR). The
// directories themselves are noted paths.
var instanceCleaner = testrun.Cleaner{Kind: instanceKind, Clean: func(_ string, dirs []string) error {
	for _, d := range dirs {
		if !strings.HasPrefix(d, "/etc/apache2-opus-") {
			return fmt.Errorf("%q is not a test's Apache instance", d)
		}
		killMatching("\x00" + d + "\x00")
	}
	return nil
}}

// newProject returns a fresh project name and registers a cleanup that
// destroys it if the test left it behind.
func (h *host) newProject(t *testing.T) string {
	t.Helper()
	const letters = "abcdefghijklmnopqrstuvwxyz"
	b := []byte(projPrefix)
	for i := 0; i < 3; i++ {
		b = append(b, letters[rand.IntN(len(letters))])
	}
	name := string(b)
	t.Cleanup(func() {
		if _, err := user.Lookup(h.projUser(name)); err == nil || exists(filepath.Join(h.cfg.BaseDir, "projects", name)) {
			h.ctl(t, 0, "", "destroy", name, "--yes")
		}
		h.dumpLogs(t)
	})
	return name
}
