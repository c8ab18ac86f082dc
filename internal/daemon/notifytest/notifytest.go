// Package notifytest stands in for systemd's notify socket in tests of
// what a daemon tells systemd (READY=1, WATCHDOG=1, STOPPING=1).
package notifytest

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Socket is a real unixgram socket standing in for systemd's
// NOTIFY_SOCKET, at the returned path; notes carries each datagram.
func Socket(t *testing.T) (path string, notes <-chan string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// Whoever the daemon runs as may send to it.
	os.Chmod(filepath.Dir(path), 0o755)
	os.Chmod(path, 0o777)
	ch := make(chan string, 256)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return path, ch
}

// Drain returns the lines of every note that reached the socket at path
// before this call. It sends a marker datagram of its own and reads up to
// it: a unix datagram socket keeps order, so no note sent earlier is
// missed however slowly the reader runs, and none is waited for that will
// never come.
func Drain(t *testing.T, path string, notes <-chan string) []string {
	t.Helper()
	const marker = "TEST_DRAIN_MARKER=1"
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(marker)); err != nil {
		t.Fatal(err)
	}
	var lines []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case note, ok := <-notes:
			if !ok {
				t.Fatal("notify socket closed before the marker arrived")
			}
			if note == marker {
				return lines
			}
			lines = append(lines, strings.Split(note, "\n")...)
		case <-timeout:
			t.Fatal("own marker did not come back through the notify socket within 10s")
		}
	}
}

// Count counts the lines equal to want.
func Count(lines []string, want string) int {
	n := 0
	for _, l := range lines {
		if l == want {
			n++
		}
	}
	return n
}
