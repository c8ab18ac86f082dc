// Package pack makes the tar.gz archive of a local app directory that a
// client streams to opusd (opusd never reads a caller's paths itself). It
// uses the standard library only, so opusctl and other clients can import it
// without pulling in opusd's dependencies.
//
// The archive is deterministic: entries in lexical order, relative names,
// no owners, fixed times and modes (0644 files, 0755 directories), so packing
// the same tree twice gives the same digest and uploads deduplicate.
package pack

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// skipDir are directory names that are never part of an app's source.
var skipDir = map[string]bool{"__pycache__": true, ".git": true}

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
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	tw := tar.NewWriter(zw)
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
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: time.Unix(0, 0), Format: tar.FormatPAX})
		case t&fs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symbolic link; app sources may not contain links (copy the file instead)", p)
		case t.IsRegular():
			if strings.HasSuffix(name, ".pyc") {
				return nil
			}
			return addFile(tw, p, name)
		default:
			return fmt.Errorf("%s is not a regular file or directory (%v); app sources may contain only files and directories", p, t)
		}
	})
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	return nil
}

func addFile(tw *tar.Writer, p, name string) error {
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
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: fi.Size(), Mode: 0o644, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
		return err
	}
	if _, err := io.CopyN(tw, f, fi.Size()); err != nil {
		return fmt.Errorf("%s changed while being packed: %w", p, err)
	}
	return nil
}
