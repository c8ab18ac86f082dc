package cert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// NewKey makes the ECDSA key of a new leaf: the smallest curve OpenSSL
// serves at security level (see CheckLevel): P-256 up to level 3, P-384 at
// 4, P-521 at 5.
func NewKey(level int) (*ecdsa.PrivateKey, error) {
	curve := elliptic.P256()
	switch clampLevel(level) {
	case 4:
		curve = elliptic.P384()
	case 5:
		curve = elliptic.P521()
	}
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

// KeyPEM is key as a PKCS#8 PEM block, the form privd writes.
func KeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey reads a private key in PEM (PKCS#8, SEC 1 or PKCS#1).
func ParseKey(keyPEM []byte) (crypto.Signer, error) {
	if len(keyPEM) > MaxPEM {
		return nil, invalidError{fmt.Errorf("key PEM is %d bytes; at most %d are allowed", len(keyPEM), MaxPEM)}
	}
	k, err := parseKey(keyPEM)
	if err != nil {
		return nil, invalidError{err}
	}
	return k, nil
}

// Request makes a certificate signing request (DER) for names, signed by
// key: the first name is also the subject's common name, every name is a
// DNS SAN. The CA sees the public key and the names, nothing else.
func Request(key crypto.Signer, names []string) ([]byte, error) {
	if len(names) == 0 {
		return nil, errors.New("certificate request: no names given")
	}
	for _, n := range names {
		if n == "" || strings.ContainsAny(n, " \t\r\n/") {
			return nil, fmt.Errorf("certificate request: %q is not a DNS name", n)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: names[0]},
		DNSNames: slices.Clone(names),
	}, key)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return der, nil
}

// ParseRequest parses a DER certificate signing request and checks its
// signature (that whoever made it holds the key) and that it names
// exactly names.
func ParseRequest(der []byte, names []string) (*x509.CertificateRequest, error) {
	if len(der) > MaxPEM {
		return nil, fmt.Errorf("certificate request is %d bytes; at most %d are allowed", len(der), MaxPEM)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("certificate request does not parse: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if !SameNames(csr.DNSNames, names) {
		return nil, fmt.Errorf("certificate request names %s, not %s", strings.Join(csr.DNSNames, ", "), strings.Join(names, ", "))
	}
	return csr, nil
}

// ParseChain parses PEM certificates, the leaf first: only CERTIFICATE
// blocks, at most MaxPEM bytes, nothing after the last block. Every error
// wraps ErrInvalid.
func ParseChain(certPEM []byte) ([]*x509.Certificate, error) {
	if len(certPEM) > MaxPEM {
		return nil, invalidError{fmt.Errorf("certificate PEM is %d bytes; at most %d are allowed", len(certPEM), MaxPEM)}
	}
	chain, err := parseChain(certPEM)
	if err != nil {
		return nil, invalidError{err}
	}
	return chain, nil
}

// CheckNames says why leaf is not a certificate for exactly names (its DNS
// SANs, in any order), or returns nil. A CA's certificate for a project
// must name its host and its extra host names, no fewer (a name would not
// be served) and no more (the CSR asked for no others).
func CheckNames(leaf *x509.Certificate, names []string) error {
	if !SameNames(leaf.DNSNames, names) {
		return invalidError{fmt.Errorf("certificate names %s; the project's names are %s",
			strings.Join(leaf.DNSNames, ", "), strings.Join(names, ", "))}
	}
	return nil
}

// SameNames reports whether a and b hold the same names, in any order.
func SameNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	set := map[string]int{}
	for _, n := range a {
		set[strings.ToLower(n)]++
	}
	for _, n := range b {
		n = strings.ToLower(n)
		if set[n] == 0 {
			return false
		}
		set[n]--
	}
	return true
}
