package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/client"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/reconcile"
)

// faultEnv is the variable the faultinject build of opusd reads
// (unprivd/reconcile/fault_inject.go).
const faultEnv = "OPUS_FAULT_KILL_AFTER_STEP"

// TestReleaseHasNoFaultHook: the fault hook is only in builds tagged
// faultinject. go list shows the file only with the tag, and the opusd the
// harness builds (as users get it) does not even contain the variable's
// name, while the tagged build does.
func TestReleaseHasNoFaultHook(t *testing.T) {
	files := func(tags string) string {
		out, err := exec.Command("go", "list", "-tags", tags, "-f", "{{.GoFiles}}", "../unprivd/reconcile").CombinedOutput()
		if err != nil {
			t.Fatalf("go list -tags %q: %v\n%s", tags, err, out)
		}
		return string(out)
	}
	if got := files(""); strings.Contains(got, "fault_inject.go") || !strings.Contains(got, "reconcile.go") {
		t.Errorf("release build of unprivd/reconcile has files %s", got)
	}
	if got := files("faultinject"); !strings.Contains(got, "fault_inject.go") {
		t.Errorf("faultinject build lacks fault_inject.go: %s", got)
	}
	if skipReason != "" {
		return // the binaries below are built by the root-only harness
	}
	h := needHost(t)
	release, err := os.ReadFile(filepath.Join(h.bin, "opusd"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(release, []byte(faultEnv)) {
		t.Errorf("the release opusd contains %s", faultEnv)
	}
	tagged, err := os.ReadFile(faultBinary(t, h))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(tagged, []byte(faultEnv)) {
		t.Errorf("the faultinject opusd lacks %s: the check above proves nothing", faultEnv)
	}
}

var (
	faultOnce sync.Once
	faultErr  error
)

// faultBinary builds opusd with the fault hook, once.
func faultBinary(t *testing.T, h *host) string {
	t.Helper()
	path := filepath.Join(h.bin, "opusd-faultinject")
	faultOnce.Do(func() {
		out, err := exec.Command("go", "build", "-tags", "faultinject", "-o", path, "../cmd/opusd").CombinedOutput()
		if err != nil {
			faultErr = fmt.Errorf("go build -tags faultinject: %w\n%s", err, out)
		}
	})
	if faultErr != nil {
		t.Fatal(faultErr)
	}
	return path
}

// daemon is an opusd this file started and waits for itself.
type daemon struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// signaled reports whether the daemon was killed by sig.
func (d *daemon) signaled(sig syscall.Signal) bool {
	ws, ok := d.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// stopOpusd stops whatever opusd the host runs (SIGTERM, then SIGKILL) and
// waits until the process is gone.
// opusdWith restarts the harness's opusd on its configuration plus extra
// lines (a later line wins), under the name what, and restarts it on its
// own configuration when the test ends (after the test's own cleanups,
// registered later, destroyed its projects).
func (h *host) opusdWith(t *testing.T, what, extra string) {
	t.Helper()
	orig := h.conf
	base, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(filepath.Dir(orig), "opus-"+what+".conf")
	if err := os.WriteFile(conf, append(base, []byte(extra)...), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.stopOpusd(t)
		h.conf = orig
		if err := h.startOpusd(); err != nil {
			t.Errorf("restarting the harness's opusd: %v", err)
		}
	})
	h.stopOpusd(t)
	h.conf = conf
	if err := h.startOpusd(); err != nil {
		t.Fatalf("opusd with %s: %v", what, err)
	}
}

func (h *host) stopOpusd(t *testing.T) {
	t.Helper()
	if h.opusd == nil || h.opusd.Process == nil {
		return
	}
	pid := h.opusd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(40 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.opusd = nil
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// startOpusdBinary starts bin as the opus user with extra environment and
// waits until it serves; the host then owns it as its opusd.
func (h *host) startOpusdBinary(t *testing.T, bin string, env ...string) *daemon {
	t.Helper()
	log, err := os.OpenFile(filepath.Join(h.logs, "opusd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(bin, "--config", h.conf)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: h.opusUID, Gid: h.opusGID, Groups: []uint32{}}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(d.exited) }()
	h.opusd = cmd
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", h.cfg.OpusdSocket()); err == nil {
			c.Close()
			return d
		}
		select {
		case <-d.exited:
			// A fault right after a step resumed at start may kill it
			// before it listens; the caller sees exited closed.
			return d
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			h.dumpLogs(t)
			t.Fatalf("%s did not listen within 20s", bin)
		}
	}
}

// restoreOpusd makes sure the release opusd serves again when a test
// that swapped it ends, however it ends.
func (h *host) restoreOpusd(t *testing.T) {
	t.Cleanup(func() {
		h.stopOpusd(t)
		if err := h.startOpusd(); err != nil {
			t.Errorf("restarting the release opusd: %v", err)
		}
	})
}

// rootClient dials opusd as root (the test process).
func (h *host) rootClient(t *testing.T) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, h.cfg.OpusdSocket())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitOp waits for operation id to end and returns its final state.
func (h *host) waitOp(t *testing.T, id string) (*opusv1.Operation, error) {
	t.Helper()
	c := h.rootClient(t)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return c.Wait(ctx, id, nil)
}

// crashAfterEach starts the faultinject opusd set to die after the first
// step of chain, runs begin (which asks for the work), and each time it
// dies restarts it set to die after the next step. Every restart resumes
// the interrupted operation from the start, so each run repairs the crash
// before it and goes one step further. It returns with no opusd running.
func (h *host) crashAfterEach(t *testing.T, chain string, steps []reconcile.Step, begin func()) {
	t.Helper()
	h.crashAt(t, stepPoints(chain, steps, 1), begin)
}

// stepPoints are the fault points after each of steps of chain, at the
// n-th time each is done in one opusd (see reconcile.FaultEnv).
func stepPoints(chain string, steps []reconcile.Step, n int) []string {
	var points []string
	for _, s := range steps {
		p := chain + "/" + s.Name
		if n > 1 {
			p += ":" + strconv.Itoa(n)
		}
		points = append(points, p)
	}
	return points
}

// crashAt is crashAfterEach over fault points of the form
// reconcile.FaultEnv takes: one opusd for each, killed there.
func (h *host) crashAt(t *testing.T, points []string, begin func()) {
	t.Helper()
	bin := faultBinary(t, h)
	for i, point := range points {
		d := h.startOpusdBinary(t, bin, faultEnv+"="+point)
		if i == 0 {
			begin()
		}
		select {
		case <-d.exited:
		case <-time.After(90 * time.Second):
			h.dumpLogs(t)
			t.Fatalf("opusd did not die after step %s", point)
		}
		h.opusd = nil
		if !d.signaled(syscall.SIGKILL) {
			h.dumpLogs(t)
			t.Fatalf("opusd ended with %v before the fault after %s", d.cmd.ProcessState, point)
		}
		t.Logf("opusd killed right after %s", point)
	}
}

// configTest runs Apache's configtest on the managed configuration.
func (h *host) configTest(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/sbin/apache2", "-d", h.cfg.ApacheDir, "-f", filepath.Join(h.cfg.ApacheDir, "httpd.conf"), "-t")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("apache configtest: %v\n%s", err, out)
	}
}

// driftJSON is one finding of `opusctl doctor -o json`.
type driftJSON struct{ Kind, Project, Detail string }

// ourDrift returns what opusctl doctor reports about this harness's host.
// Project users are host-wide, and other packages' tests running at the
// same time make and remove their own: users count only with the e2e
// project prefix. Vhosts, directories and certificates live under the
// harness's own directories, so all of them count.
func (h *host) ourDrift(t *testing.T) []driftJSON {
	t.Helper()
	r := h.ctl(t, 0, "", "doctor", "-o", "json")
	var resp struct {
		Drift []driftJSON `json:"drift"`
	}
	if err := json.Unmarshal([]byte(r.out), &resp); err != nil || (r.code != 0) != (len(resp.Drift) > 0) {
		t.Fatalf("doctor -o json: exit %d, %v, %d findings\n%s%s", r.code, err, len(resp.Drift), r.out, r.err)
	}
	var ours []driftJSON
	for _, d := range resp.Drift {
		if d.Kind != "user" || strings.HasPrefix(d.Project, projPrefix) {
			ours = append(ours, d)
		}
	}
	return ours
}

// doctorClean asserts that opusctl doctor finds no drift on this host.
func (h *host) doctorClean(t *testing.T) {
	t.Helper()
	if d := h.ourDrift(t); len(d) > 0 {
		t.Errorf("doctor found drift: %+v", d)
	}
}

// checkDeployed asserts that project name is wholly deployed and its app
// answers.
func (h *host) checkDeployed(t *testing.T, name, app, want string) {
	t.Helper()
	c := h.rootClient(t)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := c.GetProject(ctx, name)
	if err != nil {
		t.Fatalf("project %s: %v", name, err)
	}
	if p.GetPhase() != opusv1.Phase_PHASE_READY || p.GetObservedGeneration() != p.GetGeneration() {
		t.Errorf("project %s: phase %v at generation %d of %d (%s)", name, p.GetPhase(), p.GetObservedGeneration(), p.GetGeneration(), p.GetLastError())
	}
	if passwdLine(t, h.projUser(name)) == "" {
		t.Errorf("project %s has no user", name)
	}
	for _, f := range []string{filepath.Join(h.cfg.ApacheDir, "sites", name+".conf"), filepath.Join(h.cfg.BaseDir, "projects", name, "code", "wsgi.py"), filepath.Join(h.cfg.BaseDir, "tls", name+".crt")} {
		if !exists(f) {
			t.Errorf("project %s lacks %s", name, f)
		}
	}
	mustGet(t, webClient(), h.url(name, "https", "/"+app+"/"), want)
	h.configTest(t)
	h.doctorClean(t)
}

// checkGone asserts that nothing of project name is left anywhere.
func (h *host) checkGone(t *testing.T, name string) {
	t.Helper()
	c := h.rootClient(t)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.GetProject(ctx, name); status.Code(err) != codes.NotFound {
		t.Errorf("project %s after destroy: %v, want NotFound", name, err)
	}
	if passwdLine(t, h.projUser(name)) != "" {
		t.Errorf("user opus-%s survived", name)
	}
	for _, f := range []string{
		filepath.Join(h.cfg.ApacheDir, "sites", name+".conf"), filepath.Join(h.cfg.ApacheDir, "tls", name+".key"),
		filepath.Join(h.cfg.ApacheDir, "tls", name+".crt"), filepath.Join(h.cfg.BaseDir, "projects", name),
		filepath.Join(h.cfg.BaseDir, "tls", name+".crt"), filepath.Join(h.cfg.BaseDir, "tls", name+".key"),
	} {
		if exists(f) {
			t.Errorf("%s survived the destroy of %s", f, name)
		}
	}
	if n := len(wsgiDaemons(name)); n > 0 {
		t.Errorf("%d mod_wsgi daemons of %s survived", n, name)
	}
	h.configTest(t)
	h.doctorClean(t)
}

// TestCrashOpusdAfterEachStep kills opusd with SIGKILL right after every
// step of a deploy and then of a destroy, restarting it each time: the
// project ends wholly deployed, then wholly removed (no user, vhost,
// directory or certificate left, configtest clean, no drift), and another
// project answers 200 throughout.
func TestCrashOpusdAfterEachStep(t *testing.T) { crashOpusdAfterEachStep(t, needHost(t)) }

// crashOpusdAfterEachStep is TestCrashOpusdAfterEachStep on h (the shared
// host, or one on the etcd state store).
func crashOpusdAfterEachStep(t *testing.T, h *host) {
	bystander := h.newProject(t)
	h.deploy(t, 0, bystander, localApp(t, "hello"))
	app := newGitApp(t, "crashy", "crash survivor")
	name := h.newProject(t)
	h.restoreOpusd(t)
	stopProbe := steadyProbe(t, h.url(bystander, "http", "/hello/"), "Hello from Opus")

	h.stopOpusd(t)
	var opID string
	h.crashAfterEach(t, "deploy", reconcile.DeploySteps(), func() {
		c := h.rootClient(t)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		op, err := c.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: name,
			Apps: []*opusv1.AppSpec{{Name: "crashy", Source: client.GitSource(app.dir, "v1")}}})
		// opusd may die before its answer leaves; the spec is committed
		// first, so the operation is found after the restart.
		if err != nil && status.Code(err) != codes.Unavailable {
			t.Fatalf("create %s: %v", name, err)
		}
		opID = op.GetId()
	})
	h.startOpusdBinary(t, filepath.Join(h.bin, "opusd"))
	if opID == "" {
		c := h.rootClient(t)
		ops, err := c.ListOperations(context.Background(), name, 1)
		c.Close()
		if err != nil || len(ops) == 0 {
			t.Fatalf("no operation of %s after the crashes: %v", name, err)
		}
		opID = ops[0].GetId()
	}
	if op, err := h.waitOp(t, opID); err != nil {
		h.dumpLogs(t)
		t.Fatalf("create after the crashes: %v (%v)", err, op)
	}
	h.checkDeployed(t, name, "crashy", "crash survivor")

	h.stopOpusd(t)
	h.crashAfterEach(t, "teardown", reconcile.TeardownSteps(), func() {
		c := h.rootClient(t)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.DeleteProject(ctx, name)
		if err != nil && status.Code(err) != codes.Unavailable {
			t.Fatalf("destroy %s: %v", name, err)
		}
	})
	h.startOpusdBinary(t, filepath.Join(h.bin, "opusd"))
	// The teardown's operation goes with its project; wait for that.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c := h.rootClient(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.GetProject(ctx, name)
		cancel()
		c.Close()
		if status.Code(err) == codes.NotFound {
			break
		}
		if time.Now().After(deadline) {
			h.dumpLogs(t)
			t.Fatalf("project %s not gone 2 minutes after the last crash: %v", name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.checkGone(t, name)
	if n, outages, last := stopProbe(); n == 0 || outages > 0 {
		t.Errorf("project %s while opusd crashed after every step: %d outages in %d requests (last failure: %s)", bystander, outages, n, last)
	} else if last != "" {
		t.Logf("project %s: a lone failed request during a graceful restart: %s", bystander, last)
	}
	mustGet(t, webClient(), h.url(bystander, "https", "/hello/"), "Hello from Opus")
}

// steadyProbe requests url in a loop until stopped and counts outages: two
// failed requests in a row; an outage is a project that stopped serving.
// A lone failed request next to a graceful restart (which a deploy or
// destroy causes, with or without crashes) is not one, even with
// WSGISocketRotation Off. Measured with two probes while other projects
// were created and destroyed: 2 of 1,728 requests failed over 12
// gracefuls, 13 of 3,795 over 30. Most were 503s: at a graceful the Apache
// parent's pool cleanup closes each daemon group's listener and unlinks its
// socket file, and makes the new one only once the configuration is read
// again (~0.25 s); a request an old-generation worker takes in that window
// finds no socket, and mod_wsgi 4.9 retries ECONNREFUSED/EAGAIN but not
// ENOENT ("Unable to connect to WSGI daemon process ... as user with
// uid=33", No such file or directory, in the project's error log). The
// others were 500s ("Truncated or oversized response headers") for
// requests still waiting on a daemon that the next graceful stopped.
func steadyProbe(t *testing.T, url, want string) (stop func() (n, outages int64, last string)) {
	var (
		done    = make(chan struct{})
		wg      sync.WaitGroup
		mu      sync.Mutex
		count   int64
		outage  int64
		lastBad string
	)
	c := webClient()
	wg.Add(1)
	go func() {
		defer wg.Done()
		prevBad := false
		for {
			select {
			case <-done:
				return
			default:
			}
			code, body := get(t, c, url)
			bad := code != 200 || !strings.Contains(body, want)
			mu.Lock()
			count++
			if bad {
				lastBad = fmt.Sprintf("%d %.200q", code, body)
				if prevBad {
					outage++
				}
			}
			mu.Unlock()
			prevBad = bad
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() (int64, int64, string) {
		close(done)
		wg.Wait()
		return count, outage, lastBad
	}
}

// lastStep returns the operation's step in progress (or last), or "".
func lastStep(op *opusv1.Operation) (string, opusv1.StepState) {
	steps := op.GetSteps()
	if len(steps) == 0 {
		return "", 0
	}
	s := steps[len(steps)-1]
	return s.GetName(), s.GetState()
}

// TestPrivdDiesMidCall kills opus-privd while it runs a project's first
// migrations: the create fails with a message naming opus-privd, its undo
// cannot run either (the project is left FAILED, being removed, and a
// create of the name says to destroy it first), the host keeps serving the
// other project, and once privd is back the destroy removes everything and
// the same create deploys the project wholly.
func TestPrivdDiesMidCall(t *testing.T) {
	h := needHost(t)
	bystander := h.newProject(t)
	h.deploy(t, 0, bystander, localApp(t, "hello"))
	app := newGitApp(t, "phoenix", "privd came back")
	name := h.newProject(t)
	stopProbe := steadyProbe(t, h.url(bystander, "http", "/hello/"), "Hello from Opus")
	t.Cleanup(func() {
		// Whatever happened, leave a privd running for the other tests.
		if h.privd == nil || h.privd.Process == nil || !alive(h.privd.Process.Pid) {
			if err := h.startPrivd(); err != nil {
				t.Errorf("restart privd: %v", err)
			}
		}
	})

	c := h.rootClient(t)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	op, err := c.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: name,
		Apps: []*opusv1.AppSpec{{Name: "phoenix", Source: client.GitSource(app.dir, "v1")}}})
	if err != nil {
		t.Fatal(err)
	}
	// Wait until privd is inside RunManage (the migrate step), then kill it.
	for {
		cur, err := c.GetOperation(ctx, op.GetId())
		if err != nil {
			t.Fatal(err)
		}
		if step, state := lastStep(cur); step == "migrate" && state == opusv1.StepState_STEP_STATE_RUNNING {
			break
		}
		if client.Final(cur) {
			t.Fatalf("operation ended before the migrate step: %v", cur)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(150 * time.Millisecond) // well inside manage.py migrate
	pid := h.privd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for alive(pid) {
		time.Sleep(20 * time.Millisecond)
	}
	final, err := c.Wait(ctx, op.GetId(), nil)
	var oe *client.OperationError
	// Killed inside RunManage, the migrate step fails; should migrate have
	// just returned, the next privd call does. Either way privd is named.
	if !errors.As(err, &oe) || !strings.Contains(final.GetError(), "opus-privd is not reachable") {
		t.Fatalf("operation with privd killed: %v, error %q; want a failed step saying opus-privd is not reachable", err, final.GetError())
	}
	t.Logf("operation failed as it should: %s", final.GetError())

	// A failed first deploy is undone by removing what it made, which
	// needs privd too: the project is left being removed, FAILED, and a
	// create of the name says what to do.
	if p, err := c.GetProject(ctx, name); err != nil || p.GetPhase() != opusv1.Phase_PHASE_FAILED {
		t.Fatalf("project after its create failed with privd gone: %v %v", p, err)
	}
	if err := h.startPrivd(); err != nil {
		t.Fatal(err)
	}
	create := func() (*opusv1.Operation, error) {
		return c.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: name,
			Apps: []*opusv1.AppSpec{{Name: "phoenix", Source: client.GitSource(app.dir, "v1")}}})
	}
	if _, err := create(); status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "opusctl destroy "+name+" --yes") {
		t.Fatalf("create again before the destroy: %v; want it to say to destroy first", err)
	}
	// The owner does as told: destroy, then the same create. opusd's
	// connection to privd reconnects within a moment; an immediate "not
	// reachable" is retried, as an owner would.
	retry := func(what string, ask func() (*opusv1.Operation, error)) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			op, err := ask()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			final, err := c.Wait(ctx, op.GetId(), nil)
			if err == nil {
				return
			}
			if !strings.Contains(final.GetError(), "not reachable") || time.Now().After(deadline) {
				h.dumpLogs(t)
				t.Fatalf("%s after privd came back: %v", what, err)
			}
			time.Sleep(time.Second)
		}
	}
	retry("destroy", func() (*opusv1.Operation, error) { return c.DeleteProject(ctx, name) })
	h.checkGone(t, name)
	retry("create", create)
	h.checkDeployed(t, name, "phoenix", "privd came back")
	if n, outages, last := stopProbe(); n == 0 || outages > 0 {
		t.Errorf("project %s while privd died: %d outages in %d requests (last failure: %s)", bystander, outages, n, last)
	}
	h.mustCtl(t, 0, "destroy", name, "--yes")
	h.checkGone(t, name)
}

// TestApacheDies kills the managed Apache outright (master, workers and
// mod_wsgi daemons): the next reconcile that installs a vhost starts it
// again in managed mode, and every project answers again.
func TestApacheDies(t *testing.T) {
	h := needHost(t)
	bystander := h.newProject(t)
	h.deploy(t, 0, bystander, localApp(t, "hello"))
	pid := h.apachePid(t)
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 3 || fields[2] != strconv.Itoa(pid) {
		t.Fatalf("Apache master %d does not lead its process group (%v)", pid, fields)
	}
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for alive(pid) {
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := get(t, webClient(), h.url(bystander, "http", "/hello/")); code != 0 {
		t.Fatalf("Apache still answers (%d) after it was killed", code)
	}

	name := h.newProject(t)
	h.mustCtl(t, 0, "create", name, "--app", localApp(t, "hello"))
	if got := h.apachePid(t); got == pid || !alive(got) {
		t.Errorf("Apache master after the reconcile: pid %d (alive %v), was %d", got, alive(got), pid)
	}
	h.checkDeployed(t, name, "hello", "Hello from Opus")
	mustGet(t, webClient(), h.url(bystander, "https", "/hello/"), "Hello from Opus")
	h.mustCtl(t, 0, "destroy", name, "--yes")
	h.checkGone(t, name)
}
