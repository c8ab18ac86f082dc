package service

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/store"
)

// appArchive is a tar.gz of a startapp-shaped app with filler in one file.
func appArchive(t *testing.T, app, filler string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range map[string]string{"__init__.py": "", "views.py": "# " + app + "\n", "filler.txt": filler} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// randomFiller is n incompressible bytes, so an archive's size is known.
func randomFiller(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return string(b)
}

// uploadStream is the server side of one UploadSource call: it hands out
// msgs and keeps the response.
type uploadStream struct {
	grpc.ServerStream // nil: only the methods below are called
	ctx               context.Context
	msgs              []*opusv1.UploadSourceRequest
	res               *opusv1.UploadSourceResponse
}

func (u *uploadStream) Context() context.Context { return u.ctx }

func (u *uploadStream) RecvMsg(m any) error {
	if len(u.msgs) == 0 {
		return io.EOF
	}
	proto.Merge(m.(*opusv1.UploadSourceRequest), u.msgs[0])
	u.msgs = u.msgs[1:]
	return nil
}

func (u *uploadStream) SendMsg(m any) error {
	u.res = m.(*opusv1.UploadSourceResponse)
	return nil
}

// uploadAs sends archive as uid through the stream interceptor and the
// service's registered handler, as a call on the socket would.
func uploadAs(t *testing.T, s *server, uid uint32, archive []byte) (string, error) {
	t.Helper()
	var handler grpc.StreamHandler
	for _, d := range opusv1.Opus_ServiceDesc.Streams {
		if d.StreamName == "UploadSource" {
			handler = d.Handler
		}
	}
	st := &uploadStream{ctx: peerCtx(uid), msgs: []*opusv1.UploadSourceRequest{
		{Part: &opusv1.UploadSourceRequest_Info{Info: &opusv1.UploadInfo{Origin: "/home/u/app", Size: int64(len(archive))}}},
		{Part: &opusv1.UploadSourceRequest_Chunk{Chunk: archive}},
	}}
	err := s.svc.StreamInterceptor()(s.svc, st, &grpc.StreamServerInfo{FullMethod: opusv1.Opus_UploadSource_FullMethodName, IsClientStream: true}, handler)
	return st.res.GetDigest(), err
}

func mustUpload(t *testing.T, s *server, uid uint32, archive []byte) string {
	t.Helper()
	d, err := uploadAs(t, s, uid, archive)
	if err != nil {
		t.Fatalf("upload as %d: %v", uid, err)
	}
	return d
}

func uploadApp(name, digest string) *opusv1.AppSpec {
	return &opusv1.AppSpec{Name: name, Source: &opusv1.AppSource{Kind: &opusv1.AppSource_Upload{Upload: &opusv1.UploadedSource{Digest: digest, Origin: "/home/u/" + name}}}}
}

func createAs(t *testing.T, s *server, uid uint32, req *opusv1.CreateProjectRequest) error {
	t.Helper()
	_, err := asUID(t, s.svc, uid, opusv1.Opus_CreateProject_FullMethodName, s.svc.CreateProject, req)
	return err
}

// uploaderOf returns the uploader the spec of project's app names.
func uploaderOf(t *testing.T, s *server, project, app string) uint32 {
	t.Helper()
	p, err := s.st.GetProject(context.Background(), project)
	if err != nil {
		t.Fatal(err)
	}
	a := p.Spec.App(app)
	if a == nil || a.Upload == nil || a.Upload.UploaderUID == nil {
		t.Fatalf("app %s of %s: %+v names no uploader", app, project, a)
	}
	return *a.Upload.UploaderUID
}

// TestUploadsBelongToUploader: an upload is usable by its uploader and by
// admins; to anybody else its digest is answered exactly like a digest
// nobody uploaded, through every call that takes one, and nothing is
// recorded.
func TestUploadsBelongToUploader(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{0: true}})
	ctx := context.Background()
	arch := appArchive(t, "blog", "")
	d := mustUpload(t, s, uidA, arch)
	if !s.uploads.Has(uidA, d) || s.uploads.Has(uidB, d) {
		t.Fatal("the upload is not stored as A's alone")
	}
	unknown := "sha256:" + strings.Repeat("ab", 32)

	// B's own project, for the calls that change one.
	if err := createAs(t, s, uidB, &opusv1.CreateProjectRequest{Name: "bee"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.st.UpdateProject(ctx, "bee", func(p *store.Project) error {
		p.Spec.Apps = []store.AppSpec{{Name: "blog", Git: &store.GitSource{URL: "https://example.com/blog.git"}}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before, _ := s.st.GetProject(ctx, "bee")
	kicks := len(s.kicker.list())
	calls := map[string]func(digest string) error{
		"create": func(digest string) error {
			return createAs(t, s, uidB, &opusv1.CreateProjectRequest{Name: "stolen", Apps: []*opusv1.AppSpec{uploadApp("blog", digest)}})
		},
		"add app": func(digest string) error {
			_, err := asUID(t, s.svc, uidB, opusv1.Opus_AddApp_FullMethodName, s.svc.AddApp,
				&opusv1.AddAppRequest{Project: "bee", App: uploadApp("shop", digest)})
			return err
		},
		"update app": func(digest string) error {
			_, err := asUID(t, s.svc, uidB, opusv1.Opus_UpdateApp_FullMethodName, s.svc.UpdateApp,
				&opusv1.UpdateAppRequest{Project: "bee", App: "blog", Source: uploadApp("blog", digest).Source})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			theirs, nobodys := call(d), call(unknown)
			if code(theirs) != codes.InvalidArgument || !strings.Contains(status.Convert(theirs).Message(), "send it first") {
				t.Fatalf("B naming A's digest: %v, want InvalidArgument", theirs)
			}
			// Word for word the answer to a digest nobody uploaded.
			if got, want := strings.ReplaceAll(status.Convert(theirs).Message(), d, unknown), status.Convert(nobodys).Message(); got != want || code(nobodys) != codes.InvalidArgument {
				t.Fatalf("answers differ:\n A's digest: %s\n unknown:    %s", got, want)
			}
		})
	}
	if _, err := s.st.GetProject(ctx, "stolen"); err == nil {
		t.Error("a refused create was recorded")
	}
	if after, _ := s.st.GetProject(ctx, "bee"); after.Generation != before.Generation || len(after.Spec.Apps) != 1 || after.Spec.Apps[0].Git == nil {
		t.Errorf("refused changes reached B's project: %+v", after.Spec)
	}
	if k := s.kicker.list(); len(k) != kicks {
		t.Errorf("refused calls kicked the reconciler: %v", k[kicks:])
	}

	// A uses it; the spec records whose it is.
	if err := createAs(t, s, uidA, &opusv1.CreateProjectRequest{Name: "ayy", Apps: []*opusv1.AppSpec{uploadApp("blog", d)}}); err != nil {
		t.Fatal(err)
	}
	if got := uploaderOf(t, s, "ayy", "blog"); got != uidA {
		t.Errorf("A's project names uploader %d", got)
	}
	// An admin may use anybody's upload: it stays its uploader's.
	if err := createAs(t, s, 0, &opusv1.CreateProjectRequest{Name: "admins", Apps: []*opusv1.AppSpec{uploadApp("blog", d)}}); err != nil {
		t.Fatal(err)
	}
	if got := uploaderOf(t, s, "admins", "blog"); got != uidA {
		t.Errorf("the admin's project names uploader %d, want A's", got)
	}
	// ... and in a user's project the owner's copy comes before others'.
	mustUpload(t, s, uidB, arch)
	if _, err := asUID(t, s.svc, 0, opusv1.Opus_UpdateApp_FullMethodName, s.svc.UpdateApp,
		&opusv1.UpdateAppRequest{Project: "bee", App: "blog", Source: uploadApp("blog", d).Source}); err != nil {
		t.Fatal(err)
	}
	if got := uploaderOf(t, s, "bee", "blog"); got != uidB {
		t.Errorf("the admin's update of B's project names uploader %d, want B (the owner)", got)
	}
	// B's own copy of the same archive is B's to use.
	if err := createAs(t, s, uidB, &opusv1.CreateProjectRequest{Name: "beetwo", Apps: []*opusv1.AppSpec{uploadApp("blog", d)}}); err != nil {
		t.Fatal(err)
	}
	if got := uploaderOf(t, s, "beetwo", "blog"); got != uidB {
		t.Errorf("B's project names uploader %d", got)
	}
}

// TestUploadQuota: an upload that would take its uploader past the quota
// is refused with ResourceExhausted saying the usage, the quota and what
// to do, and stores nothing; uploads a project uses always count; the
// uploader's unused uploads past the grace period are pruned first, so
// they never stand in the way.
func TestUploadQuota(t *testing.T) {
	a1, a2 := appArchive(t, "one", randomFiller(300)), appArchive(t, "two", randomFiller(300))
	quota := int64(len(a1) + len(a2) - 1)
	s := startServer(t, serverOpt{admins: fakeAdmins{}, uploadQuota: quota})
	ctx := context.Background()
	d1 := mustUpload(t, s, uidA, a1)
	over := func(when string) {
		t.Helper()
		_, err := uploadAs(t, s, uidA, a2)
		msg := status.Convert(err).Message()
		if code(err) != codes.ResourceExhausted {
			t.Fatalf("%s: upload past the quota = %v, want ResourceExhausted", when, err)
		}
		for _, want := range []string{"quota of", "your stored uploads take", "destroy projects", "upload_quota"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: message %q lacks %q", when, msg, want)
			}
		}
		if n, _ := s.uploads.Usage(uidA); n != int64(len(a1)) {
			t.Fatalf("%s: A stores %d bytes after a refusal, want %d", when, n, len(a1))
		}
	}
	over("unused upload inside its grace period")
	// The quota is the uploader's: B is not affected.
	mustUpload(t, s, uidB, a2)

	// Used by a project, the first upload counts however old it is.
	if err := createAs(t, s, uidA, &opusv1.CreateProjectRequest{Name: "quota", Apps: []*opusv1.AppSpec{uploadApp("one", d1)}}); err != nil {
		t.Fatal(err)
	}
	s.clock.Add(2 * source.DefaultGrace)
	over("upload used by a project")

	// Once the project is gone, the next upload prunes it and fits.
	if err := s.st.Update(ctx, func(tx *store.Tx) error { return tx.DeleteProject("quota") }); err != nil {
		t.Fatal(err)
	}
	d2 := mustUpload(t, s, uidA, a2)
	if s.uploads.Has(uidA, d1) || !s.uploads.Has(uidA, d2) {
		t.Fatalf("after the project went: first stored %v, second %v; want only the second", s.uploads.Has(uidA, d1), s.uploads.Has(uidA, d2))
	}
	// B's upload, unused and old, is B's business: A's upload left it.
	if !s.uploads.Has(uidB, d2) {
		t.Fatal("A's upload pruned B's")
	}
}

// TestPruneUploadsKeepsWhatProjectsNeed: pruning keeps every upload a
// spec names and those of each app's kept revisions (a rollback's
// targets; revisions_keep bounds them, see TestPruneDisk), removes unused
// uploads past the grace period, and keeps an upload claimed just before
// a spec names it.
func TestPruneUploadsKeepsWhatProjectsNeed(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	var d []string
	for i := range 6 {
		d = append(d, mustUpload(t, s, uidA, appArchive(t, "v", randomFiller(10+i))))
	}
	strayB := mustUpload(t, s, uidB, appArchive(t, "b", "b"))
	a := uint32(uidA)
	rev := func(digest string) store.Revision { return store.Revision{Resolved: digest, UploaderUID: &a} }
	p := &store.Project{Name: "keep", OwnerUID: uidA, Generation: 1, Spec: store.Spec{Apps: []store.AppSpec{
		{Name: "blog", Upload: &store.UploadSource{Digest: d[3], UploaderUID: &a}},
	}}, Status: store.Status{Apps: map[string]store.AppStatus{"blog": {Revisions: []store.Revision{
		rev(d[0]), {URL: "https://example.com/x.git", Resolved: strings.Repeat("1", 40)}, rev(d[1]), rev(d[2]),
	}}}}}
	if err := s.st.Update(ctx, func(tx *store.Tx) error { return tx.CreateProject(p) }); err != nil {
		t.Fatal(err)
	}
	s.clock.Add(source.DefaultGrace / 2)
	if !s.uploads.Use(uidA, d[5]) { // as a create about to name it
		t.Fatal("Use failed")
	}
	s.clock.Add(source.DefaultGrace/2 + time.Minute)
	if err := s.svc.PruneUploads(ctx); err != nil {
		t.Fatal(err)
	}
	var kept []int
	for i := range d {
		if s.uploads.Has(uidA, d[i]) {
			kept = append(kept, i)
		}
	}
	// d[4]: never used.
	if want := []int{0, 1, 2, 3, 5}; !slices.Equal(kept, want) {
		t.Errorf("kept uploads %v, want %v", kept, want)
	}
	if s.uploads.Has(uidB, strayB) {
		t.Error("B's unused upload survived")
	}
	// A deleting project keeps its uploads until its record goes.
	if _, err := s.st.UpdateProject(ctx, "keep", func(p *store.Project) error { p.Deleting = true; return nil }); err != nil {
		t.Fatal(err)
	}
	s.clock.Add(2 * source.DefaultGrace)
	if err := s.svc.PruneUploads(ctx); err != nil || !s.uploads.Has(uidA, d[3]) {
		t.Fatalf("a deleting project's upload was pruned (%v)", err)
	}
}

// TestRollbackToUpload: a rollback to an uploaded revision names the
// revision's uploader (whoever rolls back: the archive was this project's
// already) and restarts its grace period; one whose archive is gone, or
// that was recorded before uploads had owners, is refused.
func TestRollbackToUpload(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	d1 := mustUpload(t, s, uidB, appArchive(t, "one", "1")) // an admin put B's upload in A's project
	d2 := mustUpload(t, s, uidA, appArchive(t, "two", "2"))
	a, b := uint32(uidA), uint32(uidB)
	setRevs := func(revs ...store.Revision) {
		t.Helper()
		p := &store.Project{Name: "roll", OwnerUID: uidA, Generation: 1,
			Spec:   store.Spec{Apps: []store.AppSpec{{Name: "blog", Upload: &store.UploadSource{Digest: d2, UploaderUID: &a}}}},
			Status: store.Status{Apps: map[string]store.AppStatus{"blog": {ResolvedCommit: d2, Revisions: revs}}}}
		if err := s.st.Update(ctx, func(tx *store.Tx) error {
			tx.DeleteProject("roll")
			return tx.CreateProject(p)
		}); err != nil {
			t.Fatal(err)
		}
	}
	rollback := func() error {
		_, err := asUID(t, s.svc, uidA, opusv1.Opus_UpdateApp_FullMethodName, s.svc.UpdateApp,
			&opusv1.UpdateAppRequest{Project: "roll", App: "blog", Rollback: true})
		return err
	}
	cur := store.Revision{Resolved: d2, UploaderUID: &a}
	setRevs(store.Revision{Resolved: d1, UploaderUID: &b}, cur)
	s.clock.Add(source.DefaultGrace - time.Minute)
	if err := rollback(); err != nil {
		t.Fatal(err)
	}
	if got := uploaderOf(t, s, "roll", "blog"); got != uidB {
		t.Errorf("rollback names uploader %d, want the revision's (B)", got)
	}
	s.clock.Add(2 * time.Minute) // past the upload's grace, not past the claim's
	if _, _, err := s.uploads.Prune(ctx, func(uint32, string) bool { return false }); err != nil || !s.uploads.Has(uidB, d1) {
		t.Fatalf("the rollback's upload was not claimed (%v)", err)
	}
	for name, prev := range map[string]store.Revision{
		"archive gone":     {Resolved: "sha256:" + strings.Repeat("cd", 32), UploaderUID: &a},
		"recorded before":  {Resolved: d1},
		"other uploader's": {Resolved: d2, UploaderUID: &b},
	} {
		setRevs(prev, cur)
		if err := rollback(); code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "no longer stored") {
			t.Errorf("%s: rollback = %v, want FailedPrecondition", name, err)
		}
	}
}

// TestAdoptLegacyUploads: at start, uploads recorded before they had
// owners become their projects' owners' (specs and revisions), each owner
// gets the archives their projects need, the shared layout and what
// nothing needed go; a second run changes nothing.
func TestAdoptLegacyUploads(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(dir, "opusd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sources := filepath.Join(dir, "sources")
	// The legacy layout: everyone's uploads in one directory, by digest.
	digest := map[string]string{}
	if err := os.MkdirAll(filepath.Join(sources, "sha256"), 0o750); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"shared", "oldrev", "unused"} {
		arch := appArchive(t, name, name)
		sum := sha256.Sum256(arch)
		digest[name] = "sha256:" + hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(sources, "sha256", hex.EncodeToString(sum[:])+".tar.gz"), arch, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	gone := "sha256:" + strings.Repeat("ef", 32)
	// A and B both use "shared" (the hole: B named A's digest); A's
	// project has it deployed over "oldrev", and names an archive that
	// is gone.
	projects := []*store.Project{
		{Name: "ayy", OwnerUID: uidA, Generation: 1, Spec: store.Spec{Apps: []store.AppSpec{
			{Name: "blog", Upload: &store.UploadSource{Digest: digest["shared"]}},
			{Name: "lost", Upload: &store.UploadSource{Digest: gone}},
		}}, Status: store.Status{Apps: map[string]store.AppStatus{"blog": {Revisions: []store.Revision{
			{Resolved: digest["oldrev"]}, {Resolved: digest["shared"]},
		}}}}},
		{Name: "bee", OwnerUID: uidB, Generation: 1, Spec: store.Spec{Apps: []store.AppSpec{
			{Name: "blog", Upload: &store.UploadSource{Digest: digest["shared"]}},
			{Name: "shop", Git: &store.GitSource{URL: "https://example.com/shop.git"}},
		}}},
	}
	if err := st.Update(ctx, func(tx *store.Tx) error {
		for _, p := range projects {
			if err := tx.CreateProject(p); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	up, err := source.NewStore(sources, source.StoreOptions{Limits: source.DefaultLimits})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := AdoptLegacyUploads(ctx, st, up, log); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		uid  uint32
		name string
		want bool
	}{
		{uidA, "shared", true}, {uidA, "oldrev", true}, {uidB, "shared", true},
		{uidB, "oldrev", false}, {uidA, "unused", false}, {uidB, "unused", false},
	} {
		if got := up.Has(c.uid, digest[c.name]); got != c.want {
			t.Errorf("uid %d has %q: %v, want %v", c.uid, c.name, got, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(sources, "sha256")); !os.IsNotExist(err) {
		t.Errorf("the legacy layout is still there: %v", err)
	}
	uploader := func(u *uint32) uint32 {
		if u == nil {
			t.Fatal("an upload names no uploader")
		}
		return *u
	}
	ayy, _ := st.GetProject(ctx, "ayy")
	bee, _ := st.GetProject(ctx, "bee")
	if uploader(ayy.Spec.App("blog").Upload.UploaderUID) != uidA || uploader(ayy.Spec.App("lost").Upload.UploaderUID) != uidA ||
		uploader(ayy.Status.Apps["blog"].Revisions[0].UploaderUID) != uidA || uploader(bee.Spec.App("blog").Upload.UploaderUID) != uidB {
		t.Errorf("uploaders not recorded: %+v %+v", ayy.Spec, bee.Spec)
	}
	if bee.Spec.App("shop").Upload != nil {
		t.Error("a git app got an upload")
	}
	gen := ayy.UpdateTime
	if err := AdoptLegacyUploads(ctx, st, up, log); err != nil {
		t.Fatal(err)
	}
	if again, _ := st.GetProject(ctx, "ayy"); !again.UpdateTime.Equal(gen) {
		t.Error("a second run rewrote an adopted record")
	}
}

// TestUpdateToTheSameUploadUnchanged: updating an uploaded app to the
// archive it runs (the same directory, packed again) records nothing and
// restarts nothing once the project serves it; before that it is a retry.
func TestUpdateToTheSameUploadUnchanged(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{}})
	ctx := context.Background()
	d := mustUpload(t, s, uidA, appArchive(t, "blog", "# one\n"))
	if err := createAs(t, s, uidA, &opusv1.CreateProjectRequest{Name: "same", Apps: []*opusv1.AppSpec{uploadApp("blog", d)}}); err != nil {
		t.Fatal(err)
	}
	update := func() *opusv1.Operation {
		t.Helper()
		op, err := asUID(t, s.svc, uidA, opusv1.Opus_UpdateApp_FullMethodName, s.svc.UpdateApp,
			&opusv1.UpdateAppRequest{Project: "same", App: "blog", Source: uploadApp("blog", d).GetSource()})
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	// Not deployed yet: the update is a retry, an operation.
	if op := update(); op.GetUnchanged() || op.GetId() == "" {
		t.Fatalf("update of a project not deployed yet: %v", op)
	}
	if _, err := s.st.UpdateProject(ctx, "same", func(p *store.Project) error {
		p.Status.Phase, p.Status.ObservedGeneration = store.PhaseReady, p.Generation
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before, _ := s.st.GetProject(ctx, "same")
	ops, _ := s.st.ListOperations(ctx, "same", 0)
	if op := update(); !op.GetUnchanged() || op.GetId() != "" {
		t.Fatalf("update to the deployed archive: %v, want unchanged", op)
	}
	after, _ := s.st.GetProject(ctx, "same")
	if opsAfter, _ := s.st.ListOperations(ctx, "same", 0); after.Generation != before.Generation || len(opsAfter) != len(ops) {
		t.Errorf("an unchanged update moved the generation %d→%d or recorded an operation", before.Generation, after.Generation)
	}
}
