package pack

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/opus-hosting/opus/internal/excerpt"
)

// Limits bound what a Writer packs; a zero field means no bound. A client
// packing its own directory needs none (opusd's upload store has the last
// word); opusd's web console, packing what a browser sent, sets them to
// the store's own limits so it never builds what the store would refuse.
type Limits struct {
	// MaxEntries bounds files and directories together, as the store
	// counts them.
	MaxEntries int64
	// MaxBytes bounds the total of file bytes (uncompressed).
	MaxBytes int64
	// MaxFile bounds one file.
	MaxFile int64
	// MaxName bounds an entry's name in bytes; MaxDepth its components.
	MaxName  int
	MaxDepth int
}

// Writer writes the canonical gzipped tar of an app's source: regular
// files only, given in Compare order, each directory entry written once,
// just before the first file inside it (so a directory with nothing to
// pack is left out), fixed modes (0644 files, 0755 directories), no owners
// or times. The same files give the same bytes whatever they came from
// (a directory on disk, a browser's folder, a zip), so uploads deduplicate.
type Writer struct {
	zw  *gzip.Writer
	tw  *tar.Writer
	lim Limits
	// prev is the last name given; prevFile the last one that was a
	// file, for the file-versus-directory check.
	prev, prevFile string
	dirs           map[string]bool
	entries, total int64
	files          int64
	// top is the folder names were taken out of (WriteEntries' StripTop),
	// put back in messages so that they name what the user sent.
	top string
}

// NewWriter returns a Writer writing to w. Close finishes the archive.
func NewWriter(w io.Writer, lim Limits) *Writer {
	zw, _ := gzip.NewWriterLevel(w, gzip.BestCompression) // the level is valid
	return &Writer{zw: zw, tw: tar.NewWriter(zw), lim: lim, dirs: map[string]bool{}}
}

// Add packs one entry of the given mode: a regular file of size bytes read
// from r. Names must come in Compare order; a duplicate, or a name under
// one already given as a file, is refused. What Skipped names is left out
// (nil); a link, device, socket or FIFO is refused, naming the entry. r
// must deliver exactly size bytes.
func (w *Writer) Add(name string, mode fs.FileMode, size int64, r io.Reader) error {
	clean, err := CleanName(name)
	if err != nil {
		return err
	}
	if clean == "" {
		return fmt.Errorf("entry %q: a file cannot be the root of the tree", name)
	}
	if w.lim.MaxName > 0 && len(clean) > w.lim.MaxName {
		return fmt.Errorf("%s: the name is longer than %d bytes", excerpt.Short(w.shown(clean)), w.lim.MaxName)
	}
	if depth := strings.Count(clean, "/") + 1; w.lim.MaxDepth > 0 && depth > w.lim.MaxDepth {
		return fmt.Errorf("%s is %d folders deep; at most %d are allowed", w.shown(clean), depth, w.lim.MaxDepth)
	}
	if w.prev != "" {
		switch c := Compare(w.prev, clean); {
		case c == 0:
			return fmt.Errorf("%s appears twice; names must be unique", w.shown(clean))
		case c > 0:
			return fmt.Errorf("%s comes after %s: entries must be added in order", w.shown(clean), w.shown(w.prev))
		}
	}
	if w.prevFile != "" && strings.HasPrefix(clean, w.prevFile+"/") {
		return fmt.Errorf("%s is a file and also a folder (it holds %s)", w.shown(w.prevFile), w.shown(clean))
	}
	w.prev = clean
	if Skipped(clean) {
		return nil
	}
	switch t := mode.Type(); {
	case t&fs.ModeSymlink != 0:
		return fmt.Errorf("%s is a symbolic link; app sources may not contain links (copy the file instead)", w.shown(clean))
	case t.IsDir():
		return fmt.Errorf("%s is a directory: add the files in it", w.shown(clean))
	case !t.IsRegular():
		return fmt.Errorf("%s is not a regular file or directory (%v); app sources may contain only files and directories", w.shown(clean), t)
	}
	w.prevFile = clean
	if size < 0 {
		return fmt.Errorf("%s: negative size", w.shown(clean))
	}
	if w.lim.MaxFile > 0 && size > w.lim.MaxFile {
		return fmt.Errorf("%s is %d bytes; a single file may have at most %d bytes", w.shown(clean), size, w.lim.MaxFile)
	}
	if w.lim.MaxBytes > 0 && w.total+size > w.lim.MaxBytes {
		return fmt.Errorf("the files come to more than %d bytes unpacked (at %s)", w.lim.MaxBytes, w.shown(clean))
	}
	w.total += size
	if err := w.parents(clean); err != nil {
		return err
	}
	if err := w.count(clean); err != nil {
		return err
	}
	if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: clean, Size: size, Mode: 0o644, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
		return err
	}
	n, err := io.Copy(w.tw, io.LimitReader(r, size))
	if err != nil {
		return fmt.Errorf("%s: %w", w.shown(clean), err)
	}
	if n != size {
		return fmt.Errorf("%s changed while being packed: %d bytes announced, %d read", w.shown(clean), size, n)
	}
	// Read on to the end: a source that has more than it announced (a zip
	// entry that inflates past its declared size) is refused, and a zip
	// entry's checksum is checked only there.
	var one [1]byte
	switch _, err := io.ReadFull(r, one[:]); {
	case err == nil:
		return fmt.Errorf("%s changed while being packed: more than the %d bytes announced", w.shown(clean), size)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("%s: %w", w.shown(clean), err)
	}
	w.files++
	return nil
}

// shown is name as its sender knows it, for messages.
func (w *Writer) shown(name string) string {
	if w.top == "" {
		return name
	}
	return w.top + "/" + name
}

// parents writes the entries of the directories above name not yet
// written, outermost first.
func (w *Writer) parents(name string) error {
	var missing []string
	for d := path.Dir(name); d != "." && !w.dirs[d]; d = path.Dir(d) {
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := w.count(d + "/"); err != nil {
			return err
		}
		if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
			return err
		}
		w.dirs[d] = true
	}
	return nil
}

func (w *Writer) count(name string) error {
	w.entries++
	if w.lim.MaxEntries > 0 && w.entries > w.lim.MaxEntries {
		return fmt.Errorf("more than %d files and folders (at %s)", w.lim.MaxEntries, w.shown(name))
	}
	return nil
}

// errNoFiles refuses an archive with nothing to deploy.
var errNoFiles = errors.New("there are no files to pack (only folders, or only what is left out: __pycache__, .git, *.pyc)")

// Close finishes the archive. An archive without files is refused.
func (w *Writer) Close() error {
	if err := w.tw.Close(); err != nil {
		return err
	}
	if err := w.zw.Close(); err != nil {
		return err
	}
	if w.files == 0 {
		return errNoFiles
	}
	return nil
}
