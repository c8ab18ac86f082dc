// Package peer carries a file from one host's opusd to another's: the
// channel a project move (issue 20) sends its exported data over. The
// source's opusd runs a Server and offers the file under an id with a
// token (Offer); the target's opusd pulls it with Fetch, which checks its
// size and SHA-256 and puts it in place whole or not at all. The package
// knows nothing of moves: what a file is, and when it is offered or
// withdrawn, is its caller's business.
//
// Trust model. etcd is the root of trust. Each Server makes an ephemeral
// self-signed certificate when it starts (memory only, never on disk) and
// its host publishes the certificate's SHA-256 (Fingerprint) in its host
// record; the token and the file's SHA-256 are in the record of the
// transfer. Whoever can write those records can already move any project
// anywhere, so the channel adds no trust of its own: Fetch accepts exactly
// the certificate whose fingerprint it was given (no CA, no names), and
// the Server sends a file only to a request bearing its token. TLS keeps
// the tenant's data and the token off the wire: the client checks the
// certificate before it sends the request, so a server that is not the
// pinned one never sees the token.
//
// Bounds. The Server sends at most Options.MaxTransfers files at once,
// keeps at most Options.MaxConns connections, bounds the request headers
// in size and time, and drops a client that stops reading for
// Options.StallTimeout. The file is opened without following a link and
// sent only if it is a regular file of opusd's own user of exactly the
// offered size and SHA-256 (the last bytes are held back until the digest
// is checked). Fetch bounds the file by maxSize before a byte of the body
// is read, the whole transfer by its context, and a server that stops
// sending by a stall timeout.
package peer

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// transfersPath is where the Server serves offered files: GET
// transfersPath+id with "Authorization: Bearer <hex token>".
const transfersPath = "/v1/transfers/"

// digestHeader carries the offered SHA-256 (RFC 9530 Repr-Digest), so that
// Fetch refuses a file other than the one it wants before reading it.
const digestHeader = "Repr-Digest"

// maxIDLen bounds a transfer id.
const maxIDLen = 128

// Errors Fetch wraps, for a caller to tell a refusal it should not retry
// from a busy or unreachable peer.
var (
	// ErrNotFound: the peer offers no such id, or not with this token (it
	// does not say which).
	ErrNotFound = errors.New("no such transfer, or a wrong token")
	// ErrBusy: the peer is sending as many files as it allows; try later.
	ErrBusy = errors.New("peer busy")
	// ErrFingerprint: the peer's certificate is not the pinned one; no
	// request was sent.
	ErrFingerprint = errors.New("peer certificate does not match the fingerprint")
	// ErrTooLarge: the file is larger than the caller allows.
	ErrTooLarge = errors.New("file larger than allowed")
	// ErrCorrupt: what arrived is not the file wanted (size or SHA-256).
	ErrCorrupt = errors.New("file does not match its size or SHA-256")
)

// CheckID says whether id can name a transfer: 1 to 128 of
// [A-Za-z0-9._-], not starting with a dot. It is a path segment of the
// request, so it must need no escaping.
func CheckID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("transfer id %q: must be 1 to %d characters", id, maxIDLen)
	}
	if id[0] == '.' {
		return fmt.Errorf("transfer id %q: must not start with a dot", id)
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("transfer id %q: only letters, digits, '.', '_' and '-' are allowed", id)
		}
	}
	return nil
}

// checkSHA256 says whether s is a SHA-256 in lower-case hex (what
// Fingerprint returns and what a transfer's digest is recorded as).
func checkSHA256(what, s string) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 || hex.EncodeToString(b) != s {
		return fmt.Errorf("%s %q: want a SHA-256 as 64 lower-case hex digits", what, s)
	}
	return nil
}

// reprDigest is the digestHeader value for a hex SHA-256.
func reprDigest(sha256Hex string) string {
	b, _ := hex.DecodeString(sha256Hex)
	return "sha-256=:" + base64.StdEncoding.EncodeToString(b) + ":"
}
