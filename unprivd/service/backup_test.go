package service

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/backup"
	"github.com/opus-hosting/opus/unprivd/postgres"
	"github.com/opus-hosting/opus/unprivd/snapshot"
	"github.com/opus-hosting/opus/unprivd/store"
)

// DumpData answers privd's copy of a project's database or media with a
// fixed content saying which.
func (f *fakePrivd) DumpData(_ context.Context, in *privdv1.DumpDataRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[privdv1.DumpDataResponse], error) {
	what := "sqlite of " + in.GetProject()
	if in.GetMedia() {
		what = "media of " + in.GetProject()
	}
	return &fakeDump{chunks: [][]byte{[]byte(what)}}, nil
}

type fakeDump struct {
	grpc.ClientStream
	chunks [][]byte
}

func (d *fakeDump) Recv() (*privdv1.DumpDataResponse, error) {
	if len(d.chunks) == 0 {
		return nil, io.EOF
	}
	c := d.chunks[0]
	d.chunks = d.chunks[1:]
	return &privdv1.DumpDataResponse{Chunk: c}, nil
}

const theirKey = "their-secret-key-0123456789"

// putDeployed records project name owned by owner as deployed (a git app
// at a commit), with its secret key.
func putDeployed(t *testing.T, s *server, name string, owner uint32) {
	t.Helper()
	spec := store.Spec{Apps: []store.AppSpec{{Name: "news", Git: &store.GitSource{URL: "https://example.com/news.git", Ref: "main"}}},
		Settings: store.Settings{Debug: true, Env: map[string]string{"COLOUR": "blue"}, MemoryBytes: 1 << 30}}
	err := s.st.Update(context.Background(), func(tx *store.Tx) error {
		p := &store.Project{Name: name, OwnerUID: owner, Spec: spec, Generation: 1,
			Status:  store.Status{Phase: store.PhaseReady, ObservedGeneration: 1, Apps: map[string]store.AppStatus{"news": {RequestedRef: "main", ResolvedCommit: strings.Repeat("c", 40)}}},
			Secrets: &store.Secrets{SecretKey: theirKey}}
		applied := spec
		p.Applied = &applied
		return tx.CreateProject(p)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func backupOf(t *testing.T, s *server, name string) ([]byte, error) {
	t.Helper()
	st, err := s.client.BackupProject(context.Background(), &opusv1.BackupProjectRequest{Name: name})
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return b.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		b.Write(m.GetChunk())
	}
}

func restoreTo(t *testing.T, s *server, info *opusv1.RestoreInfo, file []byte) (*opusv1.Operation, error) {
	t.Helper()
	st, err := s.client.RestoreProject(context.Background())
	if err != nil {
		return nil, err
	}
	st.Send(&opusv1.RestoreProjectRequest{Part: &opusv1.RestoreProjectRequest_Info{Info: info}})
	for len(file) > 0 {
		n := min(len(file), 4096)
		if err := st.Send(&opusv1.RestoreProjectRequest{Part: &opusv1.RestoreProjectRequest_Chunk{Chunk: file[:n]}}); err != nil {
			break
		}
		file = file[n:]
	}
	return st.CloseAndRecv()
}

// TestBackupOnlyForOwnerOrAdmin: a backup carries the project's secrets,
// so someone else's project is not found (and the refusal logged), as
// for every owner call; an admin gets it whole: the project at its
// deployed commit without the admins-only limits, its secret key, the
// database and media privd copied.
func TestBackupOnlyForOwnerOrAdmin(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	putDeployed(t, s, "theirs", 4242)
	if _, err := backupOf(t, s, "theirs"); status.Code(err) != codes.NotFound {
		t.Fatalf("backup of another user's project: %v, want NotFound", err)
	}
	if !strings.Contains(s.logs.String(), "refused") || !strings.Contains(s.logs.String(), "BackupProject") {
		t.Errorf("the refusal is not logged:\n%s", s.logs)
	}

	admin := startServer(t, serverOpt{admins: fakeAdmins{testUID(): true}})
	putDeployed(t, admin, "theirs", 4242)
	file, err := backupOf(t, admin, "theirs")
	if err != nil {
		t.Fatal(err)
	}
	a, err := backup.Read(bytes.NewReader(file), t.TempDir(), backup.Limits{Data: 1 << 20, App: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Secrets.SecretKey != theirKey {
		t.Errorf("backup's secret key %q, want the project's", a.Secrets.SecretKey)
	}
	app := a.Project.GetApps()[0].GetSource().GetGit()
	if app.GetRef() != strings.Repeat("c", 40) || app.GetUrl() != "https://example.com/news.git" {
		t.Errorf("the app is backed up as %v, want the deployed commit", app)
	}
	if set := a.Project.GetSettings(); !set.GetDebug() || set.GetEnv()["COLOUR"] != "blue" || set.GetMemoryBytes() != 0 {
		t.Errorf("settings %v: want debug and env, and no admins-only memory bound", set)
	}
	for part, want := range map[string]string{backup.SQLiteFile: "sqlite of theirs", backup.MediaFile: "media of theirs"} {
		f, err := a.Open(part)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(f)
		f.Close()
		if string(got) != want {
			t.Errorf("%s holds %q, want %q", part, got, want)
		}
	}
	if _, err := backupOf(t, admin, "nothing"); status.Code(err) != codes.NotFound {
		t.Errorf("backup of no project: %v", err)
	}
}

// TestRestoreRecordsProject: a restore records the project for the caller
// with the backup's secret key and its data as a snapshot (database and
// media) that the first run restores, as a RESTORE operation.
// Over the caller's own project it needs replace, and then replaces spec
// and key at a new generation (the key replaced kept for the undo),
// keeping the owner's certificate and the limits an admin set. Over
// another's project it is refused as a create would be; giving the
// project to another owner is an admin's; a refused restore leaves no
// record and no snapshot file.
func TestRestoreRecordsProject(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{testUID(): true}})
	ctx := context.Background()
	putDeployed(t, s, "orig", testUID())
	file, err := backupOf(t, s, "orig")
	if err != nil {
		t.Fatal(err)
	}
	op, err := restoreTo(t, s, &opusv1.RestoreInfo{Name: "twin"}, file)
	if err != nil {
		t.Fatal(err)
	}
	if op.GetKind() != opusv1.OperationKind_OPERATION_KIND_RESTORE || op.GetProject() != "twin" {
		t.Errorf("operation %v", op)
	}
	p, err := s.st.GetProject(ctx, "twin")
	if err != nil {
		t.Fatal(err)
	}
	snap := p.Snapshot(p.Spec.RestoreSnapshot)
	if p.OwnerUID != testUID() || p.Secrets.SecretKey != theirKey || snap == nil || !snap.Media || snap.Engine != snapshot.SQLite || snap.Generation != 0 {
		t.Fatalf("restored record: owner %d secrets %+v snapshot %+v", p.OwnerUID, p.Secrets, snap)
	}
	if p.Spec.Apps[0].Git.Ref != strings.Repeat("c", 40) || p.Spec.Settings.MemoryBytes != 0 {
		t.Errorf("restored spec %+v", p.Spec)
	}
	dir := filepath.Join(s.dir, "base", "snapshots", "twin")
	for id, want := range map[string]string{snap.ID: "sqlite of orig", snapshot.MediaID(snap.ID): "media of orig"} {
		if got, err := os.ReadFile(filepath.Join(dir, id)); err != nil || string(got) != want {
			t.Errorf("snapshot %s: %q %v, want %q", id, got, err, want)
		}
	}

	// The name is taken: replace is needed.
	if _, err := restoreTo(t, s, &opusv1.RestoreInfo{Name: "twin"}, file); status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "--replace") {
		t.Errorf("restore over an existing project: %v", err)
	}
	owner := &store.OwnerCertificate{CertificatePEM: []byte("cert"), KeyPEM: []byte("key")}
	if _, err := s.st.UpdateProject(ctx, "twin", func(p *store.Project) error {
		p.Secrets.SecretKey, p.Spec.Certificate = "another key", owner
		p.Spec.Settings.MemoryBytes = 512 << 20
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := restoreTo(t, s, &opusv1.RestoreInfo{Name: "twin", Replace: true}, file); err != nil {
		t.Fatal(err)
	}
	q, _ := s.st.GetProject(ctx, "twin")
	if q.Generation != p.Generation+1 || q.Secrets.SecretKey != theirKey || q.Secrets.Replaced != "another key" || q.Spec.Certificate == nil || q.Spec.Settings.MemoryBytes != 512<<20 || len(q.Snapshots) != 2 || q.Spec.RestoreSnapshot == p.Spec.RestoreSnapshot {
		t.Errorf("after restore --replace: generation %d secrets %+v certificate %v snapshots %d restore %s",
			q.Generation, q.Secrets, q.Spec.Certificate, len(q.Snapshots), q.Spec.RestoreSnapshot)
	}

	// Not an admin: not over another's project, not for another owner.
	plain := startServer(t, serverOpt{admins: fakeAdmins{}})
	putDeployed(t, plain, "theirs", 4242)
	for _, tc := range []struct {
		info *opusv1.RestoreInfo
		code codes.Code
	}{
		{&opusv1.RestoreInfo{Name: "theirs", Replace: true}, codes.AlreadyExists},
		{&opusv1.RestoreInfo{Name: "mine", OwnerUid: 4242}, codes.PermissionDenied},
	} {
		if _, err := restoreTo(t, plain, tc.info, file); status.Code(err) != tc.code {
			t.Errorf("restore %v by a plain user: %v, want %v", tc.info, err, tc.code)
		}
	}
	p2, _ := plain.st.GetProject(ctx, "theirs")
	if p2.Secrets.SecretKey != theirKey || p2.Generation != 1 {
		t.Errorf("a refused restore changed the project: %+v", p2)
	}
	if _, err := plain.st.GetProject(ctx, "mine"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused restore recorded a project: %v", err)
	}
	for _, n := range []string{"theirs", "mine"} {
		if entries, _ := os.ReadDir(filepath.Join(plain.dir, "base", "snapshots", n)); len(entries) != 0 {
			t.Errorf("a refused restore left snapshots of %s: %v", n, entries)
		}
	}
}

// TestRestoreRefusesSharedDatabase: a backup of a project whose
// PostgreSQL database was given by its parameters restores into that same
// database, so not --as beside a project that uses it (it would empty
// the original's data); the backup carries the password in its secrets.
func TestRestoreRefusesSharedDatabase(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{testUID(): true}})
	ctx := context.Background()
	putDeployed(t, s, "orig", testUID())
	db := &store.Database{Engine: "postgresql", Host: "db.example.com", Port: 5432, Name: "orig", User: "orig", Password: "pg-password"}
	if _, err := s.st.UpdateProject(ctx, "orig", func(p *store.Project) error {
		p.Spec.Database, p.Applied.Database = db, db
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s.svc.cfg.Backups.PGDump = func(_ context.Context, c postgres.Conn, w io.Writer) error {
		_, err := io.WriteString(w, "pg_dump of "+c.Name)
		return err
	}
	file, err := backupOf(t, s, "orig")
	if err != nil {
		t.Fatal(err)
	}
	a, err := backup.Read(bytes.NewReader(file), t.TempDir(), backup.Limits{Data: 1 << 20, App: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if a.Secrets.DatabasePassword != "pg-password" || !a.Has(backup.PGDumpFile) || a.Has(backup.SQLiteFile) {
		t.Errorf("backup of a PostgreSQL project: secrets %+v, parts %v", a.Secrets, a.Manifest.Parts)
	}
	_, err = restoreTo(t, s, &opusv1.RestoreInfo{Name: "twin"}, file)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `project "orig"`) {
		t.Errorf("restore beside the project using the database: %v, want FailedPrecondition naming it", err)
	}
	if _, err := s.st.GetProject(ctx, "twin"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused restore recorded a project: %v", err)
	}
}

// TestRestoreLimitOnePerCaller: a caller sends one backup at a time;
// others are not held up by it, and the turn comes back when it ends.
func TestRestoreLimitOnePerCaller(t *testing.T) {
	l := &uidLimit{max: 1}
	release, ok := l.acquire(1000)
	if !ok {
		t.Fatal("first restore refused")
	}
	if _, ok := l.acquire(1000); ok {
		t.Error("a second restore of the same caller at once was let through")
	}
	other, ok := l.acquire(1001)
	if !ok {
		t.Error("another caller's restore was held up")
	}
	other()
	release()
	if r, ok := l.acquire(1000); !ok {
		t.Error("the caller's turn did not come back")
	} else {
		r()
	}
}

// TestBackupTmpEmptiedAtStart: what a backup or restore cut short by a
// crash spooled is removed when opusd starts again.
func TestBackupTmpEmptiedAtStart(t *testing.T) {
	s := startServer(t, serverOpt{})
	left := filepath.Join(backupTmp(s.svc.cfg.Backups.BaseDir), "restore-123", "database.sqlite3")
	if err := os.MkdirAll(filepath.Dir(left), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(left, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(s.svc.cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("%s is still there: %v", left, err)
	}
}

// TestRestoreWithinSnapshotQuota: a restore keeps the backup's database
// and media files as a snapshot its project's next run must restore,
// which nothing may drop until then; so it must fit the owner's
// snapshot_quota beside the other snapshots pending restores hold, or a
// user could pile up restores that never run (a git commit that is gone)
// past any quota. Refused, nothing is recorded and no file is left.
func TestRestoreWithinSnapshotQuota(t *testing.T) {
	ctx := context.Background()
	// The fake privd's copies: "sqlite of orig" and "media of orig".
	const parts = int64(len("sqlite of orig") + len("media of orig"))
	for _, tc := range []struct {
		name    string
		quota   int64
		pending bool // the owner's other project holds 10 bytes for a pending restore
		want    codes.Code
	}{
		{"no quota", 0, true, codes.OK},
		{"fits", parts + 10, true, codes.OK},
		{"held by a pending restore", parts + 9, true, codes.ResourceExhausted},
		{"others may be dropped", parts, false, codes.OK},
		{"larger than the quota", parts - 1, false, codes.ResourceExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, serverOpt{admins: fakeAdmins{}, disk: Disk{SnapshotQuota: tc.quota}})
			uid := uint32(os.Getuid())
			putDeployed(t, s, "orig", uid)
			if _, err := s.st.UpdateProject(ctx, "orig", func(p *store.Project) error {
				p.Snapshots = []store.Snapshot{{ID: "held", Size: 4, Media: true, MediaSize: 6}}
				if tc.pending {
					p.Spec.RestoreSnapshot = "held"
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			file, err := backupOf(t, s, "orig")
			if err != nil {
				t.Fatal(err)
			}
			_, err = restoreTo(t, s, &opusv1.RestoreInfo{Name: "twin"}, file)
			if status.Code(err) != tc.want {
				t.Fatalf("restore: %v, want %v", err, tc.want)
			}
			if tc.want == codes.OK {
				return
			}
			if !strings.Contains(err.Error(), "snapshot_quota") {
				t.Errorf("the refusal does not name the quota: %v", err)
			}
			if _, err := s.st.GetProject(ctx, "twin"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("a refused restore recorded the project: %v", err)
			}
			if entries, _ := os.ReadDir(filepath.Join(s.dir, "base", "snapshots", "twin")); len(entries) != 0 {
				t.Errorf("a refused restore left snapshot files: %v", entries)
			}
		})
	}
}

// TestBackupOnePerCaller: a backup spools the project's database and
// media (up to snapshot_max_bytes each) in opusd's directory and has
// privd copy them, so a caller runs one at a time: a second while the
// first is copying is refused at once (else a user could start hundreds
// and fill opusd's disk with copies of one project); once the first is
// done the next is served.
func TestBackupOnePerCaller(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	uid := uint32(os.Getuid())
	putDeployed(t, s, "orig", uid)
	db := &store.Database{Engine: "postgresql", Host: "db.example.com", Port: 5432, Name: "orig", User: "orig", Password: "pg-password"}
	if _, err := s.st.UpdateProject(ctx, "orig", func(p *store.Project) error {
		p.Spec.Database, p.Applied.Database = db, db
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.svc.cfg.Backups.PGDump = func(ctx context.Context, c postgres.Conn, w io.Writer) error {
		first := false
		once.Do(func() { first = true })
		if first {
			close(entered)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		_, err := io.WriteString(w, "pg_dump of "+c.Name)
		return err
	}
	first := make(chan error, 1)
	go func() { _, err := backupOf(t, s, "orig"); first <- err }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first backup never copied the database")
	}
	if _, err := backupOf(t, s, "orig"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a second backup while the first copies: %v, want ResourceExhausted", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("the first backup: %v", err)
	}
	if _, err := backupOf(t, s, "orig"); err != nil {
		t.Errorf("a backup after the first: %v", err)
	}
}

// TestRestoreRefusalNamesTheBackupFile: a damaged file is refused in the
// words opusctl's user knows ("backup file", not the request's field
// "file"), saying what is wrong, and records nothing.
func TestRestoreRefusalNamesTheBackupFile(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{testUID(): true}})
	putDeployed(t, s, "orig", testUID())
	file, err := backupOf(t, s, "orig")
	if err != nil {
		t.Fatal(err)
	}
	_, err = restoreTo(t, s, &opusv1.RestoreInfo{Name: "twin"}, file[:len(file)/2])
	if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "backup file: not a valid Opus backup: the file is cut short") {
		t.Errorf("restore of half a backup: %v, want InvalidArgument starting \"backup file: not a valid Opus backup: the file is cut short\"", err)
	}
	if _, err := s.st.GetProject(context.Background(), "twin"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused restore recorded a project: %v", err)
	}
}

// testUID is the uid the tests call as: the admin or owner in tests that
// need one (make unit runs as any user, not only root).
func testUID() uint32 { return uint32(os.Getuid()) }
