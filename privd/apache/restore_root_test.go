package apache

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/cert/certtest"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// TestWeakCertificateGracefulRestored runs the hole on the real Apache: a
// certificate configtest passes but OpenSSL refuses at the vhost's
// security level makes the graceful restart end Apache's master. privd
// must notice, put back the site as it was, start Apache again and say
// which project was rolled back, while the other project keeps answering.
//
// It also shows that the vhost's SSLCipherSuite @SECLEVEL is what Apache
// enforces: the same RSA-1024 certificate is served from a vhost rendered
// at level 1 (though the main configuration and OpenSSL's own default say
// 2), and kills the restart from a vhost rendered at level 2.
func TestWeakCertificateGracefulRestored(t *testing.T) {
	env := newManagedEnv(t)
	ctx := context.Background()
	good, _ := env.addProject(t)
	weak, _ := env.addProject(t)
	cfg1 := env.cfg
	cfg1.TLSSecurityLevel = 1
	if env.cfg.TLSSecurityLevel != 2 {
		t.Fatalf("the default level is %d; this test wants 2", env.cfg.TLSSecurityLevel)
	}
	sites := NewSites(env.cfg, env.managed, Options{ReloadWindow: 10 * time.Millisecond})
	sites1 := NewSites(cfg1, env.managed, Options{ReloadWindow: 10 * time.Millisecond})

	goodHost, weakHost := env.cfg.ServerName(good), env.cfg.ServerName(weak)
	goodCert, goodKey, err := selfSigned(goodHost, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	weakCert, weakKey, err := certtest.WeakRSA(weakHost)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sites.Install(ctx, &privdv1.InstallSiteRequest{Project: good, CertificatePem: goodCert, KeyPem: goodKey}, env.route(good)); err != nil {
		t.Fatal(err)
	}
	if _, err := sites.Install(ctx, &privdv1.InstallSiteRequest{Project: weak, CertificatePem: weakCert, KeyPem: weakKey}, env.route(weak)); err == nil || !strings.Contains(err.Error(), "RSA 1024-bit key") {
		t.Fatalf("Install of an RSA-1024 certificate at level 2 = %v, want refused", err)
	}
	weakReq := &privdv1.InstallSiteRequest{Project: weak, CertificatePem: weakCert, KeyPem: weakKey}
	if _, err := sites1.Install(ctx, weakReq, env.route(weak)); err != nil {
		t.Fatalf("Install of an RSA-1024 certificate at level 1: %v", err)
	}
	r, err := sites.Reload(ctx, nil)
	if err != nil || !r.GetStarted() {
		t.Fatalf("first Reload = %v, %v; want Apache started", r, err)
	}
	httpURL := fmt.Sprintf("http://127.0.0.1:%d/", env.cfg.HTTPPort)
	httpsURL := fmt.Sprintf("https://127.0.0.1:%d/", env.cfg.HTTPSPort)
	plain := &http.Client{Timeout: 20 * time.Second}
	serving := func(t *testing.T, project, host string) {
		t.Helper()
		for _, u := range []string{httpURL, httpsURL} {
			c := plain
			if strings.HasPrefix(u, "https") {
				c = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
					TLSClientConfig: &tls.Config{ServerName: host, InsecureSkipVerify: true}}}
			}
			if code, body := fetch(t, c, u, host, 200); code != 200 || !strings.Contains(body, "hello from "+project) {
				t.Errorf("%s for %s: %d %q, want 200 from the project", u, host, code, body)
			}
		}
	}
	rsaBits := func(t *testing.T, host string) int {
		t.Helper()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", env.cfg.HTTPSPort),
			&tls.Config{ServerName: host, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("TLS handshake for %s: %v", host, err)
		}
		defer conn.Close()
		k, ok := conn.ConnectionState().PeerCertificates[0].PublicKey.(*rsa.PublicKey)
		if !ok {
			return 0
		}
		return k.N.BitLen()
	}
	serving(t, good, goodHost)
	serving(t, weak, weakHost)
	if n := rsaBits(t, weakHost); n != 1024 {
		t.Fatalf("the level-1 vhost serves a %d-bit RSA key, want the 1024-bit one", n)
	}

	// The hole: privd's check bypassed, the same certificate goes in a
	// vhost rendered at level 2. configtest passes it.
	files := []string{sites.Paths().Vhost(weak), sites.Paths().Cert(weak), sites.Paths().Key(weak)}
	before := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		before[f] = string(b)
	}
	pidBefore := env.managed.Running()
	sites.checkPair = func(c, k []byte, now time.Time, _ int) ([]byte, []byte, error) { return CheckPair(c, k, now, 0) }
	if ir, err := sites.Install(ctx, weakReq, env.route(weak)); err != nil || !ir.GetChanged() {
		t.Fatalf("Install through the hole = %v, %v; want installed (configtest passes it)", ir, err)
	}
	if b, _ := os.ReadFile(sites.Paths().Vhost(weak)); !strings.Contains(string(b), "@SECLEVEL=2") {
		t.Fatalf("vhost not rendered at level 2:\n%s", b)
	}

	probe := make(chan int, 1)
	stop := make(chan struct{})
	go func() { // the good project, asked throughout
		fails := 0
		defer func() { probe <- fails }()
		c := &http.Client{Timeout: 5 * time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			req, _ := http.NewRequest("GET", httpURL, nil)
			req.Host = goodHost
			if resp, err := c.Do(req); err != nil || resp.StatusCode != 200 {
				fails++
			} else {
				resp.Body.Close()
			}
		}
	}()
	r, err = sites.Reload(ctx, nil)
	if err != nil {
		t.Fatalf("Reload after the weak certificate = %v; want Apache restored and serving", err)
	}
	if reason := r.GetRolledBack()[weak]; len(r.GetRolledBack()) != 1 || !strings.Contains(reason, "ee key too small") || !strings.Contains(reason, "AH02562") {
		t.Errorf("Reload = %v; want %s rolled back because OpenSSL found the key too small", r, weak)
	}
	if !r.GetStarted() || int(r.GetMasterPid()) == pidBefore || env.managed.Running() != int(r.GetMasterPid()) {
		t.Errorf("Reload = %v (master was %d, is %d); want Apache started again", r, pidBefore, env.managed.Running())
	}
	for _, f := range files {
		if b, _ := os.ReadFile(f); string(b) != before[f] {
			t.Errorf("%s not restored", filepath.Base(f))
		}
	}
	log, _ := os.ReadFile(env.managed.ErrorLogPath())
	if !strings.Contains(string(log), "AH00020: Configuration Failed") {
		t.Errorf("the main error log does not show the failed restart")
	}
	serving(t, good, goodHost)
	serving(t, weak, weakHost)
	if n := rsaBits(t, weakHost); n != 1024 {
		t.Errorf("the restored site serves a %d-bit RSA key, want its previous 1024-bit one", n)
	}
	close(stop)
	// The good project was down only while Apache restarted, and answers
	// again. The next restart is a plain graceful one (it has nothing to
	// put back) that still names the weak project, whose site was not
	// installed again since.
	t.Logf("%d probes of %s failed while Apache was restored", <-probe, good)
	pid := env.managed.Running()
	if r, err := sites.Reload(ctx, nil); err != nil || len(r.GetRolledBack()) != 1 || r.GetRolledBack()[weak] == "" || r.GetStarted() || int(r.GetMasterPid()) != pid {
		t.Errorf("next Reload = %v, %v; want a graceful restart of master %d still naming %s", r, err, pid, weak)
	}
	serving(t, good, goodHost)
}
