package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/opus-hosting/opus/internal/excerpt"
	"github.com/opus-hosting/opus/internal/gitsrc"
)

// Defaults for a zero Git.
const (
	DefaultGitTimeout  = 2 * time.Minute
	DefaultGitMaxBytes = 256 << 20
)

// Git fetches app sources from git repositories with go-git (no git
// binary for the network side, no hooks, no submodules) and writes the
// chosen commit's tree as plain files.
//
// The size limit is enforced where bytes land: the cache repository's
// storage is a billy filesystem wrapper that counts every byte go-git writes
// during one Fetch (pack, index, refs) and fails the write once MaxBytes is
// passed, which aborts the fetch. That bounds disk use for any transport and
// any server behaviour, unlike progress messages which a server may omit.
// The tree written to dest is bounded again by Limits.
//
// Fetched objects are cached per URL under CacheDir/<sha256(url)>: a bare
// repository "shallow" for depth-1 fetches of branches and tags, and "full"
// for commits (mixing the two in one repository would leave history missing
// behind shallow boundaries). A commit already in the cache needs no network
// at all. A cache that fails for any reason other than the caller's input,
// the time limit or the size limit is removed and the fetch retried once.
type Git struct {
	// CacheDir holds the cache repositories; required.
	CacheDir string
	// MaxBytes bounds the bytes one fetch may write (DefaultGitMaxBytes if 0).
	MaxBytes int64
	// Timeout bounds one Fetch (DefaultGitTimeout if 0).
	Timeout time.Duration
	// Limits bound the tree written to dest (DefaultLimits if zero).
	Limits Limits

	mu    sync.Mutex
	locks map[string]*sync.Mutex
	// pruneCursor is the last cache a bounded PruneCaches pass looked
	// at: the next one starts after it.
	pruneCursor string
}

var hexRef = regexp.MustCompile(`^[0-9a-f]{4,40}$`)

// CheckGitURL says why rawURL may not be fetched, or returns nil: the
// rules of package gitsrc, which the API applies too, and a repository on
// this host only when allowLocal (admins).
func CheckGitURL(rawURL string, allowLocal bool) error {
	local, err := gitsrc.CheckURL(rawURL)
	if err != nil {
		return err
	}
	if local && !allowLocal {
		return fmt.Errorf("git url %q is a repository on this host; only administrators may fetch local repositories; use %s", excerpt.Short(rawURL), gitsrc.OrList(false))
	}
	return nil
}

// inputError is a refusal caused by what the caller asked for; retrying on
// a fresh cache would not help.
type inputError struct{ error }

func (e inputError) Unwrap() error { return e.error }

// remoteError is a failure to talk to the remote at all; the cache is not
// at fault.
type remoteError struct{ error }

func (e remoteError) Unwrap() error { return e.error }

// Commit is the commit a Fetch wrote.
type Commit struct {
	// Hash is the full commit hash.
	Hash string
	// Subject is the commit message's subject (see CommitSubject).
	Subject string
}

// Fetch resolves ref (a branch, a tag (lightweight or annotated), a full or
// short commit hash, or "" for the remote's HEAD) in the repository at
// rawURL and writes that commit's tree into dest (which must not exist or be
// empty), refusing symlinks, submodules and escaping paths. It returns the
// commit: its full hash and its subject.
func (g *Git) Fetch(ctx context.Context, rawURL, ref string, allowLocal bool, dest string) (Commit, error) {
	if err := CheckGitURL(rawURL, allowLocal); err != nil {
		return Commit{}, err
	}
	if err := gitsrc.CheckRef(ref); err != nil {
		return Commit{}, err
	}
	if err := CheckSSHAuth(rawURL); err != nil {
		return Commit{}, err
	}
	if g.CacheDir == "" {
		return Commit{}, errors.New("git: no cache directory configured")
	}
	useInProcessLocalTransport()
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = DefaultGitTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	key := filepath.Join(g.CacheDir, CacheKey(rawURL))
	unlock := g.lock(key)
	defer unlock()
	// The idle bound of the disk pruner counts from the last use.
	defer touchCache(key)

	f := &fetcher{g: g, url: rawURL, key: key}
	_, statErr := os.Stat(key)
	cached := statErr == nil
	repo, hash, err := f.resolve(ctx, ref)
	if err != nil && cached && !errors.As(err, new(inputError)) && !errors.As(err, new(remoteError)) &&
		!errors.Is(err, errBudget) && ctx.Err() == nil {
		// A cache left broken (by a crash, say) must not wedge the app:
		// start from nothing, once. Errors that are the remote's or the
		// caller's (unreachable host, unknown ref) keep the cache.
		if rmErr := os.RemoveAll(key); rmErr == nil {
			cached = false
			repo, hash, err = f.resolve(ctx, ref)
		}
	}
	if err != nil {
		// A failed fetch leaves nothing behind: go-git keeps the pack it
		// was receiving in a temporary file when the transfer is cut (by
		// the size limit, the time limit or the remote), so a repeated
		// attempt would otherwise pile up to MaxBytes of dead data each
		// time. A cache this fetch created holds nothing worth keeping.
		if !cached {
			os.RemoveAll(key)
		} else {
			removeTempFiles(key)
		}
		if ctx.Err() != nil && !errors.As(err, new(inputError)) {
			return Commit{}, fmt.Errorf("git fetch %s: gave up after %v: %w", rawURL, timeout, err)
		}
		return Commit{}, fmt.Errorf("git fetch %s: %w", rawURL, err)
	}
	lim := g.Limits
	if lim == (Limits{}) {
		lim = DefaultLimits
	}
	subject, err := writeCommit(ctx, repo, hash, dest, lim)
	if err != nil {
		return Commit{}, fmt.Errorf("git %s at %s: %w", rawURL, hash, err)
	}
	return Commit{Hash: hash.String(), Subject: subject}, nil
}

// lock serializes fetches of one URL: they share a cache repository.
func (g *Git) lock(key string) func() {
	g.mu.Lock()
	if g.locks == nil {
		g.locks = map[string]*sync.Mutex{}
	}
	l := g.locks[key]
	if l == nil {
		l = &sync.Mutex{}
		g.locks[key] = l
	}
	g.mu.Unlock()
	l.Lock()
	return l.Unlock
}

type fetcher struct {
	g   *Git
	url string
	key string
}

// open opens (creating) the cache repository kind ("shallow" or "full"),
// with writes counted against budget.
func (f *fetcher) open(kind string, budget *byteBudget) (*git.Repository, error) {
	dir := filepath.Join(f.key, kind)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	st := filesystem.NewStorage(&countingFS{Filesystem: osfs.New(dir), budget: budget}, cache.NewObjectLRUDefault())
	repo, err := git.Open(st, nil)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.Init(st, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	if _, err := repo.Remote("origin"); errors.Is(err, git.ErrRemoteNotFound) {
		_, err = repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{f.url}})
		if err != nil {
			return nil, fmt.Errorf("cache %s: %w", dir, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	return repo, nil
}

func (f *fetcher) budget() *byteBudget {
	max := f.g.MaxBytes
	if max <= 0 {
		max = DefaultGitMaxBytes
	}
	return &byteBudget{max: max}
}

func (f *fetcher) resolve(ctx context.Context, ref string) (*git.Repository, plumbing.Hash, error) {
	budget := f.budget()
	// A full hash already cached needs no network.
	if len(ref) == 40 && hexRef.MatchString(ref) {
		for _, kind := range []string{"full", "shallow"} {
			if _, err := os.Stat(filepath.Join(f.key, kind)); err != nil {
				continue
			}
			repo, err := f.open(kind, budget)
			if err != nil {
				return nil, plumbing.ZeroHash, err
			}
			h := plumbing.NewHash(ref)
			if _, err := repo.CommitObject(h); err == nil {
				return repo, h, nil
			}
		}
	}

	shallow, err := f.open("shallow", budget)
	if err != nil {
		return nil, plumbing.ZeroHash, err
	}
	remote, err := shallow.Remote("origin")
	if err != nil {
		return nil, plumbing.ZeroHash, err
	}
	refs, err := remote.ListContext(ctx, &git.ListOptions{})
	if err != nil {
		return nil, plumbing.ZeroHash, remoteError{fmt.Errorf("list remote refs: %w", err)}
	}
	byName := map[plumbing.ReferenceName]*plumbing.Reference{}
	for _, r := range refs {
		byName[r.Name()] = r
	}
	name, err := pickRef(ref, byName)
	if err != nil {
		return nil, plumbing.ZeroHash, err
	}
	if name != "" {
		spec := config.RefSpec("+" + string(name) + ":" + string(name))
		depth := 1
		if isLocalURL(f.url) {
			// The in-process local transport has no shallow support, and
			// a local read gains nothing from it.
			depth = 0
		}
		err := shallow.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", RefSpecs: []config.RefSpec{spec}, Depth: depth, Tags: git.NoTags, Force: true})
		if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			return nil, plumbing.ZeroHash, fmt.Errorf("fetch %s: %w", name, err)
		}
		local, err := shallow.Reference(name, true)
		if err != nil {
			return nil, plumbing.ZeroHash, fmt.Errorf("fetched %s: %w", name, err)
		}
		h, err := peel(shallow, local.Hash())
		if err != nil {
			return nil, plumbing.ZeroHash, fmt.Errorf("%s: %w", name, err)
		}
		return shallow, h, nil
	}

	// A commit: fetch every branch and tag with full history, then look.
	full, err := f.open("full", budget)
	if err != nil {
		return nil, plumbing.ZeroHash, err
	}
	err = full.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin",
		RefSpecs:   []config.RefSpec{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"},
		Tags:       git.NoTags,
		Force:      true,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, plumbing.ZeroHash, fmt.Errorf("fetch all branches and tags: %w", err)
	}
	h, err := findCommit(full, ref)
	if err != nil {
		return nil, plumbing.ZeroHash, err
	}
	return full, h, nil
}

// pickRef maps the requested ref to a remote reference name, or returns ""
// when ref must be a commit hash.
func pickRef(ref string, refs map[plumbing.ReferenceName]*plumbing.Reference) (plumbing.ReferenceName, error) {
	if ref == "" {
		head, ok := refs[plumbing.HEAD]
		if !ok {
			return "", inputError{errors.New("the remote has no HEAD; name a branch, tag or commit")}
		}
		if head.Type() == plumbing.SymbolicReference {
			if _, ok := refs[head.Target()]; ok {
				return head.Target(), nil
			}
			return "", inputError{fmt.Errorf("the remote's HEAD points to %s, which does not exist (empty repository?)", head.Target())}
		}
		// No symref advertised: find the branch HEAD is at.
		var names []string
		for n, r := range refs {
			if n.IsBranch() && r.Hash() == head.Hash() {
				names = append(names, string(n))
			}
		}
		sort.Strings(names)
		if len(names) == 0 {
			return "", inputError{errors.New("cannot tell which branch the remote's HEAD is; name a branch, tag or commit")}
		}
		return plumbing.ReferenceName(names[0]), nil
	}
	if strings.HasPrefix(ref, "refs/heads/") || strings.HasPrefix(ref, "refs/tags/") {
		if _, ok := refs[plumbing.ReferenceName(ref)]; ok {
			return plumbing.ReferenceName(ref), nil
		}
		return "", inputError{fmt.Errorf("the remote has no %s", ref)}
	}
	branch, tag := plumbing.NewBranchReferenceName(ref), plumbing.NewTagReferenceName(ref)
	_, isBranch := refs[branch]
	_, isTag := refs[tag]
	switch {
	case isBranch && isTag:
		return "", inputError{fmt.Errorf("ref %q is both a branch and a tag; say refs/heads/%s or refs/tags/%s", ref, ref, ref)}
	case isBranch:
		return branch, nil
	case isTag:
		return tag, nil
	case hexRef.MatchString(ref):
		return "", nil
	}
	var have []string
	for n := range refs {
		if n.IsBranch() || n.IsTag() {
			have = append(have, n.Short())
		}
	}
	sort.Strings(have)
	if len(have) > 10 {
		have = append(have[:10], "...")
	}
	return "", inputError{fmt.Errorf("ref %q is not a branch, tag or commit hash of the repository (it has: %s)", ref, strings.Join(have, ", "))}
}

// peel follows annotated tags down to a commit.
func peel(repo *git.Repository, h plumbing.Hash) (plumbing.Hash, error) {
	for i := 0; i < 10; i++ {
		tag, err := repo.TagObject(h)
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			break
		}
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if tag.TargetType != plumbing.CommitObject && tag.TargetType != plumbing.TagObject {
			return plumbing.ZeroHash, inputError{fmt.Errorf("tag points to a %s, not a commit", tag.TargetType)}
		}
		h = tag.Target
	}
	if _, err := repo.CommitObject(h); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("commit %s: %w", h, err)
	}
	return h, nil
}

// findCommit finds the unique commit whose hash starts with prefix.
func findCommit(repo *git.Repository, prefix string) (plumbing.Hash, error) {
	if len(prefix) == 40 {
		h := plumbing.NewHash(prefix)
		if _, err := repo.CommitObject(h); err != nil {
			return plumbing.ZeroHash, inputError{fmt.Errorf("commit %s is not on any branch or tag of the repository", prefix)}
		}
		return h, nil
	}
	iter, err := repo.CommitObjects()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	defer iter.Close()
	var found []plumbing.Hash
	err = iter.ForEach(func(c *object.Commit) error {
		if strings.HasPrefix(c.Hash.String(), prefix) {
			found = append(found, c.Hash)
		}
		return nil
	})
	if err != nil {
		return plumbing.ZeroHash, err
	}
	switch len(found) {
	case 0:
		return plumbing.ZeroHash, inputError{fmt.Errorf("no commit starting with %s on any branch or tag of the repository", prefix)}
	case 1:
		return found[0], nil
	default:
		return plumbing.ZeroHash, inputError{fmt.Errorf("commit prefix %s is ambiguous (%d commits); give more digits", prefix, len(found))}
	}
}

// writeCommit writes the tree of commit h into dest through the safe tree
// writer and returns the commit's subject.
func writeCommit(ctx context.Context, repo *git.Repository, h plumbing.Hash, dest string, lim Limits) (string, error) {
	c, err := repo.CommitObject(h)
	if err != nil {
		return "", err
	}
	tree, err := c.Tree()
	if err != nil {
		return "", err
	}
	err = writeTree(ctx, dest, lim, func(w *treeWriter) error {
		walker := object.NewTreeWalker(tree, true, nil)
		defer walker.Close()
		for {
			name, e, err := walker.Next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			switch e.Mode {
			case filemode.Dir:
				if err := w.Dir(name); err != nil {
					return err
				}
			case filemode.Regular, filemode.Executable, filemode.Deprecated:
				blob, err := repo.BlobObject(e.Hash)
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				r, err := blob.Reader()
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				err = w.File(name, blob.Size, r)
				r.Close()
				if err != nil {
					return err
				}
			case filemode.Symlink:
				return inputError{fmt.Errorf("%s is a symbolic link; links are not allowed in app sources", name)}
			case filemode.Submodule:
				return inputError{fmt.Errorf("%s is a submodule (gitlink); submodules are not supported", name)}
			default:
				return inputError{fmt.Errorf("%s has unsupported mode %o", name, uint32(e.Mode))}
			}
		}
	})
	if err != nil {
		return "", err
	}
	return CommitSubject(c.Message), nil
}

// removeTempFiles removes the temporary files go-git writes while it
// receives a pack or rewrites packed refs ("tmp_pack_*", "tmp_obj_*",
// "._packed-refs*") from both cache repositories under key; what
// is left are only completed packs and refs.
func removeTempFiles(key string) {
	for _, kind := range []string{"shallow", "full"} {
		for _, dir := range []string{filepath.Join(key, kind), filepath.Join(key, kind, "objects", "pack")} {
			ents, err := os.ReadDir(dir)
			if err != nil {
				continue
			}
			for _, e := range ents {
				if n := e.Name(); e.Type().IsRegular() && (strings.HasPrefix(n, "tmp_") || strings.HasPrefix(n, "._packed-refs")) {
					os.Remove(filepath.Join(dir, n))
				}
			}
		}
	}
}

var errBudget = errors.New("fetch size limit reached")

// GitMaxBytesKey is the opusd configuration key that sets Git.MaxBytes; the
// size-limit error names it so that the message says how to allow a larger
// repository.
const GitMaxBytesKey = "git_max_bytes"

// byteBudget counts the bytes written by one fetch.
type byteBudget struct {
	max  int64
	used atomic.Int64
}

func (b *byteBudget) add(n int) error {
	if b.used.Add(int64(n)) > b.max {
		return fmt.Errorf("%w: the repository needs more than %s, the most one fetch may write (%s %d in opusd's configuration; an administrator may raise it)",
			errBudget, sizeText(b.max), GitMaxBytesKey, b.max)
	}
	return nil
}

// sizeText writes n bytes the way the configuration documents sizes: in
// MiB when whole, else in bytes.
func sizeText(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// countingFS is a billy filesystem whose files count writes against a
// budget.
type countingFS struct {
	billy.Filesystem
	budget *byteBudget
}

func (c *countingFS) wrap(f billy.File, err error) (billy.File, error) {
	if err != nil {
		return nil, err
	}
	return &countingFile{File: f, budget: c.budget}, nil
}

func (c *countingFS) Create(name string) (billy.File, error) {
	return c.wrap(c.Filesystem.Create(name))
}

func (c *countingFS) OpenFile(name string, flag int, perm os.FileMode) (billy.File, error) {
	return c.wrap(c.Filesystem.OpenFile(name, flag, perm))
}

func (c *countingFS) TempFile(dir, prefix string) (billy.File, error) {
	return c.wrap(c.Filesystem.TempFile(dir, prefix))
}

func (c *countingFS) Chroot(p string) (billy.Filesystem, error) {
	fs, err := c.Filesystem.Chroot(p)
	if err != nil {
		return nil, err
	}
	return &countingFS{Filesystem: fs, budget: c.budget}, nil
}

type countingFile struct {
	billy.File
	budget *byteBudget
}

func (f *countingFile) Write(p []byte) (int, error) {
	if err := f.budget.add(len(p)); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

// CheckSSHAuth refuses an ssh source (ssh://, USER@HOST:PATH) when opusd
// has no ssh agent to authenticate with, which go-git would otherwise
// report as "SSH agent requested but SSH_AUTH_SOCK not-specified": opusd
// has no key of its own. The API applies it before it records a source,
// the fetcher again before it fetches one (opusd's environment is the
// same for both).
func CheckSSHAuth(rawURL string) error {
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil || ep.Protocol != "ssh" || os.Getenv("SSH_AUTH_SOCK") != "" {
		return nil
	}
	return fmt.Errorf("git url %q: ssh sources need an ssh key opusd can use, and opusd has none; use an https:// or git:// URL, or give the app's directory (opusctl packs and sends it)", excerpt.Short(rawURL))
}
