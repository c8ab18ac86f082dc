// Package drift compares what opusd's store says exists with what is on the
// host, and reports every difference: a project user, virtual host,
// backend, project directory or certificate that no project owns (an orphan
// a crash or a hand edit left behind), a deployed project missing one of
// them, and a deployed project whose backend is down.
//
// It also watches Opus's uid range (project_uids): an account in it that is
// no project's, and processes or files in /tmp of an id of the range that no
// project has now (what a destroyed project left behind).
//
// It only reads: /etc/passwd and /etc/group, privd's vhost and backend
// directories (world-readable), opusd's own base directory, /proc and the top level of
// the shared temporary directories. Fixing drift is the reconciler's job (or the
// administrator's, for orphans); this package says what is wrong.
package drift

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opus-hosting/opus/internal/colondb"
	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/procs"
)

// Kinds of drift, as the API reports them.
const (
	KindUser        = "user"
	KindVhost       = "vhost"
	KindDirectory   = "directory"
	KindCertificate = "certificate"
	// KindBackend is a project's backend (its own Apache + mod_wsgi) that
	// is missing, down, or no project's.
	KindBackend = "backend"
	// KindUID is an account in project_uids that is no project's.
	KindUID = "uid"
	// KindLeftover is a process or file of a project uid that no project
	// has now.
	KindLeftover = "leftover"
)

// Finding is one difference between the store and the host.
type Finding struct {
	// Kind is one of the Kind constants.
	Kind string
	// Project is the project concerned ("" for a file that names none).
	Project string
	// Detail says what is wrong and what to do about it.
	Detail string
}

// Project is what the store says about one project.
type Project struct {
	Name string
	// Deployed means the host must hold all of the project now: its last
	// run succeeded, it is at its spec and it is not being deleted. A
	// project in flight or failed may lack parts without that being drift.
	Deployed bool
	// CertificateError is why the last try to obtain or renew the
	// project's certificate from the ACME CA failed ("" when it did not),
	// since CertificateErrorSince; CertificateNotAfter is when the
	// certificate that keeps serving meanwhile expires, CertificateRetry
	// the next try.
	CertificateError      string
	CertificateErrorSince time.Time
	CertificateNotAfter   time.Time
	CertificateRetry      time.Time
}

// Host is where to look.
type Host struct {
	// BaseDir is opusd's base directory (projects/ and tls/ under it).
	BaseDir string
	// SitesDir is privd's virtual host directory, NAME.conf per project.
	SitesDir string
	// BackendsDir is privd's directory of backends, NAME/ per project
	// (httpd.conf, run/httpd.pid); "" skips the backend checks.
	BackendsDir string
	// PasswdPath defaults to /etc/passwd.
	PasswdPath string
	// UserPrefix starts project users' names (names.DefaultUserPrefix if
	// empty).
	UserPrefix string
	// UIDs is project_uids; zero skips the checks of the range.
	UIDs config.UIDRange
	// GroupPath defaults to /etc/group; ProcDir to /proc; TempDirs to
	// /tmp, /var/tmp and /dev/shm.
	GroupPath string
	ProcDir   string
	TempDirs  []string
}

func (h Host) user(project string) string {
	if h.UserPrefix == "" {
		return names.User(names.DefaultUserPrefix, project)
	}
	return names.User(h.UserPrefix, project)
}

// Check returns the drift between the host and the store. It calls
// projects twice, before and after looking at the host, and reports an
// orphan only when neither answer has its project, and a missing part only
// when both call the project deployed: a create or destroy running
// meanwhile is not drift.
func (h Host) Check(ctx context.Context, projects func(context.Context) ([]Project, error)) (findings []Finding, checked int, err error) {
	before, err := projects(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("drift: read the store: %w", err)
	}
	users, err := h.markedUsers()
	if err != nil {
		return nil, 0, err
	}
	idFindings, err := h.checkIDs(users)
	if err != nil {
		return nil, 0, err
	}
	findings = append(findings, idFindings...)
	vhosts, strays, err := h.listNames(h.SitesDir, ".conf")
	if err != nil {
		return nil, 0, err
	}
	dirs, dirStrays, err := h.listNames(layout.ProjectsDir(h.BaseDir), "")
	if err != nil {
		return nil, 0, err
	}
	backends := map[string]bool{}
	var backendStrays []string
	if h.BackendsDir != "" {
		if backends, backendStrays, err = h.listNames(h.BackendsDir, ""); err != nil {
			return nil, 0, err
		}
	}
	certs := map[string]bool{}
	var certStrays []string
	for _, d := range []struct{ dir, ext string }{
		{filepath.Join(h.BaseDir, "tls"), ".crt"}, {filepath.Join(h.BaseDir, "tls"), ".key"},
		// Chains from the ACME CA (unprivd/reconcile.ACMECertPath).
		{filepath.Join(h.BaseDir, "acme", "certs"), ".crt"},
	} {
		got, s, err := h.listNames(d.dir, d.ext)
		if err != nil {
			return nil, 0, err
		}
		for n := range got {
			certs[n] = true
		}
		for _, f := range s {
			certStrays = append(certStrays, filepath.Join(d.dir, f))
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	after, err := projects(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("drift: read the store: %w", err)
	}

	known := map[string]bool{}
	deployed := map[string]int{}
	for _, ps := range [][]Project{before, after} {
		for _, p := range ps {
			known[p.Name] = true
			if p.Deployed {
				deployed[p.Name]++
			}
		}
	}
	add := func(kind, project, format string, args ...any) {
		findings = append(findings, Finding{Kind: kind, Project: project, Detail: fmt.Sprintf(format, args...)})
	}

	for name, uid := range users {
		if !known[name] {
			add(KindUser, name, "user %s (uid %d) carries the Opus marker but no project %s is in the store; delete it (userdel %s) once it runs nothing", h.user(name), uid, name, h.user(name))
		}
	}
	for name := range vhosts {
		if !known[name] {
			add(KindVhost, name, "virtual host %s belongs to no project; opus-privd's RemoveSite or removing the file and a graceful restart fixes it", filepath.Join(h.SitesDir, name+".conf"))
		}
	}
	for _, f := range strays {
		add(KindVhost, "", "%s is in opus-privd's virtual host directory but names no valid project", filepath.Join(h.SitesDir, f))
	}
	for name := range backends {
		if !known[name] {
			add(KindBackend, name, "backend %s belongs to no project; destroying a project of that name, or stopping its Apache and removing the directory, fixes it", filepath.Join(h.BackendsDir, name))
		}
	}
	for _, f := range backendStrays {
		add(KindBackend, "", "%s is in opus-privd's backend directory but names no valid project", filepath.Join(h.BackendsDir, f))
	}
	for name := range dirs {
		if !known[name] {
			add(KindDirectory, name, "project directory %s belongs to no project; remove it", filepath.Join(layout.ProjectsDir(h.BaseDir), name))
		}
	}
	for _, f := range dirStrays {
		add(KindDirectory, "", "%s is not a project directory (its name is no valid project name)", filepath.Join(layout.ProjectsDir(h.BaseDir), f))
	}
	for name := range certs {
		if !known[name] {
			add(KindCertificate, name, "certificate or key of %s in %s belongs to no project; remove it", name, filepath.Join(h.BaseDir, "tls"))
		}
	}
	for _, f := range certStrays {
		add(KindCertificate, "", "%s names no valid project", f)
	}
	// A failing renewal is not drift of the host but needs an admin
	// before the certificate runs out: the latest answer says it.
	for _, p := range after {
		if p.CertificateError == "" {
			continue
		}
		add(KindCertificate, p.Name, "project %s gets no certificate from the ACME CA since %s: %s; the installed one (valid until %s) keeps serving, and Opus tries again at %s",
			p.Name, stamp(p.CertificateErrorSince), p.CertificateError, stamp(p.CertificateNotAfter), stamp(p.CertificateRetry))
	}
	for name, n := range deployed {
		if n < 2 {
			continue
		}
		const fix = "; the next reconcile of the project restores it"
		if _, ok := users[name]; !ok {
			add(KindUser, name, "project %s is deployed but its user %s with the Opus marker is missing%s", name, h.user(name), fix)
		}
		if !vhosts[name] {
			add(KindVhost, name, "project %s is deployed but its virtual host %s is missing%s", name, filepath.Join(h.SitesDir, name+".conf"), fix)
		}
		if !dirs[name] {
			add(KindDirectory, name, "project %s is deployed but its directory %s is missing%s", name, layout.For(h.BaseDir, name).Root, fix)
		}
		if h.BackendsDir != "" && !backends[name] {
			add(KindBackend, name, "project %s is deployed but its backend %s is missing, so it does not serve%s", name, filepath.Join(h.BackendsDir, name), fix)
		} else if h.BackendsDir != "" && !h.backendUp(name) {
			add(KindBackend, name, "project %s is deployed but its backend is down; opus-privd starts it again within seconds, and if it stays down its error log (opusctl logs %s) says why", name, name)
		}
	}
	sort.Slice(findings, func(i, j int) bool {
		a, b := findings[i], findings[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Project != b.Project {
			return a.Project < b.Project
		}
		return a.Detail < b.Detail
	})
	return findings, len(known), nil
}

// stamp is t for a finding (UTC, to the second), "-" when unset.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// backendUp reports whether the master named by project's backend pid file
// runs with that backend's configuration. The pid file is root's, in
// root's directory; it is still read bounded.
func (h Host) backendUp(project string) bool {
	dir := filepath.Join(h.BackendsDir, project)
	f, err := os.Open(filepath.Join(dir, "run", "httpd.pid"))
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, 32)
	n, _ := f.Read(b)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 1 {
		return false
	}
	// The pid may be another's now, a tenant's: its command line is read
	// bounded.
	cmdline, err := (procs.Table{Dir: h.ProcDir}).Cmdline(pid)
	return err == nil && bytes.Contains(cmdline, []byte(filepath.Join(dir, "httpd.conf")))
}

// markedUsers returns the users that carry Opus's marker for their own
// project name, by project, with their uid. A user with the prefix but
// without the marker is not Opus's, and not drift: privd refuses to touch it.
func (h Host) markedUsers() (map[string]uint32, error) {
	users := map[string]uint32{}
	err := colondb.Scan(h.passwdPath(), colondb.PasswdFields, func(fields []string) bool {
		project, ok := names.ProjectOfUser(h.user(""), fields[0])
		if !ok || fields[4] != names.Marker(project) {
			return true
		}
		if uid, err := strconv.ParseUint(fields[2], 10, 32); err == nil {
			users[project] = uint32(uid)
		}
		return true
	})
	if err != nil {
		err = fmt.Errorf("drift: %w", err)
	}
	return users, err
}

// listNames returns the project names of the entries of dir that end in
// ext (all entries when ext is ""), and the entries that name no valid
// project. Dot files are another writer's temporary files and are skipped;
// a missing directory is empty.
func (h Host) listNames(dir, ext string) (map[string]bool, []string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]bool{}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("drift: %w", err)
	}
	got := map[string]bool{}
	var strays []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") {
			continue
		}
		if ext != "" {
			if !strings.HasSuffix(n, ext) {
				if ext == ".conf" {
					strays = append(strays, n)
				}
				continue
			}
			n = strings.TrimSuffix(n, ext)
		}
		if names.ValidateProject(n) != nil {
			strays = append(strays, e.Name())
			continue
		}
		got[n] = true
	}
	return got, strays, nil
}
