package manage

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/limitio"
	"github.com/opus-hosting/opus/internal/names"
)

// Media files (Django's MEDIA_ROOT, data/media) are what the app wrote:
// every name, type and size in there is the tenant's choice. They are
// copied out and in like the database, by a fixed Python program run as
// the project's user, confined, within DataTimeout and a byte bound, so
// privd opens nothing in the tenant's tree and the copy reaches nothing
// the tenant could not. The programs still walk by directory descriptor
// without following a link and open nothing but directories and regular
// files (non-blocking, so a FIFO cannot hang them): a link, FIFO, socket
// or device in data/media fails the copy with a message naming it, rather
// than being followed or silently left out of a backup.

// ErrMediaRefused: what is in data/media cannot be copied (a link, FIFO,
// socket or device; too many entries or too deep); the message says what.
var ErrMediaRefused = errors.New("the media files cannot be copied")

// exitRefused is the media programs' exit status for ErrMediaRefused; the
// last line of their error output says why.
const exitRefused = 4

// MaxMediaEntries bounds the files and directories of one media copy.
const MaxMediaEntries = 100000

// maxMediaDepth bounds how deep a media tree may go.
const maxMediaDepth = 64

// dumpMediaProgram writes data/media (argv[1]) to stdout as a tar of its
// directories and regular files, at most argv[2] bytes of file content.
// A missing media directory is an empty tar.
const dumpMediaProgram = `
import os, stat, sys, tarfile
root, limit, maxn, maxdepth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
F = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
def kind(m):
    if stat.S_ISLNK(m): return "a symbolic link"
    if stat.S_ISFIFO(m): return "a FIFO"
    if stat.S_ISSOCK(m): return "a socket"
    if stat.S_ISCHR(m) or stat.S_ISBLK(m): return "a device"
    return "not a regular file"
def refuse(rel, what):
    sys.stderr.write("media/%s is %s: a backup copies only regular files and directories; remove it and back up again\n" % (rel, what))
    sys.exit(4)
try:
    top = os.open(root, F | os.O_DIRECTORY)
except FileNotFoundError:
    top = None
except OSError:
    st = os.stat(root, follow_symlinks=False)
    refuse("", kind(st.st_mode))
tar = tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT)
state = {"total": 0, "count": 0}
def walk(dfd, prefix, depth):
    if depth > maxdepth:
        sys.stderr.write("media/%s is more than %d directories deep\n" % (prefix, maxdepth))
        sys.exit(4)
    for name in sorted(os.listdir(dfd)):
        rel = prefix + name
        state["count"] += 1
        if state["count"] > maxn:
            sys.stderr.write("media has more than %d files and directories\n" % maxn)
            sys.exit(4)
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            refuse(rel, kind(st.st_mode))
        fd = os.open(name, F | (os.O_DIRECTORY if stat.S_ISDIR(st.st_mode) else 0), dir_fd=dfd)
        try:
            st = os.fstat(fd)
            ti = tarfile.TarInfo(rel)
            ti.mtime = int(st.st_mtime)
            if stat.S_ISDIR(st.st_mode):
                ti.type, ti.mode = tarfile.DIRTYPE, 0o770
                tar.addfile(ti)
                walk(fd, rel + "/", depth + 1)
                continue
            if not stat.S_ISREG(st.st_mode):
                refuse(rel, kind(st.st_mode))
            state["total"] += st.st_size
            if state["total"] > limit:
                sys.exit(3)
            ti.type, ti.mode, ti.size = tarfile.REGTYPE, 0o660, st.st_size
            with os.fdopen(os.dup(fd), "rb") as f:
                tar.addfile(ti, f)
        finally:
            os.close(fd)
if top is not None:
    walk(top, "", 0)
tar.close()
sys.stdout.flush()
`

// loadMediaProgram reads a tar of media files from stdin (at most argv[2]
// bytes of file content) into a new directory beside data/media (argv[1]
// is the data directory), then puts it in data/media's place: the media
// the project had are replaced whole, or not at all. Only relative names
// without "." or ".." parts, directories and regular files are accepted.
const loadMediaProgram = `
import os, shutil, stat, sys, tarfile
data, limit, maxn, maxdepth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
F = os.O_NOFOLLOW | os.O_CLOEXEC
D = os.O_RDONLY | os.O_DIRECTORY | F
NEW, OLD, MEDIA = ".media.new", ".media.old", "media"
dfd = os.open(data, D)
def remove(name):
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dfd)
    else:
        os.unlink(name, dir_fd=dfd)
remove(NEW)
remove(OLD)
os.mkdir(NEW, 0o770, dir_fd=dfd)
new = os.open(NEW, D, dir_fd=dfd)
def parent(parts):
    fd = os.dup(new)
    for p in parts[:-1]:
        try:
            os.mkdir(p, 0o770, dir_fd=fd)
        except FileExistsError:
            pass
        nfd = os.open(p, D, dir_fd=fd)
        os.close(fd)
        fd = nfd
    return fd
total = count = 0
try:
    tar = tarfile.open(fileobj=sys.stdin.buffer, mode="r|")
    for m in tar:
        count += 1
        if count > maxn:
            sys.exit("opus: the media archive has more than %d entries" % maxn)
        name = m.name.rstrip("/") if m.isdir() else m.name
        parts = name.split("/")
        if name.startswith("/") or "\0" in name or len(parts) > maxdepth or any(p in ("", ".", "..") for p in parts):
            sys.exit("opus: the media archive names %r, which is not a path inside media" % name[:200])
        if m.isdir():
            fd = parent(parts + ["x"])
            os.close(fd)
            continue
        if not m.isreg():
            sys.exit("opus: the media archive's %r is not a regular file or a directory" % name[:200])
        total += m.size
        if total > limit:
            sys.exit(3)
        fd = parent(parts)
        try:
            out = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | F, 0o660, dir_fd=fd)
        finally:
            os.close(fd)
        src = tar.extractfile(m)
        with os.fdopen(out, "wb") as f:
            left = m.size
            while left > 0:
                b = src.read(min(left, 1 << 20))
                if not b:
                    sys.exit("opus: the media archive is cut short")
                f.write(b)
                left -= len(b)
except (tarfile.TarError, EOFError) as e:
    sys.exit("opus: the media archive is not a sound tar: %s" % e)
remove(OLD)
try:
    st = os.stat(MEDIA, dir_fd=dfd, follow_symlinks=False)
except FileNotFoundError:
    st = None
if st is not None and stat.S_ISDIR(st.st_mode):
    os.rename(MEDIA, OLD, src_dir_fd=dfd, dst_dir_fd=dfd)
elif st is not None:
    os.unlink(MEDIA, dir_fd=dfd)
os.rename(NEW, MEDIA, src_dir_fd=dfd, dst_dir_fd=dfd)
remove(OLD)
`

// DumpMedia writes the project's media files (data/media) to w as a tar
// of directories and regular files: at most max bytes of tar, made as the
// project's user (confined). A link, FIFO, socket or device in there fails
// the copy with a message naming it. The caller has checked that the
// project's user is Opus's. It returns the bytes written; when it fails,
// what w got is incomplete and must be thrown away.
func (r *Runner) DumpMedia(ctx context.Context, project string, max int64, w io.Writer) (int64, error) {
	if err := names.ValidateProject(project); err != nil {
		return 0, err
	}
	out := &limitio.Writer{W: w, Max: max, Err: ErrDataTooLarge}
	if err := r.runData(ctx, project, dumpMediaProgram, layout.For(r.Base, project).Media(), max, nil, out, mediaArgs()...); err != nil {
		if out.Over {
			err = ErrDataTooLarge
		}
		return out.N, fmt.Errorf("copy media of %s: %w", project, err)
	}
	return out.N, nil
}

// LoadMedia replaces the project's media files with the tar read from
// src (at most max bytes of file content), as the project's user; the
// previous media stay if it fails.
func (r *Runner) LoadMedia(ctx context.Context, project string, max int64, src io.Reader) error {
	if err := names.ValidateProject(project); err != nil {
		return err
	}
	if err := r.runData(ctx, project, loadMediaProgram, layout.For(r.Base, project).Data, max, src, io.Discard, mediaArgs()...); err != nil {
		return fmt.Errorf("load media of %s: %w", project, err)
	}
	return nil
}

func mediaArgs() []string {
	return []string{fmt.Sprint(MaxMediaEntries), fmt.Sprint(maxMediaDepth)}
}
