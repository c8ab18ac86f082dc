package apache

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"github.com/opus-hosting/opus/internal/cert"
)

// CheckPair checks that keyPEM is the private key of the first certificate in
// certPEM, that this leaf is valid at now, and that OpenSSL serves the chain
// at security level (cert.CheckLevel). configtest notices neither a
// mismatched pair nor a weak key or signature, and the graceful restart
// after it kills all of Apache, so this check, in Go and before anything is
// written, is what keeps one project's bad certificate from taking down
// every site. It returns the pair re-encoded from the parsed DER
// (certificates, then a PKCS#8 key), so that nothing but what was checked
// reaches the disk.
func CheckPair(certPEM, keyPEM []byte, now time.Time, level int) (certOut, keyOut []byte, err error) {
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, nil, fmt.Errorf("tls: %w: certificate and key are both required", cert.ErrInvalid)
	}
	if _, err := cert.Check(certPEM, keyPEM, now, level); err != nil {
		return nil, nil, fmt.Errorf("tls: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: %w: key and certificate do not form a pair: %v", cert.ErrInvalid, err)
	}
	for _, der := range pair.Certificate {
		certOut = append(certOut, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(pair.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: encode key: %w", err)
	}
	return certOut, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// tlsPair checks an installed pair on disk.
func tlsPair(certPath, keyPath string, level int) ([]byte, error) {
	c, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	k, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	_, _, err = CheckPair(c, k, time.Now(), level)
	return c, err
}
