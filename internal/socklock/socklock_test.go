package socklock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOneHolder: while one Lock is held, the next Acquire is refused with
// ErrHeld naming the holder's pid; after Release it succeeds again, and a
// lock file left behind by a dead holder does not get in the way.
func TestOneHolder(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "run", "d.sock")
	first, err := Acquire(sock, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(Path(sock)); err != nil || string(b) != fmt.Sprintf("%d\n", os.Getpid()) {
		t.Errorf("lock file holds %q (%v), want this pid", b, err)
	}
	// flock conflicts between two opens even within one process, so this
	// is what a second daemon sees.
	_, err = Acquire(sock, 0)
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second Acquire: %v, want ErrHeld naming pid %d", err, os.Getpid())
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	second, err := Acquire(sock, 0)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	defer second.Release()
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Acquire touched the socket path itself: %v", err)
	}
}

// TestWaitsForAnExitingHolder: a holder that lets go within the wait (a
// predecessor still exiting) does not make Acquire fail; one that does
// not, does, after the wait.
func TestWaitsForAnExitingHolder(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	first, err := Acquire(sock, 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := Acquire(sock, 300*time.Millisecond); !errors.Is(err, ErrHeld) || time.Since(start) < 300*time.Millisecond {
		t.Errorf("Acquire with a holder that stays: %v after %v, want ErrHeld after the wait", err, time.Since(start))
	}
	time.AfterFunc(200*time.Millisecond, func() { first.Release() })
	second, err := Acquire(sock, 10*time.Second)
	if err != nil {
		t.Fatalf("Acquire while the holder lets go: %v", err)
	}
	second.Release()
}

// TestRefusesPlantedFiles: what someone else may have put at the lock
// path is refused, left as it was, and never opened (a FIFO would hang).
func TestRefusesPlantedFiles(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		plant func(lock string) error
		want  string
	}{
		{"symlink", func(l string) error { return os.Symlink(target, l) }, "not a regular file"},
		{"hard link", func(l string) error { return os.Link(target, l) }, "hard links"},
		{"fifo", func(l string) error { return syscall.Mkfifo(l, 0o644) }, "not a regular file"},
		{"directory", func(l string) error { return os.Mkdir(l, 0o755) }, "not a regular file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".sock")
			if err := tc.plant(Path(sock)); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				l, err := Acquire(sock, 0)
				if err == nil {
					l.Release()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Acquire over a %s: %v, want an error saying %q", tc.name, err, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("Acquire over a %s hangs", tc.name)
			}
			if b, err := os.ReadFile(target); err != nil || string(b) != "keep me" {
				t.Errorf("the link's target holds %q (%v)", b, err)
			}
		})
	}
}

// TestRefusesAnotherOwner: a lock file owned by another user is refused
// (root only: it needs chown).
func TestRefusesAnotherOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the lock file to another user")
	}
	sock := filepath.Join(t.TempDir(), "d.sock")
	if err := os.WriteFile(Path(sock), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(Path(sock), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if l, err := Acquire(sock, 0); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		l.Release()
		t.Errorf("Acquire over nobody's file: %v", err)
	}
	if b, _ := os.ReadFile(Path(sock)); string(b) != "1\n" {
		t.Errorf("the file was changed to %q", b)
	}
}
