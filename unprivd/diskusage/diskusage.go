// Package diskusage measures how much a directory tree holds, safely when
// the tree is a tenant's to write: it walks by file descriptor beneath
// the directory it opened (openat with O_NOFOLLOW|O_DIRECTORY), never
// follows a link, never opens anything but a directory (so never a FIFO
// or a device), and stops at a bound of entries, depth and time, saying
// then that the size is "at least" what it counted.
package diskusage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults of Limits.
const (
	DefaultMaxEntries = 200_000
	DefaultMaxDepth   = 64
	DefaultTimeout    = 2 * time.Second
)

// Limits bound one measurement; a zero field takes its default.
type Limits struct {
	// MaxEntries bounds the directory entries looked at.
	MaxEntries int
	// MaxDepth bounds how deep the walk goes (each level holds a
	// descriptor open).
	MaxDepth int
	// Timeout bounds the time taken.
	Timeout time.Duration
}

func (l Limits) orDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultTimeout
	}
	return l
}

// Size is what a measurement found.
type Size struct {
	// Bytes is the apparent size of the regular files counted.
	Bytes int64
	// Files counts them.
	Files int64
	// Partial says the walk was cut short (a bound was reached, or a
	// directory could not be read): the tree holds at least Bytes.
	Partial bool
	// Why says what cut it short, when Partial.
	Why string
}

// errStop ends a walk at a bound.
var errStop = errors.New("bound reached")

type walker struct {
	lim      Limits
	deadline time.Time
	ctx      context.Context
	entries  int
	size     Size
}

// Measure counts the regular files beneath dir. A dir that does not exist
// measures zero; one that is not a directory (a link included) is an
// error.
func Measure(ctx context.Context, dir string, lim Limits) (Size, error) {
	lim = lim.orDefaults()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ENOENT) {
		return Size{}, nil
	}
	if err != nil {
		return Size{}, fmt.Errorf("measure %s: %w", dir, err)
	}
	w := &walker{lim: lim, deadline: time.Now().Add(lim.Timeout), ctx: ctx}
	err = w.walk(fd, 1)
	if errors.Is(err, errStop) {
		err = nil
	}
	return w.size, err
}

// cut marks the size partial for why.
func (w *walker) cut(why string) {
	if !w.size.Partial {
		w.size.Partial, w.size.Why = true, why
	}
}

// walk counts what is beneath the directory open as fd, and closes it.
func (w *walker) walk(fd int, depth int) error {
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	for {
		names, err := f.Readdirnames(256)
		for _, name := range names {
			if err := w.entry(fd, name, depth); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) || (err == nil && len(names) == 0) {
			return nil
		}
		if err != nil {
			w.cut("a directory could not be read")
			return nil
		}
	}
}

func (w *walker) entry(dirfd int, name string, depth int) error {
	if w.entries++; w.entries > w.lim.MaxEntries {
		w.cut(fmt.Sprintf("more than %d entries", w.lim.MaxEntries))
		return errStop
	}
	if w.entries%1024 == 0 {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(w.deadline) {
			w.cut(fmt.Sprintf("took longer than %s", w.lim.Timeout))
			return errStop
		}
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if !errors.Is(err, unix.ENOENT) {
			w.cut("an entry could not be examined")
		}
		return nil
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		w.size.Bytes += st.Size
		w.size.Files++
	case unix.S_IFDIR:
		if depth >= w.lim.MaxDepth {
			w.cut(fmt.Sprintf("deeper than %d directories", w.lim.MaxDepth))
			return nil
		}
		// O_NOFOLLOW: an entry swapped for a link since the stat is
		// refused (ELOOP), never followed.
		sub, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			if !errors.Is(err, unix.ENOENT) {
				w.cut("a directory could not be opened")
			}
			return nil
		}
		return w.walk(sub, depth+1)
	}
	// Links, FIFOs, sockets and devices take no room of their own worth
	// counting, and are never opened.
	return nil
}
