// Package certtest makes certificate chains of chosen key types, sizes and
// signature algorithms for tests: roots, intermediates and leaves, weak
// ones included (an RSA-1024 leaf, an intermediate signed with SHA-1), so
// that every layer's tests of the TLS security level use the same real
// certificates. It is for tests only.
package certtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"
	"time"
)

// Issuer is a CA certificate with its key.
type Issuer struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Template returns a certificate template valid from an hour ago for a
// day, with a random serial. Tests adjust it before Sign.
func Template(cn string) *x509.Certificate {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		panic(err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
	}
}

// Sign makes the certificate of tmpl for key's public key, signed by
// parent with alg (0: Go's default for the signer's key), or self-signed
// by key when parent is nil.
func Sign(tmpl *x509.Certificate, key crypto.Signer, parent *Issuer, alg x509.SignatureAlgorithm) (*x509.Certificate, error) {
	tmpl.SignatureAlgorithm = alg
	issuerCert, issuerKey := tmpl, key
	if parent != nil {
		issuerCert, issuerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuerCert, key.Public(), issuerKey)
	if err != nil {
		return nil, fmt.Errorf("certtest: sign %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// CA makes a CA named cn with key, signed by parent with alg (a root when
// parent is nil).
func CA(cn string, key crypto.Signer, parent *Issuer, alg x509.SignatureAlgorithm) (*Issuer, error) {
	tmpl := Template(cn)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	c, err := Sign(tmpl, key, parent, alg)
	if err != nil {
		return nil, err
	}
	return &Issuer{Cert: c, Key: key}, nil
}

// Leaf makes a server certificate for hosts with key, signed by parent
// with alg (self-signed when parent is nil).
func Leaf(hosts []string, key crypto.Signer, parent *Issuer, alg x509.SignatureAlgorithm) (*x509.Certificate, error) {
	tmpl := Template(hosts[0])
	tmpl.DNSNames = hosts
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tmpl.BasicConstraintsValid = true
	return Sign(tmpl, key, parent, alg)
}

// PEM encodes chain (the leaf first) and key as a certificate file and a
// PKCS#8 key file.
func PEM(key crypto.Signer, chain ...*x509.Certificate) (certPEM, keyPEM []byte) {
	for _, c := range chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

var (
	mu   sync.Mutex
	keys = map[string]crypto.Signer{}
)

// RSAKey returns an RSA key of bits, the same one for every call in the
// process: large keys take long to generate. Keys below 1024 bits need
// the test binary built with //go:debug rsa1024min=0.
func RSAKey(bits int) (*rsa.PrivateKey, error) {
	k, err := cached(fmt.Sprintf("rsa%d", bits), func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, bits) })
	if err != nil {
		return nil, err
	}
	return k.(*rsa.PrivateKey), nil
}

// ECKey returns an ECDSA key on curve, the same one for every call.
func ECKey(curve elliptic.Curve) (*ecdsa.PrivateKey, error) {
	k, err := cached("ec"+curve.Params().Name, func() (crypto.Signer, error) { return ecdsa.GenerateKey(curve, rand.Reader) })
	if err != nil {
		return nil, err
	}
	return k.(*ecdsa.PrivateKey), nil
}

func cached(name string, gen func() (crypto.Signer, error)) (crypto.Signer, error) {
	mu.Lock()
	defer mu.Unlock()
	if k, ok := keys[name]; ok {
		return k, nil
	}
	k, err := gen()
	if err != nil {
		return nil, fmt.Errorf("certtest: generate %s key: %w", name, err)
	}
	keys[name] = k
	return k, nil
}

// WeakRSA returns a self-signed RSA-1024 leaf for hosts and its key:
// OpenSSL loads it at security level 1 and refuses it from level 2
// ("ee key too small").
func WeakRSA(hosts ...string) (certPEM, keyPEM []byte, err error) {
	k, err := RSAKey(1024)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := Leaf(hosts, k, nil, 0)
	if err != nil {
		return nil, nil, err
	}
	c, kp := PEM(k, leaf)
	return c, kp, nil
}

// SHA1Chain returns an ECDSA P-256 leaf for hosts signed (SHA-256) by an
// intermediate that its root signed with SHA-1, as leaf + intermediate,
// and the leaf's key: every key is strong, but OpenSSL refuses the chain
// at every level from 1 ("ca md too weak").
func SHA1Chain(hosts ...string) (certPEM, keyPEM []byte, err error) {
	rootKey, err := RSAKey(2048)
	if err != nil {
		return nil, nil, err
	}
	root, err := CA("Opus Test Root", rootKey, nil, x509.SHA256WithRSA)
	if err != nil {
		return nil, nil, err
	}
	midKey, err := ECKey(elliptic.P384())
	if err != nil {
		return nil, nil, err
	}
	mid, err := CA("Opus Test SHA-1 Intermediate", midKey, root, x509.SHA1WithRSA)
	if err != nil {
		return nil, nil, err
	}
	leafKey, err := ECKey(elliptic.P256())
	if err != nil {
		return nil, nil, err
	}
	leaf, err := Leaf(hosts, leafKey, mid, x509.ECDSAWithSHA256)
	if err != nil {
		return nil, nil, err
	}
	c, k := PEM(leafKey, leaf, mid.Cert)
	return c, k, nil
}

// ForRequest makes the certificate an ACME CA would issue for the CSR
// (DER): for its public key, whose private key the CA never sees, naming
// hosts, valid from notBefore to notAfter, signed by parent. It returns
// the chain, leaf then parent, as PEM.
func ForRequest(csrDER []byte, hosts []string, parent *Issuer, notBefore, notAfter time.Time) ([]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("certtest: %w", err)
	}
	tmpl := Template(hosts[0])
	tmpl.DNSNames = hosts
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tmpl.BasicConstraintsValid = true
	leaf, err := Sign(tmpl, publicOnly{csr.PublicKey}, parent, 0)
	if err != nil {
		return nil, err
	}
	var chain []byte
	for _, c := range []*x509.Certificate{leaf, parent.Cert} {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return chain, nil
}

// publicOnly is a public key as a crypto.Signer, for Sign, which uses
// only its Public when a parent signs.
type publicOnly struct{ pub crypto.PublicKey }

func (p publicOnly) Public() crypto.PublicKey { return p.pub }
func (p publicOnly) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("certtest: a public key cannot sign")
}
