// Package service is opusd's public gRPC API (opus.v1.Opus), and the web
// console's sessions (opus.v1.ConsoleSessions, served in-process only).
//
// Who calls is decided only by the Unix socket's peer credentials
// (internal/peercred), once per call, by the interceptors; what they may do
// is decided by one default-deny table (methodAccess) plus the owner-or-admin
// check on the project or operation a call names. A project that is not the
// caller's is NotFound to them, as if it did not exist; the one exception is
// CreateProject over a taken name, which must say AlreadyExists.
//
// Mutations only commit the new spec (generation+1) and a PENDING operation
// in one store transaction, kick the reconciler, and return the operation;
// the reconciler does the work. Errors become gRPC codes here, once, with
// messages a user can act on.
package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/cert"
	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/excerpt"
	"github.com/opus-hosting/opus/internal/names"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Kicker starts a reconcile of a project (implemented by
// unprivd/reconcile.Reconciler).
type Kicker interface {
	Kick(name string)
}

// DefaultMaxUpload caps an uploaded archive when Config.MaxUpload is 0.
const DefaultMaxUpload = 256 << 20

// Config wires a Service.
type Config struct {
	Store      *store.Store
	Privd      privdv1.PrivdClient
	Reconciler Kicker
	Admins     Admins
	// Uploads may be nil: UploadSource is then Unimplemented and no upload
	// digest is accepted (see uploads.go).
	Uploads Uploads
	// UserPrefix starts project users' names (names.DefaultUserPrefix if
	// empty), shown before a project's user exists.
	UserPrefix string
	// ProjectUIDs are the ids of project users (config project_uids). A
	// caller with one is a project's code, not a person, and is refused:
	// a project it made would outlive its parent, and could make more.
	// The zero range refuses no one.
	ProjectUIDs config.UIDRange
	// Mover, when set, is told of each move recorded (unprivd/mover),
	// so that this host's part of it starts at once.
	Mover interface{ Kick() }
	// HostName is this host's name (config host_name): new projects are
	// placed on it on a store only it uses, and with the state in etcd it
	// tells the projects this opusd serves from the others' (hosts.go).
	HostName string
	// ServerSuffix, HTTPPort and HTTPSPort make a project's URLs.
	ServerSuffix        string
	HTTPPort, HTTPSPort int
	// TLSSecurityLevel is the OpenSSL security level Apache serves
	// project certificates at (config tls_security_level); an owner's
	// certificate below it is refused.
	TLSSecurityLevel int
	// MaxUpload caps one uploaded archive in bytes; 0 means
	// DefaultMaxUpload.
	MaxUpload int64
	// ConsoleURL is the web console's base URL (https://HOST:PORT), for
	// login links; empty when the console is off (see console.go).
	ConsoleURL string
	// ConsoleSessionTTL is how long a console session lasts;
	// DefaultConsoleSessionTTL when 0 (see consolesessions.go).
	ConsoleSessionTTL time.Duration
	// HostCheck compares the store with the host for CheckHost (see
	// checkhost.go); nil makes CheckHost Unimplemented.
	HostCheck HostChecker
	// Provision, when set, lets owners ask Opus to provision PostgreSQL
	// (see database.go); nil refuses such requests.
	Provision *Provisioning
	// Backups, when set, serves BackupProject and RestoreProject (see
	// backup.go); nil makes them Unimplemented.
	Backups *Backups
	// Disk is the disk hygiene policy (disk.go): the pruner's and the
	// usage report's.
	Disk Disk
	// Now defaults to time.Now (certificate validity checks, and the age
	// of remembered admin answers).
	Now    func() time.Time
	Logger *slog.Logger
}

// Service implements opusv1.OpusServer.
type Service struct {
	opusv1.UnimplementedOpusServer
	st      *store.Store
	privd   privdv1.PrivdClient
	kick    Kicker
	admins  Admins
	uploads Uploads
	cfg     Config
	log     *slog.Logger
	// sessions serves opus.v1.ConsoleSessions (consolesessions.go).
	sessions *consoleSessions
	// follows counts each caller's FollowLogs streams (logs.go),
	// watches their WatchOperation streams (operations.go).
	follows, watches *uidLimit
	// restores are the callers sending a backup (backup.go): one at a
	// time each, since a restore spools the file (up to its bounds) in
	// opusd's directory until it is checked.
	restores *uidLimit
	// diskUsage are the callers whose GetDiskUsage is measuring (disk.go),
	// backups those whose BackupProject runs (backup.go): one each.
	diskUsage, backups *uidLimit
	// pruneKick asks RunDiskPruner for a pass (disk.go).
	pruneKick chan struct{}
	// hosts is the last read of the live hosts (hosts.go).
	hosts liveHosts
}

// New returns a Service. Store, Privd, Reconciler and Admins are required.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Privd == nil || cfg.Reconciler == nil || cfg.Admins == nil {
		return nil, errors.New("service: Store, Privd, Reconciler and Admins are required")
	}
	if cfg.HostName == "" {
		cfg.HostName = cmp.Or(cfg.Store.HostName(), config.Default().Host())
	}
	if cfg.Store.Shared() && cfg.HostName != cfg.Store.HostName() {
		return nil, fmt.Errorf("service: HostName %q is not the store's host, %q", cfg.HostName, cfg.Store.HostName())
	}
	if cfg.MaxUpload <= 0 {
		cfg.MaxUpload = DefaultMaxUpload
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{
		st: cfg.Store, privd: cfg.Privd, kick: cfg.Reconciler, admins: cacheAdmins(cfg.Admins, cfg.Now), uploads: cfg.Uploads,
		cfg: cfg, log: cfg.Logger, pruneKick: make(chan struct{}, 1),
		follows: &uidLimit{max: maxFollows}, watches: &uidLimit{max: maxWatches}, restores: &uidLimit{max: 1}, diskUsage: &uidLimit{max: 1}, backups: &uidLimit{max: 1},
	}
	s.sessions = newConsoleSessions(s, cfg.ConsoleSessionTTL)
	if cfg.Backups != nil {
		// What a backup or restore cut short by a crash left.
		if err := os.RemoveAll(backupTmp(cfg.Backups.BaseDir)); err != nil {
			s.log.Warn("remove the backups' temporary files", "err", err)
		}
	}
	return s, nil
}

// Register registers the Opus service, and the web console's
// ConsoleSessions, on g. g must have been made with the interceptors of
// this Service (see ServerOptions).
func (s *Service) Register(g *grpc.Server) {
	opusv1.RegisterOpusServer(g, s)
	opusv1.RegisterConsoleSessionsServer(g, s.sessions)
}

// ServerOptions are the options a grpc.Server serving this Service needs:
// the interceptors applying the access table.
func (s *Service) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(s.StreamInterceptor()),
	}
}

// storeErr maps an unexpected store error: context errors keep their
// meaning; anything else is logged and reported as internal.
func (s *Service) storeErr(ctx context.Context, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, store.ErrUnavailable):
		s.log.WarnContext(ctx, "state store unreachable; change refused", "err", err)
		return errStoreUnavailable
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "call cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "call deadline exceeded")
	}
	s.log.ErrorContext(ctx, "state store", "err", err)
	return status.Error(codes.Internal, "opusd could not read or write its state; see opusd's log")
}

// errStoreUnavailable is what a caller sees of a change refused because
// the state store (etcd; bbolt is never unreachable) could not be reached.
var errStoreUnavailable = status.Error(codes.Unavailable,
	"opusd cannot reach its state store (etcd): changes are refused until it is back; projects keep serving, and show and ls answer from what opusd last saw. Try again later, or ask the host administrator to check etcd")

func notFound(project string) error {
	return status.Errorf(codes.NotFound, "project %q not found", project)
}

// visibleProject loads project name for c, inside tx. Not existing and not
// visible are the same NotFound.
func (s *Service) visibleProject(ctx context.Context, tx *store.Tx, c caller, method, name string) (*store.Project, error) {
	p, err := tx.Project(name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound(name)
	}
	if err != nil {
		return nil, err
	}
	if !c.owns(p) {
		return nil, s.refuse(ctx, c, method, name, notFound(name))
	}
	return p, nil
}

// CreateProject records a new project owned by the caller.
func (s *Service) CreateProject(ctx context.Context, req *opusv1.CreateProjectRequest) (*opusv1.Operation, error) {
	c, err := callerAbout(ctx, "name", req.GetName())
	if err != nil {
		return nil, err
	}
	spec, err := s.createSpec(c, c.uid, req)
	if err != nil {
		return nil, err
	}
	ownerName, err := s.ownerName(c.uid)
	if err != nil {
		return nil, s.refuse(ctx, c, opusv1.Opus_CreateProject_FullMethodName, req.GetName(), err)
	}
	var op *store.Operation
	var host string
	err = s.st.Update(ctx, func(tx *store.Tx) error {
		if err := hostsTaken(tx, req.GetName(), spec.Settings.Hosts); err != nil {
			return err
		}
		if err := moveCopyLeft(tx, req.GetName()); err != nil {
			return err
		}
		var err error
		if host, err = s.place(tx, req.GetHost(), spec); err != nil {
			return err
		}
		p := &store.Project{Name: req.GetName(), OwnerUID: c.uid, OwnerName: ownerName, Host: host, Spec: spec, Generation: 1,
			Status: store.Status{Phase: store.PhasePending}}
		if err := tx.CreateProject(p); err != nil {
			if errors.Is(err, store.ErrExists) {
				return projectExists(tx, req.GetName())
			}
			return err
		}
		op, err = tx.NewOperation(p, store.OpCreate, c.uid)
		return err
	})
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	s.log.InfoContext(ctx, "project created", "project", req.GetName(), "uid", c.uid, "operation", op.ID, "host", host)
	s.kick.Kick(req.GetName())
	return toOperation(op), nil
}

// createSpec checks a CreateProjectRequest (CreateProject's, or the one a
// backup holds) and returns the spec of the project, for owner.
func (s *Service) createSpec(c caller, owner uint32, req *opusv1.CreateProjectRequest) (store.Spec, error) {
	var err error
	spec := store.Spec{Admin: req.GetAdmin()}
	seen := map[string]bool{}
	for i, a := range req.GetApps() {
		field := fmt.Sprintf("apps[%d]", i)
		app, err := s.appSpec(c, owner, field, a)
		if err != nil {
			return spec, err
		}
		if seen[app.Name] {
			return spec, invalid(field+".name", "app %q is listed twice", app.Name)
		}
		seen[app.Name] = true
		spec.Apps = append(spec.Apps, app)
	}
	if su := req.GetSuperuser(); su != nil {
		if err := validateSuperuser(su); err != nil {
			return spec, err
		}
		spec.Superuser = &store.Superuser{Username: su.GetUsername(), Email: su.GetEmail(), Password: su.GetPassword()}
	}
	spec.Settings, err = settingsFromProto(req.GetSettings(), req.GetName()+s.cfg.ServerSuffix, s.cfg.ServerSuffix)
	if err != nil {
		return spec, err
	}
	// The admin flag of the request wins; the one of settings only adds.
	spec.Admin = spec.Admin || req.GetSettings().GetAdmin()
	if spec.Database, err = databaseFromProto(req.GetDatabase(), req.GetName(), s.cfg.Provision); err != nil {
		return spec, err
	}
	return spec, nil
}

// projectExists is the refusal of a create whose name is taken. A project
// being removed (destroyed, or undone after its first deploy failed) frees
// its name soon: the message says to wait rather than choose another.
func projectExists(tx *store.Tx, name string) error {
	p, err := tx.Project(name)
	switch {
	case err == nil && p.Deleting && p.Status.Phase == store.PhaseFailed:
		return status.Errorf(codes.AlreadyExists, "project %q could not be removed (%s); once that is dealt with, run 'opusctl destroy %s --yes', then create it again", name, excerpt.Short(firstLine(p.Status.LastError)), name)
	case err == nil && p.Deleting:
		return status.Errorf(codes.AlreadyExists, "project %q is being removed; wait until that is done (opusctl ops %s) and create it again", name, name)
	}
	return status.Errorf(codes.AlreadyExists, "project %q already exists; choose another name", name)
}

// moveCopyLeft refuses a new project named name while a move's copy of
// that name is still on a host: the old copy of a project that moved away
// (departing facet) until its old host has torn it down, or a move's copy
// being set up (incoming facet). A project of that name made meanwhile
// would share that copy's Linux user, directories and site on that host:
// it would inherit the last owner's data, or lose its own to the teardown.
func moveCopyLeft(tx *store.Tx, name string) error {
	for _, f := range []string{store.FacetDeparting, store.FacetIncoming} {
		p, err := tx.Facet(f).Project(name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue
		case err != nil:
			return err
		}
		return status.Errorf(codes.AlreadyExists, "project %q moved between hosts and its copy on host %s is still being removed or set up; wait until that is done and create it again", name, p.Host)
	}
	return nil
}

// firstLine is s up to its first line break.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// GetProject returns one project the caller may see.
func (s *Service) GetProject(ctx context.Context, req *opusv1.GetProjectRequest) (*opusv1.Project, error) {
	c, err := callerAbout(ctx, "name", req.GetName())
	if err != nil {
		return nil, err
	}
	var out *opusv1.Project
	err = s.st.View(ctx, func(tx *store.Tx) error {
		p, err := s.visibleProject(ctx, tx, c, opusv1.Opus_GetProject_FullMethodName, req.GetName())
		if err != nil {
			return err
		}
		out = s.toProject(p)
		return nil
	})
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	return out, nil
}

// ListProjects returns the caller's projects, or all of them for an admin.
func (s *Service) ListProjects(ctx context.Context, _ *opusv1.ListProjectsRequest) (*opusv1.ListProjectsResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	res := &opusv1.ListProjectsResponse{}
	err = s.st.View(ctx, func(tx *store.Tx) error {
		// Records by value, rendered as they come: no copy of the list.
		add := func(p store.Project) error {
			res.Projects = append(res.Projects, s.toProject(&p))
			return nil
		}
		if c.admin {
			res.Projects = make([]*opusv1.Project, 0, tx.ProjectsHint())
			return tx.EachProject(add)
		}
		return tx.EachProjectWhere(c.owns, add)
	})
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	return res, nil
}

// mutate commits a change to project name's spec and a new operation in
// one transaction, then kicks the reconciler.
func (s *Service) mutate(ctx context.Context, method, name string, kind store.OpKind, fn func(c caller, p *store.Project) error) (*opusv1.Operation, error) {
	return s.mutateTx(ctx, method, name, kind, func(_ *store.Tx, c caller, p *store.Project) error { return fn(c, p) })
}

// errUnchanged is what a mutate function returns when the change asks
// for what the project already has and serves: mutateTx then writes
// nothing, records no operation and kicks nothing.
var errUnchanged = errors.New("nothing to change")

// deployed says the host serves p's current spec: its last run succeeded
// at this generation and nothing is pending.
func deployed(p *store.Project) bool {
	return !p.Deleting && p.Status.Phase == store.PhaseReady && p.Status.ObservedGeneration >= p.Generation
}

// mutateTx is mutate for changes that also read other records of the
// same transaction. When fn returns errUnchanged, the answer is an
// Operation with Unchanged set and no id.
func (s *Service) mutateTx(ctx context.Context, method, name string, kind store.OpKind, fn func(tx *store.Tx, c caller, p *store.Project) error) (*opusv1.Operation, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	var op *store.Operation
	var unchanged *opusv1.Operation
	err = s.st.Update(ctx, func(tx *store.Tx) error {
		p, err := s.visibleProject(ctx, tx, c, method, name)
		if err != nil {
			return err
		}
		if p.Deleting {
			return status.Errorf(codes.FailedPrecondition, "project %q is being deleted", name)
		}
		if err := s.changeable(p); err != nil {
			return err
		}
		before := p.Spec.Clone()
		if err := fn(tx, c, p); err != nil {
			if errors.Is(err, errUnchanged) {
				unchanged = &opusv1.Operation{Project: p.Name, Kind: opKinds[kind], Generation: p.Generation, OwnerUid: p.OwnerUID, OwnerName: p.OwnerName, Unchanged: true}
			}
			return err
		}
		if !s.servedHere(p) && newUpload(before, p.Spec) {
			return s.elsewhere(p, "an uploaded app is kept by the host that received it: upload it")
		}
		p.Generation++
		if err := tx.PutProject(p); err != nil {
			return err
		}
		op, err = tx.NewOperation(p, kind, c.uid)
		return err
	})
	if unchanged != nil && errors.Is(err, errUnchanged) {
		s.log.InfoContext(ctx, "project unchanged", "project", name, "uid", c.uid, "kind", kind, "generation", unchanged.Generation)
		return unchanged, nil
	}
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	s.log.InfoContext(ctx, "project changed", "project", name, "uid", c.uid, "kind", kind, "operation", op.ID, "generation", op.Generation)
	s.kick.Kick(name)
	return toOperation(op), nil
}

// DeleteProject marks a project for teardown. Asking again while a
// teardown runs returns that teardown's operation; asking again after one
// failed starts another.
func (s *Service) DeleteProject(ctx context.Context, req *opusv1.DeleteProjectRequest) (*opusv1.Operation, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	name := req.GetName()
	if err := validateProject("name", name); err != nil {
		return nil, err
	}
	var op *store.Operation
	err = s.st.Update(ctx, func(tx *store.Tx) error {
		p, err := s.visibleProject(ctx, tx, c, opusv1.Opus_DeleteProject_FullMethodName, name)
		if err != nil {
			return err
		}
		if err := s.changeable(p); err != nil {
			return err
		}
		if p.Deleting {
			ops, err := tx.Operations(name, 0)
			if err != nil {
				return err
			}
			for _, o := range ops {
				if o.Kind == store.OpDelete && !o.State.Final() {
					op = o
					return nil
				}
			}
		}
		p.Deleting = true
		p.Generation++
		p.Status.Phase = store.PhaseDeleting
		if err := tx.PutProject(p); err != nil {
			return err
		}
		op, err = tx.NewOperation(p, store.OpDelete, c.uid)
		return err
	})
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	s.log.InfoContext(ctx, "project delete requested", "project", name, "uid", c.uid, "operation", op.ID)
	s.kick.Kick(name)
	return toOperation(op), nil
}

// AddApp adds an app to a project.
func (s *Service) AddApp(ctx context.Context, req *opusv1.AddAppRequest) (*opusv1.Operation, error) {
	if err := validateProject("project", req.GetProject()); err != nil {
		return nil, err
	}
	return s.mutate(ctx, opusv1.Opus_AddApp_FullMethodName, req.GetProject(), store.OpAddApp, func(c caller, p *store.Project) error {
		app, err := s.appSpec(c, p.OwnerUID, "app", req.GetApp())
		if err != nil {
			return err
		}
		if p.Spec.App(app.Name) != nil {
			return status.Errorf(codes.AlreadyExists, "project %q already has an app %q; use 'opusctl apps update' to change its source", p.Name, app.Name)
		}
		p.Spec.Apps = append(p.Spec.Apps, app)
		p.Spec.DropAppData = removeString(p.Spec.DropAppData, app.Name)
		return nil
	})
}

// validateProjectApp checks the names of a request about one app of one
// project.
func validateProjectApp(project, app string) error {
	if err := validateProject("project", project); err != nil {
		return err
	}
	if err := names.ValidateAppName(app); err != nil {
		return invalid("app", "%v", err)
	}
	return nil
}

// RemoveApp takes an app out of a project.
func (s *Service) RemoveApp(ctx context.Context, req *opusv1.RemoveAppRequest) (*opusv1.Operation, error) {
	if err := validateProjectApp(req.GetProject(), req.GetApp()); err != nil {
		return nil, err
	}
	return s.mutate(ctx, opusv1.Opus_RemoveApp_FullMethodName, req.GetProject(), store.OpRemoveApp, func(c caller, p *store.Project) error {
		if p.Spec.App(req.GetApp()) == nil {
			return status.Errorf(codes.NotFound, "project %q has no app %q", p.Name, req.GetApp())
		}
		var apps []store.AppSpec
		for _, a := range p.Spec.Apps {
			if a.Name != req.GetApp() {
				apps = append(apps, a)
			}
		}
		p.Spec.Apps = apps
		if req.GetDropData() {
			p.Spec.DropAppData = append(removeString(p.Spec.DropAppData, req.GetApp()), req.GetApp())
		}
		return nil
	})
}

// UpdateApp moves an app to another source.
func (s *Service) UpdateApp(ctx context.Context, req *opusv1.UpdateAppRequest) (*opusv1.Operation, error) {
	if err := validateProjectApp(req.GetProject(), req.GetApp()); err != nil {
		return nil, err
	}
	kind := store.OpUpdateApp
	if req.GetRollback() {
		kind = store.OpRollback
	}
	return s.mutate(ctx, opusv1.Opus_UpdateApp_FullMethodName, req.GetProject(), kind, func(c caller, p *store.Project) error {
		a := p.Spec.App(req.GetApp())
		if a == nil {
			return status.Errorf(codes.NotFound, "project %q has no app %q; use 'opusctl apps add' to add it", p.Name, req.GetApp())
		}
		if req.GetRollback() {
			if req.GetSource() != nil {
				return invalid("source", "must be empty with rollback: a rollback goes to the app's previous revision")
			}
			src, err := s.rollbackSource(c, p, *a, revisionRef{})
			if err != nil {
				return err
			}
			*a = src
			return nil
		}
		src, err := s.source(c, p.OwnerUID, "source", req.GetSource())
		if err != nil {
			return err
		}
		if src.Upload != nil && a.Upload != nil && src.Upload.Digest == a.Upload.Digest && deployed(p) {
			// The same archive, deployed: nothing to redeploy. (A git
			// ref is resolved again at every deploy, as a branch moves.)
			return errUnchanged
		}
		src.Name = a.Name
		*a = src
		return nil
	})
}

// SetCertificate records the owner's certificate and key after checking
// they parse, match, are valid now, name the project's host and would be
// served by Apache at the host's TLS security level.
func (s *Service) SetCertificate(ctx context.Context, req *opusv1.SetCertificateRequest) (*opusv1.Operation, error) {
	if err := validateProject("project", req.GetProject()); err != nil {
		return nil, err
	}
	if len(req.GetCertificatePem()) == 0 {
		return nil, invalid("certificate", "is empty")
	}
	if len(req.GetKeyPem()) == 0 {
		return nil, invalid("key", "is empty")
	}
	leaf, err := cert.Check(req.GetCertificatePem(), req.GetKeyPem(), s.cfg.Now(), s.cfg.TLSSecurityLevel)
	if err != nil {
		return nil, invalid("certificate", "%v", err)
	}
	host := req.GetProject() + s.cfg.ServerSuffix
	if err := leaf.VerifyHostname(host); err != nil {
		return nil, invalid("certificate", "the certificate is not valid for %s: %v", host, err)
	}
	return s.mutate(ctx, opusv1.Opus_SetCertificate_FullMethodName, req.GetProject(), store.OpSetCertificate, func(c caller, p *store.Project) error {
		p.Spec.Certificate = &store.OwnerCertificate{CertificatePEM: req.GetCertificatePem(), KeyPEM: req.GetKeyPem()}
		return nil
	})
}

func removeString(list []string, s string) []string {
	var out []string
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// GetLogs returns the project's recent Apache and mod_wsgi error lines.
func (s *Service) GetLogs(ctx context.Context, req *opusv1.GetLogsRequest) (*opusv1.GetLogsResponse, error) {
	c, err := callerAbout(ctx, "project", req.GetProject())
	if err != nil {
		return nil, err
	}
	lines, err := logLines(req.GetLines())
	if err != nil {
		return nil, err
	}
	if err := s.checkVisible(ctx, c, opusv1.Opus_GetLogs_FullMethodName, req.GetProject()); err != nil {
		return nil, err
	}
	res, err := s.tailLog(ctx, &privdv1.TailLogRequest{Project: req.GetProject(), Lines: lines})
	if err != nil {
		return nil, err
	}
	return &opusv1.GetLogsResponse{Lines: res.GetLines()}, nil
}
