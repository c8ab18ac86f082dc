package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/datasize"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/postgres"
	"github.com/opus-hosting/opus/unprivd/snapshot"
	"github.com/opus-hosting/opus/unprivd/store"
)

// stepSnapshot protects the project's data from the migrations that
// follow. It runs right before the migrate step:
//
//   - When the run changes app code (migrations may run) it copies the
//     database first, once per change: a run resumed after a crash finds
//     the copy it took for its generation and keeps it, rather than copying
//     data it may already have migrated. The undo of a failed change takes
//     no copy: it restores the failed change's.
//   - When the spec names a snapshot to restore (a rollback with data, or
//     the undo of a failed change that took one) it puts it back, after
//     the copy above, so that a failed rollback is undone with its data
//     too.
//
// A database too large for snapshot_max_bytes, or none yet, is noted and
// the change goes on: the copy is a safety net, not a condition of the
// change. So is a damaged one (privd's DataLoss) when the change restores
// a snapshot over it: that restore is the repair. A copy that fails otherwise fails the change (nothing has been
// migrated yet), since the owner would be told the data is protected.
func stepSnapshot(ctx context.Context, t *Task) (string, error) {
	restore := t.Project.Spec.RestoreSnapshot
	if restore == "" && !t.appsChanged {
		return "no app code changed: no data snapshot needed", nil
	}
	if t.opt.SnapshotMaxBytes <= 0 {
		if restore != "" {
			return "", errors.New("data snapshots are turned off on this host (snapshot_max_bytes 0); nothing can be restored")
		}
		return "data snapshots are off (snapshot_max_bytes 0)", nil
	}
	var notes []string
	if !t.undoing && (t.appsChanged || restore != "") {
		note, err := takeSnapshot(ctx, t)
		if err != nil {
			return "", err
		}
		notes = append(notes, note)
	}
	if restore != "" {
		note, err := restoreSnapshot(ctx, t, restore)
		if err != nil {
			return "", err
		}
		notes = append(notes, note)
	}
	return joinNotes(notes), nil
}

func joinNotes(notes []string) string {
	out := ""
	for i, n := range notes {
		if i > 0 {
			out += "; "
		}
		out += n
	}
	return out
}

// engine is the kind of database the project's spec uses.
func engine(spec store.Spec) string {
	if spec.Database != nil {
		return snapshot.PostgreSQL
	}
	return snapshot.SQLite
}

// runningRevisions are, per app, the revision the host runs: the last
// one the status recorded.
func runningRevisions(p *store.Project) map[string]int {
	revs := map[string]int{}
	for name, st := range p.Status.Apps {
		if n := len(st.Revisions); n > 0 {
			revs[name] = st.RevisionNumber(n - 1)
		}
	}
	return revs
}

// takeSnapshot copies the database for this run's change, or finds the
// copy a crashed pass of the same change took.
func takeSnapshot(ctx context.Context, t *Task) (string, error) {
	for _, s := range t.Project.Snapshots {
		if s.Generation == t.gen {
			return fmt.Sprintf("data snapshot %s was taken before this change (%s)", s.ID, datasize.Text(s.Size)), nil
		}
	}
	eng := engine(t.Project.Spec)
	dir := snapshot.NewDir(t.opt.BaseDir)
	limit, held, err := snapshotRoom(ctx, t)
	if err != nil {
		return "", err
	}
	quota := t.opt.SnapshotQuota
	byQuota := limit < t.opt.SnapshotMaxBytes
	if limit <= 0 {
		t.Log.Warn("no room in the owner's snapshot quota", "snapshot_quota", quota, "held", held)
		return fmt.Sprintf("warning: no data snapshot: the snapshots pending restores of your projects need (%s) fill your snapshot quota (snapshot_quota %s); this change cannot be rolled back with its data", datasize.Text(held), datasize.Text(quota)), nil
	}
	now := t.Clock.Now()
	id := snapshot.NewID(now)
	n, err := dir.Write(t.Project.Name, id, limit, func(w io.Writer) error {
		if eng == snapshot.PostgreSQL {
			return t.opt.PGDump(ctx, pgConn(t.Project.Spec.Database), w)
		}
		return dumpSQLite(ctx, t, w)
	})
	switch {
	case status.Code(err) == codes.NotFound:
		return "no data snapshot: the project has no SQLite database yet", nil
	case status.Code(err) == codes.DataLoss && t.Project.Spec.RestoreSnapshot != "":
		// The restore about to run is how the owner repairs it: a
		// damaged database has nothing to copy, as a missing one.
		t.Log.Warn("damaged database: no copy before the restore", "err", err)
		return fmt.Sprintf("warning: no copy of the current database: it is damaged (%s); if this change fails, the database it restores stays", status.Convert(err).Message()), nil
	case (errors.Is(err, snapshot.ErrTooLarge) || status.Code(err) == codes.ResourceExhausted) && byQuota:
		t.Log.Warn("database too large for the owner's snapshot quota", "snapshot_quota", quota, "held", held)
		return fmt.Sprintf("warning: no data snapshot: the database is larger than your snapshot quota leaves room for (%s of snapshot_quota %s, the rest held by snapshots pending restores need); this change cannot be rolled back with its data", datasize.Text(limit), datasize.Text(quota)), nil
	case errors.Is(err, snapshot.ErrTooLarge) || status.Code(err) == codes.ResourceExhausted:
		t.Log.Warn("database too large for a data snapshot", "max_bytes", t.opt.SnapshotMaxBytes)
		return fmt.Sprintf("warning: no data snapshot: the database is larger than snapshot_max_bytes (%s); this change cannot be rolled back with its data", datasize.Text(t.opt.SnapshotMaxBytes)), nil
	case err != nil:
		return "", fmt.Errorf("data snapshot: %w", err)
	}
	rec := store.Snapshot{ID: id, Time: now, Size: n, Engine: eng, Revisions: runningRevisions(t.Project), Generation: t.gen}
	if r := t.Project.Snapshot(t.Project.Spec.RestoreSnapshot); r != nil && r.Media {
		// The restore about to run replaces the media files too (a
		// restore from a backup): keep them with the database, so
		// that the undo of a failed restore puts both back.
		m, err := dir.Write(t.Project.Name, snapshot.MediaID(id), t.opt.SnapshotMaxBytes, func(w io.Writer) error {
			return dumpPrivd(ctx, t, true, w)
		})
		if err != nil {
			return "", fmt.Errorf("copy of the media files: %w", err)
		}
		rec.Media, rec.MediaSize = true, m
	}
	dropped, others, fits, err := keepSnapshot(ctx, t, rec)
	if err != nil {
		return "", err
	}
	// Files go after their records: a crash in between leaves a file no
	// record names, which the next Prune removes.
	if err := dir.Prune(t.Project.Name, t.Project.Snapshots); err != nil {
		t.Log.Warn("prune data snapshots", "err", err)
	}
	for _, o := range others {
		if err := dir.Remove(o.Project, o.ID); err != nil {
			t.Log.Warn("remove a data snapshot over the owner's quota", "project", o.Project, "snapshot", o.ID, "err", err)
		}
	}
	if len(others) > 0 {
		t.Log.Info("data snapshots of the owner's other projects dropped for the snapshot quota", "snapshots", len(others), "snapshot_quota", quota)
	}
	if !fits {
		return fmt.Sprintf("warning: no data snapshot: it (%s) does not fit in your snapshot quota (snapshot_quota %s) beside the snapshots pending restores need; this change cannot be rolled back with its data", datasize.Text(n), datasize.Text(quota)), nil
	}
	note := fmt.Sprintf("data snapshot %s taken (%s)", id, datasize.Text(n))
	if k := len(dropped) + len(others); k > 0 {
		note += fmt.Sprintf(", %d older dropped", k)
	}
	return note, nil
}

// snapshotRoom is the most bytes this run's snapshot may take: the
// project's own bound, and within the owner's snapshot quota what the
// snapshots no one may drop (pending restores, this run's own included)
// leave. held is their bytes.
func snapshotRoom(ctx context.Context, t *Task) (limit, held int64, err error) {
	limit = t.opt.SnapshotMaxBytes
	if t.opt.SnapshotQuota <= 0 {
		return limit, 0, nil
	}
	var ps []*store.Project
	err = t.st.View(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		return tx.EachProjectOwnedBy(t.Project.OwnerUID, func(p store.Project) error {
			ps = append(ps, &p)
			return nil
		})
	})
	if err != nil {
		return 0, 0, fmt.Errorf("data snapshot: %w", err)
	}
	held = snapshot.Held(snapshot.OfUser(ps))
	return min(limit, t.opt.SnapshotQuota-held), held, nil
}

// keepSnapshot records rec in the project's snapshots within the
// project's bounds and the owner's quota, in one transaction: dropped are
// this project's snapshots that went, others those of the owner's other
// projects (their files are the caller's to remove). fits is false when
// rec itself did not fit the quota (pending restores took the room
// meanwhile): it is dropped too.
func keepSnapshot(ctx context.Context, t *Task, rec store.Snapshot) (dropped []store.Snapshot, others []snapshot.Owned, fits bool, err error) {
	var p *store.Project
	err = t.st.Update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		dropped, others, fits = nil, nil, true
		var err error
		if p, err = tx.Project(t.Project.Name); err != nil {
			return err
		}
		before := p.Snapshots
		p.Snapshots = append(slices.Clip(p.Snapshots), rec)
		p.Snapshots, dropped = snapshot.Retain(p.Snapshots, t.opt.SnapshotKeep, t.opt.SnapshotMaxBytes, p.Spec.RestoreSnapshot)
		if t.opt.SnapshotQuota <= 0 {
			return tx.PutProject(p)
		}
		owned := map[string]*store.Project{p.Name: p}
		all := []*store.Project{p}
		err = tx.EachProjectOwnedBy(p.OwnerUID, func(o store.Project) error {
			if o.Name != p.Name {
				owned[o.Name] = &o
				all = append(all, &o)
			}
			return nil
		})
		if err != nil {
			return err
		}
		var drop []snapshot.Owned
		drop, fits = snapshot.FitQuota(snapshot.OfUser(all), t.opt.SnapshotQuota, p.Name, rec.ID)
		if !fits {
			// Pending restores took the room since snapshotRoom: the
			// new copy goes (its file with the caller's Prune), and
			// nothing is dropped for it.
			p.Snapshots, dropped = before, nil
			return tx.PutProject(p)
		}
		changed := map[string]bool{p.Name: true}
		for _, d := range drop {
			o := owned[d.Project]
			o.Snapshots = slices.DeleteFunc(o.Snapshots, func(s store.Snapshot) bool { return s.ID == d.ID })
			changed[o.Name] = true
			if o.Name == p.Name {
				dropped = append(dropped, d.Snapshot)
			} else {
				others = append(others, d)
			}
		}
		for name := range changed {
			if err := tx.PutProject(owned[name]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, false, fmt.Errorf("record status: %w", err)
	}
	t.Project = p
	return dropped, others, fits, nil
}

// restoreSnapshot puts snapshot id back and clears the spec's request for
// it (a status-like change: the generation does not move).
func restoreSnapshot(ctx context.Context, t *Task, id string) (string, error) {
	s := t.Project.Snapshot(id)
	if s == nil {
		return "", fmt.Errorf("data snapshot %s is no longer kept; nothing was restored", id)
	}
	if s.Engine != engine(t.Project.Spec) {
		return "", fmt.Errorf("data snapshot %s is of a %s database; the project now uses %s", id, s.Engine, engine(t.Project.Spec))
	}
	f, err := snapshot.NewDir(t.opt.BaseDir).Open(t.Project.Name, id)
	if err != nil {
		return "", fmt.Errorf("data snapshot %s: %w", id, err)
	}
	defer f.Close()
	if s.Engine == snapshot.PostgreSQL {
		err = t.opt.PGRestore(ctx, pgConn(t.Project.Spec.Database), f)
	} else {
		err = loadSQLite(ctx, t, f)
	}
	if err != nil {
		return "", fmt.Errorf("restore data snapshot %s: %w", id, err)
	}
	media := ""
	if s.Media {
		m, err := snapshot.NewDir(t.opt.BaseDir).Open(t.Project.Name, snapshot.MediaID(id))
		if err != nil {
			return "", fmt.Errorf("media files of data snapshot %s: %w", id, err)
		}
		defer m.Close()
		if err := loadPrivd(ctx, t, true, m); err != nil {
			return "", fmt.Errorf("restore the media files of data snapshot %s: %w", id, err)
		}
		media = " and its media files"
	}
	// What privd loaded was written as the project's user, after this
	// run's secure step: give it the file policy now (group opus, as
	// every deploy leaves data), or it stays the user's alone until the
	// next change, and opusd cannot measure it (opusctl df).
	if _, err := stepSecure(ctx, t); err != nil {
		return "", fmt.Errorf("after restoring data snapshot %s: %w", id, err)
	}
	if err := t.Update(ctx, func(p *store.Project) {
		if p.Spec.RestoreSnapshot == id {
			p.Spec.RestoreSnapshot = ""
		}
	}); err != nil {
		return "", err
	}
	return fmt.Sprintf("restored data snapshot %s%s taken %s: what was written to the database since is gone", id, media, s.Time.UTC().Format(time.RFC3339)), nil
}

// pgConn is how a snapshot reaches the project's PostgreSQL database: as
// the project's role, with its password (from opusd's store; never on a
// command line).
func pgConn(db *store.Database) postgres.Conn {
	return postgres.Conn{Host: db.Host, Port: db.Port, Name: db.Name, User: db.User, Password: db.Password}
}

// dumpSQLite has privd copy the project's SQLite database into w.
func dumpSQLite(ctx context.Context, t *Task, w io.Writer) error {
	return dumpPrivd(ctx, t, false, w)
}

// dumpPrivd has privd copy the project's SQLite database, or with media
// its media files, into w. NotFound (no database) and ResourceExhausted
// (past snapshot_max_bytes) come back as privd's status; other errors
// say which call failed.
func dumpPrivd(ctx context.Context, t *Task, media bool, w io.Writer) error {
	err := DumpData(ctx, t.Privd, t.Project.Name, media, w)
	if _, ok := status.FromError(err); !ok || err == nil {
		return err
	}
	if c := status.Code(err); c == codes.NotFound || c == codes.ResourceExhausted {
		return err
	}
	if media {
		return &wordedError{msg: "copying the project's media files: opus-privd: " + status.Convert(err).Message(), err: err}
	}
	return privdErr("DumpData", err)
}

// DumpData has privd copy project's SQLite database, or with media its
// media files (a tar), into w. privd's refusals come back as its gRPC
// status; an error of w's as it is.
func DumpData(ctx context.Context, privd privdv1.PrivdClient, project string, media bool, w io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := privd.DumpData(ctx, &privdv1.DumpDataRequest{Project: project, Media: media})
	if err != nil {
		return err
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(m.GetChunk()); err != nil {
			return err
		}
	}
}

// loadSQLite has privd load the database read from r into the project's.
func loadSQLite(ctx context.Context, t *Task, r io.Reader) error {
	return loadPrivd(ctx, t, false, r)
}

// loadPrivd has privd load the database (or with media, the tar of media
// files) read from r into the project's.
func loadPrivd(ctx context.Context, t *Task, media bool, r io.Reader) error {
	return LoadData(ctx, t.Privd, t.Project.Name, media, r)
}

// LoadData has privd load project's database (or, with media, the tar of
// its media files) from r, as DumpData wrote it.
func LoadData(ctx context.Context, privd privdv1.PrivdClient, project string, media bool, r io.Reader) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := privd.LoadData(ctx)
	if err != nil {
		return privdErr("LoadData", err)
	}
	buf := make([]byte, 1<<20)
	first := true
	for {
		n, rerr := r.Read(buf)
		if n > 0 || first {
			m := &privdv1.LoadDataRequest{Chunk: buf[:n]}
			if first {
				m.Project, m.Media, first = project, media, false
			}
			if err := stream.Send(m); err != nil {
				// The server ended the call: its status comes with
				// CloseAndRecv.
				break
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return privdErr("LoadData", err)
	}
	return nil
}
