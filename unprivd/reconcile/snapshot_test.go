package reconcile

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/postgres"
	"github.com/opus-hosting/opus/unprivd/store"
)

// The fake privd's databases: DumpData sends f.db[project] (NotFound when
// absent), LoadData sets it.
func (f *fakePrivd) DumpData(ctx context.Context, in *privdv1.DumpDataRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[privdv1.DumpDataResponse], error) {
	if err := f.enter(ctx, "DumpData", in.Project); err != nil {
		return nil, err
	}
	f.mu.Lock()
	data, ok := f.db[in.Project]
	f.mu.Unlock()
	if !ok {
		return &dumpStream{err: status.Error(codes.NotFound, "load data: the project has no SQLite database file")}, nil
	}
	return &dumpStream{chunks: [][]byte{data[:len(data)/2], data[len(data)/2:]}}, nil
}

func (f *fakePrivd) LoadData(ctx context.Context, _ ...grpc.CallOption) (grpc.ClientStreamingClient[privdv1.LoadDataRequest, privdv1.LoadDataResponse], error) {
	return &loadStream{f: f, ctx: ctx}, nil
}

type dumpStream struct {
	grpc.ClientStream
	chunks [][]byte
	err    error
}

func (d *dumpStream) Recv() (*privdv1.DumpDataResponse, error) {
	if d.err != nil {
		return nil, d.err
	}
	if len(d.chunks) == 0 {
		return nil, io.EOF
	}
	c := d.chunks[0]
	d.chunks = d.chunks[1:]
	return &privdv1.DumpDataResponse{Chunk: c}, nil
}

type loadStream struct {
	grpc.ClientStream
	f       *fakePrivd
	ctx     context.Context
	project string
	buf     bytes.Buffer
}

func (l *loadStream) Send(m *privdv1.LoadDataRequest) error {
	if m.Project != "" {
		l.project = m.Project
	}
	l.buf.Write(m.Chunk)
	return nil
}

func (l *loadStream) CloseAndRecv() (*privdv1.LoadDataResponse, error) {
	if err := l.f.enter(l.ctx, "LoadData", l.project); err != nil {
		return nil, err
	}
	l.f.mu.Lock()
	defer l.f.mu.Unlock()
	if l.f.db == nil {
		l.f.db = map[string][]byte{}
	}
	l.f.db[l.project] = bytes.Clone(l.buf.Bytes())
	return &privdv1.LoadDataResponse{Bytes: int64(l.buf.Len())}, nil
}

func (f *fakePrivd) setDB(project, data string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db == nil {
		f.db = map[string][]byte{}
	}
	f.db[project] = []byte(data)
}

func (f *fakePrivd) getDB(project string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return string(f.db[project])
}

// snapEnv is liveEnv with data snapshots on (keep 3, 1000 bytes).
func snapEnv(t *testing.T) (*env, *Reconciler, *atomic.Bool) {
	t.Helper()
	return snapEnvWith(t, func(*Options) {})
}

// snapEnvWith is snapEnv with more options set by tweak.
func snapEnvWith(t *testing.T, tweak func(*Options)) (*env, *Reconciler, *atomic.Bool) {
	t.Helper()
	e := newEnv(t)
	e.tweak = func(o *Options) { o.SnapshotMaxBytes, o.SnapshotKeep = 1000, 3; tweak(o) }
	e.git.set(liveRepo, "v1", fakeCommit{hash: hashV1, files: map[string]string{"__init__.py": "", "views.py": "# v1\n"}})
	e.git.set(liveRepo, "v2", fakeCommit{hash: hashV2, files: map[string]string{"__init__.py": "", "views.py": "# v2\n"}})
	e.git.set(liveRepo, "v3", fakeCommit{hash: strings.Repeat("3", 40), files: map[string]string{"__init__.py": "", "views.py": "# v3\n"}})
	var failMigrate atomic.Bool
	e.privd.manage = func(req *privdv1.RunManageRequest) *privdv1.RunManageResponse {
		if slices.Contains(req.Commands, privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE) {
			// The migration changes the data, then maybe fails (called
			// with e.privd.mu held).
			if d, ok := e.privd.db["live"]; ok {
				e.privd.db["live"] = append(slices.Clip(d), "+migrated"...)
			}
			if failMigrate.CompareAndSwap(true, false) {
				return &privdv1.RunManageResponse{Output: "RuntimeError: opus-unit-migration-boom\n",
					FailedCommand: privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE, ExitCode: 1}
			}
		}
		return &privdv1.RunManageResponse{Output: "ok\n"}
	}
	r := e.start(t, 1)
	id := e.createSpec(t, "live", store.Spec{Apps: []store.AppSpec{{Name: "shop", Git: &store.GitSource{URL: liveRepo, Ref: "v1"}, ByUID: 1000}}})
	r.Kick("live")
	op := e.wait(t, id)
	mustSucceed(t, op)
	if m := stepMessage(op, "snapshot"); !strings.Contains(m, "no SQLite database yet") {
		t.Errorf("first deploy's snapshot step: %q", m)
	}
	return e, r, &failMigrate
}

func snapshotFile(t *testing.T, e *env, id string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.base, "snapshots", "live", id))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSnapshotBeforeMigrate: a change that moves an app's code copies the
// database before migrating, recording the revisions that ran; a settings
// change takes none; the count bound drops the oldest.
func TestSnapshotBeforeMigrate(t *testing.T) {
	e, r, _ := snapEnv(t)
	e.privd.setDB("live", "rows-at-v1")
	op := e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = "v2" })
	mustSucceed(t, op)
	p := e.project(t, "live")
	if len(p.Snapshots) != 1 || p.Snapshots[0].Revisions["shop"] != 1 || p.Snapshots[0].Engine != "sqlite" || p.Snapshots[0].Size != int64(len("rows-at-v1")) {
		t.Fatalf("snapshots after the update: %+v", p.Snapshots)
	}
	if got := snapshotFile(t, e, p.Snapshots[0].ID); got != "rows-at-v1" {
		t.Errorf("snapshot holds %q, want the data before the migration", got)
	}
	calls := e.privd.callList()
	if d, m := slices.Index(calls, "DumpData live"), slices.Index(calls, "RunManage live"); d < 0 || m < d {
		// RunManage of the create comes earlier: look after the dump.
		if d < 0 || !slices.Contains(calls[d:], "RunManage live") {
			t.Errorf("no dump before the migrate: %v", calls)
		}
	}

	n := len(e.privd.callList())
	mustSucceed(t, e.run(t, r, store.OpUpdateSettings, func(s *store.Spec) { s.Settings.Debug = true }))
	if slices.Contains(e.privd.callList()[n:], "DumpData live") {
		t.Error("a settings change took a data snapshot")
	}

	for _, ref := range []string{"v3", "v1", "v2"} {
		mustSucceed(t, e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = ref }))
	}
	p = e.project(t, "live")
	if len(p.Snapshots) != 3 || p.Snapshots[2].Revisions["shop"] != 4 {
		t.Fatalf("after 4 updates with keep 3: %+v", p.Snapshots)
	}
	entries, _ := os.ReadDir(filepath.Join(e.base, "snapshots", "live"))
	if len(entries) != 3 {
		t.Errorf("snapshot files: %v, want the 3 recorded", entries)
	}

	// Too large for the bound: noted, the change goes on.
	e.privd.setDB("live", strings.Repeat("x", 1001))
	op = e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = "v3" })
	mustSucceed(t, op)
	if m := stepMessage(op, "snapshot"); !strings.Contains(m, "larger than snapshot_max_bytes") {
		t.Errorf("oversize snapshot step: %q", m)
	}
	if got := len(e.project(t, "live").Snapshots); got != 3 {
		t.Errorf("an oversize database was recorded: %d snapshots", got)
	}
}

// TestUndoRestoresSnapshot: a change whose migration fails is undone with
// its data: the database goes back to the copy taken before it.
func TestUndoRestoresSnapshot(t *testing.T) {
	e, r, failMigrate := snapEnv(t)
	e.privd.setDB("live", "rows-at-v1")
	failMigrate.Store(true)
	op := e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = "v2" })
	if op.State != store.OpFailed {
		t.Fatalf("failing update: %s", op.State)
	}
	waitPhase(t, e, "live", store.PhaseReady)
	// The undo's own migrate runs after the restore, on v1's code.
	if got := e.privd.getDB("live"); got != "rows-at-v1+migrated" {
		t.Errorf("database after the undo = %q, want the copy from before the change (then v1's migrate)", got)
	}
	if !slices.Contains(e.privd.callList(), "LoadData live") {
		t.Error("no LoadData")
	}
	p := e.project(t, "live")
	if p.Spec.RestoreSnapshot != "" || (p.Applied != nil && p.Applied.RestoreSnapshot != "") {
		t.Errorf("restore request left in the spec: %q", p.Spec.RestoreSnapshot)
	}
	if undo := stepMessage(op, "undo"); !strings.Contains(undo, "data snapshot") {
		t.Errorf("undo step says %q; want it to name the data snapshot", undo)
	}
}

// TestRestoreRequested: a spec naming a snapshot (a rollback with data)
// copies the database first, then puts the snapshot back, and clears the
// request.
func TestRestoreRequested(t *testing.T) {
	e, r, _ := snapEnv(t)
	e.privd.setDB("live", "rows-at-v1")
	mustSucceed(t, e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = "v2" }))
	first := e.project(t, "live").Snapshots[0]
	e.privd.setDB("live", "rows-at-v2")
	e.git.set(liveRepo, hashV1, fakeCommit{hash: hashV1, files: map[string]string{"__init__.py": "", "views.py": "# v1\n"}})
	op := e.run(t, r, store.OpRollback, func(s *store.Spec) {
		s.App("shop").Git.Ref, s.App("shop").RollbackTo = hashV1, 1
		s.RestoreSnapshot = first.ID
	})
	mustSucceed(t, op)
	if got := e.privd.getDB("live"); got != "rows-at-v1+migrated" {
		t.Errorf("database after the rollback = %q", got)
	}
	p := e.project(t, "live")
	if p.Spec.RestoreSnapshot != "" || len(p.Snapshots) != 2 || snapshotFile(t, e, p.Snapshots[1].ID) != "rows-at-v2" {
		t.Errorf("after the rollback: restore %q, snapshots %+v", p.Spec.RestoreSnapshot, p.Snapshots)
	}
	if m := stepMessage(op, "snapshot"); !strings.Contains(m, "restored data snapshot "+first.ID) {
		t.Errorf("snapshot step: %q", m)
	}
	// The data privd loaded (as the project's user) is secured after it,
	// before anything runs on it.
	calls := e.privd.callList()
	load := slices.Index(calls, "LoadData live")
	if load < 0 || !slices.Contains(calls[load:], "SecureTree live") ||
		slices.Index(calls[load:], "SecureTree live") > slices.Index(calls[load:], "RunManage live") {
		t.Errorf("no SecureTree between the restore and the migrate: %v", calls)
	}
}

// TestSnapshotPostgreSQL: a project on PostgreSQL is dumped before its
// migrations as its own role, and the undo of a failed change restores
// that dump.
func TestSnapshotPostgreSQL(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	db := "pg-at-v1"
	var dumpedAs []postgres.Conn
	var restored []string
	e.tweak = func(o *Options) {
		o.SnapshotMaxBytes, o.SnapshotKeep = 1000, 3
		o.PGDump = func(_ context.Context, c postgres.Conn, w io.Writer) error {
			mu.Lock()
			defer mu.Unlock()
			dumpedAs = append(dumpedAs, c)
			_, err := io.WriteString(w, db)
			return err
		}
		o.PGRestore = func(_ context.Context, c postgres.Conn, r io.Reader) error {
			b, err := io.ReadAll(r)
			mu.Lock()
			defer mu.Unlock()
			restored = append(restored, string(b))
			db = string(b)
			return err
		}
	}
	e.git.set(liveRepo, "v1", fakeCommit{hash: hashV1, files: map[string]string{"__init__.py": ""}})
	e.git.set(liveRepo, "v2", fakeCommit{hash: hashV2, files: map[string]string{"__init__.py": "", "x.py": ""}})
	var failMigrate atomic.Bool
	e.privd.manage = func(req *privdv1.RunManageRequest) *privdv1.RunManageResponse {
		if slices.Contains(req.Commands, privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE) {
			mu.Lock()
			db += "+migrated"
			mu.Unlock()
			if failMigrate.CompareAndSwap(true, false) {
				return &privdv1.RunManageResponse{Output: "boom\n", FailedCommand: privdv1.ManageCommand_MANAGE_COMMAND_MIGRATE, ExitCode: 1}
			}
		}
		return &privdv1.RunManageResponse{Output: "ok\n"}
	}
	r := e.start(t, 1)
	pg := &store.Database{Engine: "postgresql", Host: "db.example", Port: 5432, Name: "live", User: "live", Password: "pw-secret"}
	id := e.createSpec(t, "live", store.Spec{Database: pg, Apps: []store.AppSpec{{Name: "shop", Git: &store.GitSource{URL: liveRepo, Ref: "v1"}, ByUID: 1000}}})
	r.Kick("live")
	mustSucceed(t, e.wait(t, id))
	mu.Lock()
	db = "pg-at-v1"
	mu.Unlock()
	failMigrate.Store(true)
	op := e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = "v2" })
	if op.State != store.OpFailed {
		t.Fatalf("failing update: %s", op.State)
	}
	waitPhase(t, e, "live", store.PhaseReady)
	mu.Lock()
	defer mu.Unlock()
	if len(restored) != 1 || restored[0] != "pg-at-v1" || db != "pg-at-v1+migrated" {
		t.Errorf("restored %q, database %q; want the dump from before the change", restored, db)
	}
	if last := dumpedAs[len(dumpedAs)-1]; last.User != "live" || last.Password != "pw-secret" || last.Host != "db.example" {
		t.Errorf("dumped as %+v, want the project's role", last)
	}
	if s := e.project(t, "live").Snapshots; len(s) == 0 || s[len(s)-1].Engine != "postgresql" {
		t.Errorf("snapshots: %+v", s)
	}
}

// TestRestoreOverDamagedDatabase: a database privd finds damaged
// (DataLoss: SQLite cannot read it) cannot be copied; a change that
// restores a snapshot over it (a restore --replace, a rollback with data)
// is the repair and goes on with a warning, while an ordinary change
// that would migrate it still fails before migrating.
func TestRestoreOverDamagedDatabase(t *testing.T) {
	e, r, _ := snapEnv(t)
	e.privd.setDB("live", "rows-at-v1")
	mustSucceed(t, e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = "v2" }))
	first := e.project(t, "live").Snapshots[0]
	damaged := status.Error(codes.DataLoss, "dump data of live: the SQLite database is damaged: sqlite3.DatabaseError: file is not a database")

	e.privd.setDB("live", "garbage")
	e.privd.mu.Lock()
	e.privd.failOnce["DumpData"] = damaged
	e.privd.mu.Unlock()
	if op := e.run(t, r, store.OpUpdateApp, func(s *store.Spec) { s.App("shop").Git.Ref = "v3" }); op.State != store.OpFailed {
		t.Errorf("an update over a damaged database: %s, want FAILED (nothing copied, nothing migrated)", op.State)
	}
	waitPhase(t, e, "live", store.PhaseReady)

	e.privd.mu.Lock()
	e.privd.failOnce["DumpData"] = damaged
	e.privd.mu.Unlock()
	e.git.set(liveRepo, hashV1, fakeCommit{hash: hashV1, files: map[string]string{"__init__.py": "", "views.py": "# v1\n"}})
	op := e.run(t, r, store.OpRollback, func(s *store.Spec) {
		s.App("shop").Git.Ref, s.App("shop").RollbackTo = hashV1, 1
		s.RestoreSnapshot = first.ID
	})
	mustSucceed(t, op)
	if got := e.privd.getDB("live"); got != "rows-at-v1+migrated" {
		t.Errorf("database after restoring over a damaged one = %q", got)
	}
	if m := stepMessage(op, "snapshot"); !strings.Contains(m, "damaged") || !strings.Contains(m, "restored data snapshot "+first.ID) {
		t.Errorf("snapshot step: %q, want a warning that the damaged database was not copied, then the restore", m)
	}
}
