package reconcile

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opus-hosting/opus/internal/atomicfile"
	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/unprivd/snapshot"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Certificate kinds recorded in the status.
const (
	CertSelfSigned = "self-signed"
	CertOwner      = "owner"
)

// TLSDir is where opusd keeps its self-signed certificates and keys, so a
// redeploy installs the same certificate (and Apache need not reload).
func TLSDir(base string) string { return filepath.Join(base, "tls") }

func certPaths(base, project string) (crt, key string) {
	d := TLSDir(base)
	return filepath.Join(d, project+".crt"), filepath.Join(d, project+".key")
}

// stepCertificate picks the certificate the vhost gets: the owner's when
// set, else with ACME on the one the CA issued (kept by opusd; its key is
// privd's) while it names the project's names and is valid, else a
// self-signed one made once and kept until 30 days before it expires. A
// project's first certificate from the CA, and every renewal, comes from
// the renewal loop (acme.go) once the project serves: HTTP-01 needs its
// site on the front.
func stepCertificate(ctx context.Context, t *Task) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	now := t.Clock.Now()
	host := t.ServerName()
	var (
		kind string
		leaf *x509.Certificate
		msg  string
		err  error
	)
	if oc := t.Project.Spec.Certificate; oc != nil {
		kind = CertOwner
		leaf, err = cert.Check(oc.CertificatePEM, oc.KeyPEM, now, t.opt.TLSSecurityLevel)
		if err != nil {
			return "", fmt.Errorf("the owner's certificate: %w", err)
		}
		t.certPEM, t.keyPEM = oc.CertificatePEM, oc.KeyPEM
		msg = "owner's certificate"
	} else if chain, acmeLeaf, why := acmeChoice(t, now); acmeLeaf != nil {
		kind, leaf = CertACME, acmeLeaf
		// No key: privd holds it (InstallSite finds it).
		t.certPEM, t.keyPEM = chain, nil
		msg = "certificate from the ACME CA"
	} else {
		kind = CertSelfSigned
		leaf, msg, err = selfSigned(t, host, now)
		if err != nil {
			return "", err
		}
		if why != "" {
			msg += " (" + why + ")"
		}
	}
	msg += fmt.Sprintf(" for %s, valid until %s", host, leaf.NotAfter.UTC().Format(time.DateOnly))
	cur := t.Project.Status.Certificate
	// Nothing is asked of the CA for an owner's certificate, nor without
	// ACME: what was recorded about the CA goes.
	plain := kind == CertOwner || t.opt.ACME == nil
	if cur.Kind != kind || !cur.NotAfter.Equal(leaf.NotAfter) || plain && hasACMEStatus(cur) {
		if err := t.Update(ctx, func(p *store.Project) {
			c := &p.Status.Certificate
			c.Kind, c.NotAfter = kind, leaf.NotAfter
			switch {
			case plain:
				*c = store.CertificateStatus{Kind: kind, NotAfter: leaf.NotAfter}
			case kind == CertSelfSigned && cur.Kind == CertACME:
				// The names changed: the renewal loop asks for them now.
				c.Serial, c.RenewAt = "", time.Time{}
			}
		}); err != nil {
			return "", err
		}
	}
	return msg, nil
}

// hasACMEStatus reports whether c records anything about the ACME CA.
func hasACMEStatus(c store.CertificateStatus) bool {
	return c.Serial != "" || !c.RenewAt.IsZero() || c.Error != "" || !c.ErrorSince.IsZero() || c.Failures != 0
}

// acmeChoice returns the kept certificate from the ACME CA when ACME is
// on and it can serve the project's names now; otherwise why not ("" when
// there is none to speak of).
func acmeChoice(t *Task, now time.Time) ([]byte, *x509.Certificate, string) {
	if t.opt.ACME == nil {
		return nil, nil, ""
	}
	chain, leaf, err := keptACME(t, siteNames(t), now)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil, "until the ACME CA issues one"
	case err != nil:
		return nil, nil, fmt.Sprintf("until the ACME CA issues a new one: %v", err)
	}
	return chain, leaf, ""
}

// selfSigned loads the kept self-signed pair of the project, or makes and
// keeps a new one when there is none, it does not name exactly the host
// and the owner's extra host names, or it expires within renewBefore.
func selfSigned(t *Task, host string, now time.Time) (*x509.Certificate, string, error) {
	names := append([]string{host}, t.Project.Spec.Settings.Hosts...)
	crtPath, keyPath := certPaths(t.opt.BaseDir, t.Project.Name)
	crt, err1 := os.ReadFile(crtPath)
	key, err2 := os.ReadFile(keyPath)
	why := "made a self-signed certificate"
	if err1 == nil && err2 == nil {
		leaf, err := cert.Check(crt, key, now, t.opt.TLSSecurityLevel)
		switch {
		case err != nil:
			why = fmt.Sprintf("replaced the kept self-signed certificate (%v)", err)
		case leaf.VerifyHostname(host) != nil || !cert.SameNames(leaf.DNSNames, names):
			why = "replaced the kept self-signed certificate (other host names)"
		case leaf.NotAfter.Sub(now) < renewBefore:
			why = "renewed the self-signed certificate (expiring)"
		default:
			t.certPEM, t.keyPEM = crt, key
			return leaf, "kept self-signed certificate", nil
		}
	} else {
		for _, err := range []error{err1, err2} {
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, "", fmt.Errorf("self-signed certificate: %w", err)
			}
		}
	}
	crt, key, err := cert.SelfSigned(names, now, selfSignedValidity, t.opt.TLSSecurityLevel)
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(TLSDir(t.opt.BaseDir), 0o700); err != nil {
		return nil, "", fmt.Errorf("self-signed certificate: %w", err)
	}
	// The key first: a certificate without its key is never kept.
	if err := atomicfile.Write(keyPath, key, 0o600); err != nil {
		return nil, "", fmt.Errorf("self-signed certificate: %w", err)
	}
	if err := atomicfile.Write(crtPath, crt, 0o600); err != nil {
		return nil, "", fmt.Errorf("self-signed certificate: %w", err)
	}
	leaf, err := cert.Check(crt, key, now, t.opt.TLSSecurityLevel)
	if err != nil {
		return nil, "", fmt.Errorf("self-signed certificate: %w", err)
	}
	t.certPEM, t.keyPEM = crt, key
	return leaf, why, nil
}

// stepForget revokes the project's certificate from the ACME CA (best
// effort), then removes opusd's own copies of the project's certificates
// and self-signed key and its data snapshots: the last traces of a
// project outside its record.
func stepForget(ctx context.Context, t *Task) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	revoked, err := revokeACME(ctx, t)
	if err != nil {
		return "", err
	}
	crt, key := certPaths(t.opt.BaseDir, t.Project.Name)
	n := 0
	for _, p := range []string{key, crt, ACMECertPath(t.opt.BaseDir, t.Project.Name)} {
		err := os.Remove(p)
		switch {
		case err == nil:
			n++
		case !errors.Is(err, fs.ErrNotExist):
			return "", fmt.Errorf("forget: %w", err)
		}
	}
	if err := snapshot.NewDir(t.opt.BaseDir).RemoveAll(t.Project.Name); err != nil {
		return "", fmt.Errorf("forget data snapshots: %w", err)
	}
	msg := "removed the kept certificate and key and the data snapshots"
	if n == 0 {
		msg = "no certificate kept; data snapshots removed"
	}
	if revoked != "" {
		msg = revoked + "; " + msg
	}
	return msg, nil
}
