// Package uploader sends an app archive over opus.v1.Opus/UploadSource:
// the one sender for the Go client (opusctl) and opusd's web console,
// which may not link the client. opusd's upload store checks what it
// receives; this only streams.
package uploader

import (
	"context"
	"errors"
	"fmt"
	"io"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// ChunkSize is the size of each UploadSource message: well under gRPC's
// default 4 MiB message limit.
const ChunkSize = 256 << 10

// Send streams the archive (tar, optionally gzipped) read from r to
// UploadSource as rpc's caller and returns its digest, to name in an
// UploadedSource. origin is informational; size may be 0 when unknown. A
// failure to read r is returned wrapped, naming origin.
func Send(ctx context.Context, rpc opusv1.OpusClient, origin string, r io.Reader, size int64) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if we give up half way
	stream, err := rpc.UploadSource(ctx)
	if err != nil {
		return "", err
	}
	send := func(req *opusv1.UploadSourceRequest) error {
		if err := stream.Send(req); err != nil {
			// On a broken send the real reason is in the status that
			// CloseAndRecv returns (for example "archive too large").
			if errors.Is(err, io.EOF) {
				_, err = stream.CloseAndRecv()
			}
			return err
		}
		return nil
	}
	if err := send(&opusv1.UploadSourceRequest{Part: &opusv1.UploadSourceRequest_Info{Info: &opusv1.UploadInfo{Origin: origin, Size: size}}}); err != nil {
		return "", err
	}
	buf := make([]byte, ChunkSize)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			// Send keeps a reference only until it returns; copy anyway so
			// reuse of buf can never race with marshalling.
			chunk := append([]byte(nil), buf[:n]...)
			if err := send(&opusv1.UploadSourceRequest{Part: &opusv1.UploadSourceRequest_Chunk{Chunk: chunk}}); err != nil {
				return "", err
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return "", fmt.Errorf("read archive of %s: %w", origin, rerr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return "", err
	}
	return resp.GetDigest(), nil
}
