package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/cert/certtest"
)

// TestCertificateRefused: a certificate Apache would not load is refused
// by opusd (opusctl cert set) and by privd (called directly as the opus
// user, as a compromised opusd would), before Apache is touched: a key
// that does not match its certificate, an RSA-1024 key (OpenSSL at the
// host's security level 2: "ee key too small") and a chain certificate
// signed with SHA-1 ("ca md too weak"). configtest passes all three, and
// the graceful restart after any of them would end Apache for every
// project. Each refusal says which certificate and why; nothing changes on
// the host (the project's installed certificate, key and vhost, its spec,
// Apache's master and its restarts, the accounts), and another project
// answers 200 throughout.
func TestCertificateRefused(t *testing.T) {
	h := needHost(t)
	if h.cfg.TLSSecurityLevel != 2 {
		t.Fatalf("the host serves at TLS security level %d; this test expects the default, 2", h.cfg.TLSSecurityLevel)
	}
	other := h.newProject(t)
	h.deploy(t, 0, other, localApp(t, "hello"))
	name := h.newProject(t)
	h.deploy(t, 0, name, localApp(t, "hello"))
	host := name + h.cfg.ServerSuffix

	certA, _, err := cert.SelfSigned([]string{host}, time.Now(), 24*time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	_, keyB, err := cert.SelfSigned([]string{host}, time.Now(), 24*time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	weak, weakKey, err := certtest.WeakRSA(host)
	if err != nil {
		t.Fatal(err)
	}
	sha1, sha1Key, err := certtest.SHA1Chain(host)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		crt, key  []byte
		want      string // in opusctl's message and privd's
		wantPrivd string // privd's gRPC code
	}{
		{"key of another certificate", certA, keyB, "key does not match certificate (certificate is for " + host, "InvalidArgument"},
		{"RSA-1024 key", weak, weakKey, "the certificate for " + host + " has an RSA 1024-bit key (80-bit security); this host serves certificates at TLS security level 2, which needs 112 bits: use RSA 2048 or more, or ECDSA P-256", "InvalidArgument"},
		{"chain signed with SHA-1", sha1, sha1Key, `chain certificate 1 of 1 ("Opus Test SHA-1 Intermediate") is signed with SHA-1 (63-bit security); this host serves certificates at TLS security level 2, which needs 112 bits: use the issuer's chain signed with SHA-256 or stronger`, "InvalidArgument"},
	}

	installed := []string{
		filepath.Join(h.cfg.ApacheDir, "sites", name+".conf"),
		filepath.Join(h.cfg.ApacheDir, "tls", name+".crt"),
		filepath.Join(h.cfg.ApacheDir, "tls", name+".key"),
		filepath.Join(h.cfg.BaseDir, "tls", name+".crt"),
		filepath.Join(h.cfg.BaseDir, "tls", name+".key"),
	}
	read := func() map[string][]byte {
		m := map[string][]byte{}
		for _, f := range installed {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatalf("installed file: %v", err)
			}
			m[f] = b
		}
		return m
	}
	before := read()
	served, err := tlsDial(h, name)
	if err != nil {
		t.Fatal(err)
	}
	pid, restarts, state, gen := h.apachePid(t), h.gracefulRestarts(t), hostState(t), h.show(t, name).Generation
	pb := probe(t, h.url(other, "https", "/hello/"), "Hello from Opus")

	dir := t.TempDir()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
			if err := os.WriteFile(cf, tc.crt, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(kf, tc.key, 0o600); err != nil {
				t.Fatal(err)
			}
			r := h.ctl(t, 0, "", "cert", "set", name, "--cert", cf, "--key", kf)
			t.Logf("opusctl says: %s", strings.TrimSpace(r.err))
			if r.code == 0 || !strings.Contains(r.err, tc.want) {
				t.Errorf("cert set: exit %d, %q; want a refusal containing %q", r.code, r.err, tc.want)
			}
			if strings.Contains(r.err, "_pem") || strings.Contains(r.err, "x509.") {
				t.Errorf("cert set's message names Go or proto fields: %q", r.err)
			}
			ans := asUID(t, h.opusUID, h.opusGID, privdCall{Socket: h.cfg.PrivdSocket(), Method: "InstallSite", Project: name, Cert: string(tc.crt), Key: string(tc.key)})
			if ans.Code != tc.wantPrivd || !strings.Contains(ans.Message, tc.want) {
				t.Errorf("privd InstallSite: %s %q; want %s containing %q", ans.Code, ans.Message, tc.wantPrivd, tc.want)
			}
		})
	}

	after := read()
	for _, f := range installed {
		if !bytes.Equal(before[f], after[f]) {
			t.Errorf("%s changed after refused certificates", f)
		}
	}
	if p, g := h.apachePid(t), h.gracefulRestarts(t); p != pid || g != restarts {
		t.Errorf("Apache touched: master pid %d → %d, graceful restarts %d → %d", pid, p, restarts, g)
	}
	if hostState(t) != state {
		t.Errorf("the host's accounts changed")
	}
	if g := h.show(t, name).Generation; g != gen {
		t.Errorf("project generation %s → %s: a refused certificate reached the spec", gen, g)
	}
	if now, err := tlsDial(h, name); err != nil || !bytes.Equal(now.Raw, served.Raw) {
		t.Errorf("the project no longer serves its certificate: %v", err)
	}
	mustGet(t, webClient(), h.url(name, "https", "/hello/"), "Hello from Opus")
	pb.end(t, "project "+other+" while certificates were refused")
}
