// Package cert makes and checks TLS certificates for project virtual hosts.
// Both daemons use it: opusd makes self-signed leaves and checks owner
// certificates before it records them; opus-privd checks again before it
// installs a key, because Apache's configtest does not notice a key that does
// not match its certificate and the graceful restart that follows takes all of
// Apache down. It uses the standard library only.
//
// Check accepts a CA:TRUE leaf. Apache serves one (with a warning), browsers
// decide trust themselves, and owners sometimes bring such certificates from
// older tooling (openssl req -x509 defaults to CA:TRUE); refusing it would turn
// a cosmetic issue into a failed deploy. What Check refuses is what breaks
// Apache or serves nothing useful: unparsable input, a key that does not belong
// to the leaf, a leaf outside its validity window, and a key or signature
// below the OpenSSL security level Apache serves it at (see CheckLevel).
package cert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// MaxPEM bounds each of the certificate and key inputs; a chain of a few
// certificates is well under it.
const MaxPEM = 64 << 10

// ErrInvalid is wrapped by every error of Check: the certificate or key the
// caller gave is refused (as opposed to a failure of the host), so a
// service answers InvalidArgument with the error's own message.
var ErrInvalid = errors.New("invalid certificate or key")

// invalidError carries Check's message and matches ErrInvalid.
type invalidError struct{ err error }

func (e invalidError) Error() string   { return e.err.Error() }
func (e invalidError) Unwrap() []error { return []error{ErrInvalid, e.err} }

// SelfSigned returns a PEM certificate and PKCS#8 PEM key for an ECDSA
// leaf (CA:FALSE) valid for names (DNS SANs; the first is also the CN) from
// an hour before now (clock skew) until now+validFor. The curve is the
// smallest that OpenSSL serves at security level (see CheckLevel): P-256
// up to level 3, P-384 at 4, P-521 at 5.
func SelfSigned(names []string, now time.Time, validFor time.Duration, level int) (certPEM, keyPEM []byte, err error) {
	if len(names) == 0 {
		return nil, nil, errors.New("self-signed certificate: no names given")
	}
	for _, n := range names {
		if n == "" || strings.ContainsAny(n, " \t\r\n/") {
			return nil, nil, fmt.Errorf("self-signed certificate: %q is not a DNS name", n)
		}
	}
	if validFor <= 0 {
		return nil, nil, fmt.Errorf("self-signed certificate: validity %v is not positive", validFor)
	}
	key, err := NewKey(level)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed certificate: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              append([]string(nil), names...),
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed certificate: create: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed certificate: marshal key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	return certPEM, keyPEM, nil
}

// Check parses a leaf certificate followed by its chain and the leaf's
// private key, and returns the leaf if the key matches it, now lies in its
// validity window and OpenSSL would serve the chain at security level
// (CheckLevel; 0 checks no key or signature strength). Errors say exactly
// what is wrong, for the owner to read.
func Check(certPEM, keyPEM []byte, now time.Time, level int) (*x509.Certificate, error) {
	leaf, err := check(certPEM, keyPEM, now, level)
	if err != nil {
		return nil, invalidError{err}
	}
	return leaf, nil
}

func check(certPEM, keyPEM []byte, now time.Time, level int) (*x509.Certificate, error) {
	if len(certPEM) > MaxPEM {
		return nil, fmt.Errorf("certificate PEM is %d bytes; at most %d are allowed", len(certPEM), MaxPEM)
	}
	if len(keyPEM) > MaxPEM {
		return nil, fmt.Errorf("key PEM is %d bytes; at most %d are allowed", len(keyPEM), MaxPEM)
	}
	chain, err := parseChain(certPEM)
	if err != nil {
		return nil, err
	}
	leaf := chain[0]
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("key does not match certificate (certificate is for %s, serial %s)", describe(leaf), serialHex(leaf))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("certificate for %s is not valid yet: valid from %s, now is %s",
			describe(leaf), leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("certificate for %s expired at %s (now is %s)",
			describe(leaf), leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if err := CheckLevel(chain, level); err != nil {
		return nil, err
	}
	return leaf, nil
}

func parseChain(data []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	rest := data
	for i := 1; ; i++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("certificate PEM block %d is %q; only CERTIFICATE blocks are allowed (is the key in the certificate field?)", i, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate PEM block %d does not parse: %w", i, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("no certificate found: expected PEM blocks starting with -----BEGIN CERTIFICATE-----")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("certificate PEM has %d bytes of trailing data that is not a PEM block", len(bytes.TrimSpace(rest)))
	}
	return chain, nil
}

func parseKey(data []byte) (crypto.Signer, error) {
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no private key found: expected a PEM block such as -----BEGIN PRIVATE KEY-----")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("key PEM holds more than one block; give only the leaf's private key")
	}
	var (
		k   any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("private key is encrypted; give the key without a passphrase")
	default:
		return nil, fmt.Errorf("key PEM block is %q; expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s does not parse: %w", strings.ToLower(b.Type), err)
	}
	switch s := k.(type) {
	case *ecdsa.PrivateKey:
		return s, nil
	case *rsa.PrivateKey:
		return s, nil
	case ed25519.PrivateKey:
		return s, nil
	default:
		return nil, fmt.Errorf("private key type %T is not supported", k)
	}
}

func describe(c *x509.Certificate) string {
	if len(c.DNSNames) > 0 {
		return strings.Join(c.DNSNames, ", ")
	}
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}

func serialHex(c *x509.Certificate) string {
	return fmt.Sprintf("%x", c.SerialNumber)
}
