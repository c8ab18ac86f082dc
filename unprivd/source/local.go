package source

import (
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	"github.com/go-git/go-git/v5/plumbing/transport/server"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

var installLocal sync.Once

// useInProcessLocalTransport makes go-git serve local repositories
// (absolute paths and file:// URLs, admins only) in-process with its own
// upload-pack, instead of its default, which runs the git binary's
// git-upload-pack. That binary refuses a repository owned by another user
// ("detected dubious ownership", git's safe.directory check) — and an
// administrator's repository is always another user's to opusd — and the
// design wants no git binary in the fetch path at all.
func useInProcessLocalTransport() {
	installLocal.Do(func() {
		client.InstallProtocol("file", server.NewServer(localLoader{}))
	})
}

// isLocalURL reports whether url names a local repository.
func isLocalURL(url string) bool {
	return strings.HasPrefix(url, "/") || strings.HasPrefix(strings.ToLower(url), "file://")
}

// localLoader opens the repository at an endpoint's path: a bare one, or
// the .git directory of a work tree.
type localLoader struct{}

// Load implements server.Loader.
func (localLoader) Load(ep *transport.Endpoint) (storer.Storer, error) {
	if !filepath.IsAbs(ep.Path) {
		return nil, transport.ErrRepositoryNotFound
	}
	for _, dir := range []string{filepath.Join(ep.Path, ".git"), ep.Path} {
		if !isGitDir(dir) {
			continue
		}
		return filesystem.NewStorage(osfs.New(dir), cache.NewObjectLRUDefault()), nil
	}
	return nil, transport.ErrRepositoryNotFound
}

// isGitDir reports whether dir looks like a git directory: a config file
// and an objects directory.
func isGitDir(dir string) bool {
	c, err1 := os.Stat(filepath.Join(dir, "config"))
	o, err2 := os.Stat(filepath.Join(dir, "objects"))
	return err1 == nil && err2 == nil && c.Mode().IsRegular() && o.IsDir()
}
