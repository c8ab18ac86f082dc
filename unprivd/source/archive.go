package source

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
)

// ExtractArchive safely unpacks the tar (optionally gzipped) archive read
// from r into dest within lim. dest must not exist or be an empty
// directory; the tree appears there complete or not at all. It refuses
// absolute names, ".." components, links of any kind, device and FIFO
// entries, duplicate entries and files where directories are expected;
// files get mode 0644 and directories 0755 whatever the archive says.
func ExtractArchive(ctx context.Context, r io.Reader, dest string, lim Limits) error {
	err := writeTree(ctx, dest, lim, func(w *treeWriter) error {
		_, err := walkArchive(r, w)
		return err
	})
	if err != nil {
		return fmt.Errorf("extract archive: %w", err)
	}
	return nil
}

var gzipMagic = []byte{0x1f, 0x8b}

// walkArchive feeds every entry of a tar or tar.gz stream to w and reports
// whether the stream was gzipped.
func walkArchive(r io.Reader, w *treeWriter) (gz bool, err error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(2)
	var src io.Reader = br
	if bytes.Equal(magic, gzipMagic) {
		gz = true
		zr, err := gzip.NewReader(br)
		if err != nil {
			return gz, fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		src = zr
	}
	tr := tar.NewReader(src)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return gz, fmt.Errorf("not a valid tar archive: %w", err)
		}
		if err := entry(w, tr, hdr); err != nil {
			return gz, err
		}
	}
	if w.entries == 0 {
		return gz, errors.New("archive has no entries")
	}
	return gz, nil
}

func entry(w *treeWriter, tr *tar.Reader, hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		return w.File(hdr.Name, hdr.Size, tr)
	case tar.TypeDir:
		return w.Dir(hdr.Name)
	case tar.TypeXGlobalHeader:
		// git archive writes the commit id here; it names no file.
		return nil
	case tar.TypeSymlink:
		return fmt.Errorf("entry %q is a symbolic link (to %q); links are not allowed in app sources", hdr.Name, hdr.Linkname)
	case tar.TypeLink:
		return fmt.Errorf("entry %q is a hard link (to %q); links are not allowed in app sources", hdr.Name, hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock:
		return fmt.Errorf("entry %q is a device node; only regular files and directories are allowed", hdr.Name)
	case tar.TypeFifo:
		return fmt.Errorf("entry %q is a FIFO; only regular files and directories are allowed", hdr.Name)
	default:
		return fmt.Errorf("entry %q has unsupported type %q; only regular files and directories are allowed", hdr.Name, hdr.Typeflag)
	}
}

// ctxReader stops a copy when ctx is done, so a slow upload can be cut off.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
