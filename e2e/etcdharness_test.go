package e2e

import (
	"context"
	"fmt"
	"os"
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
// It serves clients over TLS and requires a client certificate signed by
// its CA (--client-cert-auth), as Opus requires of a production cluster:
// a tenant's code on the host must not reach the state. Its methods fail
// the test they are given, and undo a pause or a kill when that test
// ends, however it ends.
type etcdServer struct {
	srv *etcdtest.Server
	// clientURL is where clients connect, https://127.0.0.1:PORT.
	clientURL string
}

// runEtcd is one etcd the run starts on first use, for one group of
// tests (see joinGroup): the etcd tests' (startEtcd) and the cluster
// tests' (startClusterEtcd), each its own member, so that the groups run
// side by side (a partition test pauses its group's etcd only).
type runEtcd struct {
	dir   string
	group *sync.Mutex
	once  sync.Once
	e     *etcdServer
	err   error
}

var (
	// sharedHostTests are the shared host's tests that run in the
	// parallel phase (one: TestCrashEveryOperationKind).
	etcdTests, clusterTests, sharedHostTests sync.Mutex
	groupEtcd                                = &runEtcd{dir: "etcd", group: &etcdTests}
	clusterEtcd                              = &runEtcd{dir: "cluster-etcd", group: &clusterTests}
)

// startEtcd returns the etcd tests' etcd, starting it on first use; it
// runs until the run ends. Tests share it: each Opus host that uses it
// has a key prefix of its own.
func startEtcd(t *testing.T) *etcdServer { return groupEtcd.start(t) }

// startClusterEtcd returns the cluster tests' etcd (cluster20_test.go).
func startClusterEtcd(t *testing.T) *etcdServer { return clusterEtcd.start(t) }

func (r *runEtcd) start(t *testing.T) *etcdServer {
	t.Helper()
	joinGroup(t, r.group)
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if why := etcdtest.Missing(); why != "" {
		t.Skip(why)
	}
	r.once.Do(func() {
		srv, err := etcdtest.StartWith(filepath.Join(root, r.dir), etcdtest.Options{TLS: true})
		if err != nil {
			r.err = err
			return
		}
		r.e = &etcdServer{srv: srv, clientURL: srv.ClientURL}
	})
	if r.err != nil {
		t.Fatalf("starting etcd: %v", r.err)
	}
	return r.e
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
	for _, r := range []*runEtcd{groupEtcd, clusterEtcd} {
		if r.e != nil {
			_ = r.e.srv.Kill()
		}
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

// The tests on the run's etcds and their hosts run after every other
// test (t.Parallel), beside the packaging tests (TestInstallOnHost,
// TestDebPackage), which touch none of the run's hosts; within a group
// (one etcd and its hosts) one at a time: they pause and kill its etcd
// and restart its hosts' daemons.
var (
	parallel sync.Map // *testing.T → true, once t.Parallel was called
	joined   sync.Map // groupOf{t, group} → true
)

type groupOf struct {
	t     *testing.T
	group *sync.Mutex
}

// joinGroup makes t one of group's tests (once per test and group).
func joinGroup(t *testing.T, group *sync.Mutex) {
	if _, loaded := joined.LoadOrStore(groupOf{t, group}, true); loaded {
		return
	}
	if _, loaded := parallel.LoadOrStore(t, true); !loaded {
		t.Parallel()
	}
	group.Lock()
	t.Cleanup(group.Unlock)
}

// etcdHostN is the run's host number of the etcd host.
const etcdHostN = 1

// runHost is an Opus host on one of the run's etcds, started on first use
// and kept until the run ends.
type runHost struct {
	etcd           *runEtcd
	n              int
	dir, name, key string // its directory under root, host_name, etcd_prefix's middle
	once           sync.Once
	h              *host
	err            error
}

var etcdHost = &runHost{etcd: groupEtcd, n: etcdHostN, dir: "etcdhost", name: "etcdhost", key: "e2e"}

// needEtcdHost returns the run's second host, whose opusd keeps its state
// in the run's etcd under a prefix of the run's own, starting both on
// first use. Its users (testRun.HostUserPrefix(1)) and project uids
// (HostUIDs(1)) are apart from the shared host's, and so are its
// directories, Apache and ports.
func needEtcdHost(t *testing.T) *host { return etcdHost.need(t) }

func (r *runHost) need(t *testing.T) *host {
	t.Helper()
	e := r.etcd.start(t)
	r.once.Do(func() {
		dir := filepath.Join(root, r.dir)
		configure, err := e.hostConfig(dir, "/opus-"+r.key+"-"+testRun.ID+"/", r.name)
		if err != nil {
			r.err = err
			return
		}
		r.h, r.err = startExtraHost(hostSpec{n: r.n, dir: dir, configure: configure})
	})
	if r.err != nil {
		t.Fatalf("starting host %s: %v", r.name, r.err)
	}
	return r.h
}

// hostConfig is a hostSpec.configure for a host in dir whose opusd keeps
// its state in e under prefix, as hostName: https to e with the host's
// own copies of e's client files (clientFiles, for the run's daemon
// user). Call it before startExtraHost:
//
//	configure, err := e.hostConfig(dir, prefix, "web2")
//	h, err := startExtraHost(hostSpec{n: 2, dir: dir, configure: configure})
func (e *etcdServer) hostConfig(dir, prefix, hostName string) (func(*config.Config), error) {
	base, err := prepareRun()
	if err != nil {
		return nil, err
	}
	f, err := e.clientFiles(dir, base.opusUID, base.opusGID)
	if err != nil {
		return nil, err
	}
	// Its peer listener, for projects moving between the run's hosts.
	peerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	return func(c *config.Config) {
		c.StateStore = config.StoreEtcd
		c.EtcdEndpoints = e.clientURL
		c.EtcdCAFile, c.EtcdCertFile, c.EtcdKeyFile = f.CA, f.Cert, f.Key
		c.EtcdPrefix = prefix
		c.HostName = hostName
		c.PeerListen = fmt.Sprintf("127.0.0.1:%d", peerPort)
	}, nil
}

// clientFiles copies e's CA, client certificate and key into
// dir/etcd-tls for the daemon user uid:gid, as an operator would install
// them for one host's opusd: the directory 0700 and the files 0400, all
// owned by that user, so that opusd reads them and no project's code
// can. dir is made (0755) if missing. It returns the copies' paths, for
// etcd_ca_file, etcd_cert_file and etcd_key_file.
func (e *etcdServer) clientFiles(dir string, uid, gid uint32) (etcdtest.ClientFiles, error) {
	tlsDir := filepath.Join(dir, "etcd-tls")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return etcdtest.ClientFiles{}, err
	}
	// Made afresh: files already there could be anyone's.
	if err := os.RemoveAll(tlsDir); err != nil {
		return etcdtest.ClientFiles{}, err
	}
	if err := os.Mkdir(tlsDir, 0o700); err != nil {
		return etcdtest.ClientFiles{}, err
	}
	src := e.srv.ClientCert
	out := etcdtest.ClientFiles{CA: filepath.Join(tlsDir, "ca.pem"), Cert: filepath.Join(tlsDir, "client.pem"), Key: filepath.Join(tlsDir, "client-key.pem")}
	for _, c := range []struct{ from, to string }{{src.CA, out.CA}, {src.Cert, out.Cert}, {src.Key, out.Key}} {
		data, err := os.ReadFile(c.from)
		if err != nil {
			return etcdtest.ClientFiles{}, err
		}
		// Written root-owned 0400 in a root-owned directory, then given
		// away: the key is never open to anyone else, not for a moment.
		if err := os.WriteFile(c.to, data, 0o400); err != nil {
			return etcdtest.ClientFiles{}, err
		}
		if err := os.Chown(c.to, int(uid), int(gid)); err != nil {
			return etcdtest.ClientFiles{}, err
		}
	}
	if err := os.Chown(tlsDir, int(uid), int(gid)); err != nil {
		return etcdtest.ClientFiles{}, err
	}
	return out, nil
}
