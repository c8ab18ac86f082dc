// Package etcdtest runs a real single-member etcd (Debian's etcd-server)
// for tests: on free loopback ports, with its data in a directory the test
// owns, killed when the test process dies (so a killed run leaves no
// etcd behind). It can stop, pause and restart the member on the same
// data and ports, as a partition or a crash would. It is for tests only,
// as net/http/httptest is, and shared by the store and end-to-end tests.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Binary is where Debian's etcd-server puts etcd.
const Binary = "/usr/bin/etcd"

// Missing says why etcd cannot run here, or "" when it can.
func Missing() string {
	if _, err := os.Stat(Binary); err != nil {
		return "etcd tests need Debian's etcd-server (" + Binary + "; run `make deps` as root)"
	}
	return ""
}

// ForTest starts a member for tb with its data in dir and kills it when
// tb ends. It skips tb under -short (make unit starts nothing) and where
// etcd cannot run (Missing).
func ForTest(tb testing.TB, dir string) *Server {
	tb.Helper()
	if testing.Short() {
		tb.Skip("starts etcd; -short (make unit) starts nothing")
	}
	if why := Missing(); why != "" {
		tb.Skip(why)
	}
	s, err := Start(dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Kill() })
	return s
}

// Server is one running etcd member.
type Server struct {
	// Dir holds its data and its log (etcd.log).
	Dir string
	// ClientURL is where clients connect: http://127.0.0.1:PORT, or
	// https:// with TLS.
	ClientURL string
	// ClientCert are a client's TLS files when the member requires client
	// certificates (Options.TLS); empty otherwise.
	ClientCert ClientFiles
	server     ClientFiles
	peerURL    string
	cmd        *exec.Cmd
	exited     chan struct{}
}

// Options tunes StartWith.
type Options struct {
	// TLS serves clients over TLS and requires a client certificate
	// signed by the member's CA (etcd's --client-cert-auth), as Opus's
	// README asks of a production cluster; the files are in dir/tls.
	TLS bool
}

// Start starts a member with its data in dir/data (made if missing) and
// waits until it answers. Every argument carries dir, so a test run can
// find its own etcd by command line.
func Start(dir string) (*Server, error) { return StartWith(dir, Options{}) }

// StartWith is Start with options.
func StartWith(dir string, opt Options) (*Server, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	s := &Server{Dir: dir, peerURL: fmt.Sprintf("http://127.0.0.1:%d", ports[1])}
	if opt.TLS {
		scheme = "https"
		if s.server, s.ClientCert, err = makeTLS(filepath.Join(dir, "tls")); err != nil {
			return nil, fmt.Errorf("etcd certificates: %w", err)
		}
	}
	s.ClientURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[0])
	return s, s.Restart()
}

// freePorts returns n distinct loopback ports nothing listens on now.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Restart starts the member again (after Kill or Stop) on the same data
// and ports, and waits until it answers.
func (s *Server) Restart() error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	log, err := os.OpenFile(filepath.Join(s.Dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	args := []string{
		"--name", "default",
		"--data-dir", filepath.Join(s.Dir, "data"),
		"--listen-client-urls", s.ClientURL, "--advertise-client-urls", s.ClientURL,
		"--listen-peer-urls", s.peerURL, "--initial-advertise-peer-urls", s.peerURL,
		"--initial-cluster", "default=" + s.peerURL,
		// Room for the largest commit the store makes (a project
		// destroyed with its whole operation history).
		"--max-txn-ops", "1024",
	}
	if s.server.Cert != "" {
		args = append(args, "--cert-file", s.server.Cert, "--key-file", s.server.Key,
			"--client-cert-auth", "--trusted-ca-file", s.server.CA)
	}
	s.cmd = exec.Command(Binary, args...)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	s.cmd.Env = []string{"PATH=/usr/bin:/bin", "ETCD_UNSUPPORTED_ARCH=" + os.Getenv("ETCD_UNSUPPORTED_ARCH")}
	// Killed with the test process, however it ends.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	s.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(s.cmd, s.exited)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if err := s.ping(ctx); err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("etcd exited at start: %s", s.logTail())
		case <-ctx.Done():
			s.Kill()
			return fmt.Errorf("etcd did not answer within 30s: %s", s.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ping asks the member for a key once.
func (s *Server) ping(ctx context.Context) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	defer c.Close()
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = c.Get(pctx, "ping")
	return err
}

// Client is a client of the member; the caller closes it.
func (s *Server) Client() (*clientv3.Client, error) {
	tc, err := s.ClientTLS()
	if err != nil {
		return nil, err
	}
	return clientv3.New(clientv3.Config{Endpoints: []string{s.ClientURL}, DialTimeout: 2 * time.Second, TLS: tc, Logger: zap.NewNop()})
}

func (s *Server) logTail() string {
	data, _ := os.ReadFile(filepath.Join(s.Dir, "etcd.log"))
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return strings.TrimSpace(string(data))
}

// Pause stops the member's process (SIGSTOP): connections stay open and
// nothing answers, as in a partition. It returns once the kernel shows
// the process stopped.
func (s *Server) Pause() error {
	if err := s.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	stat := fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		data, err := os.ReadFile(stat)
		if err != nil {
			return err
		}
		// pid (comm) STATE ...: comm may hold spaces, not ')'.
		if i := strings.LastIndexByte(string(data), ')'); i > 0 && i+2 < len(data) && data[i+2] == 'T' {
			return nil
		}
	}
	return errors.New("etcd not stopped within 5s of SIGSTOP")
}

// Resume continues a paused member.
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

// Kill kills the member (SIGKILL) and waits until it is gone; Restart
// brings it back.
func (s *Server) Kill() error {
	if err := s.signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("etcd did not exit within 10s of SIGKILL")
	}
}

func (s *Server) signal(sig syscall.Signal) error {
	if s.cmd == nil || s.cmd.Process == nil {
		return errors.New("etcd is not running")
	}
	select {
	case <-s.exited:
		if sig == syscall.SIGKILL {
			return nil
		}
		return errors.New("etcd has exited")
	default:
	}
	return s.cmd.Process.Signal(sig)
}
