package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/limitio"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/backup"
	"github.com/opus-hosting/opus/unprivd/postgres"
	"github.com/opus-hosting/opus/unprivd/reconcile"
	"github.com/opus-hosting/opus/unprivd/snapshot"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Backups configures BackupProject and RestoreProject (nil: both are
// Unimplemented).
type Backups struct {
	// BaseDir is opusd's base directory: a restore's data goes to its
	// snapshots directory, and both spool their parts in BaseDir/tmp
	// (opusd's own, no tenant writes there).
	BaseDir string
	// MaxData is config.Config's snapshot_max_bytes: the bound of the
	// database copy and of the media files each, as for privd.
	MaxData int64
	// MaxApps bounds the uploaded apps' archives of one backup together
	// (config upload_quota: they become the restorer's uploads); 0 means
	// Config.MaxUpload.
	MaxApps int64
	// PGDump copies a PostgreSQL database (postgres.Dump when nil).
	PGDump func(ctx context.Context, c postgres.Conn, w io.Writer) error
	// OpusVersion is recorded in every backup.
	OpusVersion string
}

// UploadOpener reads a stored upload (source.Store implements it): a
// backup embeds the archives of uploaded apps.
type UploadOpener interface {
	Open(uid uint32, digest string) (*os.File, error)
}

// backupTmp is where backups and restores spool their parts, under
// opusd's base directory: opusd's alone, emptied at start (what a crash
// left).
func backupTmp(base string) string { return filepath.Join(base, "backup-tmp") }

func (s *Service) tmpDir() (string, error) {
	dir := backupTmp(s.cfg.Backups.BaseDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("temporary directory: %w", err)
	}
	return dir, nil
}

// BackupProject streams a backup of a deployed project: what it runs (the
// applied spec, each app at its deployed commit or archive), its secrets,
// a copy of its database and its media files (see package backup).
func (s *Service) BackupProject(req *opusv1.BackupProjectRequest, stream opusv1.Opus_BackupProjectServer) error {
	ctx := stream.Context()
	c, err := callerAbout(ctx, "name", req.GetName())
	if err != nil {
		return err
	}
	if s.cfg.Backups == nil || s.cfg.Backups.MaxData <= 0 {
		return status.Error(codes.Unimplemented, "backups are off on this host: they need data snapshots (snapshot_max_bytes in opus.conf)")
	}
	var p *store.Project
	err = s.st.View(ctx, func(tx *store.Tx) error {
		p, err = s.visibleProject(ctx, tx, c, opusv1.Opus_BackupProject_FullMethodName, req.GetName())
		if err == nil && !s.servedHere(p) {
			err = s.elsewhere(p, "its data is kept: back it up")
		}
		return err
	})
	if err != nil {
		return s.storeErr(ctx, err)
	}
	switch {
	case p.Deleting:
		return status.Errorf(codes.FailedPrecondition, "project %q is being deleted", p.Name)
	case p.Applied == nil:
		return status.Errorf(codes.FailedPrecondition, "project %q has never been deployed: there is nothing to back up", p.Name)
	}
	// One at a time per caller: each spools up to twice MaxData in
	// opusd's directory and has privd copy the project's data.
	release, ok := s.backups.acquire(c.uid)
	if !ok {
		return status.Error(codes.ResourceExhausted, "you have a backup under way; wait until it is written and try again")
	}
	defer release()
	tmp, err := s.tmpDir()
	if err != nil {
		return s.storeErr(ctx, err)
	}
	w, err := s.backupWriter(ctx, p, tmp)
	if err != nil {
		return err
	}
	out := &chunkStream{send: func(b []byte) error { return stream.Send(&opusv1.BackupProjectResponse{Chunk: b}) }}
	n, err := w.WriteTo(out)
	if err == nil {
		err = out.flush()
	}
	if err != nil {
		s.log.WarnContext(ctx, "backup failed", "project", p.Name, "uid", c.uid, "err", err)
		return status.Errorf(codes.Unavailable, "sending the backup failed: %v", err)
	}
	s.log.InfoContext(ctx, "project backed up", "project", p.Name, "uid", c.uid, "bytes", n)
	return nil
}

// backupWriter gathers the parts of p's backup, each spooled to an
// unlinked file in tmp.
func (s *Service) backupWriter(ctx context.Context, p *store.Project, tmp string) (w *backup.Writer, err error) {
	spec := p.Applied
	req := &opusv1.CreateProjectRequest{Name: p.Name, Admin: spec.Admin, Database: toDatabase(spec.Database)}
	if db := spec.Database; db != nil && db.Provisioned {
		// Provisioned anew where it is restored, named after the project.
		req.Database = &opusv1.Database{Engine: enginePostgreSQL, Provision: true}
	}
	applied := &store.Project{Spec: *spec}
	req.Settings = toSettings(applied)
	// Resource limits are the host's admins' to give, at create as after.
	req.Settings.MemoryBytes, req.Settings.Tasks, req.Settings.CpuPercent = 0, 0, 0
	type upload struct {
		app      string
		uploader uint32
		digest   string
	}
	var uploads []upload
	for _, a := range spec.Apps {
		st := p.Status.Apps[a.Name]
		switch {
		case a.Git != nil:
			ref := st.ResolvedCommit
			if ref == "" {
				ref = a.Git.Ref
			}
			req.Apps = append(req.Apps, &opusv1.AppSpec{Name: a.Name, Source: &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: a.Git.URL, Ref: ref}}}})
		case a.Upload != nil:
			uploader := p.OwnerUID
			if a.Upload.UploaderUID != nil {
				uploader = *a.Upload.UploaderUID
			}
			req.Apps = append(req.Apps, &opusv1.AppSpec{Name: a.Name, Source: &opusv1.AppSource{Kind: &opusv1.AppSource_Upload{Upload: &opusv1.UploadedSource{Digest: a.Upload.Digest, Origin: a.Upload.Origin}}}})
			uploads = append(uploads, upload{a.Name, uploader, a.Upload.Digest})
		}
	}
	w, err = backup.NewWriter(req, s.cfg.Backups.OpusVersion, s.cfg.Now())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "backup manifest: %v", err)
	}
	sec := backup.Secrets{}
	if p.Secrets != nil {
		sec.SecretKey = p.Secrets.SecretKey
	}
	if db := spec.Database; db != nil && !db.Provisioned {
		sec.DatabasePassword = db.Password
	}
	secrets, _ := json.Marshal(sec)
	if err := w.AddBytes(backup.SecretsFile, secrets, tmp); err != nil {
		return nil, s.storeErr(ctx, err)
	}
	opener, _ := s.uploads.(UploadOpener)
	for _, u := range uploads {
		if opener == nil {
			return nil, status.Error(codes.Unimplemented, "uploads are off on this host")
		}
		f, err := opener.Open(u.uploader, u.digest)
		if err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "app %s: its uploaded archive is no longer kept (%v); update the app (opusctl apps update) and back up again", u.app, err)
		}
		gz := isGzip(f)
		if err := w.Add(backup.AppFile(u.app, gz), f); err != nil {
			f.Close()
			return nil, s.storeErr(ctx, err)
		}
	}
	// The database: privd's copy of the SQLite file, or pg_dump.
	name := backup.SQLiteFile
	dump := func(w io.Writer) error { return reconcile.DumpData(ctx, s.privd, p.Name, false, w) }
	if db := spec.Database; db != nil {
		name = backup.PGDumpFile
		pgDump := s.cfg.Backups.PGDump
		if pgDump == nil {
			pgDump = postgres.Dump
		}
		conn := postgres.Conn{Host: db.Host, Port: db.Port, Name: db.Name, User: db.User, Password: db.Password}
		dump = func(w io.Writer) error { return pgDump(ctx, conn, w) }
	}
	if err := s.spool(ctx, w, tmp, name, "the database", dump); err != nil {
		return nil, err
	}
	if err := s.spool(ctx, w, tmp, backup.MediaFile, "the media files", func(w io.Writer) error {
		return reconcile.DumpData(ctx, s.privd, p.Name, true, w)
	}); err != nil {
		return nil, err
	}
	return w, nil
}

// spool copies one part (what) into an unlinked file in tmp, at most
// MaxData bytes, and adds it to w.
func (s *Service) spool(ctx context.Context, w *backup.Writer, tmp, name, what string, fill func(io.Writer) error) error {
	f, err := os.CreateTemp(tmp, "backup-part-*")
	if err != nil {
		return s.storeErr(ctx, err)
	}
	os.Remove(f.Name())
	lw := &limitio.Writer{W: f, Max: s.cfg.Backups.MaxData, Err: errPastBound}
	err = fill(lw)
	if err == nil {
		err = w.Add(name, f)
	}
	if err == nil {
		return nil
	}
	f.Close()
	switch c := status.Code(err); {
	case lw.Over || c == codes.ResourceExhausted:
		return status.Errorf(codes.ResourceExhausted, "%s of the project are larger than this host's bound for a copy (snapshot_max_bytes, %d bytes); ask the host administrator to raise it", what, s.cfg.Backups.MaxData)
	case c == codes.NotFound:
		return status.Errorf(codes.FailedPrecondition, "the project has no database to back up yet")
	case c == codes.FailedPrecondition, c == codes.DeadlineExceeded:
		return status.Errorf(c, "copying %s: %s", what, status.Convert(err).Message())
	case c == codes.Unavailable:
		return status.Errorf(c, "copying %s: the privileged daemon opus-privd is not reachable (%s); the host administrator must start it", what, status.Convert(err).Message())
	}
	s.log.ErrorContext(ctx, "backup: copy failed", "part", name, "err", err)
	return status.Errorf(codes.Internal, "copying %s failed: %v", what, err)
}

func isGzip(f *os.File) bool {
	var b [2]byte
	n, _ := f.ReadAt(b[:], 0)
	return n == 2 && b[0] == 0x1f && b[1] == 0x8b
}

var errPastBound = errors.New("past the bound")

// chunkStream gathers writes into messages of backupChunk bytes.
type chunkStream struct {
	send func([]byte) error
	buf  []byte
}

const backupChunk = 1 << 20

func (c *chunkStream) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), backupChunk-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == backupChunk {
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (c *chunkStream) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	err := c.send(c.buf)
	c.buf = c.buf[:0:0]
	return err
}

// restoreReader reads the backup file's chunks of a RestoreProject stream.
type restoreReader struct {
	recv    func() (*opusv1.RestoreProjectRequest, error)
	pending []byte
	err     error
}

func (r *restoreReader) Read(p []byte) (int, error) {
	for len(r.pending) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		m, err := r.recv()
		if err != nil {
			r.err = err
			continue
		}
		if m.GetInfo() != nil {
			r.err = errors.New("only the first message says how to restore")
			continue
		}
		r.pending = m.GetChunk()
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// RestoreProject makes a project from a backup (see the proto): it reads
// and checks the whole file first, then checks the project in it with
// CreateProject's own code, puts the uploaded apps' archives in the new
// owner's uploads and the database and media files in the project's data
// snapshots, and records the project (or, with replace, the new spec of
// the existing one) with a RESTORE operation: the reconciler deploys it
// and puts the data back before migrating, all or nothing.
func (s *Service) RestoreProject(stream opusv1.Opus_RestoreProjectServer) error {
	ctx := stream.Context()
	c, err := callerFrom(ctx)
	if err != nil {
		return err
	}
	method := opusv1.Opus_RestoreProject_FullMethodName
	if s.cfg.Backups == nil || s.cfg.Backups.MaxData <= 0 {
		return status.Error(codes.Unimplemented, "backups are off on this host: they need data snapshots (snapshot_max_bytes in opus.conf)")
	}
	first, err := stream.Recv()
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "no request: %v", err)
	}
	info := first.GetInfo()
	if info == nil {
		return invalid("info", "the first message must say how to restore (name, replace, owner)")
	}
	if info.GetName() != "" {
		if err := validateProject("name", info.GetName()); err != nil {
			return err
		}
	}
	owner := c.uid
	if o := info.GetOwnerUid(); o != 0 && o != c.uid {
		if !c.admin {
			return s.refuse(ctx, c, method, info.GetName(), fieldError(codes.PermissionDenied, "owner", "only admins may restore a project for another user"))
		}
		if r := s.cfg.ProjectUIDs; r.Last != 0 && r.Contains(o) {
			return invalid("owner", "uid %d is a project's user, not a person", o)
		}
		owner = o
	}
	tmp, err := s.tmpDir()
	if err != nil {
		return s.storeErr(ctx, err)
	}
	release, ok := s.restores.acquire(c.uid)
	if !ok {
		return s.refuse(ctx, c, method, info.GetName(), status.Error(codes.ResourceExhausted, "you have a restore under way; wait until opusd has read its file and try again"))
	}
	defer release()
	lim := backup.Limits{Data: s.cfg.Backups.MaxData, App: s.cfg.MaxUpload, Apps: s.cfg.Backups.MaxApps}
	arch, err := backup.Read(&restoreReader{recv: stream.Recv}, tmp, lim)
	if err != nil {
		if errors.Is(err, backup.ErrInvalid) {
			return s.refuse(ctx, c, method, info.GetName(), invalid("file", "%v", err))
		}
		if st, ok := status.FromError(errors.Unwrap(err)); ok {
			return st.Err()
		}
		return s.storeErr(ctx, err)
	}
	defer arch.Close()
	op, err := s.restore(ctx, c, owner, info, arch)
	if err != nil {
		return s.refuse(ctx, c, method, arch.Project.GetName(), err)
	}
	return stream.SendAndClose(op)
}

// restore records the project of a checked backup; see RestoreProject.
func (s *Service) restore(ctx context.Context, c caller, owner uint32, info *opusv1.RestoreInfo, arch *backup.Archive) (*opusv1.Operation, error) {
	req := arch.Project
	if info.GetName() != "" {
		req.Name = info.GetName()
	}
	name := req.GetName()
	if arch.Secrets.SecretKey == "" {
		return nil, invalid("file", "the backup holds no secret key")
	}
	if req.GetSuperuser() != nil {
		return nil, invalid("file", "a backup holds no superuser: the accounts are in its database")
	}
	engine, dataPart := engineSQLite, backup.SQLiteFile
	if db := req.GetDatabase(); db.GetEngine() == enginePostgreSQL {
		engine, dataPart = enginePostgreSQL, backup.PGDumpFile
		if !db.GetProvision() {
			db.Password = arch.Secrets.DatabasePassword
		}
	}
	if !arch.Has(dataPart) {
		return nil, invalid("file", "the backup of a %s project holds no %s", engine, dataPart)
	}
	// The name: taken only with replace, and then only the caller's.
	var existing *store.Project
	err := s.st.View(ctx, func(tx *store.Tx) error {
		p, err := tx.Project(name)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if !info.GetReplace() || !c.owns(p) {
			if c.owns(p) {
				return status.Errorf(codes.AlreadyExists, "project %q already exists; restore it under another name (--as NEWNAME), or over it with --replace", name)
			}
			return projectExists(tx, name)
		}
		if p.Deleting {
			return status.Errorf(codes.FailedPrecondition, "project %q is being deleted; wait until that is done and restore again without --replace", name)
		}
		switch {
		case p.Move != nil:
			return moving(p)
		case s.servedHere(p) && info.GetTakeOver():
			return invalid("take_over", "project %q is this host's already: restore over it with replace alone", name)
		case !s.servedHere(p) && info.GetTakeOver() && !s.unreachable(p):
			return status.Errorf(codes.FailedPrecondition, "project %q is served by host %s, which is answering: move it (opusctl move %s --to %s), or restore over it there", name, p.Host, name, s.cfg.HostName)
		case !s.servedHere(p) && !info.GetTakeOver():
			// The backup's data is spooled here, and the project's
			// host takes it from nowhere else.
			return s.elsewhere(p, "restore over it (or, while that host is not answering, restore it here with --take-over)")
		}
		existing = p
		return nil
	})
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	var ownerName string
	if existing == nil {
		if ownerName, err = s.ownerName(owner); err != nil {
			return nil, err
		}
	} else {
		owner, ownerName = existing.OwnerUID, existing.OwnerName
		if (existing.Spec.Database != nil) != (engine == enginePostgreSQL) || (existing.Spec.Database != nil && existing.Spec.Database.Provisioned != req.GetDatabase().GetProvision()) {
			return nil, status.Errorf(codes.FailedPrecondition, "project %q keeps its data in another kind of database than the backup's (%s); restore it under another name (--as NEWNAME)", name, engine)
		}
	}
	// The snapshot quota, checked before anything is stored (uploads,
	// snapshot files), so a refused restore leaves nothing, and again
	// when the project is recorded, where it cannot race.
	need := arch.Size(dataPart)
	if arch.Has(backup.MediaFile) {
		need += arch.Size(backup.MediaFile)
	}
	if err := s.st.View(ctx, func(tx *store.Tx) error { return s.restoreFits(tx, owner, name, need) }); err != nil {
		return nil, s.storeErr(ctx, err)
	}
	// Uploaded apps: their archives become the owner's uploads (checked
	// and counted like any upload), and must be the ones named.
	for _, a := range req.GetApps() {
		up := a.GetSource().GetUpload()
		if up == nil {
			continue
		}
		if s.uploads == nil {
			return nil, status.Error(codes.Unimplemented, "uploads are off on this host")
		}
		f, err := arch.Open(arch.AppArchive(a.GetName()))
		if err != nil {
			return nil, s.storeErr(ctx, err)
		}
		digest, _, err := s.uploads.Put(ctx, owner, f)
		f.Close()
		var qe quotaExceeded
		switch {
		case errors.As(err, &qe):
			return nil, status.Errorf(codes.ResourceExhausted, "app %s: %v", a.GetName(), qe)
		case err != nil:
			return nil, invalid("file", "app %s: %v", a.GetName(), err)
		case digest != up.GetDigest():
			return nil, invalid("file", "app %s: its archive is %s, not the %s the manifest names", a.GetName(), digest, up.GetDigest())
		}
	}
	as := caller{uid: owner, admin: c.admin}
	spec, err := s.createSpec(as, owner, req)
	if err != nil {
		return nil, err
	}
	for i := range spec.Apps {
		spec.Apps[i].ByUID = c.uid
	}
	// The data: a snapshot the first run restores before migrating.
	dir := snapshot.NewDir(s.cfg.Backups.BaseDir)
	id := snapshot.NewID(s.cfg.Now())
	rec := store.Snapshot{ID: id, Time: arch.Manifest.Created, Engine: engine, Media: arch.Has(backup.MediaFile)}
	if rec.Size, err = copyPart(dir, arch, name, id, dataPart, s.cfg.Backups.MaxData); err != nil {
		return nil, s.storeErr(ctx, err)
	}
	if rec.Media {
		if rec.MediaSize, err = copyPart(dir, arch, name, snapshot.MediaID(id), backup.MediaFile, s.cfg.Backups.MaxData); err != nil {
			dir.Remove(name, id)
			return nil, s.storeErr(ctx, err)
		}
	}
	var op *store.Operation
	err = s.st.Update(ctx, func(tx *store.Tx) error {
		if err := hostsTaken(tx, name, spec.Settings.Hosts); err != nil {
			return err
		}
		if err := databaseTaken(tx, name, spec.Database); err != nil {
			return err
		}
		if err := s.restoreFits(tx, owner, name, rec.Bytes()); err != nil {
			return err
		}
		p, err := tx.Project(name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if existing != nil {
				return status.Errorf(codes.Aborted, "project %q went away during the restore; restore again", name)
			}
			if err := moveCopyLeft(tx, name); err != nil {
				return err
			}
			// On this host: the backup's data is spooled here.
			p = &store.Project{Name: name, OwnerUID: owner, OwnerName: ownerName, Host: s.cfg.HostName, Spec: spec, Generation: 1, Status: store.Status{Phase: store.PhasePending}}
			p.Secrets = &store.Secrets{SecretKey: arch.Secrets.SecretKey}
			p.Snapshots = []store.Snapshot{rec}
			p.Spec.RestoreSnapshot = id
			if err := tx.CreateProject(p); err != nil {
				return err
			}
		case err != nil:
			return err
		case existing == nil || p.OwnerUID != existing.OwnerUID || p.OwnerName != existing.OwnerName || p.Deleting || p.Host != existing.Host || p.Move != nil:
			return status.Errorf(codes.Aborted, "project %q changed during the restore; restore again", name)
		case info.GetTakeOver():
			// Taken over from a host that is not answering: a move to this
			// host whose data comes from the backup. This host deploys its
			// copy in the incoming facet; once it answers it becomes the
			// project and the old record goes to the departing facet, which
			// the old host tears down when it is back; if it fails, the
			// project is as it was (unprivd/mover).
			for _, f := range []string{store.FacetIncoming, store.FacetDeparting} {
				if _, err := tx.Facet(f).Project(name); err == nil {
					return status.Errorf(codes.FailedPrecondition, "project %q still has a copy from its last move on a host: try again once that is done", name)
				}
			}
			spec.Certificate = p.Spec.Certificate
			in := &store.Project{Name: name, OwnerUID: owner, OwnerName: ownerName, Host: s.cfg.HostName, Spec: spec, Generation: p.Generation,
				Status: store.Status{Phase: store.PhasePending}, Secrets: &store.Secrets{SecretKey: arch.Secrets.SecretKey},
				Snapshots: []store.Snapshot{rec}}
			in.Spec.RestoreSnapshot = id
			if err := tx.Facet(store.FacetIncoming).CreateProject(in); err != nil {
				return err
			}
			if op, err = tx.NewOperation(p, store.OpMove, c.uid); err != nil {
				return err
			}
			p.Move = &store.Move{ID: id, From: p.Host, To: s.cfg.HostName, Operation: op.ID, State: store.MoveDeploying, Time: tx.Now()}
			return tx.PutProject(p)
		default:
			// Over an existing project: a change like any other, undone
			// whole if it fails (the reconciler takes a copy of the data
			// and media first, and puts them back).
			// What is this host's, not the backup's, stays: the
			// owner's certificate, the limits an admin set, the
			// database's connection.
			spec.Certificate = p.Spec.Certificate
			was := p.Spec.Settings
			spec.Settings.MemoryBytes, spec.Settings.Tasks, spec.Settings.CPUPercent = was.MemoryBytes, was.Tasks, was.CPUPercent
			if p.Spec.Database != nil {
				spec.Database = p.Spec.Database
			}
			p.Spec = spec
			p.Spec.RestoreSnapshot = id
			p.Snapshots = append(p.Snapshots, rec)
			if p.Secrets == nil {
				p.Secrets = &store.Secrets{}
			}
			if p.Secrets.Replaced == "" && p.Secrets.SecretKey != arch.Secrets.SecretKey {
				// Put back by the reconciler if the restore fails.
				p.Secrets.Replaced = p.Secrets.SecretKey
			}
			p.Secrets.SecretKey = arch.Secrets.SecretKey
			p.Generation++
			if err := tx.PutProject(p); err != nil {
				return err
			}
		}
		op, err = tx.NewOperation(p, store.OpRestore, c.uid)
		return err
	})
	if err != nil {
		dir.Remove(name, id)
		dir.Remove(name, snapshot.MediaID(id))
		return nil, s.storeErr(ctx, err)
	}
	s.log.InfoContext(ctx, "project restored from a backup", "project", name, "uid", c.uid, "owner", owner,
		"replace", existing != nil, "take_over", info.GetTakeOver(), "operation", op.ID, "backup_created", arch.Manifest.Created, "backup_opus", arch.Manifest.OpusVersion)
	s.kick.Kick(name)
	if info.GetTakeOver() && s.cfg.Mover != nil {
		s.cfg.Mover.Kick()
	}
	return toOperation(op), nil
}

// restoreFits refuses a restore whose data (need bytes: the database and
// media files it keeps as project's snapshot until its run restores them)
// does not fit owner's snapshot_quota beside the snapshots other pending
// restores hold. Those cannot be dropped to make room, as the reconciler
// drops older snapshots, so without this check restores that never run
// (a git commit that is gone) would pile up past any quota. project's own
// pending restore, if any, is the one this restore replaces.
func (s *Service) restoreFits(tx *store.Tx, owner uint32, project string, need int64) error {
	quota := s.cfg.Disk.SnapshotQuota
	if quota <= 0 {
		return nil
	}
	var ps []*store.Project
	err := tx.EachProjectOwnedBy(owner, func(p store.Project) error {
		if p.Name != project {
			ps = append(ps, &p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	held := snapshot.Held(snapshot.OfUser(ps))
	if held+need > quota {
		return status.Errorf(codes.ResourceExhausted, "the backup's database and media files (%d bytes) do not fit the owner's snapshot quota (snapshot_quota, %d bytes) beside the %d bytes pending restores of their other projects hold; wait for those to finish or delete those projects, or ask the host administrator to raise snapshot_quota", need, quota, held)
	}
	return nil
}

// copyPart copies part of arch into snapshot id of project.
func copyPart(dir snapshot.Dir, arch *backup.Archive, project, id, part string, max int64) (int64, error) {
	f, err := arch.Open(part)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return dir.Write(project, id, max, func(w io.Writer) error {
		_, err := io.Copy(w, f)
		return err
	})
}

// databaseTaken refuses to restore into a PostgreSQL database given by
// its connection parameters that another project uses: the restore
// empties it and loads the backup's data (a copy --as beside the original
// would overwrite the original's data).
func databaseTaken(tx *store.Tx, project string, db *store.Database) error {
	if db == nil || db.Provisioned {
		return nil
	}
	ps, err := tx.Projects()
	if err != nil {
		return err
	}
	for _, other := range ps {
		o := other.Spec.Database
		if other.Name != project && o != nil && !o.Provisioned && o.Host == db.Host && o.Port == db.Port && o.Name == db.Name {
			return status.Errorf(codes.FailedPrecondition, "the backup's PostgreSQL database %s is project %q's; a restore empties it and loads the backup's data, so restore this backup where no other project uses that database", db.Name, other.Name)
		}
	}
	return nil
}
