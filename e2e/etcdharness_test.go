package e2e

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdServer is the run's etcd (internal/etcdtest): one member on
// loopback, its data under the run's directory, so that its command line
// names the run and a killed run's etcd is killed by the next run (testrun
// kills every process whose command line names a dead run's directory).
// Its methods fail the test they are given, and undo a pause or a kill
// when that test ends, however it ends.
type etcdServer struct {
	srv *etcdtest.Server
	// clientURL is where clients connect, http://127.0.0.1:PORT.
	clientURL string
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
	if why := etcdtest.Missing(); why != "" {
		t.Skip(why)
	}
	sharedEtcdOnce.Do(func() {
		srv, err := etcdtest.Start(filepath.Join(root, "etcd"))
		if err != nil {
			sharedEtcdErr = err
			return
		}
		sharedEtcd = &etcdServer{srv: srv, clientURL: srv.ClientURL}
	})
	if sharedEtcdErr != nil {
		t.Fatalf("starting etcd: %v", sharedEtcdErr)
	}
	return sharedEtcd
}

// pause stops etcd where it is (SIGSTOP): its ports still accept
// connections, but nothing answers, as across a partition. resume ends
// that, and so does the end of t.
func (e *etcdServer) pause(t *testing.T) {
	t.Helper()
	if err := e.srv.Pause(); err != nil {
		t.Fatalf("pausing etcd: %v", err)
	}
	t.Cleanup(func() { _ = e.srv.Resume() })
}

func (e *etcdServer) resume(t *testing.T) {
	t.Helper()
	if err := e.srv.Resume(); err != nil {
		t.Fatalf("resuming etcd: %v", err)
	}
}

// kill ends etcd with SIGKILL and waits until it is gone: its ports
// refuse connections. restart brings it back on the same data and ports,
// and so does the end of t if the test did not.
func (e *etcdServer) kill(t *testing.T) {
	t.Helper()
	if err := e.srv.Kill(); err != nil {
		t.Fatalf("killing etcd: %v", err)
	}
	t.Cleanup(func() {
		if e.health() != nil {
			if err := e.srv.Restart(); err != nil {
				t.Errorf("restarting etcd: %v", err)
			}
		}
	})
}

func (e *etcdServer) restart(t *testing.T) {
	t.Helper()
	if err := e.srv.Restart(); err != nil {
		t.Fatalf("restarting etcd: %v", err)
	}
}

// stopEtcd ends the run's etcd, if it started one.
func stopEtcd() {
	if sharedEtcd != nil {
		_ = sharedEtcd.srv.Kill()
	}
}

// health reads a key from etcd, within 2 seconds.
func (e *etcdServer) health() error {
	return e.call(2*time.Second, func(ctx context.Context, c *clientv3.Client) error {
		_, err := c.Get(ctx, "health")
		return err
	})
}

// call runs fn with a client of etcd and a context that ends after
// timeout.
func (e *etcdServer) call(timeout time.Duration, fn func(context.Context, *clientv3.Client) error) error {
	c, err := e.srv.Client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return fn(ctx, c)
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
