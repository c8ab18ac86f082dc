package opusprivd

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// closeInheritedOnExec marks every descriptor from 3 up close-on-exec.
//
// Go opens its own files close-on-exec, and os/exec hands a child only
// 0, 1, 2 and ExtraFiles, but it closes nothing else: a descriptor privd
// inherited without FD_CLOEXEC (from a careless parent, a shell, a
// service manager) would otherwise reach everything privd execs —
// manage.py running tenant code as the project user, and Apache, whose
// mod_wsgi daemons run tenant code for good. Doing it first thing, for the
// whole process, is the one place that cannot miss a later exec. A
// socket-activated listener is still usable in-process (go-systemd takes
// it by number and marks it close-on-exec itself).
func closeInheritedOnExec() error {
	err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	// close_range with CLOSE_RANGE_CLOEXEC needs Linux 5.11; a seccomp
	// filter may refuse it too. Then set the flag one descriptor at a time.
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("mark inherited descriptors close-on-exec: close_range: %w", err)
	}
	return cloexecFromProc()
}

// cloexecFromProc sets FD_CLOEXEC on every descriptor from 3 up listed in
// /proc/self/fd (including the listing's own, which is close-on-exec
// already and gone by then: EBADF is expected for it).
func cloexecFromProc() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("mark inherited descriptors close-on-exec: %w", err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		// FD_CLOEXEC is the only descriptor flag, so setting it alone
		// loses nothing.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			return fmt.Errorf("mark descriptor %d close-on-exec: %w", fd, err)
		}
	}
	return nil
}
