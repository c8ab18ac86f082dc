package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Client TLS files of a member started with Options.TLS: the CA that
// signed the member's and the client's certificates, and the client's
// certificate and key (PEM, mode 0600), as opusd's etcd_ca_file,
// etcd_cert_file and etcd_key_file name them.
type ClientFiles struct {
	CA, Cert, Key string
}

// makeTLS writes, under dir, a CA, a server certificate for 127.0.0.1
// and localhost, and a client certificate, all signed by the CA and
// valid for a day: what etcd's --client-cert-auth needs to refuse every
// client without one.
func makeTLS(dir string) (server, client ClientFiles, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return server, client, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return server, client, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcdtest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return server, client, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return server, client, err
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := writePEM(caFile, "CERTIFICATE", caDER); err != nil {
		return server, client, err
	}
	issue := func(name string, serial int64, usage ...x509.ExtKeyUsage) (ClientFiles, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return ClientFiles{}, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return ClientFiles{}, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return ClientFiles{}, err
		}
		f := ClientFiles{CA: caFile, Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
		if err := writePEM(f.Cert, "CERTIFICATE", der); err != nil {
			return f, err
		}
		return f, writePEM(f.Key, "PRIVATE KEY", keyDER)
	}
	// The server's certificate is a client's too: etcd's JSON gateway
	// (/v3/kv/...) connects to the member's own gRPC port with it, and
	// --client-cert-auth refuses it otherwise (503 on every request).
	if server, err = issue("server", 2, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth); err != nil {
		return server, client, err
	}
	client, err = issue("client", 3, x509.ExtKeyUsageClientAuth)
	return server, client, err
}

func writePEM(path, kind string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}

// ClientTLS is the TLS configuration of a client of the member: nil when
// it was started without TLS.
func (s *Server) ClientTLS() (*tls.Config, error) {
	if s.ClientCert.Cert == "" {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(s.ClientCert.Cert, s.ClientCert.Key)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(s.ClientCert.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
