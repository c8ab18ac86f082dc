package source

import (
	"context"
	"io"

	"github.com/opus-hosting/opus/internal/pack"
)

// Pack writes the tar.gz of a local app directory, as a client sends it.
// Clients should import package unprivd/source/pack directly, which depends
// on the standard library only; this forwards to it for opusd's own use.
func Pack(ctx context.Context, dir string, w io.Writer) error {
	return pack.Pack(ctx, dir, w)
}
