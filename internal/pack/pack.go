// Package pack makes the tar.gz archive of an app's source that a client
// streams to opusd (opusd never reads a caller's paths itself): from a
// local directory (Pack), or from files or a zip a browser sent to the web
// console (WriteEntries, FromZip). It uses the standard library only, so
// opusctl and other clients can import it without pulling in opusd's
// dependencies.
//
// Every archive is written by Writer, so every way in follows the same
// rules (CleanName, Skipped, regular files only) and gives the same,
// deterministic archive: entries in Compare order, relative names, no
// owners, fixed times and modes (0644 files, 0755 directories). Packing
// the same files twice gives the same digest and uploads deduplicate.
package pack

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Pack writes a gzipped tar of the contents of dir to w (names relative to
// dir, so dir itself is the archive's root). It skips __pycache__ and .git
// directories and *.pyc files, and refuses symbolic links, devices, sockets
// and FIFOs, naming the offending path.
func Pack(ctx context.Context, dir string, w io.Writer) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("pack: %s is not a directory", dir)
	}
	pw := NewWriter(w, Limits{})
	// WalkDir visits each directory's entries by name, which is Compare
	// order.
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		switch t := d.Type(); {
		case t.IsDir():
			if skipDir[d.Name()] {
				return filepath.SkipDir
			}
			return nil
		case t.IsRegular():
			return addFile(pw, p, name)
		default:
			return pw.Add(name, t, 0, nil)
		}
	})
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := pw.Close(); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	return nil
}

func addFile(pw *Writer, p, name string) error {
	if Skipped(name) {
		return pw.Add(name, 0, 0, nil)
	}
	// O_NOFOLLOW: the entry was a regular file when listed; refuse it if it
	// has been swapped for a link since.
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	return pw.Add(name, 0, fi.Size(), f)
}
