// Package socklock makes a daemon's Unix socket path belong to one live
// process at a time.
//
// Listening on a Unix socket path means first removing the file a previous
// run left there. Without a lock, a second daemon started by mistake
// removes the file the running one still serves on, binds its own, and
// takes every new client from it. So each daemon holds an exclusive
// flock(2) on a lock file beside its socket (SOCKET.lock) for its whole
// life, taken before it touches the socket — and also when socket
// activation hands it the socket, so that one started by hand beside it is
// refused too. The kernel drops the lock when its holder dies, however it
// dies, so a lock file left behind never blocks a restart; the file itself
// is never removed (that would let two processes lock two different files).
package socklock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrHeld means another process holds the lock: another daemon serves the
// socket.
var ErrHeld = errors.New("another process holds the lock")

// DefaultWait is how long a daemon waits for the lock at start-up: enough
// for a predecessor that was just killed or stopped to finish exiting, short
// enough that one started by mistake is refused at once.
const DefaultWait = 2 * time.Second

const (
	// maxPID bounds what is read of a lock file (a pid and a newline).
	maxPID = 32
	// retryEvery is how often a held lock is tried again while waiting.
	retryEvery = 50 * time.Millisecond
)

// Lock is a held lock on a socket path. It is kept by a raw descriptor, so
// that it cannot be lost to a garbage-collected *os.File: it lasts until
// Release or the end of the process.
type Lock struct {
	fd   int
	path string
}

// Path returns the path of socket's lock file.
func Path(socket string) string { return socket + ".lock" }

// Acquire takes the lock of socket, creating the lock file (and the
// socket's directory) if needed, and writes this process's pid into it.
// When another process holds the lock for longer than wait (a predecessor
// still exiting: its descriptors close only as it dies), the error wraps
// ErrHeld and names that process's pid when the file says it.
//
// The lock file lives in a directory other users may be able to write, so
// it is opened without following a link or opening a FIFO or device, and
// refused unless it is a regular file with one link owned by this process's
// user: a root daemon never truncates a file someone else put there.
func Acquire(socket string, wait time.Duration) (*Lock, error) {
	path := Path(socket)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	fd, err := open(path)
	if err != nil {
		return nil, err
	}
	l := &Lock{fd: fd, path: path}
	deadline := time.Now().Add(wait)
	err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	for errors.Is(err, unix.EWOULDBLOCK) && time.Now().Before(deadline) {
		time.Sleep(retryEvery)
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		defer unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			if pid := l.holder(); pid > 0 {
				return nil, fmt.Errorf("lock %s: held by pid %d: %w", path, pid, ErrHeld)
			}
			return nil, fmt.Errorf("lock %s: %w", path, ErrHeld)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Held: say who holds it, for the refusal of the next one.
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := unix.Ftruncate(fd, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if _, err := unix.Pwrite(fd, pid, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return l, nil
}

// open opens the lock file for reading and writing: a new one is created
// exclusively; an existing one is first opened as a bare handle (O_PATH,
// which opens nothing: no FIFO or device open runs, a link is not
// followed) and checked, and only then reopened through that handle.
func open(path string) (int, error) {
	// 0600: flock needs only a descriptor, so a file anyone may open is a
	// lock anyone may hold, and a daemon that can never start again.
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return fd, nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return -1, fmt.Errorf("lock %s: %w", path, err)
	}
	h, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("lock %s: %w", path, err)
	}
	defer unix.Close(h)
	var st unix.Stat_t
	if err := unix.Fstat(h, &st); err != nil {
		return -1, fmt.Errorf("lock %s: %w", path, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return -1, fmt.Errorf("lock %s: not a regular file (mode %#o); remove it", path, st.Mode)
	case st.Nlink != 1:
		return -1, fmt.Errorf("lock %s: has %d hard links; remove it", path, st.Nlink)
	case int(st.Uid) != os.Geteuid():
		return -1, fmt.Errorf("lock %s: owned by uid %d, not by this process's uid %d; remove it", path, st.Uid, os.Geteuid())
	}
	fd, err = unix.Open("/proc/self/fd/"+strconv.Itoa(h), unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return -1, fmt.Errorf("lock %s: %w", path, err)
	}
	if st.Mode&0o077 != 0 {
		if err := unix.Fchmod(fd, 0o600); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("lock %s: %w", path, err)
		}
	}
	return fd, nil
}

// holder returns the pid the lock file names, or 0.
func (l *Lock) holder() int {
	buf := make([]byte, maxPID)
	n, _ := unix.Pread(l.fd, buf, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:max(n, 0)])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// Path returns the lock file's path.
func (l *Lock) Path() string { return l.path }

// Release gives the lock up. The file stays (see the package comment).
func (l *Lock) Release() error {
	if l == nil || l.fd < 0 {
		return nil
	}
	err := unix.Close(l.fd)
	l.fd = -1
	if err != nil {
		return fmt.Errorf("release %s: %w", l.path, err)
	}
	return nil
}
