package source

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// DigestPrefix starts every archive digest.
const DigestPrefix = "sha256:"

// ValidateDigest checks that d is "sha256:" followed by 64 lowercase hex
// digits, the only form Put returns.
func ValidateDigest(d string) error {
	hexPart, ok := strings.CutPrefix(d, DigestPrefix)
	if !ok {
		return fmt.Errorf("digest %q must start with %q", trunc(d), DigestPrefix)
	}
	if len(hexPart) != sha256.Size*2 {
		return fmt.Errorf("digest %q must have %d hex digits after %q", trunc(d), sha256.Size*2, DigestPrefix)
	}
	for i := 0; i < len(hexPart); i++ {
		c := hexPart[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("digest %q: only lowercase hex digits 0-9a-f may follow %q", trunc(d), DigestPrefix)
		}
	}
	return nil
}

// Store keeps uploaded app archives by content digest, under
// Dir/sha256/<hex>.tar or .tar.gz. Only archives that passed a full dry-run
// extraction are stored, so a stored digest always extracts (within the
// same limits).
type Store struct {
	dir string
	lim Limits
}

// NewStore opens (creating if needed) an archive store in dir. Temporary
// files of uploads interrupted by a crash are removed.
func NewStore(dir string, lim Limits) (*Store, error) {
	for _, d := range []string{dir, filepath.Join(dir, "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("archive store: %w", err)
		}
	}
	stale, _ := filepath.Glob(filepath.Join(dir, "tmp", "upload-*"))
	for _, f := range stale {
		os.Remove(f)
	}
	return &Store{dir: dir, lim: lim}, nil
}

// Put reads an archive (tar, optionally gzipped) from r, hashing it as it
// goes, refuses it if it is larger than the compressed limit or would not
// extract safely within the limits, and stores it. Storing the same archive
// twice is harmless.
func (s *Store) Put(ctx context.Context, r io.Reader) (digest string, size int64, err error) {
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("archive store: %w", err)
	}
	defer func() {
		tmp.Close()
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), &ctxReader{ctx: ctx, r: io.LimitReader(r, s.lim.MaxCompressed+1)})
	if err != nil {
		return "", 0, fmt.Errorf("receive archive: %w", err)
	}
	if n > s.lim.MaxCompressed {
		return "", 0, fmt.Errorf("archive is larger than %d bytes", s.lim.MaxCompressed)
	}
	if n == 0 {
		return "", 0, errors.New("archive is empty")
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return "", 0, fmt.Errorf("archive store: %w", err)
	}
	gz, err := walkArchive(tmp, newTreeWriter(ctx, nil, s.lim))
	if err != nil {
		return "", 0, fmt.Errorf("archive refused: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("archive store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("archive store: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	final := filepath.Join(s.dir, "sha256", sum+".tar")
	if gz {
		final += ".gz"
	}
	if err := os.Chmod(tmp.Name(), 0o640); err != nil {
		return "", 0, fmt.Errorf("archive store: %w", err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", 0, fmt.Errorf("archive store: %w", err)
	}
	return DigestPrefix + sum, n, nil
}

// path returns the stored file of digest, or "" if there is none.
func (s *Store) path(digest string) (string, error) {
	if err := ValidateDigest(digest); err != nil {
		return "", err
	}
	base := filepath.Join(s.dir, "sha256", strings.TrimPrefix(digest, DigestPrefix))
	for _, p := range []string{base + ".tar.gz", base + ".tar"} {
		fi, err := os.Lstat(p)
		if err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", nil
}

// Has reports whether an archive with digest is stored.
func (s *Store) Has(digest string) bool {
	p, err := s.path(digest)
	return err == nil && p != ""
}

// Extract unpacks the stored archive digest into dest, which must not exist
// or be an empty directory. The tree appears at dest complete or not at all.
func (s *Store) Extract(ctx context.Context, digest, dest string) error {
	p, err := s.path(digest)
	if err != nil {
		return err
	}
	if p == "" {
		return fmt.Errorf("archive %s is not stored; upload it again", digest)
	}
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("archive %s: %w", digest, err)
	}
	defer f.Close()
	return ExtractArchive(ctx, f, dest, s.lim)
}

// ExtractArchive safely unpacks the tar (optionally gzipped) archive read
// from r into dest (see Store.Extract) within lim. It refuses absolute
// names, ".." components, links of any kind, device and FIFO entries,
// duplicate entries and files where directories are expected; files get
// mode 0644 and directories 0755 whatever the archive says.
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

func trunc(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
