package web

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/opus-hosting/opus/internal/atomicfile"
	"github.com/opus-hosting/opus/internal/cert"
)

// Certificate lifetime of the console's self-signed certificate; it is
// made again when less than certRenew is left.
const (
	certValidity = 365 * 24 * time.Hour
	certRenew    = 30 * 24 * time.Hour
)

// Listen listens on addr (host:port) with TLS, using the certificate and
// key in dir (cert.pem, key.pem), made self-signed (internal/cert, like a
// project's) when missing, unusable, not naming the host, or near expiry.
// It returns the listener and the console's base URL for login links.
func Listen(addr, dir string, now time.Time) (net.Listener, string, error) {
	if err := CheckAddr(addr); err != nil {
		return nil, "", err
	}
	host, port, _ := net.SplitHostPort(addr)
	var err error
	urlHost := host
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if urlHost, err = os.Hostname(); err != nil || urlHost == "" {
			urlHost = "localhost"
		}
	}
	names := []string{"localhost"}
	if net.ParseIP(urlHost) == nil && urlHost != "localhost" {
		names = append([]string{urlHost}, names...)
	}
	pair, err := ensureCert(dir, names, now)
	if err != nil {
		return nil, "", err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("web console: %w", err)
	}
	// The port actually bound (addr may say 0).
	_, port, _ = net.SplitHostPort(l.Addr().String())
	tl := tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	return tl, "https://" + net.JoinHostPort(urlHost, port), nil
}

func ensureCert(dir string, names []string, now time.Time) (tls.Certificate, error) {
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certPEM, cerr := os.ReadFile(certFile)
	keyPEM, kerr := os.ReadFile(keyFile)
	if cerr == nil && kerr == nil {
		// Go's crypto/tls serves the console, not OpenSSL: no security
		// level applies.
		leaf, err := cert.Check(certPEM, keyPEM, now, 0)
		if err == nil && leaf.NotAfter.Sub(now) > certRenew && slices.Equal(leaf.DNSNames, names) {
			return tls.X509KeyPair(certPEM, keyPEM)
		}
	} else if !errors.Is(cerr, fs.ErrNotExist) && cerr != nil {
		return tls.Certificate{}, fmt.Errorf("web console certificate: %w", cerr)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("web console certificate: %w", err)
	}
	certPEM, keyPEM, err := cert.SelfSigned(names, now, certValidity, 0)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("web console certificate: %w", err)
	}
	// The key first, never readable by others; then the certificate.
	if err := atomicfile.Write(keyFile, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := atomicfile.Write(certFile, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// CheckAddr says why addr is no address the console can listen on
// (HOST:PORT, the port a number 0-65535; HOST empty for every address),
// or returns nil. opusd checks its --web-addr with it before it makes
// anything.
func CheckAddr(addr string) error {
	if _, port, err := net.SplitHostPort(addr); err == nil {
		if _, err := strconv.ParseUint(port, 10, 16); err == nil {
			return nil
		}
	}
	return fmt.Errorf("web address %q: want HOST:PORT with a port number 0-65535, for example 127.0.0.1:8444", addr)
}
