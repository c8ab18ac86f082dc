// Package tree applies Opus's fixed file policy to a project's tree and
// removes a project's tree, as root, without ever following a link.
//
// Paths come only from internal/layout and a validated project name. The
// walk holds a file descriptor for every directory on the way down: the base
// directory and the projects directory are opened with O_NOFOLLOW, every
// entry below is looked at with fstatat(AT_SYMLINK_NOFOLLOW), opened relative
// to its parent's descriptor with O_NOFOLLOW, checked again with fstat on the
// open descriptor, and changed with fchown/fchmod on that descriptor. A path
// string is never handed to a system call that could resolve a link, so a
// project user who swaps an entry for a symlink mid-walk gains nothing.
package tree

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/names"
)

// Owners are the ids the policy assigns: the opus user's (from privd's
// configuration) and the project user's (from its account).
type Owners struct {
	OpusUID, OpusGID       uint32
	ProjectUID, ProjectGID uint32
}

// Refusal is an entry SecureTree would not touch.
type Refusal struct {
	// Path is relative to the project's root.
	Path   string
	Reason string
}

// Result is what SecureTree did.
type Result struct {
	// Secured counts the entries the policy was applied to.
	Secured  int64
	Refusals []Refusal
}

// Limits bound a walk, so a project user cannot make privd work forever or
// hold unbounded memory or descriptors.
type Limits struct {
	// MaxDepth is the deepest directory nesting below the project root.
	MaxDepth int
	// MaxEntries is the most entries one call visits.
	MaxEntries int64
}

// DefaultLimits are the limits SecureTree and RemoveTree use.
var DefaultLimits = Limits{MaxDepth: 64, MaxEntries: 500_000}

// ErrLimit means a walk stopped at one of its Limits.
var ErrLimit = errors.New("tree walk limit reached")

// role names whose ids an entry gets.
type role int

const (
	opusRole role = iota
	projectRole
)

// policy is what one top-level directory's subtree gets.
type policy struct {
	owner, group       role
	top, subdir, files uint32
}

// rootPolicy is the project root's own policy.
var rootPolicy = policy{owner: opusRole, group: projectRole, top: 0o751}

// policies is the fixed policy table (see package layout and DESIGN.md
// "File policy"). Modes are never chosen by a caller.
var policies = map[string]policy{
	// The app runs its code but cannot change it; Apache's workers may
	// traverse to the WSGI script.
	layout.CodeDir: {owner: opusRole, group: projectRole, top: 0o751, subdir: 0o750, files: 0o640},
	// Only the project (and opus, which writes them) read its secrets.
	layout.SecretsDir: {owner: projectRole, group: opusRole, top: 0o770, subdir: 0o770, files: 0o640},
	// The app writes its data.
	layout.DataDir: {owner: projectRole, group: opusRole, top: 0o770, subdir: 0o770, files: 0o660},
	// Apache's workers serve static files; collectstatic (as the project)
	// writes them.
	layout.StaticDir: {owner: opusRole, group: projectRole, top: 0o775, subdir: 0o775, files: 0o644},
}

// topDirs is the order top-level directories are created and secured in.
var topDirs = []string{layout.CodeDir, layout.SecretsDir, layout.DataDir, layout.StaticDir}

func (o Owners) ids(owner, group role) (int, int) {
	pick := func(r role, opus, project uint32) int {
		if r == opusRole {
			return int(opus)
		}
		return int(project)
	}
	return pick(owner, o.OpusUID, o.ProjectUID), pick(group, o.OpusGID, o.ProjectGID)
}

const (
	dirFlags  = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fileFlags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY
)

// projectsDir opens base and its projects directory without following a
// link at either. With create set, a missing projects directory is made
// (root:root 0755: only privd creates project roots in it).
func projectsDir(base string, create bool) (int, error) {
	if !strings.HasPrefix(base, "/") || path.Clean(base) != base {
		return -1, fmt.Errorf("base directory %q must be a clean absolute path", base)
	}
	bfd, err := unix.Open(base, dirFlags, 0)
	if err != nil {
		return -1, fmt.Errorf("open base directory %s (must be a directory, not a link): %w", base, err)
	}
	defer unix.Close(bfd)
	projects := path.Base(layout.ProjectsDir("/"))
	pfd, err := unix.Openat(bfd, projects, dirFlags, 0)
	if errors.Is(err, unix.ENOENT) && create {
		if err := unix.Mkdirat(bfd, projects, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("create %s: %w", layout.ProjectsDir(base), err)
		}
		pfd, err = unix.Openat(bfd, projects, dirFlags, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("open %s (must be a directory, not a link): %w", layout.ProjectsDir(base), err)
	}
	return pfd, nil
}

// SecureTree applies the fixed policy to project's tree under base, creating
// the root and any missing top-level directory. Entries it will not touch are
// returned as refusals; an error means the walk could not finish (partial
// changes may have been made; calling again is safe).
func SecureTree(ctx context.Context, base, project string, o Owners) (Result, error) {
	return secureTree(ctx, base, project, o, DefaultLimits)
}

func secureTree(ctx context.Context, base, project string, o Owners, lim Limits) (Result, error) {
	if err := names.ValidateProject(project); err != nil {
		return Result{}, err
	}
	pfd, err := projectsDir(base, true)
	if err != nil {
		return Result{}, fmt.Errorf("secure tree of %s: %w", project, err)
	}
	defer unix.Close(pfd)
	w := &secureWalk{ctx: ctx, o: o, lim: lim}
	rfd, err := w.openTop(pfd, project, ".", rootPolicy)
	if err != nil || rfd < 0 {
		return w.res, err
	}
	defer unix.Close(rfd)
	var rootSt unix.Stat_t
	if err := unix.Fstat(rfd, &rootSt); err != nil {
		return w.res, fmt.Errorf("fstat project root: %w", err)
	}
	w.dev = rootSt.Dev
	if err := w.checkRootEntries(rfd); err != nil {
		return w.res, err
	}
	for _, name := range topDirs {
		pol := policies[name]
		fd, err := w.openTop(rfd, name, name, pol)
		if err != nil {
			return w.res, err
		}
		if fd < 0 {
			continue
		}
		err = w.walk(fd, name, pol, 1)
		unix.Close(fd)
		if err != nil {
			return w.res, err
		}
	}
	return w.res, nil
}

type secureWalk struct {
	ctx     context.Context
	o       Owners
	lim     Limits
	dev     uint64
	entries int64
	res     Result
}

func (w *secureWalk) refuse(rel, reason string) {
	w.res.Refusals = append(w.res.Refusals, Refusal{Path: rel, Reason: reason})
}

// openTop opens (creating if missing) the directory name in parent and
// applies pol.top to it. It returns -1 and no error when the entry was
// refused.
func (w *secureWalk) openTop(parent int, name, rel string, pol policy) (int, error) {
	fd, err := unix.Openat(parent, name, dirFlags, 0)
	if errors.Is(err, unix.ENOENT) {
		// 0700 until the policy is applied on the descriptor below.
		if err := unix.Mkdirat(parent, name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("create %s: %w", rel, err)
		}
		fd, err = unix.Openat(parent, name, dirFlags, 0)
	}
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		var st unix.Stat_t
		reason := "not a directory"
		if unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			reason = kindReason(&st, "not a directory")
		}
		w.refuse(rel, reason)
		return -1, nil
	}
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", rel, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("fstat %s: %w", rel, err)
	}
	if w.dev != 0 && st.Dev != w.dev {
		unix.Close(fd)
		w.refuse(rel, "on another filesystem")
		return -1, nil
	}
	if err := w.apply(fd, rel, pol.owner, pol.group, pol.top); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// checkRootEntries reports anything in the project root that is not one of
// the layout's directories; such entries are left untouched.
func (w *secureWalk) checkRootEntries(rfd int) error {
	return readNames(rfd, func(name string) error {
		if _, ok := policies[name]; !ok {
			w.refuse(name, "not part of the project layout")
		}
		return nil
	})
}

func (w *secureWalk) apply(fd int, rel string, owner, group role, mode uint32) error {
	uid, gid := w.o.ids(owner, group)
	// chown first: it clears set-id bits, and the fixed mode comes last.
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return fmt.Errorf("fchown %s: %w", rel, err)
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("fchmod %s: %w", rel, err)
	}
	w.res.Secured++
	return nil
}

// walk applies pol to every entry of the open directory dfd (whose policy
// has already been applied), depth first.
func (w *secureWalk) walk(dfd int, rel string, pol policy, depth int) error {
	return readNames(dfd, func(name string) error {
		if err := w.ctx.Err(); err != nil {
			return fmt.Errorf("secure tree: %w", err)
		}
		w.entries++
		if w.entries > w.lim.MaxEntries {
			return fmt.Errorf("secure tree: more than %d entries: %w", w.lim.MaxEntries, ErrLimit)
		}
		return w.entry(dfd, name, path.Join(rel, name), pol, depth)
	})
}

func (w *secureWalk) entry(dfd int, name, rel string, pol policy, depth int) error {
	var lst unix.Stat_t
	if err := unix.Fstatat(dfd, name, &lst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // removed while we walked: nothing to secure
		}
		return fmt.Errorf("stat %s: %w", rel, err)
	}
	if reason := refusal(&lst, w.dev); reason != "" {
		w.refuse(rel, reason)
		return nil
	}
	isDir := lst.Mode&unix.S_IFMT == unix.S_IFDIR
	if isDir && depth >= w.lim.MaxDepth {
		w.refuse(rel, fmt.Sprintf("nested deeper than %d directories", w.lim.MaxDepth))
		return nil
	}
	flags := fileFlags
	if isDir {
		flags = dirFlags
	}
	fd, err := unix.Openat(dfd, name, flags, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ENXIO):
			w.refuse(rel, "changed while being secured")
			return nil
		}
		return fmt.Errorf("open %s: %w", rel, err)
	}
	defer unix.Close(fd)
	// Check again on the descriptor: the entry may have been swapped
	// between fstatat and openat.
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat %s: %w", rel, err)
	}
	if st.Ino != lst.Ino || st.Dev != lst.Dev || st.Mode&unix.S_IFMT != lst.Mode&unix.S_IFMT {
		w.refuse(rel, "changed while being secured")
		return nil
	}
	if reason := refusal(&st, w.dev); reason != "" {
		w.refuse(rel, reason)
		return nil
	}
	if !isDir {
		return w.apply(fd, rel, pol.owner, pol.group, pol.files)
	}
	if err := w.apply(fd, rel, pol.owner, pol.group, pol.subdir); err != nil {
		return err
	}
	return w.walk(fd, rel, pol, depth+1)
}

// refusal says why an entry must not be touched, or returns "".
func refusal(st *unix.Stat_t, dev uint64) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
	case unix.S_IFREG:
		if st.Nlink > 1 {
			return fmt.Sprintf("hard-linked regular file (%d links)", st.Nlink)
		}
	default:
		return kindReason(st, "")
	}
	if st.Dev != dev {
		return "on another filesystem"
	}
	return ""
}

func kindReason(st *unix.Stat_t, other string) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	}
	if other != "" {
		return other
	}
	return fmt.Sprintf("unknown file type %#o", st.Mode&unix.S_IFMT)
}

// readNames calls fn for every entry of the open directory dfd except "."
// and "..", reading the directory in fixed-size batches so memory stays
// bounded however many entries it has.
func readNames(dfd int, fn func(name string) error) error {
	if _, err := unix.Seek(dfd, 0, 0); err != nil {
		return fmt.Errorf("rewind directory: %w", err)
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.ReadDirent(dfd, buf)
		if err != nil {
			return fmt.Errorf("read directory: %w", err)
		}
		if n <= 0 {
			return nil
		}
		var batch []string
		_, _, batch = unix.ParseDirent(buf[:n], -1, nil)
		for _, name := range batch {
			if err := fn(name); err != nil {
				return err
			}
		}
	}
}
