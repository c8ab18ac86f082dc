// Package acme is opusd's ACME client: it obtains project certificates
// from the host's ACME CA (Let's Encrypt by default) for certificate
// signing requests opus-privd made, and revokes them, with
// github.com/go-acme/lego.
//
// The design keeps every project's private key with root and the front:
//
//  1. opus-privd makes a new key for the project's site and answers only a
//     CSR for the project's names (its host name and extra host names,
//     which privd checks with the same rules as the API: internal/names).
//  2. opusd (this package) sends the CSR to the CA, proving control of
//     each name by HTTP-01 through the front: it writes the CA's token in
//     its webroot (config.ACMEWebroot, the opus user's, never a tenant's)
//     and every project's HTTP vhost serves /.well-known/acme-challenge/
//     from there, never from the project's backend.
//  3. opusd hands the issued chain to privd's InstallSite without a key;
//     privd checks that it is for the key it made and names exactly the
//     site's names (internal/cert) before the front serves it.
//
// opusd's ACME account key is its own (BaseDir/acme/account.key, 0600).
// The schedule (renewal when a third of a certificate's lifetime is left,
// retries with exponential backoff and jitter) is in schedule.go.
package acme

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/lego"
	legolog "github.com/go-acme/lego/v5/log"
	"github.com/go-acme/lego/v5/providers/http/webroot"
	"github.com/go-acme/lego/v5/registration"

	"github.com/opus-hosting/opus/internal/atomicfile"
	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/config"
)

// Bounds of a conversation with the CA.
const (
	// requestTimeout bounds each HTTP request to the CA.
	requestTimeout = 30 * time.Second
	// ObtainTimeout bounds one whole order: new order, validation of every
	// name (the CA connects to the front), finalization, download.
	ObtainTimeout = 3 * time.Minute
	// RevokeTimeout bounds a revocation (a destroy waits for it).
	RevokeTimeout = 20 * time.Second
	// maxBundle bounds the CA bundle file read.
	maxBundle = 1 << 20
)

// Client obtains and revokes certificates from one ACME CA. Its methods
// are safe for concurrent use; the account is registered once, at the
// first call that needs it.
type Client struct {
	cfg  config.Config
	log  *slog.Logger
	http *http.Client

	mu   sync.Mutex
	user *user
	lego *lego.Client
}

// user is opusd's ACME account.
type user struct {
	email string
	key   crypto.Signer
	reg   *acme.ExtendedAccount
}

func (u *user) GetEmail() string                       { return u.email }
func (u *user) GetRegistration() *acme.ExtendedAccount { return u.reg }
func (u *user) GetPrivateKey() crypto.Signer           { return u.key }

// New returns the client of cfg's CA (cfg.ACME() must be true), with the
// account key loaded from cfg.BaseDir/acme, or made and kept there. It
// does not contact the CA.
func New(cfg config.Config, log *slog.Logger) (*Client, error) {
	if !cfg.ACME() {
		return nil, errors.New("acme: no acme_directory configured")
	}
	if log == nil {
		log = slog.Default()
	}
	// lego logs through its own default logger (stdout, text): send it to
	// opusd's, marked as lego's.
	legolog.SetDefault(log.With("component", "lego"))
	roots, err := caPool(cfg.ACMECABundle)
	if err != nil {
		return nil, err
	}
	key, err := accountKey(AccountKeyPath(cfg.BaseDir))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.ACMEChallengeDir(), 0o755); err != nil {
		return nil, fmt.Errorf("acme: webroot: %w", err)
	}
	hc := &http.Client{
		Timeout: requestTimeout,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: requestTimeout,
			TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		},
	}
	return &Client{cfg: cfg, log: log, http: hc, user: &user{email: cfg.ACMEEmail, key: key}}, nil
}

// Dir is opusd's ACME directory under base: the account key and the
// webroot (which the front must traverse, hence not 0700).
func Dir(base string) string { return filepath.Join(base, "acme") }

// AccountKeyPath is where opusd keeps its ACME account key.
func AccountKeyPath(base string) string { return filepath.Join(Dir(base), "account.key") }

// accountKey loads the account key at path, or makes and keeps one.
func accountKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		k, err := cert.ParseKey(data)
		if err != nil {
			return nil, fmt.Errorf("acme: account key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("acme: account key: %w", err)
	}
	// 0711: the front traverses it to the webroot, nobody lists it.
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	if err := os.Chmod(filepath.Dir(path), 0o711); err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	k, err := cert.NewKey(2)
	if err != nil {
		return nil, fmt.Errorf("acme: account key: %w", err)
	}
	data, err = cert.KeyPEM(k)
	if err != nil {
		return nil, fmt.Errorf("acme: account key: %w", err)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("acme: account key: %w", err)
	}
	return k, nil
}

// caPool is the roots trusted for the CA's own HTTPS: the bundle's
// certificates, or the system's (nil) without one.
func caPool(bundle string) (*x509.CertPool, error) {
	if bundle == "" {
		return nil, nil
	}
	f, err := os.Open(bundle)
	if err != nil {
		return nil, fmt.Errorf("acme: acme_ca_bundle: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBundle+1))
	if err != nil {
		return nil, fmt.Errorf("acme: acme_ca_bundle: %w", err)
	}
	if len(data) > maxBundle {
		return nil, fmt.Errorf("acme: acme_ca_bundle %s is larger than %d bytes", bundle, maxBundle)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("acme: acme_ca_bundle %s holds no PEM certificate", bundle)
	}
	return pool, nil
}

// client returns the lego client, registering the account first (once).
func (c *Client) client(ctx context.Context) (*lego.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lego != nil {
		return c.lego, nil
	}
	lc := lego.NewConfig(c.user)
	lc.CADirURL = c.cfg.ACMEDirectory
	lc.HTTPClient = c.http
	lc.UserAgent = "opus"
	cl, err := lego.NewClient(lc)
	if err != nil {
		return nil, fmt.Errorf("the ACME CA at %s: %w", c.cfg.ACMEDirectory, err)
	}
	wr, err := webroot.NewHTTPProvider(c.cfg.ACMEWebroot())
	if err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	if err := cl.Challenge.SetHTTP01Provider(wr); err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	// Registering with a known key answers the existing account.
	reg, err := cl.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
	if err != nil {
		return nil, fmt.Errorf("registering with the ACME CA at %s: %w", c.cfg.ACMEDirectory, err)
	}
	c.user.reg = reg
	c.lego = cl
	c.log.Info("ACME account ready", "directory", c.cfg.ACMEDirectory, "account", reg.Location)
	return cl, nil
}

// Obtain asks the CA for a certificate for the CSR (DER, made by privd
// for names), proving each name by HTTP-01 through the front, and returns
// the issued chain (leaf first) as PEM. It checks the chain before
// returning it: it parses, its leaf is for the CSR's key and names
// exactly names.
func (c *Client) Obtain(ctx context.Context, csrDER []byte, names []string) ([]byte, error) {
	csr, err := cert.ParseRequest(csrDER, names)
	if err != nil {
		return nil, fmt.Errorf("acme: privd's %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, ObtainTimeout)
	defer cancel()
	cl, err := c.client(ctx)
	if err != nil {
		return nil, err
	}
	res, err := cl.Certificate.ObtainForCSR(ctx, certificate.ObtainForCSRRequest{CSR: csr, Bundle: true})
	if err != nil {
		return nil, fmt.Errorf("the ACME CA refused or failed: %w", err)
	}
	chain, err := cert.ParseChain(res.Certificate)
	if err != nil {
		return nil, fmt.Errorf("the ACME CA's certificate: %w", err)
	}
	pub, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(chain[0].PublicKey) {
		return nil, errors.New("the ACME CA's certificate is not for the requested key")
	}
	if err := cert.CheckNames(chain[0], names); err != nil {
		return nil, fmt.Errorf("the ACME CA's certificate: %w", err)
	}
	return res.Certificate, nil
}

// Revoke asks the CA to revoke certPEM's leaf (a destroyed project's),
// with opusd's account, which ordered it. It is bounded by RevokeTimeout.
func (c *Client) Revoke(ctx context.Context, certPEM []byte) error {
	ctx, cancel := context.WithTimeout(ctx, RevokeTimeout)
	defer cancel()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return errors.New("acme: revoke: no certificate")
	}
	cl, err := c.client(ctx)
	if err != nil {
		return err
	}
	// Reason 5, cessationOfOperation: the site is gone.
	reason := uint(5)
	if err := cl.Certificate.RevokeWithReason(ctx, pem.EncodeToMemory(b), &reason); err != nil {
		return fmt.Errorf("revoking at the ACME CA: %w", err)
	}
	return nil
}
