package client

import (
	"context"
	"errors"
	"io"

	"github.com/opus-hosting/opus/internal/uploader"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

// Backup writes a backup of project name to w (a gzipped tar; see
// opusd's package backup) and returns its size. When it fails, what w got
// is incomplete and must be thrown away.
func (c *Client) Backup(ctx context.Context, name string, w io.Writer) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.BackupProject(ctx, &opusv1.BackupProjectRequest{Name: name})
	if err != nil {
		return 0, err
	}
	var n int64
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		k, err := w.Write(m.GetChunk())
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
}

// Restore sends the backup read from r to opusd, which checks it whole and
// starts the RESTORE operation that info describes.
func (c *Client) Restore(ctx context.Context, info *opusv1.RestoreInfo, r io.Reader) (*opusv1.Operation, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.RestoreProject(ctx)
	if err != nil {
		return nil, err
	}
	send := func(m *opusv1.RestoreProjectRequest) error {
		if err := stream.Send(m); err != nil {
			// opusd ended the call (a refused file): its reason comes
			// with CloseAndRecv.
			if errors.Is(err, io.EOF) {
				_, err = stream.CloseAndRecv()
			}
			return err
		}
		return nil
	}
	if err := send(&opusv1.RestoreProjectRequest{Part: &opusv1.RestoreProjectRequest_Info{Info: info}}); err != nil {
		return nil, err
	}
	buf := make([]byte, uploader.ChunkSize)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if err := send(&opusv1.RestoreProjectRequest{Part: &opusv1.RestoreProjectRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				return nil, err
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, rerr
		}
	}
	return stream.CloseAndRecv()
}
