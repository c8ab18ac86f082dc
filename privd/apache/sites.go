package apache

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opus-hosting/opus/internal/atomicfile"
	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/names"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// DefaultReloadWindow is the least time between two graceful restarts
// (see Coalescer: a lone one runs at once, later ones within the window
// share the next). About the time a restarted mod_wsgi daemon needs to
// import Django, so that a graceful rarely kills daemons still starting.
// opusd batches a burst of deploys itself (unprivd/reconcile's reload
// gate); this window is privd's own guard against back-to-back restarts.
const DefaultReloadWindow = time.Second

// Sites installs and removes project vhosts with their TLS material and
// reloads Apache. Its methods take and return privd's proto messages so the
// gRPC service can call them directly.
type Sites struct {
	cfg    config.Config
	ctl    Control
	paths  Paths
	log    *slog.Logger
	now    func() time.Time
	reload *Coalescer[*privdv1.ReloadApacheResponse]

	// mu serialises every change to the vhost directory with configtests
	// and gracefuls, so a configtest or graceful never sees another
	// project's change before it was tested (or while it is rolled back).
	mu sync.Mutex
	// changed holds, for every project whose site Install changed since
	// the last graceful restart Apache survived, its files as they were
	// then: what a restart Apache does not survive puts back. Held by mu.
	changed map[string][]*siteFile
	// rolledBack maps each project whose site a failed restart put back,
	// and that was not installed (or removed) since, to why. Every Reload
	// reports it until then: the project's own reload may come after the
	// one that rolled it back (another project's, or a health check's).
	rolledBack map[string]string
	// checkPair is CheckPair; a test replaces it to install what privd
	// would refuse, as a hole in the check would.
	checkPair func(certPEM, keyPEM []byte, now time.Time, level int) ([]byte, []byte, error)
}

// Options tune Sites; the zero value is the production setting.
type Options struct {
	// ReloadWindow is the coalescing window (DefaultReloadWindow if 0).
	ReloadWindow time.Duration
	// Logger receives structured logs (slog.Default() if nil).
	Logger *slog.Logger
}

// NewSites returns Sites for cfg driving ctl (see New for the Control of
// cfg.ApacheMode).
func NewSites(cfg config.Config, ctl Control, opts Options) *Sites {
	if opts.ReloadWindow == 0 {
		opts.ReloadWindow = DefaultReloadWindow
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Sites{cfg: cfg, ctl: ctl, paths: Paths{Dir: cfg.ApacheDir}, log: opts.Logger, now: time.Now,
		changed: map[string][]*siteFile{}, rolledBack: map[string]string{}, checkPair: CheckPair}
	s.reload = &Coalescer[*privdv1.ReloadApacheResponse]{Window: opts.ReloadWindow, Lead: ReloadLead, Fn: s.graceful}
	return s
}

// Paths returns the directories and files Sites manages.
func (s *Sites) Paths() Paths { return s.paths }

type siteFile struct {
	path    string
	data    []byte
	mode    os.FileMode
	prev    []byte
	existed bool
}

// Install validates the request, renders the vhost routing to the
// project's backend at backend, checks that key and certificate match
// and would be served at the configured TLS security level, then writes
// certificate, key and vhost atomically and configtests. When Apache
// refuses the result, the previous files are restored (or the new ones
// removed) and the error carries Apache's message. Nothing is written when
// validation or the certificate check fails. It does not reload Apache;
// the site's files as they were are kept until a graceful restart Apache
// survives (see Reload).
func (s *Sites) Install(ctx context.Context, req *privdv1.InstallSiteRequest, backend netip.AddrPort) (*privdv1.InstallSiteResponse, error) {
	site := Site{Project: req.GetProject(), Aliases: req.GetAliases()}
	vhost, err := RenderVhost(s.cfg, site, backend)
	if err != nil {
		return nil, fmt.Errorf("install site: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	keyPEM, pending := req.GetKeyPem(), false
	if len(keyPEM) == 0 {
		// A certificate for a key privd made: find that key here, under
		// mu, so that no CertificateRequest replaces it meanwhile.
		if keyPEM, pending, err = s.ownKey(site, req.GetCertificatePem()); err != nil {
			return nil, fmt.Errorf("install site %s: %w", site.Project, err)
		}
	}
	cert, key, err := s.checkPair(req.GetCertificatePem(), keyPEM, s.now(), s.cfg.TLSSecurityLevel)
	if err != nil {
		return nil, fmt.Errorf("install site %s: %w", site.Project, err)
	}
	name := site.Project
	files := []*siteFile{
		{path: s.paths.Cert(name), data: cert, mode: 0o644},
		{path: s.paths.Key(name), data: key, mode: 0o600},
		{path: s.paths.Vhost(name), data: vhost, mode: 0o644},
	}
	if err := s.paths.ensureDirs(); err != nil {
		return nil, fmt.Errorf("install site %s: %w", name, err)
	}
	same := true
	for _, f := range files {
		f.prev, err = os.ReadFile(f.path)
		switch {
		case err == nil:
			f.existed = true
			if !bytes.Equal(f.prev, f.data) || !hasMode(f.path, f.mode) {
				same = false
			}
		case errors.Is(err, os.ErrNotExist):
			same = false
		default:
			return nil, fmt.Errorf("install site %s: read %s: %w", name, f.path, err)
		}
	}
	if same {
		delete(s.rolledBack, name)
		return &privdv1.InstallSiteResponse{Changed: false}, nil
	}
	if pending {
		// The new key is now the site's; what a failed restart puts back
		// is the site as it was, with its own key (s.changed).
		defer s.dropPendingKey(name)
	}
	for i, f := range files {
		if err := atomicfile.Write(f.path, f.data, f.mode); err != nil {
			s.restore(name, files[:i])
			return nil, fmt.Errorf("install site %s: %w", name, err)
		}
	}
	if err := s.ctl.ConfigTest(ctx); err != nil {
		s.restore(name, files)
		s.log.Warn("vhost refused by configtest, rolled back", "project", name, "err", err)
		return nil, fmt.Errorf("install site %s: rolled back: %w", name, err)
	}
	if _, ok := s.changed[name]; !ok {
		s.changed[name] = files // their prev: the site Apache last ran
	}
	delete(s.rolledBack, name)
	s.log.Info("site installed", "project", name, "aliases", len(site.Aliases))
	return &privdv1.InstallSiteResponse{Changed: true}, nil
}

// restore puts back what files held before Install, in reverse order.
func (s *Sites) restore(project string, files []*siteFile) {
	for i := len(files) - 1; i >= 0; i-- {
		f := files[i]
		var err error
		if f.existed {
			err = atomicfile.Write(f.path, f.prev, f.mode)
		} else if err = os.Remove(f.path); errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		if err != nil {
			s.log.Error("rollback failed", "project", project, "path", f.path, "err", err)
		}
	}
}

func hasMode(path string, mode os.FileMode) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().Perm() == mode
}

// Remove removes the project's vhost, key, certificate and error log, then
// configtests. Removing an absent site succeeds with removed=false. A
// removed site is never put back by a failed restart: removing cannot be
// what Apache fails on, and its owner may be gone with it.
func (s *Sites) Remove(ctx context.Context, req *privdv1.RemoveSiteRequest) (*privdv1.RemoveSiteResponse, error) {
	name := req.GetProject()
	if err := names.ValidateProject(name); err != nil {
		return nil, fmt.Errorf("remove site: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.changed, name)
	delete(s.rolledBack, name)
	removed := false
	// The vhost goes first: a vhost without its key would fail configtest.
	for _, p := range []string{s.paths.Vhost(name), s.paths.Key(name), s.paths.Cert(name), s.paths.ErrorLog(name), s.paths.PendingKey(name)} {
		err := os.Remove(p)
		switch {
		case err == nil:
			removed = true
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("remove site %s: %w", name, err)
		}
	}
	if removed {
		if err := s.ctl.ConfigTest(ctx); err != nil {
			return nil, fmt.Errorf("remove site %s: removed, but configtest fails: %w", name, err)
		}
		s.log.Info("site removed", "project", name)
	}
	return &privdv1.RemoveSiteResponse{Removed: removed}, nil
}

// Reload gracefully restarts Apache, starting it when it is down; it
// returns once a graceful restart that began after the call is done.
// Calls within the reload window share one graceful restart. When Apache
// does not survive the restart, the sites changed since the last one it
// survived are put back as they were and Apache is started again: the
// answer is an error only if Apache does not come back even so. Every
// answer names the projects whose sites were put back and not installed
// again since (rolled_back), each with its reason.
func (s *Sites) Reload(ctx context.Context, _ *privdv1.ReloadApacheRequest) (*privdv1.ReloadApacheResponse, error) {
	resp, err := s.reload.Do(ctx)
	if err != nil {
		return nil, fmt.Errorf("reload apache: %w", err)
	}
	return resp, nil
}

func (s *Sites) graceful(ctx context.Context) (*privdv1.ReloadApacheResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// mod_ssl reports a site it cannot load in that site's own error log.
	logs := map[string]*restartWatch{}
	for name := range s.changed {
		logs[name] = watchLog(s.paths.ErrorLog(name))
		logs[name].emergOnly = true
	}
	pid, started, err := s.ctl.Graceful(ctx)
	if err == nil {
		clear(s.changed)
		s.log.Info("apache reloaded", "master_pid", pid, "started", started)
		return &privdv1.ReloadApacheResponse{Started: started, MasterPid: int32(pid), RolledBack: s.rolledBackAnswer()}, nil
	}
	if !errors.Is(err, ErrNotServing) || len(s.changed) == 0 {
		// Either Apache still serves what it served (a configtest
		// failed: nothing was signalled), or nothing changed since it
		// last came through a restart: there is nothing to put back.
		s.log.Error("apache graceful failed", "err", err)
		return nil, err
	}
	projects := slices.Sorted(maps.Keys(s.changed))
	for _, name := range projects {
		s.restore(name, s.changed[name])
		// Each reason goes to its project's owner alone: Apache's lines
		// about that site, never another project's.
		w := logs[name]
		w.poll(pid)
		if len(w.lines) > 0 {
			s.rolledBack[name] = "Apache could not load this project's site: " + strings.Join(w.lines, "; ")
		} else {
			s.rolledBack[name] = "Apache did not survive the graceful restart after this project's site changed, and named no site in this project's error log"
		}
	}
	clear(s.changed)
	s.log.Error("apache did not survive the graceful restart; restored the sites changed since the last one it survived",
		"projects", strings.Join(projects, ","), "err", err)
	pid, started, err2 := s.ctl.Graceful(ctx)
	if err2 != nil {
		s.log.Error("apache is down: the restored configuration did not start either", "err", err2)
		return nil, fmt.Errorf("%w; the previous sites of %s were restored, but Apache did not start with them either: %w",
			err, strings.Join(projects, ", "), err2)
	}
	s.log.Warn("apache serves again with the restored sites", "master_pid", pid, "started", started, "projects", strings.Join(projects, ","))
	return &privdv1.ReloadApacheResponse{Started: started, MasterPid: int32(pid), RolledBack: s.rolledBackAnswer()}, nil
}

// rolledBackAnswer is a copy of rolledBack for an answer (nil if empty).
func (s *Sites) rolledBackAnswer() map[string]string {
	if len(s.rolledBack) == 0 {
		return nil
	}
	return maps.Clone(s.rolledBack)
}

// CertificateRequest makes a new key for the project's site and keeps it
// as the site's pending key (root:root 0600, replacing an earlier pending
// one), then returns a CSR for the site's names (the server name first,
// then the aliases, each validated as for Install) signed by it. The key
// is used when Install is given a certificate for it without a key, and
// never leaves privd: only Apache's master reads it once it is installed.
func (s *Sites) CertificateRequest(ctx context.Context, req *privdv1.CertificateRequestRequest) (*privdv1.CertificateRequestResponse, error) {
	site, err := Site{Project: req.GetProject(), Aliases: req.GetAliases()}.normalize(s.cfg)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	key, err := cert.NewKey(s.cfg.TLSSecurityLevel)
	if err != nil {
		return nil, fmt.Errorf("certificate request for %s: %w", site.Project, err)
	}
	keyPEM, err := cert.KeyPEM(key)
	if err != nil {
		return nil, fmt.Errorf("certificate request for %s: %w", site.Project, err)
	}
	csr, err := cert.Request(key, site.names(s.cfg))
	if err != nil {
		return nil, fmt.Errorf("certificate request for %s: %w", site.Project, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.paths.ensureDirs(); err != nil {
		return nil, fmt.Errorf("certificate request for %s: %w", site.Project, err)
	}
	if err := atomicfile.Write(s.paths.PendingKey(site.Project), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("certificate request for %s: %w", site.Project, err)
	}
	s.log.Info("new key and certificate request", "project", site.Project, "names", len(site.Aliases)+1)
	return &privdv1.CertificateRequestResponse{Csr: csr}, nil
}

// ownKey finds the key privd made that certPEM's leaf is for: the site's
// pending key (a new certificate from the CA) or its installed one (the
// same certificate installed again). The leaf must name exactly the
// site's names. Held by mu.
func (s *Sites) ownKey(site Site, certPEM []byte) (keyPEM []byte, pending bool, err error) {
	site, err = site.normalize(s.cfg)
	if err != nil {
		return nil, false, err
	}
	chain, err := cert.ParseChain(certPEM)
	if err != nil {
		return nil, false, fmt.Errorf("tls: %w", err)
	}
	leaf := chain[0]
	if err := cert.CheckNames(leaf, site.names(s.cfg)); err != nil {
		return nil, false, fmt.Errorf("tls: %w", err)
	}
	for _, c := range []struct {
		path    string
		pending bool
	}{{s.paths.PendingKey(site.Project), true}, {s.paths.Key(site.Project), false}} {
		data, err := readBounded(c.path, cert.MaxPEM)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		key, err := cert.ParseKey(data)
		if err != nil {
			continue // not ours to judge here: an owner's key, say
		}
		if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(leaf.PublicKey) {
			return data, c.pending, nil
		}
	}
	return nil, false, fmt.Errorf("tls: %w: the certificate is for no key privd made for %s (ask for a new certificate request)", cert.ErrInvalid, site.Project)
}

// dropPendingKey removes the site's pending key once Install made it the
// site's key. Held by mu.
func (s *Sites) dropPendingKey(project string) {
	if err := os.Remove(s.paths.PendingKey(project)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("remove pending key", "project", project, "err", err)
	}
}

// readBounded reads at most max bytes of the regular file at path,
// refusing a link or anything larger.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > max {
		return nil, fmt.Errorf("%s is not a regular file of at most %d bytes", path, max)
	}
	return io.ReadAll(io.LimitReader(f, max+1))
}
