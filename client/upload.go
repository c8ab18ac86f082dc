package client

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opus-hosting/opus/internal/pack"
	"github.com/opus-hosting/opus/internal/uploader"
)

// UploadDir packs the directory dir (tar.gz, with the caller's own rights:
// opusd never reads a caller's path) and uploads it. Packing is
// unprivd/source/pack, the code opusd itself uses, so both sides agree on
// the format and the rules (symlinks and special files are refused,
// __pycache__ and .git left out); it needs only the standard library. It returns the digest
// to name in UploadedSource.
func (c *Client) UploadDir(ctx context.Context, dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("upload %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("upload %s: not a directory", dir)
	}
	// Pack into an unlinked temporary file first: the first message carries
	// the archive's size, so opusd can refuse an oversized upload at once,
	// and a packing error is found before anything is sent.
	tmp, err := os.CreateTemp("", "opus-upload-*.tar.gz")
	if err != nil {
		return "", fmt.Errorf("upload %s: %w", dir, err)
	}
	defer tmp.Close()
	if err := os.Remove(tmp.Name()); err != nil {
		return "", fmt.Errorf("upload %s: %w", dir, err)
	}
	if err := pack.Pack(ctx, abs, tmp); err != nil {
		return "", err // "pack DIR: ...": it names the directory itself
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return "", fmt.Errorf("upload %s: %w", dir, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return "", fmt.Errorf("upload %s: %w", dir, err)
	}
	return c.UploadArchive(ctx, abs, tmp, size)
}

// UploadArchive uploads an archive (tar, optionally gzipped) read from r;
// origin is informational and size may be 0 when unknown. It returns the
// digest to name in UploadedSource.
func (c *Client) UploadArchive(ctx context.Context, origin string, r io.Reader, size int64) (string, error) {
	return uploader.Send(ctx, c.rpc, origin, r, size)
}
