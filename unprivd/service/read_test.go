package service

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// TestReadsLeaveStoredRecordsAlone: GetProject and ListProjects answer
// from the store's decode cache; what a client does to its answers, many
// times over, never shows in the next answer.
func TestReadsLeaveStoredRecordsAlone(t *testing.T) {
	svc, names := benchService(t, fakeAdmins{0: true}, benchShape{name: "full", full: true, opsPer: 2})
	names = names[:50]
	admin, owner := asCaller(0, true), asCaller(10000, false)
	list := func(ctx context.Context) *opusv1.ListProjectsResponse {
		t.Helper()
		l, err := svc.ListProjects(ctx, &opusv1.ListProjectsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	get := func(name string) *opusv1.Project {
		t.Helper()
		p, err := svc.GetProject(admin, &opusv1.GetProjectRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	wantAll, wantOwn := list(admin), list(owner)
	want := map[string]*opusv1.Project{}
	for _, name := range names {
		want[name] = get(name)
	}
	scribble := func(p *opusv1.Project) {
		// What a client might do to its answer must not reach the store.
		p.Apps[0].Revisions[0].Resolved = "changed"
		p.Apps = append(p.Apps[:1], &opusv1.App{Name: "changed"})
		p.Settings.Hosts[0] = "changed.example.com"
		p.Settings.Env["TZ"] = "changed"
	}
	for range 3 {
		for _, l := range []*opusv1.ListProjectsResponse{list(admin), list(owner)} {
			for _, p := range l.GetProjects() {
				scribble(p)
			}
		}
		for _, name := range names {
			scribble(get(name))
		}
	}
	if got := list(admin); !proto.Equal(got, wantAll) {
		t.Error("an admin's list changed with what clients did to earlier answers")
	}
	if got := list(owner); !proto.Equal(got, wantOwn) {
		t.Error("an owner's list changed with what clients did to earlier answers")
	}
	for _, name := range names {
		if got := get(name); !proto.Equal(got, want[name]) {
			t.Errorf("%s changed with what clients did to earlier answers:\n got %v\nwant %v", name, got, want[name])
		}
	}
}

// TestReadsSeeEveryWrite: what the reconciler and mutations commit shows in
// the very next GetProject and ListProjects.
func TestReadsSeeEveryWrite(t *testing.T) {
	ctx := context.Background()
	s := startServer(t, serverOpt{})
	if _, err := s.client.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: "readme", Apps: []*opusv1.AppSpec{gitApp("blog", "https://example.com/blog.git")}}); err != nil {
		t.Fatal(err)
	}
	get := func() *opusv1.Project {
		t.Helper()
		p, err := s.client.GetProject(ctx, &opusv1.GetProjectRequest{Name: "readme"})
		if err != nil {
			t.Fatal(err)
		}
		l, err := s.client.ListProjects(ctx, &opusv1.ListProjectsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.GetProjects()) != 1 || !reflect.DeepEqual(l.GetProjects()[0].String(), p.String()) {
			t.Fatalf("list = %v, get = %v: want the same project", l.GetProjects(), p)
		}
		return p
	}
	if p := get(); p.GetPhase() != opusv1.Phase_PHASE_PENDING || len(p.GetApps()) != 1 {
		t.Fatalf("new project = %v", p)
	}
	// The reconciler's status write.
	if _, err := s.st.UpdateProject(ctx, "readme", func(p *store.Project) error {
		p.Status.Phase, p.Status.ObservedGeneration, p.Status.SystemUser = store.PhaseReady, p.Generation, "opus-readme"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if p := get(); p.GetPhase() != opusv1.Phase_PHASE_READY || p.GetObservedGeneration() != 1 || p.GetSystemUser() != "opus-readme" {
		t.Fatalf("after the status write = %v", p)
	}
	// A mutation through the API.
	if _, err := s.client.AddApp(ctx, &opusv1.AddAppRequest{Project: "readme", App: gitApp("shop", "https://example.com/shop.git")}); err != nil {
		t.Fatal(err)
	}
	if p := get(); p.GetGeneration() != 2 || len(p.GetApps()) != 2 || p.GetApps()[1].GetName() != "shop" {
		t.Fatalf("after AddApp = %v", p)
	}
}

// countingAdmins counts the lookups an adminCache passes through.
type countingAdmins struct {
	mu    sync.Mutex
	calls map[uint32]int
	admin map[uint32]bool
}

func (c *countingAdmins) IsAdmin(uid uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[uid]++
	return c.admin[uid]
}

func TestAdminCache(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	inner := &countingAdmins{calls: map[uint32]int{}, admin: map[uint32]bool{1000: true}}
	c := &adminCache{Admins: inner, now: func() time.Time { return now }, m: map[uint32]adminAnswer{}}
	steps := []struct {
		name      string
		advance   time.Duration
		uid       uint32
		setAdmin  *bool
		want      bool
		wantCalls int
	}{
		{"first answer is looked up", 0, 1000, nil, true, 1},
		{"repeat within the TTL is remembered", time.Second, 1000, nil, true, 1},
		{"other uid is looked up", 0, 1001, nil, false, 1},
		{"removed from the group: still admin within the TTL", 0, 1000, new(false), true, 1},
		{"after the TTL the change shows", adminTTL, 1000, nil, false, 2},
		{"root needs no lookup", 0, 0, nil, true, 0},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		if st.setAdmin != nil {
			inner.mu.Lock()
			inner.admin[st.uid] = *st.setAdmin
			inner.mu.Unlock()
		}
		if got := c.IsAdmin(st.uid); got != st.want {
			t.Fatalf("%s: IsAdmin(%d) = %v, want %v", st.name, st.uid, got, st.want)
		}
		if got := inner.calls[st.uid]; got != st.wantCalls {
			t.Fatalf("%s: %d lookups of uid %d, want %d", st.name, got, st.uid, st.wantCalls)
		}
	}
	// Bounded: many uids never grow it past adminCacheMax.
	for uid := range uint32(3 * adminCacheMax) {
		c.IsAdmin(uid + 2000)
	}
	if n := len(c.m); n > adminCacheMax {
		t.Fatalf("cache holds %d uids, want at most %d", n, adminCacheMax)
	}
}

func TestCacheAdminsWrapsOnlyGroupAdmins(t *testing.T) {
	if _, ok := cacheAdmins(GroupAdmins{Group: "nogroup"}, time.Now).(*adminCache); !ok {
		t.Fatal("GroupAdmins (reads /etc/group) is not cached")
	}
	fake := fakeAdmins{1: true}
	if got, ok := cacheAdmins(fake, time.Now).(fakeAdmins); !ok || !got[1] {
		t.Fatalf("an in-memory Admins was wrapped: %T", got)
	}
	// The cached GroupAdmins answers as GroupAdmins does.
	c := cacheAdmins(GroupAdmins{Group: "nogroup"}, time.Now)
	for _, uid := range []uint32{0, 65534, 65533} {
		if got, want := c.IsAdmin(uid), (GroupAdmins{Group: "nogroup"}).IsAdmin(uid); got != want {
			t.Fatalf("cached IsAdmin(%d) = %v, GroupAdmins says %v", uid, got, want)
		}
	}
}
