package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"

	"github.com/opus-hosting/opus/internal/pack"
)

// Limits bound what one archive or git tree may unpack to.
type Limits struct {
	// MaxCompressed is the largest archive Put accepts, in bytes as sent.
	MaxCompressed int64
	// MaxUnpacked is the largest total of file bytes one tree may hold.
	MaxUnpacked int64
	// MaxEntries is the most files and directories one tree may hold.
	MaxEntries int64
	// MaxFile is the largest single file.
	MaxFile int64
}

// DefaultLimits suit a Django app: generous for code, templates and small
// static assets; a media library does not belong in an app's source.
var DefaultLimits = Limits{
	MaxCompressed: 64 << 20,
	MaxUnpacked:   256 << 20,
	MaxEntries:    20000,
	MaxFile:       64 << 20,
}

// Modes written for every tree; privd applies the real ownership and mode
// policy later, so these only need to be sane and independent of the input.
const (
	fileMode fs.FileMode = 0o644
	dirMode  fs.FileMode = 0o755
)

type nodeKind int

const (
	implicitDir nodeKind = iota + 1 // created as a parent of an entry
	explicitDir                     // named by its own entry
	regularFile
)

// treeWriter writes the entries of an archive or git tree below one root,
// enforcing the name rules and limits. With a nil root it only checks (the
// dry run Put uses to validate an archive before storing it). All creation
// goes through os.Root, so nothing can be created outside the root even if
// a component were a symlink, and files are created O_EXCL|O_NOFOLLOW.
type treeWriter struct {
	ctx     context.Context
	root    *os.Root
	lim     Limits
	total   int64
	entries int64
	nodes   map[string]nodeKind
}

func newTreeWriter(ctx context.Context, root *os.Root, lim Limits) *treeWriter {
	return &treeWriter{ctx: ctx, root: root, lim: lim, nodes: map[string]nodeKind{}}
}

func (w *treeWriter) count(name string) error {
	if err := w.ctx.Err(); err != nil {
		return fmt.Errorf("unpacking stopped at %q: %w", name, err)
	}
	w.entries++
	if w.entries > w.lim.MaxEntries {
		return fmt.Errorf("more than %d entries; the tree is too large", w.lim.MaxEntries)
	}
	return nil
}

// parents makes sure every parent directory of clean exists, creating the
// missing ones, and refuses a parent that is a file.
func (w *treeWriter) parents(orig, clean string) error {
	dir := path.Dir(clean)
	if dir == "." {
		return nil
	}
	var missing []string
	for d := dir; d != "."; d = path.Dir(d) {
		k, ok := w.nodes[d]
		if ok {
			if k == regularFile {
				return fmt.Errorf("entry %q: %q is a file where a directory is expected", orig, d)
			}
			break
		}
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := w.count(d + "/"); err != nil {
			return err
		}
		if err := w.mkdir(d); err != nil {
			return err
		}
		w.nodes[d] = implicitDir
	}
	return nil
}

func (w *treeWriter) mkdir(d string) error {
	if w.root == nil {
		return nil
	}
	if err := w.root.Mkdir(d, dirMode); err != nil {
		return fmt.Errorf("create directory %q: %w", d, err)
	}
	// The umask must not decide the mode.
	if err := w.root.Chmod(d, dirMode); err != nil {
		return fmt.Errorf("chmod directory %q: %w", d, err)
	}
	return nil
}

// Dir records a directory entry.
func (w *treeWriter) Dir(name string) error {
	clean, err := pack.CleanName(name)
	if err != nil || clean == "" {
		return err
	}
	if err := w.parents(name, clean); err != nil {
		return err
	}
	switch w.nodes[clean] {
	case regularFile:
		return fmt.Errorf("entry %q: %q is a file where a directory is expected", name, clean)
	case explicitDir:
		return fmt.Errorf("entry %q: duplicate entry", name)
	case implicitDir:
		w.nodes[clean] = explicitDir
		return nil
	}
	if err := w.count(name); err != nil {
		return err
	}
	if err := w.mkdir(clean); err != nil {
		return err
	}
	w.nodes[clean] = explicitDir
	return nil
}

// File writes a regular file entry of the declared size from r; r must
// deliver exactly size bytes.
func (w *treeWriter) File(name string, size int64, r io.Reader) error {
	clean, err := pack.CleanName(name)
	if err != nil {
		return err
	}
	if clean == "" {
		return fmt.Errorf("entry %q: a file cannot be the root of the tree", name)
	}
	if size < 0 {
		return fmt.Errorf("entry %q: negative size", name)
	}
	if err := w.parents(name, clean); err != nil {
		return err
	}
	switch w.nodes[clean] {
	case regularFile:
		return fmt.Errorf("entry %q: duplicate entry", name)
	case implicitDir, explicitDir:
		return fmt.Errorf("entry %q: %q is a directory; a file cannot replace it", name, clean)
	}
	if err := w.count(name); err != nil {
		return err
	}
	if size > w.lim.MaxFile {
		return fmt.Errorf("entry %q is %d bytes; a single file may have at most %d bytes", name, size, w.lim.MaxFile)
	}
	if w.total+size > w.lim.MaxUnpacked {
		return fmt.Errorf("unpacked size exceeds %d bytes (at entry %q)", w.lim.MaxUnpacked, name)
	}
	w.nodes[clean] = regularFile
	w.total += size
	// Read one byte more than declared to notice a reader that lies.
	src := io.LimitReader(r, size+1)
	var dst io.Writer = io.Discard
	var f *os.File
	if w.root != nil {
		f, err = w.root.OpenFile(clean, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, fileMode)
		if err != nil {
			return fmt.Errorf("create %q: %w", clean, err)
		}
		defer f.Close()
		dst = f
	}
	n, err := io.Copy(dst, src)
	if err != nil {
		return fmt.Errorf("write %q: %w", clean, err)
	}
	if n != size {
		return fmt.Errorf("entry %q: declared %d bytes, got %d", name, size, n)
	}
	if f != nil {
		if err := f.Chmod(fileMode); err != nil {
			return fmt.Errorf("chmod %q: %w", clean, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("close %q: %w", clean, err)
		}
	}
	return nil
}

// writeTree creates dest atomically: fill runs against a fresh sibling
// temporary directory which is renamed to dest only when fill succeeds, so a
// refused or interrupted tree leaves nothing behind. dest must not exist or
// be an empty directory; its parent must exist.
func writeTree(ctx context.Context, dest string, lim Limits, fill func(*treeWriter) error) (err error) {
	dest = filepath.Clean(dest)
	if fi, err := os.Lstat(dest); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("destination %s exists and is not a directory", dest)
		}
		ents, err := os.ReadDir(dest)
		if err != nil {
			return fmt.Errorf("destination %s: %w", dest, err)
		}
		if len(ents) > 0 {
			return fmt.Errorf("destination %s is not empty", dest)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("destination %s: %w", dest, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".partial-")
	if err != nil {
		return fmt.Errorf("destination %s: %w", dest, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, dirMode); err != nil {
		return fmt.Errorf("destination %s: %w", dest, err)
	}
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return fmt.Errorf("destination %s: %w", dest, err)
	}
	defer root.Close()
	if err := fill(newTreeWriter(ctx, root, lim)); err != nil {
		return err
	}
	if err := os.Rename(tmp, dest); err != nil {
		return fmt.Errorf("destination %s: %w", dest, err)
	}
	return nil
}
