package pack

import (
	"archive/zip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
)

// Entry is one file to pack that is not read from a directory on disk (a
// file a browser sent, a zip's entry).
type Entry struct {
	// Name is the entry's path as its source gives it; WriteEntries
	// cleans and checks it with CleanName.
	Name string
	Mode fs.FileMode
	Size int64
	// Open returns the content: Size bytes.
	Open func() (io.ReadCloser, error)
}

// Top says what WriteEntries does with a single top directory.
type Top int

const (
	// KeepTop packs the names as they are.
	KeepTop Top = iota
	// StripTop removes the one top directory every name must sit under:
	// a browser sends a folder's files as "myapp/models.py", and the app
	// is the folder's contents, as the CLI packs a directory's contents.
	StripTop
	// StripSingleTop removes the top directory when every name sits under
	// the same one ("Compress folder" makes such zips; an app's own root
	// holds __init__.py, so such a tree is never an app as it is).
	StripSingleTop
)

// WriteEntries packs entries, in any order, as the canonical tar.gz of
// Writer into w, within lim, treating a top directory as top says. It
// returns the top directory removed ("" when none). Every name is checked
// before anything is read, and the sizes the entries declare are held to
// lim first, so an oversized set is refused before its content is read.
func WriteEntries(ctx context.Context, w io.Writer, entries []Entry, lim Limits, top Top) (string, error) {
	type item struct {
		name string
		e    Entry
	}
	items := make([]item, 0, len(entries))
	var total int64
	for _, e := range entries {
		clean, err := CleanName(e.Name)
		if err != nil {
			return "", err
		}
		if clean == "" {
			continue
		}
		if e.Size < 0 {
			return "", fmt.Errorf("%s: negative size", clean)
		}
		total += e.Size
		if lim.MaxEntries > 0 && int64(len(items)) >= lim.MaxEntries {
			return "", fmt.Errorf("more than %d files and folders", lim.MaxEntries)
		}
		if lim.MaxBytes > 0 && total > lim.MaxBytes {
			return "", fmt.Errorf("the files come to more than %d bytes unpacked", lim.MaxBytes)
		}
		items = append(items, item{clean, e})
	}
	if len(items) == 0 {
		return "", errNoFiles
	}
	stripped := ""
	if top != KeepTop {
		// What is left out does not count: a macOS zip holds the folder
		// and __MACOSX beside it.
		first := ""
		single := true
		for _, it := range items {
			if Skipped(it.name) {
				continue
			}
			t, rest, ok := strings.Cut(it.name, "/")
			if first == "" {
				first = t
			}
			if !ok || t != first || rest == "" {
				single = false
				break
			}
		}
		switch {
		case first == "":
			// Nothing but what is left out: the Writer says so.
		case single:
			stripped = first
			kept := items[:0]
			for _, it := range items {
				if rest, ok := strings.CutPrefix(it.name, first+"/"); ok {
					it.name = rest
					kept = append(kept, it)
				}
			}
			items = kept
		case top == StripTop:
			return "", errors.New("the files do not all sit in one folder; upload one folder, the app's own")
		}
	}
	slices.SortFunc(items, func(a, b item) int { return Compare(a.name, b.name) })
	pw := NewWriter(w, lim)
	pw.top = stripped
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		if err := addEntry(pw, it.name, it.e); err != nil {
			return "", err
		}
	}
	if err := pw.Close(); err != nil {
		return "", err
	}
	return stripped, nil
}

func addEntry(pw *Writer, name string, e Entry) error {
	if !e.Mode.IsRegular() || Skipped(name) {
		// Refused or left out by name or type: nothing is read.
		return pw.Add(name, e.Mode, 0, nil)
	}
	rc, err := e.Open()
	if err != nil {
		return fmt.Errorf("%s: %w", pw.shown(name), err)
	}
	defer rc.Close()
	return pw.Add(name, e.Mode, e.Size, rc)
}

// FromZip packs the zip archive read from ra (size bytes) as the canonical
// tar.gz into w, by WriteEntries' rules with StripSingleTop: a link or
// special file is refused, directories are implied by the files in them,
// and what each entry unpacks to is held to lim as the zip declares it
// and as it inflates (archive/zip refuses an entry that inflates to more
// than it declared, so a zip bomb stops at lim.MaxBytes). It returns the
// top directory removed, "" when none.
func FromZip(ctx context.Context, ra io.ReaderAt, size int64, w io.Writer, lim Limits) (string, error) {
	// archive/zip reads every header of the central directory into memory
	// (whatever count the zip claims), so the bytes it may read for them
	// are bounded first, by what MaxEntries entries need.
	br := &budgetReaderAt{r: ra, left: -1}
	if lim.MaxEntries > 0 {
		br.left = zipTailBytes + lim.MaxEntries*zipHeaderBytes
	}
	zr, err := zip.NewReader(br, size)
	if errors.Is(err, errZipDirectory) {
		return "", fmt.Errorf("the zip's list of files is longer than %d files and folders need; at most %d are allowed", lim.MaxEntries, lim.MaxEntries)
	}
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return "", fmt.Errorf("not a zip archive: %w", err)
	}
	br.left = -1 // the entries' content is bounded by lim as it is read
	// A name ErrInsecurePath warns of is refused by CleanName, by name.
	if lim.MaxEntries > 0 && int64(len(zr.File)) > lim.MaxEntries {
		return "", fmt.Errorf("the zip holds %d entries; at most %d files and folders are allowed", len(zr.File), lim.MaxEntries)
	}
	entries := make([]Entry, 0, len(zr.File))
	for _, f := range zr.File {
		if f.Mode().IsDir() {
			// Implied by the files in it; its name must still be sound.
			if _, err := CleanName(f.Name); err != nil {
				return "", err
			}
			continue
		}
		if f.UncompressedSize64 > 1<<62 {
			return "", fmt.Errorf("%s: declared size out of range", f.Name)
		}
		entries = append(entries, Entry{Name: f.Name, Mode: f.Mode(), Size: int64(f.UncompressedSize64), Open: f.Open})
	}
	return WriteEntries(ctx, w, entries, lim, StripSingleTop)
}

// What reading a zip's central directory may take: the end record and
// comment (at most 64 KiB and a bit, which archive/zip searches), and per
// entry a header of 46 bytes with its name, extra fields and comment,
// generously 512 bytes (an app's paths are far shorter).
const (
	zipTailBytes   = 66 << 10
	zipHeaderBytes = 512
)

var errZipDirectory = errors.New("zip directory too large")

// budgetReaderAt reads from r until left bytes were read, then refuses;
// left < 0 means no bound.
type budgetReaderAt struct {
	r    io.ReaderAt
	left int64
}

func (b *budgetReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if b.left >= 0 {
		if int64(len(p)) > b.left {
			return 0, errZipDirectory
		}
		b.left -= int64(len(p))
	}
	return b.r.ReadAt(p, off)
}
