package apache

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/cert/certtest"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// testCA is a CA issuing for CSRs, as the ACME CA does.
type testCA struct{ iss *certtest.Issuer }

func newTestCA(t *testing.T) testCA {
	t.Helper()
	key, err := cert.NewKey(2)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := certtest.CA("test ACME CA", key, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{iss}
}

// issue returns the chain (leaf, then the CA) for the CSR's key, naming
// hosts.
func (ca testCA) issue(t *testing.T, csrDER []byte, hosts ...string) []byte {
	t.Helper()
	chain, err := certtest.ForRequest(csrDER, hosts, ca.iss, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

// TestCertificateRequestKeyStaysInPrivd: privd makes the key, answers only
// a CSR for the site's exact names, and installs a CA's certificate for
// that key without anyone sending it a key; the key moves from pending to
// the site's and is gone with the site.
func TestCertificateRequestKeyStaysInPrivd(t *testing.T) {
	s, _, cfg := tempSites(t)
	ctx := context.Background()
	ca := newTestCA(t)
	p := s.Paths()
	names := []string{cfg.ServerName("blog"), "www.blog.org"}

	// A self-signed site first, as the first deploy installs.
	if _, err := s.Install(ctx, installReq(t, "blog", "www.blog.org"), testBackend); err != nil {
		t.Fatal(err)
	}
	oldKey, _ := os.ReadFile(p.Key("blog"))

	res, err := s.CertificateRequest(ctx, &privdv1.CertificateRequestRequest{Project: "blog", Aliases: []string{"www.blog.org"}})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := cert.ParseRequest(res.GetCsr(), names)
	if err != nil {
		t.Fatalf("the CSR: %v", err)
	}
	pending, err := os.ReadFile(p.PendingKey("blog"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p.PendingKey("blog")); fi.Mode().Perm() != 0o600 {
		t.Errorf("pending key mode %v, want 0600", fi.Mode().Perm())
	}
	key, err := cert.ParseKey(pending)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
		t.Fatal("the CSR is not for the pending key")
	}
	// The installed site is untouched until a certificate comes.
	if k, _ := os.ReadFile(p.Key("blog")); !bytes.Equal(k, oldKey) {
		t.Fatal("CertificateRequest changed the installed key")
	}

	chain := ca.issue(t, res.GetCsr(), names...)
	r, err := s.Install(ctx, &privdv1.InstallSiteRequest{Project: "blog", Aliases: []string{"www.blog.org"}, CertificatePem: chain}, testBackend)
	if err != nil || !r.GetChanged() {
		t.Fatalf("Install of the CA's certificate = %v, %v; want changed", r, err)
	}
	if k, _ := os.ReadFile(p.Key("blog")); !bytes.Equal(k, pending) {
		t.Fatal("the site's key is not the pending key")
	}
	if _, err := os.Stat(p.PendingKey("blog")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the pending key is still there: %v", err)
	}
	// The same certificate again (the next deploy) uses the installed key.
	if r, err := s.Install(ctx, &privdv1.InstallSiteRequest{Project: "blog", Aliases: []string{"www.blog.org"}, CertificatePem: chain}, testBackend); err != nil || r.GetChanged() {
		t.Fatalf("Install of the same certificate = %v, %v; want unchanged", r, err)
	}

	if _, err := s.CertificateRequest(ctx, &privdv1.CertificateRequestRequest{Project: "blog", Aliases: []string{"www.blog.org"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Remove(ctx, &privdv1.RemoveSiteRequest{Project: "blog"}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{p.Key("blog"), p.PendingKey("blog"), p.Cert("blog"), p.Vhost("blog")} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Remove: %v", f, err)
		}
	}
}

// TestInstallWithoutKeyRefuses: a certificate installed without a key must
// be for a key privd made and name exactly the site's names; otherwise
// nothing is written and Apache is not asked.
func TestInstallWithoutKeyRefuses(t *testing.T) {
	ca := newTestCA(t)
	other, _, err := selfSigned("blog.opus.example.com", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		chain func(t *testing.T, csr []byte, names []string) []byte
		want  string
	}{
		{"a name more", func(t *testing.T, csr []byte, names []string) []byte {
			return ca.issue(t, csr, append(names, "evil.example")...)
		}, "certificate names"},
		{"a name fewer", func(t *testing.T, csr []byte, names []string) []byte { return ca.issue(t, csr, names[0]) }, "certificate names"},
		{"another key", func(t *testing.T, _ []byte, _ []string) []byte { return other }, "certificate names"},
		{"not PEM", func(t *testing.T, _ []byte, _ []string) []byte { return []byte("junk") }, "no certificate found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, fake, cfg := tempSites(t)
			ctx := context.Background()
			if _, err := s.Install(ctx, installReq(t, "blog", "www.blog.org"), testBackend); err != nil {
				t.Fatal(err)
			}
			res, err := s.CertificateRequest(ctx, &privdv1.CertificateRequestRequest{Project: "blog", Aliases: []string{"www.blog.org"}})
			if err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, s.Paths().Dir)
			testsBefore, _ := fake.counts()
			req := &privdv1.InstallSiteRequest{Project: "blog", Aliases: []string{"www.blog.org"},
				CertificatePem: tt.chain(t, res.GetCsr(), []string{cfg.ServerName("blog"), "www.blog.org"})}
			_, err = s.Install(ctx, req, testBackend)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, cert.ErrInvalid) {
				t.Fatalf("Install = %v, want ErrInvalid with %q", err, tt.want)
			}
			sameSnapshot(t, before, snapshot(t, s.Paths().Dir))
			if tests, _ := fake.counts(); tests != testsBefore {
				t.Error("Apache was configtested for a refused certificate")
			}
		})
	}
	t.Run("no key privd made", func(t *testing.T) {
		s, _, cfg := tempSites(t)
		ctx := context.Background()
		if _, err := s.Install(ctx, installReq(t, "blog"), testBackend); err != nil {
			t.Fatal(err)
		}
		// A CSR made by someone else (a key privd never held).
		key, err := cert.NewKey(2)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := cert.Request(key, []string{cfg.ServerName("blog")})
		if err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, s.Paths().Dir)
		_, err = s.Install(ctx, &privdv1.InstallSiteRequest{Project: "blog", CertificatePem: ca.issue(t, csr, cfg.ServerName("blog"))}, testBackend)
		if err == nil || !strings.Contains(err.Error(), "no key privd made") {
			t.Fatalf("Install = %v, want a refusal naming privd's keys", err)
		}
		sameSnapshot(t, before, snapshot(t, s.Paths().Dir))
	})
}
