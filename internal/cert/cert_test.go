package cert

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestSelfSigned(t *testing.T) {
	certPEM, keyPEM, err := SelfSigned([]string{"web.example.com", "www.web.example.com"}, now, 90*24*time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := Check(certPEM, keyPEM, now, 2)
	if err != nil {
		t.Fatalf("Check of a fresh self-signed certificate: %v", err)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Errorf("IsCA=%v BasicConstraintsValid=%v, want a CA:FALSE leaf", leaf.IsCA, leaf.BasicConstraintsValid)
	}
	if leaf.Subject.CommonName != "web.example.com" {
		t.Errorf("CN = %q", leaf.Subject.CommonName)
	}
	if strings.Join(leaf.DNSNames, ",") != "web.example.com,www.web.example.com" {
		t.Errorf("SANs = %v", leaf.DNSNames)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("key usage %v ext %v", leaf.KeyUsage, leaf.ExtKeyUsage)
	}
	if !leaf.NotBefore.Equal(now.Add(-time.Hour)) || !leaf.NotAfter.Equal(now.Add(90*24*time.Hour)) {
		t.Errorf("validity %v..%v", leaf.NotBefore, leaf.NotAfter)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("public key %T, want ECDSA", leaf.PublicKey)
	}
	if leaf.SerialNumber.Sign() <= 0 {
		t.Errorf("serial %v", leaf.SerialNumber)
	}
	c2, _, err := SelfSigned([]string{"web.example.com"}, now, time.Hour, 2)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(c2, certPEM) {
		t.Error("two certificates are identical; serial/key not random")
	}
	if err := leaf.VerifyHostname("www.web.example.com"); err != nil {
		t.Error(err)
	}
}

func TestSelfSignedRefuses(t *testing.T) {
	for _, tc := range []struct {
		names []string
		valid time.Duration
		want  string
	}{
		{nil, time.Hour, "no names"},
		{[]string{""}, time.Hour, "not a DNS name"},
		{[]string{"a b"}, time.Hour, "not a DNS name"},
		{[]string{"ok.example"}, 0, "not positive"},
	} {
		c, k, err := SelfSigned(tc.names, now, tc.valid, 2)
		if err == nil || !strings.Contains(err.Error(), tc.want) || c != nil || k != nil {
			t.Errorf("SelfSigned(%q, %v) = %v, want error containing %q", tc.names, tc.valid, err, tc.want)
		}
	}
}

// mk makes a certificate signed by signer (self-signed when signer is nil).
func mk(t *testing.T, cn string, isCA bool, nb, na time.Time, pub any, signer any, parent *x509.Certificate) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(0xabc),
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              []string{cn},
		NotBefore:             nb,
		NotAfter:              na,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestCheck(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	ecDER, _ := x509.MarshalECPrivateKey(ecKey)
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})

	valid := mk(t, "web.example.com", false, now.Add(-time.Hour), now.Add(time.Hour), &ecKey.PublicKey, ecKey, nil)
	caTrue := mk(t, "web.example.com", true, now.Add(-time.Hour), now.Add(time.Hour), &ecKey.PublicKey, ecKey, nil)
	expired := mk(t, "old.example.com", false, now.Add(-48*time.Hour), now.Add(-24*time.Hour), &ecKey.PublicKey, ecKey, nil)
	future := mk(t, "new.example.com", false, now.Add(time.Hour), now.Add(48*time.Hour), &ecKey.PublicKey, ecKey, nil)
	rsaLeaf := mk(t, "rsa.example.com", false, now.Add(-time.Hour), now.Add(time.Hour), &rsaKey.PublicKey, rsaKey, nil)
	// A leaf signed by an intermediate, followed by that intermediate.
	caCert := mk(t, "Opus Test CA", true, now.Add(-time.Hour), now.Add(time.Hour), &otherKey.PublicKey, otherKey, nil)
	caParsed, _ := x509.ParseCertificate(mustBlock(t, caCert))
	chainLeaf := mk(t, "chain.example.com", false, now.Add(-time.Hour), now.Add(time.Hour), &ecKey.PublicKey, otherKey, caParsed)
	chain := append(append([]byte(nil), chainLeaf...), caCert...)

	for _, tc := range []struct {
		name      string
		cert, key []byte
		want      string // "" = accepted; else substring of the error
		cn        string
	}{
		{"valid pkcs8 ec", valid, p8(ecKey), "", "web.example.com"},
		{"valid sec1 ec", valid, ecPEM, "", "web.example.com"},
		{"valid rsa pkcs1", rsaLeaf, rsaPEM, "", "rsa.example.com"},
		{"valid rsa pkcs8", rsaLeaf, p8(rsaKey), "", "rsa.example.com"},
		{"CA:TRUE leaf accepted (documented)", caTrue, p8(ecKey), "", "web.example.com"},
		{"leaf with chain", chain, p8(ecKey), "", "chain.example.com"},
		{"chain with intermediate's key", chain, p8(otherKey), "key does not match certificate (certificate is for chain.example.com, serial abc)", ""},
		{"mismatched key", valid, p8(otherKey), "key does not match certificate (certificate is for web.example.com, serial abc)", ""},
		{"rsa key for ec cert", valid, rsaPEM, "key does not match certificate", ""},
		{"expired", expired, p8(ecKey), "certificate for old.example.com expired at 2026-02-28T12:00:00Z", ""},
		{"not yet valid", future, p8(ecKey), "not valid yet: valid from 2026-03-01T13:00:00Z", ""},
		{"garbage cert", []byte("hello"), p8(ecKey), "no certificate found", ""},
		{"empty cert", nil, p8(ecKey), "no certificate found", ""},
		{"garbage key", valid, []byte("hello"), "no private key found", ""},
		{"key in cert field", p8(ecKey), p8(ecKey), `certificate PEM block 1 is "PRIVATE KEY"`, ""},
		{"corrupt cert der", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}), p8(ecKey), "certificate PEM block 1 does not parse", ""},
		{"corrupt second cert", append(append([]byte(nil), valid...), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})...), p8(ecKey), "certificate PEM block 2 does not parse", ""},
		{"trailing junk", append(append([]byte(nil), valid...), "junk"...), p8(ecKey), "trailing data", ""},
		{"corrupt key", valid, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2}}), "private key does not parse", ""},
		{"encrypted key", valid, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), "encrypted", ""},
		{"cert as key", valid, valid, `key PEM block is "CERTIFICATE"`, ""},
		{"two keys", valid, append(p8(ecKey), p8(ecKey)...), "more than one block", ""},
		{"huge cert", bytes.Repeat([]byte("A"), MaxPEM+1), p8(ecKey), "at most 65536", ""},
		{"huge key", valid, bytes.Repeat([]byte("A"), MaxPEM+1), "at most 65536", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf, err := Check(tc.cert, tc.key, now, 2)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if leaf.Subject.CommonName != tc.cn {
					t.Errorf("leaf CN %q, want %q", leaf.Subject.CommonName, tc.cn)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v, want an ErrInvalid containing %q", err, tc.want)
			}
			if leaf != nil {
				t.Errorf("leaf returned with error")
			}
		})
	}
}

func mustBlock(t *testing.T, p []byte) []byte {
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatal("no PEM")
	}
	return b.Bytes
}

// FuzzCheck: Check never panics, accepts only inputs valid now, and the
// security levels nest: what passes at one level passes at every lower one.
func FuzzCheck(f *testing.F) {
	c, k, err := SelfSigned([]string{"f.example"}, now, time.Hour, 2)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(c, k, uint8(2))
	f.Add(c, k, uint8(4))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), k, uint8(1))
	f.Add(c, []byte("garbage"), uint8(0))
	f.Add([]byte{}, []byte{}, uint8(3))
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte, level uint8) {
		lvl := int(level % (MaxSecurityLevel + 1))
		leaf, err := Check(certPEM, keyPEM, now, lvl)
		if err != nil {
			return
		}
		if leaf == nil {
			t.Fatal("nil leaf without error")
		}
		if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			t.Fatal("accepted a certificate outside its validity")
		}
		for lower := lvl - 1; lower >= 0; lower-- {
			if _, err := Check(certPEM, keyPEM, now, lower); err != nil {
				t.Fatalf("accepted at level %d but refused at level %d: %v", lvl, lower, err)
			}
		}
	})
}
