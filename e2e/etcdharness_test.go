package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
)

// etcdBin is Debian's etcd-server (make deps installs it).
const etcdBin = "/usr/bin/etcd"

// etcdServer is the run's etcd: one member on loopback, its data under the
// run's directory, so that its command line names the run and a killed
// run's etcd is killed by the next run (testrun kills every process whose
// command line names a dead run's directory).
type etcdServer struct {
	dir       string // data directory
	log       string
	clientURL string
	peerURL   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

var (
	sharedEtcd     *etcdServer
	sharedEtcdErr  error
	sharedEtcdOnce sync.Once
)

// startEtcd returns the run's etcd, starting it on first use; it runs
// until the run ends. Tests share it: each Opus host that uses it has a
// key prefix of its own.
func startEtcd(t *testing.T) *etcdServer {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if !exists(etcdBin) {
		t.Skipf("the etcd state store's tests need %s (Debian's etcd-server; run `make deps` as root)", etcdBin)
	}
	sharedEtcdOnce.Do(func() { sharedEtcd, sharedEtcdErr = newEtcd(filepath.Join(root, "etcd")) })
	if sharedEtcdErr != nil {
		t.Fatalf("starting etcd: %v", sharedEtcdErr)
	}
	return sharedEtcd
}

// newEtcd starts an etcd member with its data in dir, on free client and
// peer ports.
func newEtcd(dir string) (*etcdServer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	clientPort, err := freePort()
	if err != nil {
		return nil, err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	e := &etcdServer{
		dir:       filepath.Join(dir, "data"),
		log:       filepath.Join(dir, "etcd.log"),
		clientURL: fmt.Sprintf("http://127.0.0.1:%d", clientPort),
		peerURL:   fmt.Sprintf("http://127.0.0.1:%d", peerPort),
	}
	if err := e.start(); err != nil {
		return nil, err
	}
	return e, nil
}

// start runs etcd on e's data directory and ports (again, after kill) and
// waits until it answers its health check.
func (e *etcdServer) start() error {
	log, err := os.OpenFile(e.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	// On a restart the data directory already holds the member: etcd
	// ignores the --initial-* flags then.
	cmd := exec.Command(etcdBin,
		"--name", "opus-e2e",
		"--data-dir", e.dir,
		"--listen-client-urls", e.clientURL,
		"--advertise-client-urls", e.clientURL,
		"--listen-peer-urls", e.peerURL,
		"--initial-advertise-peer-urls", e.peerURL,
		"--initial-cluster", "opus-e2e="+e.peerURL,
		"--initial-cluster-state", "new",
		"--initial-cluster-token", "opus-e2e-"+testRun.ID,
		"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	e.mu.Lock()
	e.cmd, e.exited = cmd, exited
	e.mu.Unlock()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		select {
		case <-exited:
			return fmt.Errorf("etcd exited at start (%v)\n%s", cmd.ProcessState, e.logTail())
		default:
		}
		if e.health(context.Background()) == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return fmt.Errorf("etcd did not answer its health check at %s within 30s\n%s", e.clientURL, e.logTail())
}

// logTail is the end of etcd's log, for failures.
func (e *etcdServer) logTail() string {
	data, _ := os.ReadFile(e.log)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// signal sends sig to the running etcd.
func (e *etcdServer) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil {
		t.Fatalf("etcd is not running")
	}
	if err := e.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to etcd: %v", sig, err)
	}
}

// pause stops etcd where it is (SIGSTOP): its ports still accept
// connections, but nothing answers, as across a partition. resume ends
// that. A test that pauses resumes it when it ends, however it ends.
func (e *etcdServer) pause(t *testing.T) {
	t.Helper()
	e.signal(t, syscall.SIGSTOP)
	t.Cleanup(func() { e.mu.Lock(); defer e.mu.Unlock(); _ = e.cmd.Process.Signal(syscall.SIGCONT) })
}

func (e *etcdServer) resume(t *testing.T) {
	t.Helper()
	e.signal(t, syscall.SIGCONT)
}

// kill ends etcd with SIGKILL and waits until it is gone: its ports
// refuse connections. restart brings it back on the same data and ports.
// A test that kills restarts it when it ends, however it ends.
func (e *etcdServer) kill(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	cmd, exited := e.cmd, e.exited
	e.cmd = nil
	e.mu.Unlock()
	if cmd == nil {
		t.Fatalf("etcd is not running")
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a paused one dies all the same
	_ = cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("etcd (pid %d) still runs 10s after SIGKILL", cmd.Process.Pid)
	}
	t.Cleanup(func() {
		e.mu.Lock()
		running := e.cmd != nil
		e.mu.Unlock()
		if !running {
			if err := e.start(); err != nil {
				t.Errorf("restarting etcd: %v", err)
			}
		}
	})
}

func (e *etcdServer) restart(t *testing.T) {
	t.Helper()
	if err := e.start(); err != nil {
		t.Fatal(err)
	}
}

// stopEtcd ends the run's etcd, if it started one.
func stopEtcd() {
	if sharedEtcd == nil {
		return
	}
	sharedEtcd.mu.Lock()
	defer sharedEtcd.mu.Unlock()
	if sharedEtcd.cmd != nil {
		_ = sharedEtcd.cmd.Process.Signal(syscall.SIGCONT)
		_ = sharedEtcd.cmd.Process.Kill()
		select {
		case <-sharedEtcd.exited:
		case <-time.After(10 * time.Second):
		}
	}
}

// etcdHostN is the run's host number of the etcd host.
const etcdHostN = 1

var (
	etcdHost     *host
	etcdHostErr  error
	etcdHostOnce sync.Once
)

// needEtcdHost returns the run's second host, whose opusd keeps its state
// in the run's etcd under a prefix of the run's own, starting both on
// first use. Its users (testRun.HostUserPrefix(1)) and project uids
// (HostUIDs(1)) are apart from the shared host's, and so are its
// directories, Apache and ports.
func needEtcdHost(t *testing.T) *host {
	t.Helper()
	e := startEtcd(t)
	etcdHostOnce.Do(func() {
		etcdHost, etcdHostErr = startExtraHost(hostSpec{n: etcdHostN, dir: filepath.Join(root, "etcdhost"),
			configure: func(c *config.Config) {
				c.StateStore = config.StoreEtcd
				c.EtcdEndpoints = e.clientURL
				c.EtcdPrefix = "/opus-e2e-" + testRun.ID + "/"
				c.HostName = "etcdhost"
			}})
	})
	if etcdHostErr != nil {
		t.Fatalf("starting the etcd host: %v", etcdHostErr)
	}
	return etcdHost
}

// health is etcd's own health check: nil when it answers and has a
// leader.
func (e *etcdServer) health(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.clientURL+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		return errors.New("etcd unhealthy: " + string(body))
	}
	return nil
}
