package service

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/store"
)

// fakeGit is a git cache of given sizes that records the pruner's policy.
type fakeGit struct {
	mu     sync.Mutex
	sizes  map[string]int64
	policy *source.CachePolicy
}

func (f *fakeGit) PruneCaches(_ context.Context, p source.CachePolicy) ([]source.Pruned, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.policy = &p
	return nil, nil
}

func (f *fakeGit) CacheSize(_ context.Context, url string) (source.Cache, error) {
	return source.Cache{Bytes: f.sizes[url]}, nil
}

func putProjects(t *testing.T, s *server, ps ...*store.Project) {
	t.Helper()
	err := s.st.Update(context.Background(), func(tx *store.Tx) error {
		for _, p := range ps {
			if err := tx.CreateProject(p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestGetDiskUsage: a user sees their own projects and totals, an admin
// everyone's; another's project named is NotFound. Code and data are
// measured on disk without following links or opening FIFOs; snapshots
// and uploads come from opusd's records and store; a git cache is shared
// between the projects using its repository.
func TestGetDiskUsage(t *testing.T) {
	const repo = "https://example.com/shop.git"
	git := &fakeGit{sizes: map[string]int64{repo: 1000}}
	base := t.TempDir()
	s := startServer(t, serverOpt{admins: fakeAdmins{0: true}, uploadQuota: 1 << 20,
		disk: Disk{BaseDir: base, Git: git, UploadQuota: 1 << 20, SnapshotQuota: 5000, RevisionsKeep: 7}})
	digest := mustUpload(t, s, uidA, appArchive(t, "blog", "x"))
	a := uint32(uidA)
	putProjects(t, s,
		&store.Project{Name: "alpha", OwnerUID: uidA,
			Spec: store.Spec{Apps: []store.AppSpec{
				{Name: "shop", Git: &store.GitSource{URL: repo}},
				{Name: "blog", Upload: &store.UploadSource{Digest: digest, UploaderUID: &a}},
			}},
			Status:    store.Status{Apps: map[string]store.AppStatus{"shop": {Revisions: []store.Revision{{URL: repo, Resolved: "1"}, {URL: repo, Resolved: "2"}}}}},
			Snapshots: []store.Snapshot{{ID: "s1", Size: 100}, {ID: "s2", Size: 30, Media: true, MediaSize: 20}}}, // a restore's media files count
		&store.Project{Name: "beta", OwnerUID: uidB, Spec: store.Spec{Apps: []store.AppSpec{{Name: "shop", Git: &store.GitSource{URL: repo}}}},
			Snapshots: []store.Snapshot{{ID: "s1", Size: 7}}},
		&store.Project{Name: "gamma", OwnerUID: uidA},
	)
	write := func(p string, n int) {
		t.Helper()
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	proj := filepath.Join(base, "projects", "alpha")
	write(filepath.Join(proj, "code", "shop", "views.py"), 10)
	write(filepath.Join(proj, "static", "app.css"), 5)
	write(filepath.Join(proj, "data", "db.sqlite3"), 20)
	outside := filepath.Join(t.TempDir(), "big")
	write(outside, 1<<20)
	os.Symlink(outside, filepath.Join(proj, "data", "link"))
	os.Symlink(".", filepath.Join(proj, "data", "loop"))
	syscall.Mkfifo(filepath.Join(proj, "data", "fifo"), 0o644)

	usage := func(uid uint32, project string) (*opusv1.GetDiskUsageResponse, error) {
		return asUID(t, s.svc, uid, opusv1.Opus_GetDiskUsage_FullMethodName, s.svc.GetDiskUsage, &opusv1.GetDiskUsageRequest{Project: project})
	}
	res, err := usage(uidA, "")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range res.GetProjects() {
		names = append(names, p.GetProject())
	}
	if !slices.Equal(names, []string{"alpha", "gamma"}) || len(res.GetUsers()) != 1 || res.GetUsers()[0].GetUid() != uidA || res.GetRevisionsKeep() != 7 {
		t.Fatalf("user A sees projects %v, users %v, keep %d", names, res.GetUsers(), res.GetRevisionsKeep())
	}
	al := res.GetProjects()[0]
	size := s.uploads.Size(uidA, digest)
	if size == 0 {
		t.Fatal("the upload is not stored")
	}
	if al.GetCode().GetBytes() != 15 || al.GetCode().GetAtLeast() || al.GetData().GetBytes() != 20 || al.GetData().GetAtLeast() ||
		al.GetSnapshotBytes() != 150 || al.GetSnapshots() != 2 || al.GetUploadBytes() != size || al.GetGitCacheBytes() != 500 || al.GetRevisions() != 2 {
		t.Errorf("alpha: %v", al)
	}
	u := res.GetUsers()[0]
	if u.GetProjects() != 2 || u.GetSnapshotBytes() != 150 || u.GetSnapshotQuota() != 5000 || u.GetUploadBytes() != size || u.GetUploadQuota() != 1<<20 ||
		u.GetTotal().GetBytes() != 15+20+150+500+size {
		t.Errorf("user A: %v", u)
	}

	if _, err := usage(uidA, "beta"); code(err) != codes.NotFound {
		t.Errorf("user A naming B's project: %v, want NotFound", err)
	}
	if _, err := usage(uidA, "../x"); code(err) != codes.InvalidArgument {
		t.Errorf("a bad name: %v, want InvalidArgument", err)
	}
	res, err = usage(0, "")
	if err != nil || len(res.GetProjects()) != 3 || len(res.GetUsers()) != 2 {
		t.Fatalf("admin: %v, %v", res, err)
	}
	res, err = usage(0, "beta")
	if err != nil || len(res.GetProjects()) != 1 || res.GetProjects()[0].GetGitCacheBytes() != 500 || res.GetUsers()[0].GetUid() != uidB {
		t.Fatalf("admin on beta: %v, %v", res, err)
	}
}

// TestPruneDisk: a pass drops revisions past revisions_keep except those
// a kept snapshot pins, then the uploads only dropped revisions used (once
// past their grace), and hands the git pruner every repository a spec or
// a kept revision uses, and none that only dropped revisions used.
func TestPruneDisk(t *testing.T) {
	git := &fakeGit{}
	s := startServer(t, serverOpt{admins: fakeAdmins{0: true}, disk: Disk{Git: git, RevisionsKeep: 2, GitCacheMaxBytes: 99, GitCacheIdle: time.Hour}})
	ctx := context.Background()
	a := uint32(uidA)
	var digests []string
	for _, f := range []string{"1", "2", "3", "4"} {
		digests = append(digests, mustUpload(t, s, uidA, appArchive(t, "blog", f)))
	}
	up := func(d string) store.Revision { return store.Revision{Resolved: d, UploaderUID: &a} }
	g := func(url string) store.Revision { return store.Revision{URL: url, Resolved: "c"} }
	putProjects(t, s, &store.Project{Name: "alpha", OwnerUID: uidA,
		Spec: store.Spec{Apps: []store.AppSpec{
			{Name: "blog", Upload: &store.UploadSource{Digest: digests[3], UploaderUID: &a}},
			{Name: "shop", Git: &store.GitSource{URL: "https://example.com/now.git"}},
		}},
		Status: store.Status{Apps: map[string]store.AppStatus{
			// Revision 1 is pinned by a snapshot; 2 goes; 3 and 4 stay.
			"blog": {Revisions: []store.Revision{up(digests[0]), up(digests[1]), up(digests[2]), up(digests[3])}},
			"shop": {Revisions: []store.Revision{g("https://example.com/old.git"), g("https://example.com/mid.git"), g("https://example.com/now.git")}},
		}},
		Snapshots: []store.Snapshot{{ID: "s", Revisions: map[string]int{"blog": 1}}},
	})
	s.clock.Add(2 * source.DefaultGrace)
	if err := s.svc.PruneDisk(ctx); err != nil {
		t.Fatal(err)
	}
	var p *store.Project
	s.st.View(ctx, func(tx *store.Tx) (err error) { p, err = tx.Project("alpha"); return err })
	var nums []int
	for i := range p.Status.Apps["blog"].Revisions {
		nums = append(nums, p.Status.Apps["blog"].RevisionNumber(i))
	}
	if !slices.Equal(nums, []int{1, 3, 4}) || len(p.Status.Apps["shop"].Revisions) != 2 {
		t.Errorf("blog keeps revisions %v, shop %d; want 1 (pinned), 3, 4 and 2", nums, len(p.Status.Apps["shop"].Revisions))
	}
	for i, want := range []bool{true, false, true, true} {
		if got := s.uploads.Has(uidA, digests[i]); got != want {
			t.Errorf("upload %d stored: %v, want %v", i, got, want)
		}
	}
	if git.policy == nil {
		t.Fatal("the git caches were not pruned")
	}
	want := map[string]bool{"https://example.com/now.git": true, "https://example.com/mid.git": true}
	if !maps.Equal(git.policy.InUse, want) || git.policy.MaxBytes != 99 || git.policy.Idle != time.Hour || git.policy.Limit <= 0 {
		t.Errorf("git policy %+v, want in use %v and the bounds", git.policy, want)
	}
}

// blockingGit is a git cache whose first CacheSize waits for release: a
// GetDiskUsage held in the middle of its measuring.
type blockingGit struct {
	fakeGit
	once             sync.Once
	entered, release chan struct{}
}

func (b *blockingGit) CacheSize(ctx context.Context, url string) (source.Cache, error) {
	first := false
	b.once.Do(func() { first = true })
	if first {
		close(b.entered)
		select {
		case <-b.release:
		case <-ctx.Done():
		}
	}
	return b.fakeGit.CacheSize(ctx, url)
}

// TestGetDiskUsageOnePerCaller: every GetDiskUsage walks the caller's
// project directories, which their code fills (up to the walk's bounds),
// so one caller runs one at a time: a second call while the first
// measures is refused at once, not one more walk of a hostile tree (a
// user could otherwise start hundreds and keep opusd's disk and CPU
// busy). Another caller is not held up, and the first caller may call
// again once theirs is done.
func TestGetDiskUsageOnePerCaller(t *testing.T) {
	const repo = "https://example.com/shop.git"
	git := &blockingGit{fakeGit: fakeGit{sizes: map[string]int64{repo: 10}}, entered: make(chan struct{}), release: make(chan struct{})}
	s := startServer(t, serverOpt{admins: fakeAdmins{}, disk: Disk{BaseDir: t.TempDir(), Git: git}})
	putProjects(t, s,
		&store.Project{Name: "alpha", OwnerUID: uidA, Spec: store.Spec{Apps: []store.AppSpec{{Name: "shop", Git: &store.GitSource{URL: repo}}}}},
		&store.Project{Name: "beta", OwnerUID: uidB})
	usage := func(uid uint32) error {
		_, err := asUID(t, s.svc, uid, opusv1.Opus_GetDiskUsage_FullMethodName, s.svc.GetDiskUsage, &opusv1.GetDiskUsageRequest{})
		return err
	}
	first := make(chan error, 1)
	go func() { first <- usage(uidA) }()
	select {
	case <-git.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first call never measured")
	}
	if err := usage(uidA); code(err) != codes.ResourceExhausted {
		t.Errorf("a second call while the first measures: %v, want ResourceExhausted", err)
	}
	if err := usage(uidB); err != nil {
		t.Errorf("another caller: %v", err)
	}
	close(git.release)
	if err := <-first; err != nil {
		t.Fatalf("the first call: %v", err)
	}
	if err := usage(uidA); err != nil {
		t.Errorf("a call after the first: %v", err)
	}
}
