package peer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/opus-hosting/opus/internal/atomicfile"
)

// Bounds of Fetch's connection; variables so tests can shorten them.
var (
	// dialTimeout bounds the TCP connect and the TLS handshake, each.
	dialTimeout = 10 * time.Second
	// headerTimeout bounds the wait for the response headers.
	headerTimeout = 30 * time.Second
	// fetchStall is how long one read of the body may wait: a peer that
	// stops sending fails the fetch, well before a move's deadline.
	fetchStall = 60 * time.Second
)

// maxResponseHeader bounds the response headers the peer sends.
const maxResponseHeader = 16 << 10

// Fetch pulls transfer id from the peer Server at addr (HOST:PORT), whose
// certificate must have SHA-256 fingerprint (hex), bearing token, into
// dest: a file of at most maxSize bytes whose SHA-256 must be wantSHA256
// (hex). The file is written to a temporary file (O_EXCL, mode 0600) in
// dest's directory, checked, synced and renamed over dest; on any error
// nothing is left behind and dest is as it was. The transfer is bounded by
// ctx. Errors wrap ErrNotFound, ErrBusy, ErrFingerprint, ErrTooLarge or
// ErrCorrupt where they apply.
func Fetch(ctx context.Context, addr, fingerprint, id string, token []byte, dest string, maxSize int64, wantSHA256 string) error {
	if err := CheckID(id); err != nil {
		return err
	}
	if err := checkSHA256("fingerprint", fingerprint); err != nil {
		return err
	}
	if err := checkSHA256("SHA-256", wantSHA256); err != nil {
		return err
	}
	if len(token) == 0 {
		return fmt.Errorf("fetch %s: no token", id)
	}
	if maxSize < 0 {
		return fmt.Errorf("fetch %s: negative maximum size %d", id, maxSize)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil || strings.ContainsAny(addr, "/?#@") {
		return fmt.Errorf("fetch %s: peer address %q is not HOST:PORT", id, addr)
	}
	if dest == "" {
		return fmt.Errorf("fetch %s: no destination", id)
	}
	err := fetch(ctx, addr, fingerprint, id, token, dest, maxSize, wantSHA256)
	if err != nil {
		return fmt.Errorf("fetch %s from %s: %w", id, addr, err)
	}
	return nil
}

func fetch(ctx context.Context, addr, fingerprint, id string, token []byte, dest string, maxSize int64, wantSHA256 string) error {
	pin, _ := hex.DecodeString(fingerprint)
	tr := &http.Transport{
		Proxy: nil, // straight to the peer, whatever the environment says
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			c, err := (&net.Dialer{Timeout: dialTimeout}).DialContext(ctx, network, a)
			if err != nil {
				return nil, err
			}
			return stallConn{c}, nil
		},
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS13,
			NextProtos: []string{"http/1.1"},
			// The peer's certificate is self-signed and names nothing: it
			// is trusted because its SHA-256 is the one its host published
			// in etcd, not because of a CA or a name. InsecureSkipVerify
			// turns off only the chain and name checks, which
			// VerifyConnection replaces; it runs on every handshake
			// (resumed ones too, unlike VerifyPeerCertificate) and before
			// a byte of the request is sent, so the token never reaches a
			// server that is not the pinned one.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return ErrFingerprint
				}
				got := sha256.Sum256(cs.PeerCertificates[0].Raw)
				if !bytes.Equal(got[:], pin) {
					return fmt.Errorf("%w: got %x", ErrFingerprint, got)
				}
				return nil
			},
		},
		TLSHandshakeTimeout:    dialTimeout,
		ResponseHeaderTimeout:  headerTimeout,
		MaxResponseHeaderBytes: maxResponseHeader,
		DisableKeepAlives:      true,
		DisableCompression:     true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+transfersPath+id, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+hex.EncodeToString(token))
	// RoundTrip, not a Client: a redirect is never followed (the token
	// would go with it).
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusServiceUnavailable:
		return ErrBusy
	default:
		return fmt.Errorf("peer answered %s", resp.Status)
	}
	size := resp.ContentLength
	switch {
	case size < 0:
		return errors.New("peer sent no Content-Length")
	case size > maxSize:
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrTooLarge, size, maxSize)
	}
	if got, want := resp.Header.Get(digestHeader), reprDigest(wantSHA256); got != want {
		return fmt.Errorf("%w: peer offers %s %q, want %q", ErrCorrupt, digestHeader, got, want)
	}
	return atomicfile.WriteFrom(dest, 0o600, func(w io.Writer) error {
		sum := sha256.New()
		// net/http ends the body at Content-Length; the limit is there
		// for the day that is not so.
		n, err := io.Copy(io.MultiWriter(w, sum), io.LimitReader(resp.Body, size+1))
		if err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", n, size, err)
		}
		if n != size {
			return fmt.Errorf("%w: %d bytes arrived, %d were announced", ErrCorrupt, n, size)
		}
		if got := hex.EncodeToString(sum.Sum(nil)); got != wantSHA256 {
			return fmt.Errorf("%w: SHA-256 %s, want %s", ErrCorrupt, got, wantSHA256)
		}
		return nil
	})
}

// stallConn fails a read that waits longer than fetchStall.
type stallConn struct{ net.Conn }

func (c stallConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(fetchStall)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}
