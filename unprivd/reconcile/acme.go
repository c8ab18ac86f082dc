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
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/acme"
	"github.com/opus-hosting/opus/unprivd/store"
)

// CertACME is the kind of a certificate from the host's ACME CA.
const CertACME = "acme"

// Issuer obtains and revokes certificates at the ACME CA (implemented by
// *acme.Client).
type Issuer interface {
	// Obtain returns the chain the CA issued for the CSR (DER), whose
	// leaf names exactly names.
	Obtain(ctx context.Context, csr []byte, names []string) ([]byte, error)
	// Revoke revokes the chain's leaf.
	Revoke(ctx context.Context, certPEM []byte) error
}

// ACMECertPath is where opusd keeps the chain the CA issued for project
// (public; its key is privd's alone), so that every deploy installs it
// again and a destroy can revoke it.
func ACMECertPath(base, project string) string {
	return filepath.Join(acme.Dir(base), "certs", project+".crt")
}

// keptACME loads the project's kept ACME chain and returns it with its
// leaf when it can serve now: it parses, names exactly names, is valid at
// now and passes the TLS security level (what privd checks too, but for
// the key, which privd alone holds). Otherwise it says why not.
func keptACME(t *Task, names []string, now time.Time) ([]byte, *x509.Certificate, error) {
	data, err := readKept(ACMECertPath(t.opt.BaseDir, t.Project.Name))
	if err != nil {
		return nil, nil, err
	}
	chain, err := cert.ParseChain(data)
	if err != nil {
		return nil, nil, err
	}
	leaf := chain[0]
	if err := cert.CheckNames(leaf, names); err != nil {
		return nil, nil, err
	}
	if now.Before(leaf.NotBefore) || !now.Before(leaf.NotAfter) {
		return nil, nil, fmt.Errorf("the certificate from the ACME CA is valid from %s to %s only",
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := cert.CheckLevel(chain, t.opt.TLSSecurityLevel); err != nil {
		return nil, nil, err
	}
	return data, leaf, nil
}

// readKept reads a file of opusd's own directory, bounded.
func readKept(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > cert.MaxPEM {
		return nil, fmt.Errorf("%s is not a regular file of at most %d bytes", path, cert.MaxPEM)
	}
	return os.ReadFile(path)
}

// siteNames are the names of the project's site: its host name, then its
// extra host names.
func siteNames(t *Task) []string {
	return append([]string{t.ServerName()}, t.Project.Spec.Settings.Hosts...)
}

// acmeWanted reports whether the project's certificate should come from
// the ACME CA: ACME is on, the owner gave none, and the project is
// deployed and staying.
func (r *Reconciler) acmeWanted(p *store.Project) bool {
	return r.opt.ACME != nil && p.Spec.Certificate == nil && !p.Deleting &&
		p.Status.ObservedGeneration > 0 && p.Status.Phase == store.PhaseReady
}

// acmeDue reports whether it is time to ask the CA for p's certificate:
// it has none from the CA yet and no try is scheduled, or the one
// scheduled (renewal or retry) is due.
func acmeDue(p *store.Project, now time.Time) bool {
	c := p.Status.Certificate
	if c.RenewAt.IsZero() {
		return true
	}
	return !now.Before(c.RenewAt)
}

// NudgeACME makes the renewal loop look at the projects now (after a
// run: a new project wants its first certificate).
func (r *Reconciler) NudgeACME() {
	if r.acmeNudge == nil {
		return
	}
	select {
	case r.acmeNudge <- struct{}{}:
	default:
	}
}

// renewLoop obtains every deployed project's first certificate from the
// ACME CA and renews it when a third of its lifetime is left, trying again
// after failures with backoff (acme.Backoff). It looks at the projects at
// least every ACMECheckInterval, at each project's due time, and when
// nudged; it ends with ctx.
func (r *Reconciler) renewLoop(ctx context.Context) {
	for {
		next := r.renewDue(ctx)
		wait := r.opt.ACMECheckInterval
		if !next.IsZero() {
			wait = min(wait, max(time.Until(next), time.Second))
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-r.acmeNudge:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// renewDue renews (or first obtains) the certificate of every project
// due, one after the other, and returns the earliest time one is due
// next (zero: none scheduled).
func (r *Reconciler) renewDue(ctx context.Context) time.Time {
	ps, err := r.st.ListProjects(ctx)
	if err != nil {
		r.log.Error("acme: list projects", "err", err)
		return time.Time{}
	}
	var next time.Time
	for _, p := range ps {
		if ctx.Err() != nil || r.isStopping() {
			return time.Time{}
		}
		if !r.acmeWanted(p) || !r.st.ServedHere(p) {
			continue
		}
		if acmeDue(p, r.opt.Clock.Now()) {
			if err := r.RenewCertificate(ctx, p.Name); err != nil && ctx.Err() == nil {
				r.log.Error("acme: renew", "project", p.Name, "err", err)
			}
			if p, err = r.st.GetProject(ctx, p.Name); err != nil {
				continue
			}
		}
		if at := p.Status.Certificate.RenewAt; !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	return next
}

// RenewCertificate obtains a new certificate for the project from the
// ACME CA and installs it, while no reconcile of the project runs (the
// run that would start meanwhile follows). A failure is recorded on the
// project (certificate error, next try) and its installed certificate
// keeps serving; the error returned is only for the log.
func (r *Reconciler) RenewCertificate(ctx context.Context, name string) error {
	if r.opt.ACME == nil {
		return errors.New("no ACME CA is configured (acme_directory)")
	}
	var msg string
	var err error
	xerr := r.exclusive(ctx, name, func() {
		p, gerr := r.st.GetProject(ctx, name)
		if gerr != nil {
			err = gerr
			return
		}
		if !r.acmeWanted(p) {
			msg = "not due: the project is not deployed, is going away or has its owner's certificate"
			return
		}
		t := r.task(p, r.log.With("project", name))
		msg, err = obtainACME(ctx, t, r.opt.ACME)
	})
	if xerr != nil {
		return xerr
	}
	if err == nil {
		r.log.Info("acme", "project", name, "result", msg)
	}
	return err
}

// obtainACME has privd make a key and a CSR for the project's names, has
// the CA issue a certificate for it (HTTP-01 through the front), keeps
// the chain and has privd install it beside the key and reload the front.
// Success or failure is recorded in the project's certificate status; on
// failure the certificate installed before keeps serving.
func obtainACME(ctx context.Context, t *Task, issuer Issuer) (string, error) {
	now := t.Clock.Now()
	names := siteNames(t)
	hosts := t.Project.Spec.Settings.Hosts
	leaf, err := func() (*x509.Certificate, error) {
		if err := ensureChallengeRoute(ctx, t); err != nil {
			return nil, err
		}
		res, err := t.Privd.CertificateRequest(ctx, &privdv1.CertificateRequestRequest{Project: t.Project.Name, Aliases: hosts})
		if err != nil {
			return nil, privdErr("CertificateRequest", err)
		}
		chain, err := issuer.Obtain(ctx, res.GetCsr(), names)
		if err != nil {
			return nil, err
		}
		parsed, err := cert.ParseChain(chain)
		if err != nil {
			return nil, err
		}
		// Kept before it is installed: should opusd stop between the two,
		// the next deploy installs it (privd keeps the key it is for).
		if err := os.MkdirAll(filepath.Dir(ACMECertPath(t.opt.BaseDir, t.Project.Name)), 0o700); err != nil {
			return nil, err
		}
		if err := atomicfile.Write(ACMECertPath(t.opt.BaseDir, t.Project.Name), chain, 0o600); err != nil {
			return nil, err
		}
		if _, err := t.Privd.InstallSite(ctx, &privdv1.InstallSiteRequest{Project: t.Project.Name, Aliases: hosts, CertificatePem: chain}); err != nil {
			return nil, privdErr("InstallSite", err)
		}
		rl, err := t.Privd.ReloadApache(ctx, &privdv1.ReloadApacheRequest{})
		if err != nil {
			return nil, privdErr("ReloadApache", err)
		}
		if why, ok := rl.GetRolledBack()[t.Project.Name]; ok {
			return nil, fmt.Errorf("the front could not load the new certificate and serves the previous one: %s", why)
		}
		return parsed[0], nil
	}()
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if err != nil {
		var next time.Time
		uerr := t.Update(ctx, func(p *store.Project) {
			c := &p.Status.Certificate
			c.Failures++
			if c.ErrorSince.IsZero() {
				c.ErrorSince = now
			}
			c.Error = err.Error()
			var notAfter time.Time
			if c.Kind == CertACME {
				notAfter = c.NotAfter
			}
			c.RenewAt = t.opt.ACMEBackoff.NextTry(now, c.Failures, notAfter)
			next = c.RenewAt
		})
		if uerr != nil {
			return "", uerr
		}
		return "", fmt.Errorf("no certificate from the ACME CA (next try at %s; the installed certificate keeps serving): %w",
			next.UTC().Format(time.RFC3339), err)
	}
	if err := t.Update(ctx, func(p *store.Project) {
		p.Status.Certificate = store.CertificateStatus{Kind: CertACME, NotAfter: leaf.NotAfter,
			Serial: fmt.Sprintf("%x", leaf.SerialNumber), RenewAt: acme.RenewAt(leaf.NotBefore, leaf.NotAfter)}
	}); err != nil {
		return "", err
	}
	return fmt.Sprintf("certificate from the ACME CA for %d names installed, serial %x, valid until %s",
		len(names), leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339)), nil
}

// ensureChallengeRoute makes the front answer the CA's challenges for the
// project before the first order: a site installed before ACME was turned
// on lacks the route. A project still on its self-signed certificate gets
// its site installed again with it (privd renders the route now); one
// already on a certificate from the CA was installed with ACME on.
func ensureChallengeRoute(ctx context.Context, t *Task) error {
	if t.Project.Status.Certificate.Kind != CertSelfSigned {
		return nil
	}
	if _, _, err := selfSigned(t, t.ServerName(), t.Clock.Now()); err != nil {
		return err
	}
	res, err := t.Privd.InstallSite(ctx, &privdv1.InstallSiteRequest{Project: t.Project.Name,
		Aliases: t.Project.Spec.Settings.Hosts, CertificatePem: t.certPEM, KeyPem: t.keyPEM})
	if err != nil {
		return privdErr("InstallSite", err)
	}
	if res.GetChanged() {
		if _, err := t.Privd.ReloadApache(ctx, &privdv1.ReloadApacheRequest{}); err != nil {
			return privdErr("ReloadApache", err)
		}
	}
	return nil
}

// exclusive runs fn while no reconcile run of project name is going on
// or queued, and keeps one from starting meanwhile (a Kick during fn runs
// after it). It gives up when ctx ends or the reconciler stops.
func (r *Reconciler) exclusive(ctx context.Context, name string, fn func()) error {
	for {
		r.mu.Lock()
		if r.stopping {
			r.mu.Unlock()
			return errInterrupted
		}
		if !r.running[name] && !r.queued[name] {
			r.running[name] = true
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	defer r.done(name)
	fn()
	return nil
}

// revokeACME revokes the certificate the ACME CA issued for a project
// being destroyed (the forget step), best effort: the CA being
// unreachable is logged and said, never a failed destroy.
func revokeACME(ctx context.Context, t *Task) (string, error) {
	data, err := readKept(ACMECertPath(t.opt.BaseDir, t.Project.Name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil // none: nothing to say
	}
	if err != nil {
		t.Log.Warn("acme: read the certificate to revoke", "err", err)
		return fmt.Sprintf("the certificate from the ACME CA was not revoked: %v", err), nil
	}
	if t.opt.ACME == nil {
		return "the certificate from the ACME CA was not revoked: no ACME CA is configured now (acme_directory)", nil
	}
	if err := t.opt.ACME.Revoke(ctx, data); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		t.Log.Warn("acme: revoke failed; the destroy goes on", "err", err)
		return fmt.Sprintf("the certificate from the ACME CA was not revoked (it expires by itself): %v", err), nil
	}
	return "revoked the certificate from the ACME CA", nil
}
