package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/config"
)

// pebbleValidity is the lifetime of the certificates the test CA issues:
// short, so that a renewal (a third of it left: after 30 s) happens within
// the test, and long enough that the certificate still serves while a
// renewal fails.
const pebbleValidity = 45 * time.Second

// pebbleCA is Debian's pebble test CA, with pebble-challtestsrv as its DNS
// (every name is 127.0.0.1, so pebble validates HTTP-01 against the
// front), reached by opusd through a relay the test can cut to make the CA
// unreachable without losing its state.
type pebbleCA struct {
	directory string // what opusd is configured with (through the relay)
	mgmt      string // pebble's management interface
	bundle    string // the CA of pebble's own HTTPS certificate, PEM
	client    *http.Client
	relay     *relay
}

// startPebble starts pebble and its DNS for a front whose HTTP port is
// httpPort; both are killed at t's end.
func startPebble(t *testing.T, httpPort int) *pebbleCA {
	t.Helper()
	for _, b := range []string{"/usr/bin/pebble", "/usr/bin/pebble-challtestsrv"} {
		if !exists(b) {
			t.Skipf("needs Debian's pebble (%s): apt-get install pebble (make deps)", b)
		}
	}
	dir := testRun.TempDir(t)
	ports := make([]int, 6)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	listen, mgmt, dns, dnsMgmt, tlsPort, relayPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]

	// pebble's own HTTPS: a CA of the test's and a leaf for 127.0.0.1.
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e pebble listener CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "pebble"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leafKeyPEM, err := cert.KeyPEM(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	p := &pebbleCA{bundle: filepath.Join(dir, "listener-ca.pem"),
		directory: fmt.Sprintf("https://127.0.0.1:%d/dir", relayPort), mgmt: fmt.Sprintf("https://127.0.0.1:%d", mgmt)}
	for name, data := range map[string][]byte{
		"listener-ca.pem":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"listener.pem":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		"listener-key.pem": leafKeyPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conf, err := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":             fmt.Sprintf("127.0.0.1:%d", listen),
		"managementListenAddress":   fmt.Sprintf("127.0.0.1:%d", mgmt),
		"certificate":               filepath.Join(dir, "listener.pem"),
		"privateKey":                filepath.Join(dir, "listener-key.pem"),
		"httpPort":                  httpPort,
		"tlsPort":                   tlsPort,
		"ocspResponderURL":          "",
		"certificateValidityPeriod": int(pebbleValidity.Seconds()),
	}})
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confPath, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "pebble.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	start := func(env []string, name string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	// Every name is 127.0.0.1; no AAAA, so pebble dials the front's IPv4.
	start(nil, "/usr/bin/pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-dns01", fmt.Sprintf("127.0.0.1:%d", dns), "-management", fmt.Sprintf("127.0.0.1:%d", dnsMgmt),
		"-http01", "", "-https01", "", "-tlsalpn01", "")
	// No sleep before validating, no random bad nonces; the challenge is
	// validated for real (never PEBBLE_VA_ALWAYS_VALID).
	start([]string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"}, "/usr/bin/pebble",
		"-config", confPath, "-dnsserver", fmt.Sprintf("127.0.0.1:%d", dns))

	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	p.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	p.relay = startRelay(t, relayPort, fmt.Sprintf("127.0.0.1:%d", listen))
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := p.client.Get(p.directory)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "pebble.log"))
			t.Fatalf("pebble did not serve its directory within 20s: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p
}

// roots is pebble's root CA, which issued (through its intermediate) the
// certificates the front serves.
func (p *pebbleCA) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := p.client.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("pebble's /roots/0 gave no certificate: %q", data)
	}
	return pool
}

// status is pebble's word on the certificate of serial: "Valid" or
// "Revoked".
func (p *pebbleCA) status(t *testing.T, serial *big.Int) string {
	t.Helper()
	resp, err := p.client.Get(fmt.Sprintf("%s/cert-status-by-serial/%x", p.mgmt, serial))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct{ Status string }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		t.Fatalf("cert-status-by-serial/%x: %d %v", serial, resp.StatusCode, err)
	}
	return st.Status
}

// relay forwards TCP connections to a target until cut: then it closes
// every connection, and refuses new ones, as an unreachable CA would.
type relay struct {
	cut   atomic.Bool
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func startRelay(t *testing.T, port int, target string) *relay {
	t.Helper()
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{conns: map[net.Conn]bool{}}
	t.Cleanup(func() { l.Close(); r.setCut(true) })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if r.cut.Load() {
				c.Close()
				continue
			}
			go r.serve(c, target)
		}
	}()
	return r
}

func (r *relay) serve(c net.Conn, target string) {
	u, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	r.mu.Lock()
	r.conns[c], r.conns[u] = true, true
	r.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { io.Copy(u, c); done <- struct{}{} }()
	go func() { io.Copy(c, u); done <- struct{}{} }()
	<-done
	c.Close()
	u.Close()
	r.mu.Lock()
	delete(r.conns, c)
	delete(r.conns, u)
	r.mu.Unlock()
}

func (r *relay) setCut(cut bool) {
	r.cut.Store(cut)
	if !cut {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		c.Close()
	}
}

// startACMEHost starts a second opus-privd + opusd pair with a managed
// Apache of its own, configured to get certificates from the ACME CA that
// ca returns for its front's HTTP port (ACME is host-wide: the shared
// host stays on self-signed certificates).
func startACMEHost(t *testing.T, shared *host, ca func(httpPort int) *pebbleCA) (*host, *pebbleCA) {
	t.Helper()
	dir := testRun.TempDir(t)
	h := &host{bin: shared.bin, logs: filepath.Join(dir, "logs"), opusUID: shared.opusUID, opusGID: shared.opusGID, otherID: shared.otherID, otherGID: shared.otherGID}
	if err := os.MkdirAll(h.logs, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.BaseDir = filepath.Join(dir, "base")
	cfg.RunDir = filepath.Join(dir, "run")
	cfg.OpusUser = daemonUser
	cfg.AdminGroup = adminGroup
	cfg.ApacheDir = filepath.Join(dir, "apache")
	cfg.UserPrefix = testRun.UserPrefix()
	cfg.ProjectUIDs = testRun.UIDs()
	cfg.ServerSuffix = ".acme19.test"
	var err error
	if cfg.HTTPPort, err = freePort(); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPSPort, err = freePort(); err != nil {
		t.Fatal(err)
	}
	webPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	h.webAddr = fmt.Sprintf("127.0.0.1:%d", webPort)
	metricsPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg.MetricsListen = fmt.Sprintf("127.0.0.1:%d", metricsPort)
	p := ca(cfg.HTTPPort)
	cfg.ACMEDirectory, cfg.ACMECABundle, cfg.ACMEEmail = p.directory, p.bundle, "hostmaster@example.com"
	cfg.ACMECheckInterval = 2 * time.Second
	h.cfg = cfg
	h.conf = filepath.Join(dir, "opus.conf")
	if err := os.WriteFile(h.conf, []byte("# written by TestACME\n"+cfg.Format()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct {
		path string
		uid  int
		mode os.FileMode
	}{{cfg.RunDir, 0, 0o775}, {cfg.BaseDir, int(h.opusUID), 0o755}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d.path, d.uid, int(h.opusGID)); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		h.stop()
		killMatching(dir) // the host's managed Apache and its backends
	})
	if err := h.startPrivd(); err != nil {
		t.Fatalf("ACME host's privd: %v", err)
	}
	if err := h.startOpusd(); err != nil {
		t.Fatalf("ACME host's opusd: %v", err)
	}
	return h, p
}

// served connects to the front's HTTPS port as a browser trusting only
// roots would, for the project's name, and returns the certificate it
// was served (the handshake fails unless the chain verifies).
func (h *host) served(name string, roots *x509.CertPool) (*x509.Certificate, error) {
	host := name + h.cfg.ServerSuffix
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", h.cfg.HTTPSPort), &tls.Config{ServerName: host, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// showJSON is `opusctl show NAME -o json` as root, decoded.
func (h *host) showJSON(t *testing.T, name string) map[string]any {
	t.Helper()
	out := h.mustCtl(t, 0, "show", name, "-o", "json")
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("show -o json: %v\n%s", err, out)
	}
	return m
}

// waitFor polls cond every 500 ms until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestACMECertificates is issue 19's trusted certificates, end to end
// against Debian's pebble: with acme_directory set, a new project's site
// gets a certificate from the CA (HTTP-01 answered through the front)
// that verifies to the CA's root, with a key that never reached opusd; it
// is renewed when a third of its lifetime is left without a failed
// request; a renewal the CA cannot answer shows in show and doctor while
// the old certificate keeps serving; destroy revokes it.
func TestACMECertificates(t *testing.T) {
	shared := needHost(t)
	h, ca := startACMEHost(t, shared, func(port int) *pebbleCA { return startPebble(t, port) })
	name := h.newProject(t)
	h.deploy(t, 0, name, localApp(t, "hello"))
	roots := ca.roots(t)

	// Issue and serve: show says "acme" once the renewal loop got it.
	waitFor(t, 60*time.Second, "a certificate from the ACME CA in show", func() bool {
		return h.showJSON(t, name)["certificate"] == "acme"
	})
	first, err := h.served(name, roots)
	if err != nil {
		h.dumpLogs(t)
		t.Fatalf("the front does not serve a certificate that verifies to pebble's root: %v", err)
	}
	if got := first.NotAfter.Sub(first.NotBefore); got > pebbleValidity+time.Minute {
		t.Errorf("served certificate lives %s; pebble issues for %s", got, pebbleValidity)
	}
	if ca.status(t, first.SerialNumber) != "Valid" {
		t.Errorf("pebble says certificate %x is %q", first.SerialNumber, ca.status(t, first.SerialNumber))
	}
	mustGet(t, webClient(), h.url(name, "https", "/hello/"), "Hello from Opus")
	show := h.mustCtl(t, 0, "show", name)
	if !strings.Contains(show, "acme (until") || !strings.Contains(show, "Renewal:") {
		t.Errorf("show does not say the certificate is from the ACME CA and when it is renewed:\n%s", show)
	}

	// The key never left root and the front: nothing opusd owns holds it.
	filepath.WalkDir(h.cfg.BaseDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		data, _ := os.ReadFile(p)
		if k, err := cert.ParseKey(data); err == nil {
			if pub, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(first.PublicKey) {
				t.Errorf("%s, in opusd's directory, holds the served certificate's private key", p)
			}
		}
		return nil
	})
	keyFile := filepath.Join(h.cfg.ApacheDir, "tls", name+".key")
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("privd's key %s: %v %v, want mode 0600", keyFile, fi, err)
	}
	if data, err := os.ReadFile(keyFile); err != nil {
		t.Error(err)
	} else if k, err := cert.ParseKey(data); err != nil || !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(first.PublicKey) {
		t.Errorf("privd's key %s is not the served certificate's (%v)", keyFile, err)
	}

	// Only opusd writes where the front answers challenges from: no
	// tenant can answer one.
	for _, d := range []string{h.cfg.ACMEWebroot(), h.cfg.ACMEChallengeDir()} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != h.opusUID || fi.Mode().Perm()&0o022 != 0 {
			t.Errorf("%s: uid %d mode %v; want opusd's (%d), writable by it alone", d, st.Uid, fi.Mode().Perm(), h.opusUID)
		}
	}

	// Renew: a third of the lifetime left, the front switches to a new
	// certificate without a failed request.
	var failures, requests atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			requests.Add(1)
			if _, err := h.served(name, roots); err != nil {
				failures.Add(1)
				t.Logf("request during renewal failed: %v", err)
			}
		}
	}()
	var second *x509.Certificate
	waitFor(t, pebbleValidity, "a renewed certificate served", func() bool {
		c, err := h.served(name, roots)
		if err == nil && c.SerialNumber.Cmp(first.SerialNumber) != 0 {
			second = c
			return true
		}
		return false
	})
	close(stop)
	wg.Wait()
	if failures.Load() > 0 {
		t.Errorf("%d of %d requests failed while the certificate was renewed", failures.Load(), requests.Load())
	}
	if !second.NotBefore.After(first.NotBefore) {
		t.Errorf("renewed certificate starts %s, not after the first's %s", second.NotBefore, first.NotBefore)
	}

	// The CA becomes unreachable: the next renewal fails, show and doctor
	// say so, and the certificate renewed last keeps serving.
	ca.relay.setCut(true)
	waitFor(t, pebbleValidity, "a renewal failure in show", func() bool {
		e, _ := h.showJSON(t, name)["certificate_error"].(string)
		return e != ""
	})
	show = h.mustCtl(t, 0, "show", name)
	if !strings.Contains(show, "Certificate error:") || !strings.Contains(show, "keeps serving") {
		t.Errorf("show does not say the renewal fails:\n%s", show)
	}
	doc := h.ctl(t, 0, "", "doctor")
	if doc.code != 1 || !strings.Contains(doc.out, "certificate") || !strings.Contains(doc.out, "gets no certificate from the ACME CA") || !strings.Contains(doc.out, name) {
		t.Errorf("doctor (exit %d) does not report the failing renewal:\n%s%s", doc.code, doc.out, doc.err)
	}
	// And the metrics: since when it fails, beside the expiry.
	fams := scrapeMetrics(t, "http://"+h.cfg.MetricsListen+"/metrics")
	if s := fams.series("opus_certificate_renewal_failing_since_timestamp_seconds", map[string]string{"project": name}); len(s) != 1 || s[0].GetGauge().GetValue() <= 0 {
		t.Errorf("metrics do not say the renewal of %s fails: %v", name, s)
	}
	if s := fams.series("opus_certificate_expiry_timestamp_seconds", map[string]string{"project": name, "kind": "acme"}); len(s) != 1 || int64(s[0].GetGauge().GetValue()) != second.NotAfter.Unix() {
		t.Errorf("metrics give %s's certificate expiry as %v, want %d (the renewed certificate's)", name, s, second.NotAfter.Unix())
	}
	if c, err := h.served(name, roots); err != nil || c.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Errorf("after the failed renewal the front serves %v (%v), want the renewed certificate %x", c.SerialNumber, err, second.SerialNumber)
	}
	mustGet(t, webClient(), h.url(name, "https", "/hello/"), "Hello from Opus")

	// Destroy revokes the certificate (the CA reachable again).
	ca.relay.setCut(false)
	h.mustCtl(t, 0, "destroy", name, "--yes")
	if st := ca.status(t, second.SerialNumber); st != "Revoked" {
		t.Errorf("after destroy pebble says certificate %x is %q, want Revoked", second.SerialNumber, st)
	}
	for _, p := range []string{filepath.Join(h.cfg.BaseDir, "acme", "certs", name+".crt"), keyFile,
		filepath.Join(h.cfg.ApacheDir, "tls", name+".pending.key")} {
		if exists(p) {
			t.Errorf("%s is left after destroy", p)
		}
	}
}
