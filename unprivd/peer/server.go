package peer

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/netutil"

	"github.com/opus-hosting/opus/internal/cert"
)

// Options tune a Server; a zero field takes its default.
type Options struct {
	// Log gets a line for every refused request (remote address, id and
	// why; never the token) and every file sent. Nil discards.
	Log *slog.Logger
	// MaxTransfers is how many files are sent at once (default 2); a
	// request past it is answered 503 at once.
	MaxTransfers int
	// MaxConns bounds open connections, including ones still in the TLS
	// handshake (default 64); past it new ones wait in the kernel's queue.
	// Anyone who reaches the port can hold these for HeaderTimeout each:
	// peer_listen belongs on the hosts' own network.
	MaxConns int
	// HeaderTimeout bounds the TLS handshake and the request headers
	// (default 10s).
	HeaderTimeout time.Duration
	// StallTimeout is how long one write to the client may block (default
	// 30s): a client that stops reading loses its transfer, and its slot.
	StallTimeout time.Duration
	// MaxDuration bounds one whole transfer (default 2h).
	MaxDuration time.Duration
}

const (
	defaultMaxTransfers  = 2
	defaultMaxConns      = 64
	defaultHeaderTimeout = 10 * time.Second
	defaultStallTimeout  = 30 * time.Second
	defaultMaxDuration   = 2 * time.Hour
	// maxHeaderBytes bounds the request line and headers: a request needs
	// one short path and one Authorization header.
	maxHeaderBytes = 8 << 10
	// chunk is how much is read from the file and written at a time; the
	// stall deadline is renewed per chunk.
	chunk = 256 << 10
	// certValidity: the client checks the fingerprint, not the dates, so
	// this only keeps the certificate well-formed for tools that look.
	certValidity = 10 * 365 * 24 * time.Hour
)

// Server sends offered files over HTTPS to callers bearing their token.
type Server struct {
	opt Options
	log *slog.Logger
	fp  string
	lis net.Listener
	srv *http.Server
	sem chan struct{}
	// noOffer is compared against when an id is unknown, so an unknown id
	// costs what a wrong token does.
	noOffer [sha256.Size]byte

	mu     sync.Mutex
	offers map[string]*offer
}

// offer is one file on offer.
type offer struct {
	path     string
	tokenSum [sha256.Size]byte // SHA-256 of the token: compared in constant time, same length always
	size     int64
	sha256   string
	// withdrawn is closed by Withdraw (or a new Offer of the id): a
	// transfer under way stops.
	withdrawn chan struct{}
}

// Listen binds addr (HOST:PORT) and makes the server's certificate: an
// ECDSA P-256 self-signed leaf that lives in memory only, so each start of
// opusd has a new one and its host publishes the new Fingerprint.
func Listen(addr string, opt Options) (*Server, error) {
	if opt.MaxTransfers <= 0 {
		opt.MaxTransfers = defaultMaxTransfers
	}
	if opt.MaxConns <= 0 {
		opt.MaxConns = defaultMaxConns
	}
	if opt.HeaderTimeout <= 0 {
		opt.HeaderTimeout = defaultHeaderTimeout
	}
	if opt.StallTimeout <= 0 {
		opt.StallTimeout = defaultStallTimeout
	}
	if opt.MaxDuration <= 0 {
		opt.MaxDuration = defaultMaxDuration
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Level 2 is a P-256 key; the name is for humans only (no one checks it).
	certPEM, keyPEM, err := cert.SelfSigned([]string{"opus-peer"}, time.Now(), certValidity, 2)
	if err != nil {
		return nil, fmt.Errorf("peer certificate: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("peer certificate: %w", err)
	}
	fp := sha256.Sum256(pair.Certificate[0])
	s := &Server{
		opt:    opt,
		log:    log,
		fp:     hex.EncodeToString(fp[:]),
		sem:    make(chan struct{}, opt.MaxTransfers),
		offers: map[string]*offer{},
	}
	if _, err := rand.Read(s.noOffer[:]); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("peer listen %s: %w", addr, err)
	}
	s.lis = tls.NewListener(netutil.LimitListener(lis, opt.MaxConns), &tls.Config{
		Certificates: []tls.Certificate{pair},
		MinVersion:   tls.VersionTLS13,
		// HTTP/1.1 only: one request per connection keeps MaxTransfers
		// and the stall deadline per connection, with no streams to bound.
		NextProtos: []string{"http/1.1"},
	})
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: opt.HeaderTimeout,
		// A GET has no body: reading the request ends with its headers.
		ReadTimeout:    opt.HeaderTimeout,
		IdleTimeout:    opt.HeaderTimeout,
		MaxHeaderBytes: maxHeaderBytes,
		TLSNextProto:   map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// One request per connection: an idle kept-alive connection would hold
	// one of MaxConns for nothing.
	s.srv.SetKeepAlivesEnabled(false)
	return s, nil
}

// Fingerprint is the hex SHA-256 of the server's certificate (its DER):
// what its host publishes for Fetch to pin.
func (s *Server) Fingerprint() string { return s.fp }

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Serve serves until Close; it returns nil then.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops serving at once, transfers under way included: a transfer
// is whole or nothing on the receiving side, and is simply fetched again.
func (s *Server) Close() error {
	err := s.srv.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, o := range s.offers {
		close(o.withdrawn)
		delete(s.offers, id)
	}
	return err
}

// Offer makes the file at path fetchable as id by a caller bearing token,
// until Withdraw(id). path must be a regular file (not a link) of this
// process's user, of exactly size bytes with SHA-256 sha256 (hex): each
// request checks that again and sends nothing otherwise. Offering an id
// again replaces the offer and stops transfers of the old one.
func (s *Server) Offer(id, path string, token []byte, size int64, sha256Hex string) error {
	if err := CheckID(id); err != nil {
		return err
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("offer %s: path %q is not absolute", id, path)
	}
	if len(token) < 16 {
		return fmt.Errorf("offer %s: a token must be at least 16 bytes", id)
	}
	if size < 0 {
		return fmt.Errorf("offer %s: negative size %d", id, size)
	}
	if err := checkSHA256("offer "+id+": SHA-256", sha256Hex); err != nil {
		return err
	}
	o := &offer{path: path, tokenSum: sha256.Sum256(token), size: size, sha256: sha256Hex, withdrawn: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.offers[id]; old != nil {
		close(old.withdrawn)
	}
	s.offers[id] = o
	return nil
}

// Withdraw ends the offer of id (if any); a transfer of it under way
// stops, so after Withdraw no more of the file leaves the host.
func (s *Server) Withdraw(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.offers[id]; o != nil {
		close(o.withdrawn)
		delete(s.offers, id)
	}
}

// ServeHTTP answers GET transfersPath+id.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutPrefix(r.URL.Path, transfersPath)
	if !ok || CheckID(id) != nil {
		s.refuse(w, r, "", http.StatusNotFound, "no such path", "path", truncate(r.URL.Path, 100))
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		s.refuse(w, r, id, http.StatusMethodNotAllowed, "method not allowed", "method", truncate(r.Method, 20))
		return
	}
	o, why := s.authorize(id, r.Header.Get("Authorization"))
	if o == nil {
		// One answer for an unknown id and a wrong token: a caller
		// learns nothing about which ids exist.
		s.refuse(w, r, id, http.StatusNotFound, why)
		return
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		w.Header().Set("Retry-After", "10")
		s.refuse(w, r, id, http.StatusServiceUnavailable, "too many transfers under way", "max", s.opt.MaxTransfers)
		return
	}
	f, err := openOffered(o)
	if err != nil {
		s.refuse(w, r, id, http.StatusInternalServerError, "file not sendable", "err", err)
		return
	}
	defer f.Close()
	s.send(w, r, id, o, f)
}

// authorize returns id's offer if header bears its token, else nil and
// why (for the log). The work is the same whether or not id is offered.
func (s *Server) authorize(id, header string) (*offer, string) {
	tokHex, bearer := strings.CutPrefix(header, "Bearer ")
	tok, err := hex.DecodeString(tokHex)
	sum := sha256.Sum256(tok)
	s.mu.Lock()
	o := s.offers[id]
	s.mu.Unlock()
	want := s.noOffer
	if o != nil {
		want = o.tokenSum
	}
	match := subtle.ConstantTimeCompare(sum[:], want[:]) == 1
	switch {
	case !bearer || err != nil || len(tok) == 0:
		return nil, "no bearer token"
	case o == nil:
		return nil, "unknown id"
	case !match:
		return nil, "wrong token"
	}
	return o, ""
}

// openOffered opens o's file for reading if it is still what was offered:
// a regular file, not a link, of this process's user, of the offered
// size. It looks before it opens so that a FIFO or device is never opened;
// the open itself neither follows a link nor waits for a FIFO's writer,
// and the opened file is checked to be the one looked at.
func openOffered(o *offer) (*os.File, error) {
	before, err := os.Lstat(o.path)
	if err != nil {
		return nil, err
	}
	if err := checkOffered(o, before); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(o.path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		err = checkOffered(o, fi)
	}
	if err == nil && !os.SameFile(before, fi) {
		err = fmt.Errorf("%s was replaced while being opened", o.path)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkOffered says whether fi is still the file o offers.
func checkOffered(o *offer, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (%v)", o.path, fi.Mode().Type())
	}
	if fi.Size() != o.size {
		return fmt.Errorf("%s is %d bytes, %d were offered", o.path, fi.Size(), o.size)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s is not this process's user's", o.path)
	}
	return nil
}

// send streams f (checked to be o's file) as the response. The stall
// deadline is renewed for each chunk; the digest is checked before the
// last chunk goes out, so a file changed since it was offered never
// arrives whole. A transfer cut short aborts the connection: with the
// Content-Length sent, the client sees the body end early.
func (s *Server) send(w http.ResponseWriter, r *http.Request, id string, o *offer, f *os.File) {
	start := time.Now()
	deadline := start.Add(s.opt.MaxDuration)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(o.size, 10))
	h.Set("Cache-Control", "no-store")
	h.Set(digestHeader, reprDigest(o.sha256))
	w.WriteHeader(http.StatusOK)

	abort := func(why string, args ...any) {
		s.log.Warn("peer: transfer cut short", append([]any{"remote", r.RemoteAddr, "id", id, "why", why}, args...)...)
		panic(http.ErrAbortHandler)
	}
	sum := sha256.New()
	if o.size == 0 && hex.EncodeToString(sum.Sum(nil)) != o.sha256 {
		abort("file changed since offered", "sent", 0)
	}
	buf := make([]byte, min(int64(chunk), max(o.size, 1)))
	var sent int64
	for sent < o.size {
		select {
		case <-o.withdrawn:
			abort("withdrawn", "sent", sent)
		case <-r.Context().Done():
			abort("client gone", "sent", sent)
		default:
		}
		if time.Now().After(deadline) {
			abort("took longer than allowed", "sent", sent, "max", s.opt.MaxDuration)
		}
		n, err := io.ReadFull(f, buf[:min(int64(len(buf)), o.size-sent)])
		if err != nil {
			abort("read", "sent", sent, "err", err)
		}
		sum.Write(buf[:n])
		if sent+int64(n) == o.size {
			if got := hex.EncodeToString(sum.Sum(nil)); got != o.sha256 {
				abort("file changed since offered", "sent", sent, "sha256", got, "offered", o.sha256)
			}
		}
		wd := time.Now().Add(s.opt.StallTimeout)
		if wd.After(deadline) {
			wd = deadline
		}
		if err := rc.SetWriteDeadline(wd); err != nil {
			abort("set write deadline", "err", err)
		}
		if _, err := w.Write(buf[:n]); err != nil {
			abort("client stopped reading or went away", "sent", sent, "err", err)
		}
		sent += int64(n)
	}
	if err := rc.Flush(); err != nil {
		abort("flush", "sent", sent, "err", err)
	}
	s.log.Info("peer: transfer sent", "remote", r.RemoteAddr, "id", id, "bytes", sent, "took", time.Since(start).Round(time.Millisecond))
}

// refuse answers code (with no detail: the caller is not trusted with
// why) and logs why.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, id string, code int, why string, args ...any) {
	s.log.Warn("peer: request refused", append([]any{"remote", r.RemoteAddr, "id", id, "status", code, "why", why}, args...)...)
	http.Error(w, http.StatusText(code), code)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
