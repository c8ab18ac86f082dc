package reconcile

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/cert/certtest"
	"github.com/opus-hosting/opus/unprivd/acme"
	"github.com/opus-hosting/opus/unprivd/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeIssuer is an ACME CA that signs whatever CSR it gets, for the names
// it asks for, valid for life from the reconciler's clock; err fails the
// next orders, revokeErr the revocations.
type fakeIssuer struct {
	mu        sync.Mutex
	ca        *certtest.Issuer
	clock     *fakeClock
	life      time.Duration
	err       error
	revokeErr error
	obtained  int
	revoked   [][]byte
}

func newFakeIssuer(t *testing.T, clock *fakeClock) *fakeIssuer {
	t.Helper()
	key, err := cert.NewKey(2)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certtest.CA("fake ACME CA", key, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeIssuer{ca: ca, clock: clock, life: 90 * 24 * time.Hour}
}

func (f *fakeIssuer) Obtain(_ context.Context, csrDER []byte, names []string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if _, err := cert.ParseRequest(csrDER, names); err != nil {
		return nil, err
	}
	now := f.clock.peek()
	chain, err := certtest.ForRequest(csrDER, names, f.ca, now, now.Add(f.life))
	if err != nil {
		return nil, err
	}
	f.obtained++
	return chain, nil
}

func (f *fakeIssuer) Revoke(_ context.Context, certPEM []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, certPEM)
	return f.revokeErr
}

func (f *fakeIssuer) set(err, revokeErr error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.revokeErr = err, revokeErr
}

// peek is the clock's time without advancing it; advance moves it on.
func (c *fakeClock) peek() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (e *env) certStatus(t *testing.T, name string) store.CertificateStatus {
	t.Helper()
	p, err := e.st.GetProject(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return p.Status.Certificate
}

// installed is the certificate and key the fake privd has for name's site.
func (e *env) installed(name string) (certPEM, keyPEM []byte) {
	e.privd.mu.Lock()
	defer e.privd.mu.Unlock()
	s := e.privd.sites[name]
	if s == nil {
		return nil, nil
	}
	return s.GetCertificatePem(), s.GetKeyPem()
}

// TestACMEIssueRenewFailRevoke drives the ACME flow of a project against a
// fake CA: the first certificate once the project serves, installed
// without a key; renewal at a third of the lifetime; failures recorded
// with backoff while the installed certificate stays; success clearing
// them; deploys keeping the CA's certificate; revocation on destroy, and
// a destroy that goes on when revoking fails.
func TestACMEIssueRenewFailRevoke(t *testing.T) {
	e := newEnv(t)
	ca := newFakeIssuer(t, e.clock)
	e.tweak = func(o *Options) {
		o.ACME = ca
		o.ACMECheckInterval = time.Hour // the test calls RenewCertificate itself
		o.ACMEBackoff = acme.Backoff{Rand: func() float64 { return 0.5 }}
	}
	r := e.start(t, 1)
	ctx := context.Background()

	// The first certificate: the run's end nudges the renewal loop.
	id := e.create(t, "blog")
	r.Kick("blog")
	if op := e.wait(t, id); op.State != store.OpSucceeded {
		t.Fatalf("create: %s %s", op.State, op.Error)
	}
	if msg := stepMessage(e.wait(t, id), "certificate"); !strings.Contains(msg, "self-signed") || !strings.Contains(msg, "until the ACME CA issues one") {
		t.Errorf("the first deploy's certificate step says %q, want self-signed until the CA issues one", msg)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.certStatus(t, "blog").Kind != CertACME {
		if time.Now().After(deadline) {
			t.Fatalf("no certificate from the CA after the deploy: %+v", e.certStatus(t, "blog"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	first := e.certStatus(t, "blog")
	crt, key := e.installed("blog")
	if len(key) != 0 {
		t.Error("opusd sent a key with the CA's certificate")
	}
	chain, err := cert.ParseChain(crt)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if first.Serial != leaf.SerialNumber.Text(16) || !first.NotAfter.Equal(leaf.NotAfter) || first.Error != "" {
		t.Errorf("status %+v does not describe the installed certificate %x", first, leaf.SerialNumber)
	}
	if want := leaf.NotBefore.Add(60 * 24 * time.Hour); !first.RenewAt.Equal(want) {
		t.Errorf("renewal at %s, want %s (a third of 90 days before expiry)", first.RenewAt, want)
	}
	if kept, err := os.ReadFile(ACMECertPath(e.base, "blog")); err != nil || !bytes.Equal(kept, crt) {
		t.Errorf("kept chain %v: not the installed one", err)
	}
	// Not due yet: the loop leaves it, and knows when it is.
	if next := r.renewDue(ctx); !next.Equal(first.RenewAt) || ca.obtained != 1 {
		t.Errorf("renewDue before the renewal time: next %s, %d orders; want %s, 1", next, ca.obtained, first.RenewAt)
	}

	// Due, and the CA fails: recorded, backed off, the old certificate stays.
	e.clock.advance(61 * 24 * time.Hour)
	ca.set(errors.New("the CA is down"), nil)
	if err := r.RenewCertificate(ctx, "blog"); err == nil || !strings.Contains(err.Error(), "the CA is down") {
		t.Fatalf("RenewCertificate with the CA down = %v", err)
	}
	st := e.certStatus(t, "blog")
	if st.Error != "the CA is down" || st.Failures != 1 || st.Kind != CertACME || st.Serial != first.Serial {
		t.Errorf("after a failure: %+v", st)
	}
	if got := st.RenewAt.Sub(st.ErrorSince); got != time.Minute {
		t.Errorf("first retry %s after the failure, want 1m", got)
	}
	if c, _ := e.installed("blog"); !bytes.Equal(c, crt) {
		t.Error("a failed renewal changed the installed certificate")
	}
	since := st.ErrorSince
	before := e.clock.peek()
	if err := r.RenewCertificate(ctx, "blog"); err == nil {
		t.Fatal("the second try succeeded with the CA down")
	}
	st = e.certStatus(t, "blog")
	if st.Failures != 2 || !st.ErrorSince.Equal(since) {
		t.Errorf("after a second failure: %+v (failing since %s)", st, since)
	}
	if got := st.RenewAt.Sub(before); got < 2*time.Minute || got > 2*time.Minute+10*time.Second {
		t.Errorf("second retry %s after the try, want 2m", got)
	}

	// The CA is back: a new certificate, the error gone.
	ca.set(nil, nil)
	if err := r.RenewCertificate(ctx, "blog"); err != nil {
		t.Fatal(err)
	}
	st = e.certStatus(t, "blog")
	crt2, _ := e.installed("blog")
	if st.Error != "" || st.Failures != 0 || !st.ErrorSince.IsZero() || st.Serial == first.Serial || bytes.Equal(crt2, crt) {
		t.Errorf("after the CA came back: %+v", st)
	}

	// A deploy installs the CA's certificate again, still without a key.
	id = e.mutate(t, "blog", store.OpUpdateSettings)
	r.Kick("blog")
	op := e.wait(t, id)
	if msg := stepMessage(op, "certificate"); !strings.HasPrefix(msg, "certificate from the ACME CA") {
		t.Errorf("a deploy's certificate step says %q", msg)
	}
	if c, k := e.installed("blog"); !bytes.Equal(c, crt2) || len(k) != 0 {
		t.Error("a deploy did not keep the CA's certificate")
	}

	// Destroy revokes it; a failing revocation does not stop a destroy.
	id = e.mutate(t, "blog", store.OpDelete)
	r.Kick("blog")
	if op := e.wait(t, id); op.State != store.OpSucceeded || !strings.Contains(stepMessage(op, "forget"), "revoked") {
		t.Fatalf("destroy: %s %q, forget: %q", op.State, op.Error, stepMessage(op, "forget"))
	}
	if len(ca.revoked) != 1 || !bytes.Equal(ca.revoked[0], crt2) {
		t.Errorf("revoked %d certificates, want the installed one", len(ca.revoked))
	}
	if _, err := os.Stat(ACMECertPath(e.base, "blog")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kept chain after destroy: %v", err)
	}

	id = e.create(t, "shop")
	r.Kick("shop")
	e.wait(t, id)
	for e.certStatus(t, "shop").Kind != CertACME {
		time.Sleep(20 * time.Millisecond)
	}
	ca.set(nil, errors.New("the CA is unreachable"))
	id = e.mutate(t, "shop", store.OpDelete)
	r.Kick("shop")
	op = e.wait(t, id)
	if op.State != store.OpSucceeded || !strings.Contains(stepMessage(op, "forget"), "not revoked") {
		t.Fatalf("destroy with the CA unreachable: %s %q, forget: %q", op.State, op.Error, stepMessage(op, "forget"))
	}
}

// TestACMENamesChange: when the project's names change, the CA's
// certificate for the old names is not installed; the project serves a
// self-signed one for the new names until the CA issues one for them.
func TestACMENamesChange(t *testing.T) {
	e := newEnv(t)
	ca := newFakeIssuer(t, e.clock)
	e.tweak = func(o *Options) { o.ACME, o.ACMECheckInterval = ca, time.Hour }
	r := e.start(t, 1)
	id := e.create(t, "blog")
	r.Kick("blog")
	e.wait(t, id)
	for e.certStatus(t, "blog").Kind != CertACME {
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := e.st.UpdateProject(context.Background(), "blog", func(p *store.Project) error {
		p.Spec.Settings.Hosts = []string{"www.blog.example"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	id = e.mutate(t, "blog", store.OpUpdateSettings)
	r.Kick("blog")
	op := e.wait(t, id)
	if msg := stepMessage(op, "certificate"); !strings.Contains(msg, "self-signed") {
		t.Fatalf("certificate step after a names change: %q", msg)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, k := e.installed("blog")
		if len(k) == 0 {
			chain, err := cert.ParseChain(c)
			if err != nil {
				t.Fatal(err)
			}
			if err := cert.CheckNames(chain[0], []string{"blog" + testSuffix, "www.blog.example"}); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no certificate from the CA for the new names")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestACMEKeptCertificateRefused: when privd no longer holds the key of
// the CA's certificate opusd kept (a failed graceful restart put the
// site's previous key back), a deploy serves a self-signed certificate
// instead of failing, and the renewal loop gets a new one from the CA.
func TestACMEKeptCertificateRefused(t *testing.T) {
	e := newEnv(t)
	ca := newFakeIssuer(t, e.clock)
	e.tweak = func(o *Options) { o.ACME, o.ACMECheckInterval = ca, time.Hour }
	r := e.start(t, 1)
	id := e.create(t, "blog")
	r.Kick("blog")
	e.wait(t, id)
	for e.certStatus(t, "blog").Kind != CertACME {
		time.Sleep(20 * time.Millisecond)
	}
	first := e.certStatus(t, "blog")
	e.privd.mu.Lock()
	e.privd.failOnce["InstallSite"] = status.Error(codes.InvalidArgument, "install site blog: tls: the certificate is for no key privd made for blog")
	e.privd.mu.Unlock()
	id = e.mutate(t, "blog", store.OpUpdateSettings)
	r.Kick("blog")
	if op := e.wait(t, id); op.State != store.OpSucceeded {
		t.Fatalf("deploy with the kept certificate refused: %s %q", op.State, op.Error)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := e.certStatus(t, "blog")
		if st.Kind == CertACME && st.Serial != first.Serial {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new certificate from the CA after the refusal: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, k := e.installed("blog"); len(k) != 0 {
		t.Error("the new certificate from the CA went with a key")
	}
}
