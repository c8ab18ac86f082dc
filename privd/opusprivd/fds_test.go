package opusprivd

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCloseInheritedOnExec: a descriptor opened without close-on-exec (as
// one privd inherits would be) reaches an exec'd child until either way of
// marking runs, and not after; 0, 1 and 2 keep their flags.
func TestCloseInheritedOnExec(t *testing.T) {
	for _, tc := range []struct {
		name string
		mark func() error
	}{
		{"close_range", closeInheritedOnExec},
		{"proc", cloexecFromProc},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "stray")
			fd, err := unix.Open(path, unix.O_CREAT|unix.O_RDONLY, 0o600) // no O_CLOEXEC
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			var std [3]int
			for i := range std {
				if std[i], err = unix.FcntlInt(uintptr(i), unix.F_GETFD, 0); err != nil {
					t.Fatal(err)
				}
			}
			if got := childSees(t, fd); got != path {
				t.Fatalf("before marking, the child sees fd %d as %q, want %s (the test proves nothing)", fd, got, path)
			}
			if err := tc.mark(); err != nil {
				t.Fatal(err)
			}
			if got := childSees(t, fd); got != "" {
				t.Errorf("after marking, the child still has fd %d: %s", fd, got)
			}
			for i := range std {
				if f, _ := unix.FcntlInt(uintptr(i), unix.F_GETFD, 0); f != std[i] {
					t.Errorf("fd %d flags %#x, were %#x", i, f, std[i])
				}
			}
		})
	}
}

// childSees returns where fd points in a child exec'd the way privd
// execs (os/exec), or "" when the child does not have it.
func childSees(t *testing.T, fd int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := strconv.Itoa(fd)
	out, err := exec.CommandContext(ctx, "/bin/sh", "-c", "readlink /proc/self/fd/"+n+" 2>/dev/null || true").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}
