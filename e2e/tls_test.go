package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"
)

type x509Cert = x509.Certificate

// peerCert returns the leaf certificate served at addr for server name sni.
func peerCert(addr, sni string) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no certificate", addr)
	}
	return certs[0], nil
}
