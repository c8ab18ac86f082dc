package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/layout"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/diskusage"
	"github.com/opus-hosting/opus/unprivd/source"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Disk is the disk hygiene policy and the stores it applies to (see
// PruneDisk and GetDiskUsage).
type Disk struct {
	// BaseDir holds the project trees, measured for the usage report.
	BaseDir string
	// Git is opusd's git cache; nil: no git caches are pruned or
	// reported.
	Git GitCaches
	// RevisionsKeep is how many revisions of each app are kept
	// (store.DefaultRevisionsKeep when 0).
	RevisionsKeep int
	// GitCacheMaxBytes and GitCacheIdle bound each git cache (0: no
	// bound).
	GitCacheMaxBytes int64
	GitCacheIdle     time.Duration
	// UploadQuota and SnapshotQuota are the per-user quotas the usage
	// report compares with (the stores and the reconciler enforce them).
	UploadQuota, SnapshotQuota int64
	// Measure bounds each walk of a project's directory; zero fields
	// take diskusage's defaults.
	Measure diskusage.Limits
}

// GitCaches is opusd's git cache as the disk pruner and the usage report
// use it (implemented by source.Git).
type GitCaches interface {
	// PruneCaches drops the caches the policy says go.
	PruneCaches(ctx context.Context, policy source.CachePolicy) ([]source.Pruned, error)
	// CacheSize measures the cache of one repository.
	CacheSize(ctx context.Context, rawURL string) (source.Cache, error)
}

// uploadUsage is an upload store that tells what a user keeps stored
// (source.Store).
type uploadUsage interface {
	// Usage is the bytes uid keeps stored.
	Usage(uid uint32) (int64, error)
	// Size is the size of uid's upload digest, 0 when it is not stored.
	Size(uid uint32, digest string) int64
}

// Bounds of one pruner pass: the projects whose record it rewrites and the
// git caches it measures. What is left waits for the next pass.
const (
	prunePassProjects = 200
	prunePassCaches   = 64
)

// diskUsageBudget bounds the time one GetDiskUsage call spends walking
// project directories, whatever the number of projects.
const diskUsageBudget = 10 * time.Second

// PruneDisk is one pass of the disk pruner: it drops revisions past
// revisions_keep (records of before the policy, or after it was lowered),
// then the uploads nothing needs (PruneUploads), then the git caches of
// repositories no app or kept revision uses, or over their bounds. Each
// part's work is bounded; it logs what it removed.
func (s *Service) PruneDisk(ctx context.Context) error {
	keep := cmp.Or(s.cfg.Disk.RevisionsKeep, store.DefaultRevisionsKeep)
	// Found in a read (cheap: the store's decode cache), rewritten in one
	// short write of those records only: a pass after every deploy must
	// not hold the store's write lock over every project.
	var over []string
	err := s.st.View(ctx, func(tx *store.Tx) error {
		over = nil
		return tx.EachProject(func(p store.Project) error {
			// p is this read's own copy: trimming it says whether the
			// record would change.
			if len(over) < prunePassProjects && len(p.TrimRevisions(keep)) > 0 {
				over = append(over, p.Name)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("prune revisions: %w", err)
	}
	var trimmed, dropped int
	if len(over) > 0 {
		err = s.st.Update(ctx, func(tx *store.Tx) error {
			trimmed, dropped = 0, 0
			for _, name := range over {
				p, err := tx.Project(name)
				if errors.Is(err, store.ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				d := p.TrimRevisions(keep)
				if len(d) == 0 {
					continue
				}
				for _, rs := range d {
					dropped += len(rs)
				}
				trimmed++
				if err := tx.PutProject(p); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("prune revisions: %w", err)
	}
	if dropped > 0 {
		s.log.InfoContext(ctx, "old revisions dropped", "revisions", dropped, "projects", trimmed, "revisions_keep", keep)
	}
	if err := s.PruneUploads(ctx); err != nil {
		return err
	}
	return s.pruneGitCaches(ctx)
}

// pruneGitCaches drops the git caches no app or kept revision needs, and
// those over their bounds.
func (s *Service) pruneGitCaches(ctx context.Context) error {
	g := s.cfg.Disk.Git
	if g == nil {
		return nil
	}
	var inUse map[string]bool
	err := s.st.View(ctx, func(tx *store.Tx) error {
		inUse = map[string]bool{}
		return tx.EachProject(func(p store.Project) error {
			for u := range gitURLs(&p) {
				inUse[u] = true
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("prune git caches: %w", err)
	}
	// A cache a spec committed after this read starts using is fetched
	// under its lock, which the pruner takes too: at worst it is dropped
	// right after the fetch that made it, and fetched again when needed.
	pruned, err := g.PruneCaches(ctx, source.CachePolicy{InUse: inUse, MaxBytes: s.cfg.Disk.GitCacheMaxBytes,
		Idle: s.cfg.Disk.GitCacheIdle, Now: s.cfg.Now(), Limit: prunePassCaches})
	for _, p := range pruned {
		s.log.InfoContext(ctx, "git cache removed", "cache", p.Key, "bytes", p.Bytes, "why", p.Why)
	}
	if err != nil {
		return fmt.Errorf("prune git caches: %w", err)
	}
	return nil
}

// gitURLs are the repositories p's apps and their kept revisions come
// from.
func gitURLs(p *store.Project) map[string]bool {
	out := map[string]bool{}
	for _, a := range p.Spec.Apps {
		if a.Git != nil {
			out[a.Git.URL] = true
		}
	}
	for _, st := range p.Status.Apps {
		for _, r := range st.Revisions {
			if r.URL != "" {
				out[r.URL] = true
			}
		}
	}
	return out
}

// KickPrune asks the disk pruner for a pass soon (after a successful
// deploy); it never blocks.
func (s *Service) KickPrune() {
	select {
	case s.pruneKick <- struct{}{}:
	default:
	}
}

// RunDiskPruner runs PruneDisk now (what became unneeded while opusd was
// down), then every interval and after each KickPrune, until ctx is done.
func (s *Service) RunDiskPruner(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := s.PruneDisk(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "pruning disk", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.pruneKick:
		}
	}
}

// GetDiskUsage reports the disk space of the projects the caller may see
// (one, when the request names it) and their owners' totals against their
// quotas. opusd's own stores (uploads, snapshots, git caches) are counted
// from its records and its own directories; a project's directories,
// which its code can write, are walked by diskusage within bounds, never
// following a link.
func (s *Service) GetDiskUsage(ctx context.Context, req *opusv1.GetDiskUsageRequest) (*opusv1.GetDiskUsageResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	// One at a time per caller: each call walks trees their code fills.
	release, ok := s.diskUsage.acquire(c.uid)
	if !ok {
		return nil, status.Error(codes.ResourceExhausted, "your previous disk usage report is still being measured; wait for it and ask again")
	}
	defer release()
	var ps []*store.Project
	var owners []uint32
	// Whose totals a project counts in: its owner's uid, or for a plain
	// caller, who sees only their own, the caller's: on hosts sharing
	// their state their project may have been made with their uid on
	// another host, which here may be someone else's, uploads and all.
	ownerOf := func(p *store.Project) uint32 {
		if c.admin {
			return p.OwnerUID
		}
		return c.uid
	}
	err = s.st.View(ctx, func(tx *store.Tx) error {
		if name := req.GetProject(); name != "" {
			if err := validateProject("project", name); err != nil {
				return err
			}
			p, err := s.visibleProject(ctx, tx, c, opusv1.Opus_GetDiskUsage_FullMethodName, name)
			if err != nil {
				return err
			}
			if !s.servedHere(p) {
				return s.elsewhere(p, "its files are kept: measure them")
			}
			ps = []*store.Project{p}
			owners = []uint32{ownerOf(p)}
			return nil
		}
		// Only this host's files are here to measure.
		add := func(p store.Project) error {
			if s.servedHere(&p) {
				ps = append(ps, &p)
			}
			return nil
		}
		if c.admin {
			return tx.EachProject(add)
		}
		owners = []uint32{c.uid}
		return tx.EachProjectWhere(c.owns, add)
	})
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	// Each git cache is shared between the projects using its
	// repository; all projects count, not only those shown.
	users, err := s.gitUsers(ctx)
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	res := &opusv1.GetDiskUsageResponse{RevisionsKeep: int32(cmp.Or(s.cfg.Disk.RevisionsKeep, store.DefaultRevisionsKeep))}
	totals := map[uint32]*opusv1.UserDiskUsage{}
	user := func(uid uint32) *opusv1.UserDiskUsage {
		u := totals[uid]
		if u == nil {
			u = &opusv1.UserDiskUsage{Uid: uid, User: s.userName(uid), UploadQuota: s.cfg.Disk.UploadQuota,
				SnapshotQuota: s.cfg.Disk.SnapshotQuota, Total: &opusv1.ByteCount{}}
			totals[uid] = u
		}
		return u
	}
	for _, uid := range owners {
		user(uid)
	}
	cacheSizes := map[string]int64{}
	// Each walk is bounded, and so are all of one call's together: past
	// the budget, the projects left report what opusd's records say, and
	// "at least" nothing for their directories.
	deadline := time.Now().Add(diskUsageBudget)
	for _, p := range ps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Without a base directory (a service not configured for it)
		// there is nothing to walk, and never a relative path.
		walk := s.cfg.Disk.BaseDir != "" && time.Now().Before(deadline)
		pu, err := s.projectUsage(ctx, p, users, cacheSizes, walk)
		if err != nil {
			return nil, err
		}
		res.Projects = append(res.Projects, pu)
		u := user(ownerOf(p))
		pu.Owner = cmp.Or(p.OwnerName, u.User)
		u.Projects++
		u.SnapshotBytes += pu.SnapshotBytes
		u.Total.Bytes += pu.Code.GetBytes() + pu.Data.GetBytes() + pu.SnapshotBytes + pu.GitCacheBytes
		u.Total.AtLeast = u.Total.AtLeast || pu.Code.GetAtLeast() || pu.Data.GetAtLeast()
	}
	up, _ := s.uploads.(uploadUsage)
	for _, uid := range slices.Sorted(maps.Keys(totals)) {
		u := totals[uid]
		if up != nil {
			n, err := up.Usage(uid)
			if err != nil {
				s.log.WarnContext(ctx, "disk usage: uploads", "uid", uid, "err", err)
				u.Total.AtLeast = true
			}
			u.UploadBytes = n
			u.Total.Bytes += n
		}
		res.Users = append(res.Users, u)
	}
	return res, nil
}

// projectUsage measures one project. users counts, per repository, the
// projects using it; cacheSizes remembers the caches measured.
func (s *Service) projectUsage(ctx context.Context, p *store.Project, users map[string]int, cacheSizes map[string]int64, walk bool) (*opusv1.ProjectDiskUsage, error) {
	pu := &opusv1.ProjectDiskUsage{Project: p.Name, OwnerUid: p.OwnerUID}
	l := layout.For(s.cfg.Disk.BaseDir, p.Name)
	measure := func(dir string) (diskusage.Size, error) {
		if !walk {
			return diskusage.Size{Partial: true, Why: "not measured: no base directory, or the call's time budget was spent on other projects"}, nil
		}
		return diskusage.Measure(ctx, dir, s.cfg.Disk.Measure)
	}
	var code diskusage.Size
	for _, dir := range []string{l.Code, l.Static} {
		sz, err := measure(dir)
		if err != nil {
			s.log.WarnContext(ctx, "disk usage: measure", "project", p.Name, "dir", dir, "err", err)
			sz.Partial = true
		}
		code.Bytes += sz.Bytes
		code.Partial = code.Partial || sz.Partial
	}
	pu.Code = &opusv1.ByteCount{Bytes: code.Bytes, AtLeast: code.Partial}
	data, err := measure(l.Data)
	if err != nil {
		s.log.WarnContext(ctx, "disk usage: measure", "project", p.Name, "dir", l.Data, "err", err)
		data.Partial = true
	}
	if data.Partial {
		s.log.InfoContext(ctx, "disk usage: data measured in part", "project", p.Name, "why", data.Why)
	}
	pu.Data = &opusv1.ByteCount{Bytes: data.Bytes, AtLeast: data.Partial}
	for _, sn := range p.Snapshots {
		pu.SnapshotBytes += sn.Bytes()
		pu.Snapshots++
	}
	seen := map[store.UploadRef]bool{}
	var refs []store.UploadRef
	p.UploadsInUse(func(r store.UploadRef) {
		if !seen[r] {
			seen[r] = true
			refs = append(refs, r)
		}
	})
	if sizer, ok := s.uploads.(uploadUsage); ok {
		for _, r := range refs {
			pu.UploadBytes += sizer.Size(r.UID, r.Digest)
		}
	}
	for _, st := range p.Status.Apps {
		pu.Revisions += int32(len(st.Revisions))
	}
	if g := s.cfg.Disk.Git; g != nil {
		for u := range gitURLs(p) {
			n, ok := cacheSizes[u]
			if !ok {
				c, err := g.CacheSize(ctx, u)
				if err != nil {
					s.log.WarnContext(ctx, "disk usage: git cache", "err", err)
				}
				n = c.Bytes
				cacheSizes[u] = n
			}
			pu.GitCacheBytes += n / int64(max(1, users[u]))
		}
	}
	return pu, nil
}

// gitUsers counts, per repository, the projects whose apps or kept
// revisions use it.
func (s *Service) gitUsers(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	err := s.st.View(ctx, func(tx *store.Tx) error {
		return tx.EachProject(func(p store.Project) error {
			for u := range gitURLs(&p) {
				out[u]++
			}
			return nil
		})
	})
	return out, err
}

// userName is uid's user name on this host, or "" when it has none or
// the user database cannot say.
func (s *Service) userName(uid uint32) string {
	name, _ := s.st.ConsoleUserName(uid)
	return name
}
