// OpenSSL's thresholds lie below 1024 bits at level 1 (920), which Go
// generates only when asked to.
//go:debug rsa1024min=0

package cert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/cert/certtest"
)

// levelCase is a chain (leaf first) with the leaf's key, and the lowest
// security level at which OpenSSL refuses to serve it (never: past 5).
type levelCase struct {
	name         string
	chain        []*x509.Certificate
	key          crypto.Signer
	refusedFrom  int
	wantAt       int    // a level at which the error is checked
	wantContains string // in the error at wantAt
}

const never = MaxSecurityLevel + 1

// levelCases builds the table both TestCheckLevel and the OpenSSL
// cross-check use: every key type and size threshold, signature hashes on
// leaves and chain certificates, and what OpenSSL takes as self-signed.
func levelCases(t *testing.T) []levelCase {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	rsaKey := func(bits int) crypto.Signer {
		k, err := certtest.RSAKey(bits)
		must(err)
		return k
	}
	ecKey := func(c elliptic.Curve) crypto.Signer {
		k, err := certtest.ECKey(c)
		must(err)
		return k
	}
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	must(err)
	host := []string{"a.example.com"}
	leaf := func(key crypto.Signer, parent *certtest.Issuer, alg x509.SignatureAlgorithm) *x509.Certificate {
		c, err := certtest.Leaf(host, key, parent, alg)
		must(err)
		return c
	}
	ca := func(cn string, key crypto.Signer, parent *certtest.Issuer, alg x509.SignatureAlgorithm) *certtest.Issuer {
		c, err := certtest.CA(cn, key, parent, alg)
		must(err)
		return c
	}
	rsa2048, p256 := rsaKey(2048), ecKey(elliptic.P256())
	root := ca("Test Root", rsa2048, nil, x509.SHA256WithRSA)
	sha1Root := ca("Test SHA-1 Root", rsa2048, nil, x509.SHA1WithRSA)
	ecRoot := ca("Test EC Root", ecKey(elliptic.P384()), nil, x509.ECDSAWithSHA384)
	edRoot := ca("Test Ed25519 Root", edPriv, nil, x509.PureEd25519)
	sha1Mid := ca("Test SHA-1 Intermediate", ecKey(elliptic.P384()), root, x509.SHA1WithRSA)
	weakMid := ca("Test RSA-1024 Intermediate", rsaKey(1024), root, x509.SHA256WithRSA)

	// Self-issued (subject = issuer) certificates: OpenSSL takes one as
	// self-signed, and does not rate its signature, unless its authority
	// key id differs from its own key id or its signature is of another
	// key type; it never verifies the signature for this.
	sameName := ca(host[0], rsaKey(3072), nil, x509.SHA256WithRSA) // a CA named like the leaf
	otherKeyID := certtest.Template(host[0])
	// (Go writes no authority key id into a self-issued certificate
	// unless the template has one.)
	otherKeyID.DNSNames, otherKeyID.SubjectKeyId, otherKeyID.AuthorityKeyId = host, []byte{1, 2, 3}, []byte{4, 5, 6}
	selfIssuedOtherID, err := certtest.Sign(otherKeyID, rsa2048, sameName, x509.SHA1WithRSA)
	must(err)
	selfIssuedNoID, err := certtest.Sign(certtest.Template(host[0]), rsa2048, sameName, x509.SHA1WithRSA)
	must(err)
	selfIssuedOtherType, err := certtest.Sign(certtest.Template(host[0]), p256, sameName, x509.SHA1WithRSA)
	must(err)

	cases := []levelCase{
		{name: "RSA-1024 self-signed", chain: []*x509.Certificate{leaf(rsaKey(1024), nil, 0)}, key: rsaKey(1024), refusedFrom: 2,
			wantAt: 2, wantContains: "the certificate for a.example.com has an RSA 1024-bit key (80-bit security); this host serves certificates at TLS security level 2, which needs 112 bits: use RSA 2048 or more, or ECDSA P-256"},
		{name: "RSA-2048 self-signed", chain: []*x509.Certificate{leaf(rsa2048, nil, 0)}, key: rsa2048, refusedFrom: 3,
			wantAt: 3, wantContains: "RSA 2048-bit key (112-bit security); this host serves certificates at TLS security level 3, which needs 128 bits: use RSA 3072 or more"},
		{name: "RSA-3072 self-signed", chain: []*x509.Certificate{leaf(rsaKey(3072), nil, 0)}, key: rsaKey(3072), refusedFrom: 4},
		{name: "P-224 self-signed", chain: []*x509.Certificate{leaf(ecKey(elliptic.P224()), nil, 0)}, key: ecKey(elliptic.P224()), refusedFrom: 3},
		{name: "P-256 self-signed", chain: []*x509.Certificate{leaf(p256, nil, 0)}, key: p256, refusedFrom: 4,
			wantAt: 4, wantContains: "an ECDSA P-256 key (128-bit security); this host serves certificates at TLS security level 4, which needs 192 bits: use RSA 7680 or more, or ECDSA P-384"},
		{name: "P-384 self-signed", chain: []*x509.Certificate{leaf(ecKey(elliptic.P384()), nil, 0)}, key: ecKey(elliptic.P384()), refusedFrom: 5},
		{name: "P-521 self-signed", chain: []*x509.Certificate{leaf(ecKey(elliptic.P521()), nil, 0)}, key: ecKey(elliptic.P521()), refusedFrom: never},
		{name: "Ed25519 self-signed", chain: []*x509.Certificate{leaf(edPriv, nil, 0)}, key: edPriv, refusedFrom: 4},
		{name: "self-signed leaf signed with SHA-1 is not rated", chain: []*x509.Certificate{leaf(rsa2048, nil, x509.SHA1WithRSA)}, key: rsa2048, refusedFrom: 3},
		{name: "self-signed ECDSA leaf signed with SHA-1 is not rated", chain: []*x509.Certificate{leaf(p256, nil, x509.ECDSAWithSHA1)}, key: p256, refusedFrom: 4},
		{name: "leaf signed with SHA-1", chain: []*x509.Certificate{leaf(p256, root, x509.SHA1WithRSA), root.Cert}, key: p256, refusedFrom: 1,
			wantAt: 1, wantContains: "the certificate for a.example.com is signed with SHA-1 (63-bit security); this host serves certificates at TLS security level 1, which needs 80 bits: have it reissued signed with SHA-256 or stronger"},
		{name: "leaf signed with SHA-256, RSA-2048 root sent along", chain: []*x509.Certificate{leaf(p256, root, x509.SHA256WithRSA), root.Cert}, key: p256, refusedFrom: 3},
		{name: "leaf signed with SHA-256", chain: []*x509.Certificate{leaf(ecKey(elliptic.P384()), ecRoot, x509.ECDSAWithSHA256)}, key: ecKey(elliptic.P384()), refusedFrom: 4,
			wantAt: 4, wantContains: "is signed with SHA-256 (128-bit security); this host serves certificates at TLS security level 4, which needs 192 bits: have it reissued signed with SHA-384 or SHA-512"},
		{name: "leaf signed with SHA-384", chain: []*x509.Certificate{leaf(p256, root, x509.SHA384WithRSA)}, key: p256, refusedFrom: 4},
		{name: "leaf signed with SHA-512 RSA-PSS", chain: []*x509.Certificate{leaf(p256, root, x509.SHA512WithRSAPSS)}, key: p256, refusedFrom: 4},
		{name: "leaf signed with ECDSA SHA-1", chain: []*x509.Certificate{leaf(p256, ecRoot, x509.ECDSAWithSHA1)}, key: p256, refusedFrom: 1},
		{name: "leaf signed with ECDSA SHA-384", chain: []*x509.Certificate{leaf(ecKey(elliptic.P384()), ecRoot, x509.ECDSAWithSHA384), ecRoot.Cert}, key: ecKey(elliptic.P384()), refusedFrom: 5},
		{name: "leaf signed with Ed25519", chain: []*x509.Certificate{leaf(p256, edRoot, x509.PureEd25519), edRoot.Cert}, key: p256, refusedFrom: 4},
		{name: "SHA-1 root sent along is not rated", chain: []*x509.Certificate{leaf(p256, sha1Root, x509.SHA256WithRSA), sha1Root.Cert}, key: p256, refusedFrom: 3},
		{name: "intermediate signed with SHA-1", chain: []*x509.Certificate{leaf(p256, sha1Mid, x509.ECDSAWithSHA256), sha1Mid.Cert, root.Cert}, key: p256, refusedFrom: 1,
			wantAt: 2, wantContains: `chain certificate 1 of 2 ("Test SHA-1 Intermediate") is signed with SHA-1 (63-bit security); this host serves certificates at TLS security level 2, which needs 112 bits: use the issuer's chain signed with SHA-256 or stronger`},
		{name: "intermediate with an RSA-1024 key", chain: []*x509.Certificate{leaf(p256, weakMid, x509.SHA256WithRSA), weakMid.Cert}, key: p256, refusedFrom: 2,
			wantAt: 2, wantContains: `chain certificate 1 of 1 ("Test RSA-1024 Intermediate") has an RSA 1024-bit key (80-bit security)`},
		{name: "self-issued, authority key id not its own", chain: []*x509.Certificate{selfIssuedOtherID}, key: rsa2048, refusedFrom: 1},
		{name: "self-issued without its own key id", chain: []*x509.Certificate{selfIssuedNoID}, key: rsa2048, refusedFrom: 3},
		{name: "self-issued, signed with another key type", chain: []*x509.Certificate{selfIssuedOtherType}, key: p256, refusedFrom: 1},
	}
	// RSA keys one bit either side of each level's threshold in OpenSSL's
	// estimate (see rsaSecurityBits): 920, 1963 and 2671 bits.
	for _, b := range []struct{ bits, refusedFrom int }{
		{919, 1}, {920, 2}, {1962, 2}, {1963, 3}, {2670, 3}, {2671, 4},
	} {
		k := rsaKey(b.bits)
		cases = append(cases, levelCase{name: "RSA-" + strconv.Itoa(b.bits) + " self-signed", chain: []*x509.Certificate{leaf(k, nil, 0)}, key: k, refusedFrom: b.refusedFrom})
	}
	return cases
}

func TestCheckLevel(t *testing.T) {
	for _, tc := range levelCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			for level := 0; level <= MaxSecurityLevel; level++ {
				err := CheckLevel(tc.chain, level)
				if refused := err != nil; refused != (level >= tc.refusedFrom) {
					t.Errorf("level %d: CheckLevel = %v, want refused from level %d", level, err, tc.refusedFrom)
				}
			}
			if tc.wantContains != "" {
				if err := CheckLevel(tc.chain, tc.wantAt); err == nil || !strings.Contains(err.Error(), tc.wantContains) {
					t.Errorf("level %d: CheckLevel = %v, want an error containing %q", tc.wantAt, err, tc.wantContains)
				}
			}
		})
	}
}

func TestCheckLevelClamps(t *testing.T) {
	k, err := certtest.RSAKey(1024)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := certtest.Leaf([]string{"a.example.com"}, k, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509.Certificate{leaf}
	if err := CheckLevel(chain, -1); err != nil {
		t.Errorf("level -1 (as 0) refused: %v", err)
	}
	if err := CheckLevel(chain, 9); err == nil || !strings.Contains(err.Error(), "level 5, which needs 256 bits") {
		t.Errorf("level 9 (as 5) = %v", err)
	}
	if SecurityBits(-3) != 0 || SecurityBits(2) != 112 || SecurityBits(7) != 256 {
		t.Errorf("SecurityBits = %d %d %d", SecurityBits(-3), SecurityBits(2), SecurityBits(7))
	}
}

// TestRSASecurityBits pins the canonical values of NIST SP 800-56B that
// OpenSSL returns for the common sizes, and that the estimate never
// decreases with the size (the cross-check compares every size with the
// host's libcrypto).
func TestRSASecurityBits(t *testing.T) {
	for n, want := range map[int]int{1024: 80, 2048: 112, 3072: 128, 4096: 152, 6144: 176, 7680: 192, 8192: 200, 15360: 256, 4: 0, 1 << 20: 1200} {
		if got := rsaSecurityBits(n); got != want {
			t.Errorf("rsaSecurityBits(%d) = %d, want %d", n, got, want)
		}
	}
	prev := 0
	for n := 8; n <= 20000; n++ {
		b := rsaSecurityBits(n)
		if b < prev {
			t.Fatalf("rsaSecurityBits(%d) = %d < rsaSecurityBits(%d) = %d", n, b, n-1, prev)
		}
		prev = b
	}
}

// TestSelfSignedAtEveryLevel: what Opus makes itself is served at every
// level it may be configured with.
func TestSelfSignedAtEveryLevel(t *testing.T) {
	for level, curve := range []string{"P-256", "P-256", "P-256", "P-256", "P-384", "P-521"} {
		c, k, err := SelfSigned([]string{"s.example.com"}, now, time.Hour, level)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := Check(c, k, now, level)
		if err != nil {
			t.Fatalf("level %d: own self-signed certificate refused: %v", level, err)
		}
		if got := leaf.PublicKey.(*ecdsa.PublicKey).Curve.Params().Name; got != curve {
			t.Errorf("level %d: curve %s, want %s", level, got, curve)
		}
	}
}

// TestCheckAppliesLevel: Check refuses what CheckLevel refuses, after the
// pair itself checks out.
func TestCheckAppliesLevel(t *testing.T) {
	c, k, err := certtest.WeakRSA("w.example.com")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	if _, err := Check(c, k, at, 1); err != nil {
		t.Errorf("RSA-1024 at level 1: %v", err)
	}
	if _, err := Check(c, k, at, 2); err == nil || !strings.Contains(err.Error(), "RSA 1024-bit key") {
		t.Errorf("RSA-1024 at level 2: %v", err)
	}
	c, k, err = certtest.SHA1Chain("w.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Check(c, k, at, 0); err != nil {
		t.Errorf("SHA-1 chain at level 0: %v", err)
	}
	if _, err := Check(c, k, at, 1); err == nil || !strings.Contains(err.Error(), "signed with SHA-1") {
		t.Errorf("SHA-1 chain at level 1: %v", err)
	}
}
