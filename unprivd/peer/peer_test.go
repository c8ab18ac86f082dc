package peer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/logtest"
)

// testServer is a Server on 127.0.0.1 whose log the test reads.
type testServer struct {
	*Server
	log *logtest.Buffer
}

func startServer(t *testing.T, opt Options) *testServer {
	t.Helper()
	var log logtest.Buffer
	opt.Log = slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := Listen("127.0.0.1:0", opt)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{s, &log}
}

func (s *testServer) addr() string { return s.Addr().String() }

// file writes a file of n random bytes in a new directory and returns its
// path and hex SHA-256.
func file(t *testing.T, n int) (string, string) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	p := filepath.Join(t.TempDir(), "export")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return p, hex.EncodeToString(sum[:])
}

// sparse makes a file of n zero bytes that takes no room, and its SHA-256.
func sparse(t *testing.T, n int64) (string, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "export")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(n); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p, hex.EncodeToString(h.Sum(nil))
}

func newToken() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// destDir returns a new directory for Fetch to write dest in, and dest.
func destDir(t *testing.T) (string, string) {
	dir := t.TempDir()
	return dir, filepath.Join(dir, "incoming")
}

// entries lists dir's names.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// checkEmpty fails the test unless dir holds nothing: a failed Fetch
// leaves no file, temporary or not.
func checkEmpty(t *testing.T, dir string) {
	t.Helper()
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("left in the destination directory after a failed fetch: %v", names)
	}
}

// checkLog fails the test unless the server logged want about id and
// never the token.
func checkLog(t *testing.T, s *testServer, id, want string, token []byte) {
	t.Helper()
	log := s.log.String()
	found := false
	for line := range strings.Lines(log) {
		if strings.Contains(line, " id="+id+" ") && strings.Contains(line, want) && strings.Contains(line, " remote=127.0.0.1:") {
			found = true
		}
	}
	if !found {
		t.Errorf("server log lacks a line with %q about id %s and the remote address:\n%s", want, id, log)
	}
	if strings.Contains(log, hex.EncodeToString(token)) {
		t.Errorf("server log holds the token:\n%s", log)
	}
}

func TestFetch(t *testing.T) {
	s := startServer(t, Options{})
	const size = 3*chunk + 12345 // several chunks and a short last one
	path, sum := file(t, size)
	token := newToken()
	if err := s.Offer("m1", path, token, size, sum); err != nil {
		t.Fatal(err)
	}
	_, other := file(t, 10)
	want, _ := os.ReadFile(path)

	tests := []struct {
		name    string
		id      string
		token   []byte
		maxSize int64
		sha     string
		wantErr error  // nil: the fetch succeeds
		log     string // what the server logs
	}{
		{"the offered file", "m1", token, size, sum, nil, "transfer sent"},
		{"maxSize well above", "m1", token, 1 << 30, sum, nil, "transfer sent"},
		{"a wrong token", "m1", newToken(), size, sum, ErrNotFound, "why=\"wrong token\""},
		{"an unknown id", "m2", token, size, sum, ErrNotFound, "why=\"unknown id\""},
		// Refused by the client from the response headers; what the
		// server sees of that depends on how much the socket buffers took.
		{"larger than maxSize", "m1", token, size - 1, sum, ErrTooLarge, ""},
		{"another SHA-256 wanted", "m1", token, size, other, ErrCorrupt, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, dest := destDir(t)
			err := Fetch(t.Context(), s.addr(), s.Fingerprint(), tt.id, tt.token, dest, tt.maxSize, tt.sha)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(dest)
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("dest holds %d bytes (%v), want the %d offered", len(got), err, len(want))
				}
				if fi, _ := os.Stat(dest); fi.Mode().Perm() != 0o600 {
					t.Errorf("dest mode %v, want 0600", fi.Mode())
				}
				if names := entries(t, dir); len(names) != 1 {
					t.Errorf("destination directory holds %v, want dest alone", names)
				}
			} else {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Fetch: %v, want %v", err, tt.wantErr)
				}
				checkEmpty(t, dir)
			}
			if tt.log != "" {
				checkLog(t, s, tt.id, tt.log, tt.token)
			} else if strings.Contains(s.log.String(), hex.EncodeToString(tt.token)) {
				t.Errorf("server log holds the token")
			}
		})
	}
}

// waitFor polls cond for up to 5s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFetchLeavesDestOnFailure: a failed fetch over an existing dest leaves
// it as it was.
func TestFetchLeavesDestOnFailure(t *testing.T) {
	s := startServer(t, Options{})
	path, sum := file(t, 1000)
	token := newToken()
	if err := s.Offer("m1", path, token, 1000, sum); err != nil {
		t.Fatal(err)
	}
	dir, dest := destDir(t)
	if err := os.WriteFile(dest, []byte("before"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Fetch(t.Context(), s.addr(), s.Fingerprint(), "m1", newToken(), dest, 1000, sum); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Fetch with a wrong token: %v", err)
	}
	if got, _ := os.ReadFile(dest); string(got) != "before" {
		t.Errorf("dest now holds %q", got)
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Errorf("destination directory holds %v", names)
	}
}

// TestFetchWrongFingerprint: a server whose certificate is not the pinned
// one (another opusd's) gets no request at all, so never sees the token.
func TestFetchWrongFingerprint(t *testing.T) {
	a := startServer(t, Options{})
	b := startServer(t, Options{})
	if a.Fingerprint() == b.Fingerprint() {
		t.Fatal("two servers have the same certificate")
	}
	path, sum := file(t, 1000)
	token := newToken()
	if err := a.Offer("m1", path, token, 1000, sum); err != nil {
		t.Fatal(err)
	}
	dir, dest := destDir(t)
	err := Fetch(t.Context(), a.addr(), b.Fingerprint(), "m1", token, dest, 1000, sum)
	if !errors.Is(err, ErrFingerprint) {
		t.Fatalf("Fetch pinned to another server's certificate: %v, want %v", err, ErrFingerprint)
	}
	checkEmpty(t, dir)
	// The handshake failed, so the handler never ran: nothing about the
	// transfer is in a's log (only net/http's handshake error).
	waitFor(t, func() bool { return strings.Contains(a.log.String(), "handshake error") })
	if log := a.log.String(); strings.Contains(log, "m1") || strings.Contains(log, "peer:") || !strings.Contains(log, "handshake error") {
		t.Errorf("server log after a refused handshake:\n%s", log)
	}
	// The pin it should have had works.
	if err := Fetch(t.Context(), a.addr(), a.Fingerprint(), "m1", token, dest, 1000, sum); err != nil {
		t.Fatal(err)
	}
}

// TestFingerprint: Fingerprint is the SHA-256 of the certificate served.
func TestFingerprint(t *testing.T) {
	s := startServer(t, Options{})
	c, err := tls.Dial("tcp", s.addr(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	certs := c.ConnectionState().PeerCertificates
	sum := sha256.Sum256(certs[0].Raw)
	if len(certs) != 1 || hex.EncodeToString(sum[:]) != s.Fingerprint() {
		t.Errorf("served %d certificates, leaf %x; Fingerprint %s", len(certs), sum, s.Fingerprint())
	}
	if err := checkSHA256("fingerprint", s.Fingerprint()); err != nil {
		t.Error(err)
	}
}

// TestFileChangedAfterOffer: the file at the offered path is replaced by
// something else after Offer; the server opens no FIFO, follows no link,
// sends nothing, and the client is not kept waiting.
func TestFileChangedAfterOffer(t *testing.T) {
	const size = 1000
	tests := []struct {
		name    string
		replace func(t *testing.T, path string)
		log     string
	}{
		{"a symlink to a file of the same content", func(t *testing.T, path string) {
			data, _ := os.ReadFile(path)
			target := filepath.Join(t.TempDir(), "target")
			os.WriteFile(target, data, 0o600)
			mustReplace(t, path, func() error { return os.Symlink(target, path) })
		}, "not a regular file"},
		{"a FIFO", func(t *testing.T, path string) {
			mustReplace(t, path, func() error { return syscall.Mkfifo(path, 0o600) })
		}, "not a regular file"},
		{"a directory", func(t *testing.T, path string) {
			mustReplace(t, path, func() error { return os.Mkdir(path, 0o700) })
		}, "not a regular file"},
		{"a shorter file", func(t *testing.T, path string) {
			os.Truncate(path, size-1)
		}, "999 bytes, 1000 were offered"},
		{"a file of the same size and other bytes", func(t *testing.T, path string) {
			os.WriteFile(path, bytes.Repeat([]byte("x"), size), 0o600)
		}, "file changed since offered"},
		{"nothing", func(t *testing.T, path string) {
			os.Remove(path)
		}, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Options{})
			path, sum := file(t, size)
			token := newToken()
			if err := s.Offer("m1", path, token, size, sum); err != nil {
				t.Fatal(err)
			}
			tt.replace(t, path)
			dir, dest := destDir(t)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			start := time.Now()
			err := Fetch(ctx, s.addr(), s.Fingerprint(), "m1", token, dest, size, sum)
			if err == nil {
				t.Fatal("Fetch succeeded")
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Fetch took %v to fail", d)
			}
			checkEmpty(t, dir)
			waitFor(t, func() bool { return strings.Contains(s.log.String(), tt.log) })
			checkLog(t, s, "m1", tt.log, token)
		})
	}
}

// mustReplace removes path and makes something else there.
func mustReplace(t *testing.T, path string, make func() error) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := make(); err != nil {
		t.Fatal(err)
	}
}

// startTransfer sends a GET for id with token over a new connection and
// reads the response headers (200, or the test fails), no more: the
// caller reads the body as slowly as it likes, or not at all.
func startTransfer(t *testing.T, s *testServer, id string, token []byte) (*tls.Conn, *http.Response) {
	t.Helper()
	c, err := tls.Dial("tcp", s.addr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s%s HTTP/1.1\r\nHost: peer\r\nAuthorization: Bearer %x\r\n\r\n", transfersPath, id, token)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %v %v", id, resp, err)
	}
	return c, resp
}

// TestSlowClient: a client that stops reading loses its transfer within
// the stall timeout and frees its slot; one that sends its headers slowly
// is cut off at the header timeout; one that reads slowly but steadily
// gets the whole file, however long past the header timeout it takes.
func TestSlowClient(t *testing.T) {
	s := startServer(t, Options{MaxTransfers: 1, StallTimeout: 300 * time.Millisecond, HeaderTimeout: 300 * time.Millisecond})
	// Larger than what the socket buffers of both ends hold, and free.
	const size = 64 << 20
	path, sum := sparse(t, size)
	token := newToken()
	if err := s.Offer("m1", path, token, size, sum); err != nil {
		t.Fatal(err)
	}

	t.Run("stops reading", func(t *testing.T) {
		startTransfer(t, s, "m1", token)
		// The one slot is taken until the server gives up on it.
		start := time.Now()
		waitFor(t, func() bool { return strings.Contains(s.log.String(), "client stopped reading") })
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("server gave up on a client that stopped reading after %v", d)
		}
		checkLog(t, s, "m1", "client stopped reading", token)
		dir, dest := destDir(t)
		if err := Fetch(t.Context(), s.addr(), s.Fingerprint(), "m1", token, dest, size, sum); err != nil {
			t.Fatalf("Fetch after the stalled client was dropped: %v", err)
		}
		if names := entries(t, dir); len(names) != 1 {
			t.Errorf("destination directory holds %v", names)
		}
	})

	t.Run("slow headers", func(t *testing.T) {
		c, err := tls.Dial("tcp", s.addr(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %sm1 HTTP/1.1\r\nHost: peer\r\n", transfersPath) // and no more
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		_, err = io.Copy(io.Discard, c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("server still holds a connection with unfinished headers after %v", time.Since(start))
		}
	})

	t.Run("reads slowly", func(t *testing.T) {
		// Longer than the socket buffers take, read at 20 MB/s: the
		// handler runs for over a second, past the header timeout.
		const small = 32 << 20
		p, sum := sparse(t, small)
		if err := s.Offer("m2", p, token, small, sum); err != nil {
			t.Fatal(err)
		}
		_, resp := startTransfer(t, s, "m2", token)
		start := time.Now()
		h := sha256.New()
		var n int64
		for {
			m, err := io.CopyN(h, resp.Body, 1<<20)
			n += m
			if err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond) // well under the stall timeout
		}
		if d := time.Since(start); n != small || hex.EncodeToString(h.Sum(nil)) != sum || d < time.Second {
			t.Errorf("read %d of %d bytes in %v (digest ok: %v)", n, small, d, hex.EncodeToString(h.Sum(nil)) == sum)
		}
	})
}

// TestMaxTransfers: past MaxTransfers a request is refused at once (503,
// ErrBusy); a slot frees when its transfer ends.
func TestMaxTransfers(t *testing.T) {
	s := startServer(t, Options{MaxTransfers: 2})
	const size = 64 << 20
	path, sum := sparse(t, size)
	token := newToken()
	if err := s.Offer("m1", path, token, size, sum); err != nil {
		t.Fatal(err)
	}
	var held []*tls.Conn
	for range 2 {
		c, _ := startTransfer(t, s, "m1", token)
		held = append(held, c)
	}
	dir, dest := destDir(t)
	if err := Fetch(t.Context(), s.addr(), s.Fingerprint(), "m1", token, dest, size, sum); !errors.Is(err, ErrBusy) {
		t.Fatalf("a third transfer: %v, want %v", err, ErrBusy)
	}
	checkEmpty(t, dir)
	checkLog(t, s, "m1", "too many transfers under way", token)
	for _, c := range held {
		c.Close()
	}
	var err error
	for range 50 {
		if err = Fetch(t.Context(), s.addr(), s.Fingerprint(), "m1", token, dest, size, sum); !errors.Is(err, ErrBusy) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("a transfer after the others ended: %v", err)
	}
}

// TestWithdraw: a withdrawn id is unknown, and its transfer under way
// stops.
func TestWithdraw(t *testing.T) {
	s := startServer(t, Options{})
	const size = 64 << 20
	path, sum := sparse(t, size)
	token := newToken()
	if err := s.Offer("m1", path, token, size, sum); err != nil {
		t.Fatal(err)
	}
	c, resp := startTransfer(t, s, "m1", token)
	if _, err := io.CopyN(io.Discard, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	s.Withdraw("m1")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, resp.Body)
	if ne, ok := err.(net.Error); err == nil || ok && ne.Timeout() || n >= size-1<<20 {
		t.Errorf("after Withdraw the transfer went on: %d more bytes, %v", n, err)
	}
	checkLog(t, s, "m1", "why=withdrawn", token)
	dir, dest := destDir(t)
	if err := Fetch(t.Context(), s.addr(), s.Fingerprint(), "m1", token, dest, size, sum); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Fetch after Withdraw: %v", err)
	}
	checkEmpty(t, dir)
}

// TestRefusedRequests: other methods, paths and malformed tokens are
// refused and logged.
func TestRefusedRequests(t *testing.T) {
	s := startServer(t, Options{})
	path, sum := file(t, 10)
	token := newToken()
	if err := s.Offer("m1", path, token, 10, sum); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	t.Cleanup(client.CloseIdleConnections)
	tests := []struct {
		method, path, auth string
		code               int
		log                string
	}{
		{"POST", transfersPath + "m1", "Bearer " + hex.EncodeToString(token), http.StatusMethodNotAllowed, "method not allowed"},
		{"GET", "/v1/other/m1", "Bearer " + hex.EncodeToString(token), http.StatusNotFound, "no such path"},
		{"GET", transfersPath + "m1", "", http.StatusNotFound, "no bearer token"},
		{"GET", transfersPath + "m1", "Basic " + hex.EncodeToString(token), http.StatusNotFound, "no bearer token"},
		{"GET", transfersPath + "m1", "Bearer not-hex", http.StatusNotFound, "no bearer token"},
		{"GET", transfersPath + "m1", "Bearer " + strings.Repeat("a", 16<<10), http.StatusRequestHeaderFieldsTooLarge, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+" "+truncate(tt.auth, 12), func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, "https://"+s.addr()+tt.path, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// The answer says no more than its status: not why.
			if resp.StatusCode != tt.code || tt.log != "" && bytes.Contains(body, []byte(tt.log)) {
				t.Errorf("answered %d %q, want %d", resp.StatusCode, body, tt.code)
			}
			if tt.log != "" && !strings.Contains(s.log.String(), tt.log) {
				t.Errorf("log lacks %q:\n%s", tt.log, s.log.String())
			}
		})
	}
	if strings.Contains(s.log.String(), hex.EncodeToString(token)) {
		t.Errorf("log holds the token")
	}
}

// TestFetchStalledPeer: a peer that stops sending fails the fetch after
// the stall timeout, leaving nothing.
func TestFetchStalledPeer(t *testing.T) {
	defer func(d time.Duration) { fetchStall = d }(fetchStall)
	fetchStall = 300 * time.Millisecond
	sum := sha256.Sum256(make([]byte, 1000))
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Header().Set(digestHeader, reprDigest(hex.EncodeToString(sum[:])))
		w.Write(make([]byte, 100))
		w.(http.Flusher).Flush()
		<-release
	}))
	srv.StartTLS()
	defer srv.Close()
	defer close(release)
	fp := sha256.Sum256(srv.Certificate().Raw)
	dir, dest := destDir(t)
	start := time.Now()
	err := Fetch(t.Context(), srv.Listener.Addr().String(), hex.EncodeToString(fp[:]), "m1", newToken(), dest, 1000, hex.EncodeToString(sum[:]))
	if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
		t.Errorf("Fetch from a stalled peer: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Fetch from a stalled peer took %v", d)
	}
	checkEmpty(t, dir)
}

// TestFetchContext: a cancelled context ends a fetch under way.
func TestFetchContext(t *testing.T) {
	s := startServer(t, Options{})
	const size = 64 << 20
	path, sum := sparse(t, size)
	token := newToken()
	if err := s.Offer("m1", path, token, size, sum); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel()
	dir, dest := destDir(t)
	if err := Fetch(ctx, s.addr(), s.Fingerprint(), "m1", token, dest, size, sum); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Fetch past its deadline: %v", err)
	}
	checkEmpty(t, dir)
}

func TestOfferArguments(t *testing.T) {
	s := startServer(t, Options{})
	path, sum := file(t, 10)
	tests := []struct {
		name  string
		id    string
		path  string
		token []byte
		size  int64
		sha   string
		ok    bool
	}{
		{"valid", "move-1.a_b", path, newToken(), 10, sum, true},
		{"empty id", "", path, newToken(), 10, sum, false},
		{"id with a slash", "a/b", path, newToken(), 10, sum, false},
		{"id with a dot first", ".a", path, newToken(), 10, sum, false},
		{"id too long", strings.Repeat("a", maxIDLen+1), path, newToken(), 10, sum, false},
		{"no path", "m", "", newToken(), 10, sum, false},
		{"relative path", "m", "export", newToken(), 10, sum, false},
		{"short token", "m", path, make([]byte, 15), 10, sum, false},
		{"negative size", "m", path, newToken(), -1, sum, false},
		{"upper-case SHA-256", "m", path, newToken(), 10, strings.ToUpper(sum), false},
		{"short SHA-256", "m", path, newToken(), 10, sum[:62], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Offer(tt.id, tt.path, tt.token, tt.size, tt.sha); (err == nil) != tt.ok {
				t.Errorf("Offer: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestFetchArguments(t *testing.T) {
	s := startServer(t, Options{})
	_, sum := file(t, 10)
	fp := s.Fingerprint()
	tok := newToken()
	tests := []struct {
		name, fp, id string
		token        []byte
		max          int64
		sha          string
	}{
		{"bad id", fp, "../x", tok, 10, sum},
		{"bad fingerprint", fp[:10], "m", tok, 10, sum},
		{"bad SHA-256", fp, "m", tok, 10, "x"},
		{"no token", fp, "m", nil, 10, sum},
		{"negative maximum", fp, "m", tok, -1, sum},
		{"address with a path", fp, "m", tok, 10, sum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, dest := destDir(t)
			addr := s.addr()
			if tt.name == "address with a path" {
				addr += "/x"
			}
			if err := Fetch(t.Context(), addr, tt.fp, tt.id, tt.token, dest, tt.max, tt.sha); err == nil {
				t.Error("Fetch accepted it")
			}
			checkEmpty(t, dir)
		})
	}
	if log := s.log.String(); log != "" {
		t.Errorf("a request reached the server:\n%s", log)
	}
}

// TestFetchBadPeer: Fetch checks what a peer sends rather than trust it
// (a server other than this package's, with the pinned certificate).
func TestFetchBadPeer(t *testing.T) {
	data := []byte("the exported data")
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	good := func(w http.ResponseWriter) {
		w.Header().Set(digestHeader, reprDigest(want))
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	}
	redirected := make(chan string, 1)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		wantErr error // nil: any error
	}{
		{"other bytes under the right digest", func(w http.ResponseWriter, r *http.Request) {
			good(w)
			w.Write(bytes.ToUpper(data))
		}, ErrCorrupt},
		{"no digest header", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Write(data)
		}, ErrCorrupt},
		{"no Content-Length", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(digestHeader, reprDigest(want))
			w.Write(data[:5])
			w.(http.Flusher).Flush()
			w.Write(data[5:])
		}, nil},
		{"a body cut short", func(w http.ResponseWriter, r *http.Request) {
			good(w)
			w.Write(data[:5])
			panic(http.ErrAbortHandler)
		}, nil},
		{"a Content-Length past maxSize", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(digestHeader, reprDigest(want))
			w.Header().Set("Content-Length", strconv.Itoa(1<<40))
			w.Write(data)
		}, ErrTooLarge},
		{"a redirect", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/elsewhere" {
				redirected <- r.Header.Get("Authorization")
				return
			}
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(tt.handler)
			srv.StartTLS()
			defer srv.Close()
			fp := sha256.Sum256(srv.Certificate().Raw)
			dir, dest := destDir(t)
			err := Fetch(t.Context(), srv.Listener.Addr().String(), hex.EncodeToString(fp[:]), "m1", newToken(), dest, 1<<20, want)
			if err == nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Fetch: %v, want %v", err, tt.wantErr)
			}
			checkEmpty(t, dir)
		})
	}
	select {
	case auth := <-redirected:
		t.Errorf("Fetch followed a redirect, token and all (%q)", auth)
	default:
	}
}

// TestEmptyFile: an empty file is sent like any other, and its digest is
// checked like any other's.
func TestEmptyFile(t *testing.T) {
	s := startServer(t, Options{})
	path, sum := file(t, 0)
	_, other := file(t, 1)
	token := newToken()
	for _, offered := range []string{sum, other} {
		if err := s.Offer("m1", path, token, 0, offered); err != nil {
			t.Fatal(err)
		}
		dir, dest := destDir(t)
		err := Fetch(t.Context(), s.addr(), s.Fingerprint(), "m1", token, dest, 0, offered)
		if offered == sum {
			if fi, serr := os.Stat(dest); err != nil || serr != nil || fi.Size() != 0 {
				t.Fatalf("Fetch of an empty file: %v; dest %v %v", err, fi, serr)
			}
			continue
		}
		if err == nil {
			t.Error("an empty file offered under another digest arrived")
		}
		checkEmpty(t, dir)
		checkLog(t, s, "m1", "file changed since offered", token)
	}
}
