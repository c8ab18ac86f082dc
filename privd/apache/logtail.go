package apache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"

	"github.com/opus-hosting/opus/internal/names"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// TailLog bounds.
const (
	defaultTailLines = 100
	maxTailLines     = 1000
	maxTailBytes     = 1 << 20
)

// TailLog returns the last lines (0 means 100, at most 1000) of the
// project's own error log, reading at most its last MiB; or, when the
// request has a position to read after, the complete lines appended since
// it (at most as many and from at most one MiB per call). A project
// without a log yet has no lines. Either way the answer says where the
// next call goes on.
func (s *Sites) TailLog(_ context.Context, req *privdv1.TailLogRequest) (*privdv1.TailLogResponse, error) {
	name := req.GetProject()
	if err := names.ValidateProject(name); err != nil {
		return nil, fmt.Errorf("tail log: %w", err)
	}
	n := int(req.GetLines())
	switch {
	case n < 0:
		return nil, fmt.Errorf("tail log %s: lines %d is negative", name, n)
	case n == 0:
		n = defaultTailLines
	case n > maxTailLines:
		n = maxTailLines
	}
	keep := func(l string) bool { return !serverNotice.MatchString(l) }
	path := s.paths.ErrorLog(name)
	if after := req.GetAfter(); after != nil {
		if after.GetOffset() < 0 {
			return nil, fmt.Errorf("tail log %s: offset %d is negative", name, after.GetOffset())
		}
		res, err := linesAfter(path, after, n, maxTailBytes, keep)
		if err != nil {
			return nil, fmt.Errorf("tail log %s: %w", name, err)
		}
		return res, nil
	}
	lines, next, err := tailLog(path, n, maxTailBytes, keep)
	if err != nil {
		return nil, fmt.Errorf("tail log %s: %w", name, err)
	}
	return &privdv1.TailLogResponse{Lines: lines, Next: next}, nil
}

// serverNotice matches the notices the project's backend Apache writes
// about itself (started, resuming, graceful, shutting down: core and MPM
// at notice level, which Apache logs whatever LogLevel says). They stay
// in the file, where restarts are watched for them, but are not the
// project's errors: left in, a just-deployed project's log would never
// read as empty.
var serverNotice = regexp.MustCompile(`^\[[^\]]*\] \[(core|mpm_[a-z]+):notice\] \[pid \d+(:tid \d+)?\] AH\d{5}: `)

// openLog opens the log at path for reading, or returns nil, nil when
// there is none. The logs directory is root's, but a log is still opened
// as anything under a project's influence would be: a link is not
// followed, a FIFO does not block the open, and anything but a regular
// file is refused before a byte is read.
func openLog(path string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not a regular file", path)
	}
	return f, fi, nil
}

// position is offset in the file fi describes.
func position(fi os.FileInfo, offset int64) *privdv1.LogPosition {
	p := &privdv1.LogPosition{Offset: offset}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		p.Device, p.Inode = uint64(st.Dev), st.Ino
	}
	return p
}

// sameFile reports whether p is a position in the file fi describes.
func sameFile(p *privdv1.LogPosition, fi os.FileInfo) bool {
	cur := position(fi, 0)
	return p.GetDevice() == cur.GetDevice() && p.GetInode() == cur.GetInode()
}

// tailFile returns the last n lines that keep accepts (every line when
// keep is nil) among the last limit bytes of path. A line cut by that
// window is dropped rather than returned partial.
func tailFile(path string, n int, limit int64, keep func(string) bool) ([]string, error) {
	lines, _, err := tailLog(path, n, limit, keep)
	return lines, err
}

// tailLog is tailFile that also returns the position of the end of the
// file as it read it, where following the log goes on.
func tailLog(path string, n int, limit int64, keep func(string) bool) ([]string, *privdv1.LogPosition, error) {
	f, fi, err := openLog(path)
	if err != nil || f == nil {
		return []string{}, &privdv1.LogPosition{}, err
	}
	defer f.Close()
	off := max(fi.Size()-limit, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil {
		return nil, nil, err
	}
	next := position(fi, off+int64(len(b)))
	if off > 0 {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		} else {
			b = nil
		}
	}
	text := strings.TrimRight(string(b), "\n")
	if text == "" {
		return []string{}, next, nil
	}
	lines := strings.Split(text, "\n")
	if keep != nil {
		lines = slices.DeleteFunc(lines, func(l string) bool { return !keep(l) })
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return validUTF8(lines), next, nil
}

// linesAfter returns the first n complete lines that keep accepts (every
// line when keep is nil) among those that start at or after the position
// after, reading at most limit(+1) bytes; with the position after them, and
// whether lines were left for another call. A position in another file
// (the log was rotated or made anew) or past the end (it was truncated)
// starts again from the file's start: that file is all new. A line not
// yet ended waits for its newline, unless it alone fills limit bytes: then
// that much of it is a line, so the log never stalls.
func linesAfter(path string, after *privdv1.LogPosition, n int, limit int64, keep func(string) bool) (*privdv1.TailLogResponse, error) {
	f, fi, err := openLog(path)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return &privdv1.TailLogResponse{Lines: []string{}, Next: &privdv1.LogPosition{}}, nil
	}
	defer f.Close()
	off := after.GetOffset()
	if !sameFile(after, fi) || off > fi.Size() {
		off = 0
	}
	avail := fi.Size() - off
	// One byte over limit: a line of exactly limit bytes is then seen
	// ended, not taken for a longer one.
	b, err := io.ReadAll(io.NewSectionReader(f, off, min(avail, limit+1)))
	if err != nil {
		return nil, err
	}
	res := &privdv1.TailLogResponse{Lines: []string{}, More: int64(len(b)) < avail}
	used := 0
	for len(res.Lines) < n {
		i := bytes.IndexByte(b[used:], '\n')
		if i < 0 {
			if used == 0 && int64(len(b)) > limit {
				// One line longer than a call reads: give it in pieces.
				res.Lines = append(res.Lines, string(b[:limit]))
				used = int(limit)
				res.More = true
			}
			break
		}
		l := string(b[used : used+i])
		used += i + 1
		if keep == nil || keep(l) {
			res.Lines = append(res.Lines, l)
		}
	}
	if len(res.Lines) == n && bytes.IndexByte(b[used:], '\n') >= 0 {
		res.More = true
	}
	res.Lines = validUTF8(res.Lines)
	res.Next = position(fi, off+int64(used))
	return res, nil
}

// validUTF8 makes every line valid UTF-8 in place. The log holds whatever
// the project's code wrote to its stderr; a line that is not UTF-8 must
// not fail the reply (protobuf strings).
func validUTF8(lines []string) []string {
	for i, l := range lines {
		lines[i] = strings.ToValidUTF8(l, "\uFFFD")
	}
	return lines
}
