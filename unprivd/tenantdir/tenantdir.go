// Package tenantdir reads and writes files in a directory a project's tenant
// can write (its secrets/ and data/ directories, and static/, which the
// tenant's collectstatic fills), where tenant code may have put anything in
// place of a file: a symbolic link to another project's files or to
// /dev/zero, a FIFO that blocks whoever opens it, a hard link, a huge file.
//
// Both directions go through a descriptor of the directory, held open, and
// name one entry in it (never a path):
//
//   - WriteFile creates a new file with O_CREAT|O_EXCL (which never follows
//     a link), writes, fchmods and fsyncs it through its own descriptor, and
//     renames it over the name: rename replaces whatever entry was there (a
//     link, a FIFO, a file) without opening or following it.
//   - ReadFile is for the rare value that must be read back (see DESIGN.md,
//     rule 7): openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS (O_NOFOLLOW
//     where the kernel lacks openat2), O_NONBLOCK so a FIFO cannot block the
//     open, then fstat on the descriptor: a regular file with one link, no
//     larger than the caller's bound, read with that bound and within the
//     caller's context. Anything else is refused with ErrRefused.
package tenantdir

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrRefused means the entry is not a plain regular file ReadFile may read:
// a symbolic link, a FIFO, a device, a socket, a directory, a file with
// other hard links, or one larger than the bound. Errors wrap it with the
// reason.
var ErrRefused = errors.New("refused")

// Dir is a directory held open by a descriptor. Make one with Open; it is
// safe for concurrent use until Close.
type Dir struct {
	fd   int
	path string // for messages only
}

// Open opens the directory at path without following a link at its last
// component. The caller vouches for the components above it: they must
// not be writable by a tenant (for a project, the root and everything
// above it belong to opus or root, see internal/layout), so they cannot be
// swapped for links.
func Open(path string) (*Dir, error) {
	fd, err := retryEINTR(func() (int, error) {
		return unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("open directory %s: %w: it is not a directory (a link or another kind of file)", path, ErrRefused)
		}
		return nil, &fs.PathError{Op: "open directory", Path: path, Err: err}
	}
	return &Dir{fd: fd, path: path}, nil
}

// Close releases the directory's descriptor.
func (d *Dir) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// Path is the directory's path as given to Open.
func (d *Dir) Path() string { return d.path }

// checkName refuses anything but one plain entry name: no separator, no
// "." or "..", nothing empty.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%q is not the name of an entry of a directory", name)
	}
	return nil
}

// ReadFile reads the entry name of d, a regular file with no other hard
// link and at most limit bytes. A missing entry is an error wrapping
// fs.ErrNotExist; an entry that is anything else is an error wrapping
// ErrRefused, saying what it is. The open does not block (O_NONBLOCK) and
// the whole read is abandoned when ctx ends (the work then finishes in the
// background, on its own descriptor of the directory).
func (d *Dir) ReadFile(ctx context.Context, name string, limit int64) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, fmt.Errorf("read %s: negative limit %d", name, limit)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The read gets its own descriptor of the directory: if ctx ends
	// first, Close must not pull d's descriptor (whose number may be
	// reused) out from under it.
	dfd, err := unix.FcntlInt(uintptr(d.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("read %s in %s: %w", name, d.path, err)
	}
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		defer unix.Close(dfd)
		data, err := readAt(dfd, name, limit)
		done <- result{data, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("read %s in %s: %w", name, d.path, r.err)
		}
		return r.data, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("read %s in %s: gave up: %w", name, d.path, ctx.Err())
	}
}

// readFlags open for reading without following a link at the name, without
// blocking on a FIFO and without making a terminal the controlling one.
const readFlags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC

// openNoFollow opens name beneath dfd refusing any link: openat2 where the
// kernel has it (Linux 5.6), else openat with O_NOFOLLOW, which is the same
// for one path component.
func openNoFollow(dfd int, name string) (int, error) {
	how := unix.OpenHow{
		Flags:   readFlags,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	fd, err := retryEINTR(func() (int, error) { return unix.Openat2(dfd, name, &how) })
	if errors.Is(err, unix.ENOSYS) {
		fd, err = retryEINTR(func() (int, error) { return unix.Openat(dfd, name, readFlags, 0) })
	}
	return fd, err
}

func readAt(dfd int, name string, limit int64) ([]byte, error) {
	fd, err := openNoFollow(dfd, name)
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("%w: it is a symbolic link", ErrRefused)
	case errors.Is(err, unix.ENXIO):
		// Opening a socket (or a FIFO for writing) without a peer.
		return nil, fmt.Errorf("%w: it is a socket", ErrRefused)
	case errors.Is(err, unix.EXDEV):
		return nil, fmt.Errorf("%w: it is on another file system (a mount point)", ErrRefused)
	case err != nil:
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat: %w", err)
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG {
		return nil, fmt.Errorf("%w: it is %s, not a regular file", ErrRefused, kind(t))
	}
	if st.Nlink != 1 {
		return nil, fmt.Errorf("%w: it has %d hard links (another name may belong to someone else)", ErrRefused, st.Nlink)
	}
	if st.Size > limit {
		return nil, fmt.Errorf("%w: it has %d bytes, more than %d", ErrRefused, st.Size, limit)
	}
	// The file may grow while it is read (the tenant may be writing to
	// it): read at most one byte beyond the bound, to tell.
	data, err := io.ReadAll(io.LimitReader(fdReader(fd), limit+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: it grew beyond %d bytes while being read", ErrRefused, limit)
	}
	return data, nil
}

// fdReader reads a descriptor with read(2).
type fdReader int

func (r fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(r), p)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func kind(t uint32) string {
	switch t {
	case unix.S_IFIFO:
		return "a FIFO (named pipe)"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return fmt.Sprintf("a file of type %#o", t)
}

// Lstat describes the entry name of d itself (fstatat with
// AT_SYMLINK_NOFOLLOW beneath the held descriptor): a link is described,
// never followed, and nothing is opened. A missing entry is an error
// wrapping fs.ErrNotExist.
func (d *Dir) Lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := checkName(name); err != nil {
		return st, err
	}
	_, err := retryEINTR(func() (int, error) {
		return 0, unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		return st, &fs.PathError{Op: "lstat", Path: d.path + "/" + name, Err: err}
	}
	return st, nil
}

// WriteFile makes the entry name of d a new regular file holding data with
// mode perm, atomically: readers see the old entry or the new file, never
// a part. It never opens or follows what is at name: a link, a FIFO or a
// file the tenant put there is replaced, and what it pointed to is not
// touched. It fails if name is a directory. The new file belongs to the
// calling user until someone (privd's SecureTree) gives it its owner.
func (d *Dir) WriteFile(name string, data []byte, perm fs.FileMode) error {
	if err := checkName(name); err != nil {
		return err
	}
	if perm&^fs.ModePerm != 0 {
		return fmt.Errorf("write %s: mode %v has more than permission bits", name, perm)
	}
	tmp, fd, err := d.createTemp(name)
	if err != nil {
		return fmt.Errorf("write %s in %s: %w", name, d.path, err)
	}
	err = writeAll(fd, data)
	if err == nil {
		err = unix.Fchmod(fd, uint32(perm))
	}
	if err == nil {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(d.fd, tmp, d.fd, name)
	}
	if err != nil {
		unix.Unlinkat(d.fd, tmp, 0)
		return fmt.Errorf("write %s in %s: %w", name, d.path, err)
	}
	// The rename is durable once the directory is.
	if err := unix.Fsync(d.fd); err != nil {
		return fmt.Errorf("write %s in %s: sync directory: %w", name, d.path, err)
	}
	return nil
}

// createTemp creates a new, empty file .NAME.tmp-RANDOM in d, mode 0600,
// and returns its name and descriptor. O_EXCL: an entry the tenant made
// under that name (even a dangling link) is never opened; another name is
// tried.
func (d *Dir) createTemp(name string) (string, int, error) {
	var b [8]byte
	for range 10 {
		if _, err := rand.Read(b[:]); err != nil {
			return "", -1, err
		}
		tmp := "." + name + ".tmp-" + hex.EncodeToString(b[:])
		fd, err := retryEINTR(func() (int, error) {
			return unix.Openat(d.fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_CLOEXEC, 0o600)
		})
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return "", -1, fmt.Errorf("create temporary file: %w", err)
		}
		return tmp, fd, nil
	}
	return "", -1, errors.New("create temporary file: every name tried exists")
}

func writeAll(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func retryEINTR(fn func() (int, error)) (int, error) {
	for {
		fd, err := fn()
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}
