package tree

import (
	"context"
	"errors"
	"fmt"
	"path"

	"golang.org/x/sys/unix"

	"github.com/opus-hosting/opus/internal/names"
)

// RemoveTree removes project's tree under base, depth first, by file
// descriptor. Symlinks (and every other non-directory) are unlinked, never
// followed; files the project user created are removed too. An absent tree
// is not an error. It returns how many entries it removed, the root
// included. A tree larger than the entry limit is removed in part and
// ErrLimit returned; calling again continues.
func RemoveTree(ctx context.Context, base, project string) (int64, error) {
	return removeTree(ctx, base, project, DefaultLimits)
}

func removeTree(ctx context.Context, base, project string, lim Limits) (int64, error) {
	if err := names.ValidateProject(project); err != nil {
		return 0, err
	}
	pfd, err := projectsDir(base, false)
	if errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("remove tree of %s: %w", project, err)
	}
	defer unix.Close(pfd)
	var lst unix.Stat_t
	if err := unix.Fstatat(pfd, project, &lst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, nil
		}
		return 0, fmt.Errorf("remove tree of %s: stat root: %w", project, err)
	}
	if lst.Mode&unix.S_IFMT != unix.S_IFDIR {
		// A link or file planted where the root should be: unlink it.
		if err := unix.Unlinkat(pfd, project, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return 0, fmt.Errorf("remove tree of %s: unlink root: %w", project, err)
		}
		return 1, nil
	}
	rfd, err := unix.Openat(pfd, project, dirFlags, 0)
	if err != nil {
		return 0, fmt.Errorf("remove tree of %s: open root: %w", project, err)
	}
	r := &remover{ctx: ctx, lim: lim, root: rfd}
	var st unix.Stat_t
	if err := unix.Fstat(rfd, &st); err != nil {
		unix.Close(rfd)
		return 0, fmt.Errorf("remove tree of %s: fstat root: %w", project, err)
	}
	r.dev = st.Dev
	err = r.empty(rfd, ".", 0)
	unix.Close(rfd)
	if err != nil {
		return r.removed, fmt.Errorf("remove tree of %s: %w", project, err)
	}
	if err := unix.Unlinkat(pfd, project, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return r.removed, fmt.Errorf("remove tree of %s: remove root: %w", project, err)
	}
	r.removed++
	return r.removed, nil
}

type remover struct {
	ctx     context.Context
	lim     Limits
	root    int
	dev     uint64
	visited int64
	removed int64
	moved   int
}

// empty removes everything in the open directory dfd. It re-reads the
// directory from the start after every batch, so entries created meanwhile
// are removed too and deleting while reading cannot skip any. Directories
// nested deeper than MaxDepth are moved up into the project root, where
// the root's own loop finds them: the walk never holds more than MaxDepth
// descriptors, however deep the tree.
func (r *remover) empty(dfd int, rel string, depth int) error {
	buf := make([]byte, 32<<10)
	for {
		batch, err := readBatch(dfd, buf)
		if err != nil {
			return fmt.Errorf("read %s: %w", rel, err)
		}
		if len(batch) == 0 {
			return nil
		}
		for _, name := range batch {
			if err := r.ctx.Err(); err != nil {
				return err
			}
			r.visited++
			if r.visited > r.lim.MaxEntries {
				return fmt.Errorf("removed %d entries, more than %d visited: %w; call again to continue", r.removed, r.lim.MaxEntries, ErrLimit)
			}
			if err := r.entry(dfd, name, path.Join(rel, name), depth); err != nil {
				return err
			}
		}
	}
}

func (r *remover) entry(dfd int, name, rel string, depth int) error {
	var lst unix.Stat_t
	if err := unix.Fstatat(dfd, name, &lst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("stat %s: %w", rel, err)
	}
	if lst.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(dfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unlink %s: %w", rel, err)
		}
		r.removed++
		return nil
	}
	if lst.Dev != r.dev {
		return fmt.Errorf("%s is on another filesystem (a mount point); refusing to remove it", rel)
	}
	// Entries of the root itself are never moved: they are already there.
	if depth > 0 && depth+1 >= r.lim.MaxDepth {
		return r.moveToRoot(dfd, name, rel)
	}
	fd, err := unix.Openat(dfd, name, dirFlags, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil // swapped meanwhile: the next pass sees what it is now
		}
		return fmt.Errorf("open %s: %w", rel, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fmt.Errorf("fstat %s: %w", rel, err)
	}
	if st.Ino != lst.Ino || st.Dev != lst.Dev {
		unix.Close(fd)
		return nil
	}
	err = r.empty(fd, rel, depth+1)
	unix.Close(fd)
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTEMPTY) {
			return nil // refilled meanwhile: the next pass empties it again
		}
		return fmt.Errorf("remove %s: %w", rel, err)
	}
	r.removed++
	return nil
}

// moveToRoot renames a too-deep directory into the project root under a
// fresh name; it stays on the same filesystem, inside the tree being
// removed.
func (r *remover) moveToRoot(dfd int, name, rel string) error {
	for {
		r.moved++
		to := fmt.Sprintf(".opus-remove-%d", r.moved)
		err := unix.Renameat2(dfd, name, r.root, to, unix.RENAME_NOREPLACE)
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EEXIST):
			continue
		default:
			return fmt.Errorf("move deep directory %s up: %w", rel, err)
		}
	}
}

// readBatch reads the first entries of the open directory dfd from its
// start, without "." and "..". An empty result means the directory is empty.
func readBatch(dfd int, buf []byte) ([]string, error) {
	if _, err := unix.Seek(dfd, 0, 0); err != nil {
		return nil, fmt.Errorf("rewind: %w", err)
	}
	for {
		n, err := unix.ReadDirent(dfd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return nil, nil
		}
		_, _, batch := unix.ParseDirent(buf[:n], -1, nil)
		if len(batch) > 0 {
			return batch, nil
		}
	}
}
