// Package confine runs tenant code — a project's manage.py — confined, as
// DESIGN.md's rule 8 asks: in a mount namespace of its own whose /tmp,
// /var/tmp and /dev/shm are fresh, size-limited tmpfs (nothing the tenant
// writes there reaches the host's, or outlives the run), in an IPC
// namespace of its own (no System V or POSIX IPC object of it is the
// host's, or outlives its last process), with no new
// privileges (a setuid file cannot raise it), under resource limits, as the
// project's user and none of privd's groups.
//
// The mounts, limits and the no-new-privileges bit must be set between
// fork and exec, which os/exec cannot do; so privd runs its own executable
// again in a child mode (Command), which sets them up and execs the tenant
// program in its place — the re-exec pattern of runc and containerd.
// cmd/opus-privd calls MaybeRunChild first thing; so must any test binary
// whose tests start confined programs.
package confine

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Limits bound what confined code may use. Zero fields take the defaults.
type Limits struct {
	// TmpBytes is the size of each private tmpfs (/tmp, /var/tmp,
	// /dev/shm).
	TmpBytes int64 `json:"tmp_bytes"`
	// Tasks bounds the processes and threads of the project's user
	// (RLIMIT_NPROC, which counts every task of the uid: its daemon's
	// too).
	Tasks uint64 `json:"tasks"`
	// Files bounds open descriptors per process (RLIMIT_NOFILE).
	Files uint64 `json:"files"`
	// FileBytes bounds the size of a file it writes (RLIMIT_FSIZE).
	FileBytes uint64 `json:"file_bytes"`
}

// DefaultLimits are generous for a Django project's manage.py and tight
// enough that one tenant cannot fill a disk with one file, fork without
// end or hold tmpfs memory beyond a bound.
var DefaultLimits = Limits{TmpBytes: 256 << 20, Tasks: 512, Files: 4096, FileBytes: 4 << 30}

func (l Limits) withDefaults() Limits {
	if l.TmpBytes <= 0 {
		l.TmpBytes = DefaultLimits.TmpBytes
	}
	l.Tasks = cmp.Or(l.Tasks, DefaultLimits.Tasks)
	l.Files = cmp.Or(l.Files, DefaultLimits.Files)
	l.FileBytes = cmp.Or(l.FileBytes, DefaultLimits.FileBytes)
	return l
}

// Spec is one confined program.
type Spec struct {
	// UID and GID are the project user's; neither may be 0.
	UID, GID uint32
	// Path is the program, Args its argv (Args[0] included), Env its
	// whole environment, Dir its working directory.
	Path string
	Args []string
	Env  []string
	Dir  string
	// Keep are directories the program needs that may lie under one of
	// the private directories (a project tree under /tmp, as in the
	// tests): each is mounted back at its place over the fresh tmpfs.
	Keep []string
	// Limits bound it.
	Limits Limits
	// Master marks an Apache master (a project's backend): it keeps uid 0,
	// to bind its privileged port, and switches its children to UID and
	// GID itself (Apache's User and Group); everything else is as for any
	// confined program, and every child inherits it (the mount namespace,
	// the limits, no new privileges).
	Master bool `json:"master"`
	// CgroupProcs are cgroup.procs files the program joins (package
	// cgroup), before anything else of it runs: all it starts stays there.
	CgroupProcs []string `json:"cgroup_procs"`
}

// childArg0 marks the child mode in argv[0]; envSpec carries the Spec.
// Both come only from Command: privd's own environment is never passed on.
const (
	childArg0 = "opus-privd-confine"
	envSpec   = "OPUS_CONFINE_SPEC"
)

// privateDirs are mounted over with a fresh tmpfs in the child.
// (/run/lock is world-writable on Debian too; a host without one of them
// skips it).
var privateDirs = []string{"/tmp", "/var/tmp", "/dev/shm", "/run/lock"}

// mqueueDir is where a host mounts its POSIX message queues; the child
// mounts its own IPC namespace's there.
const mqueueDir = "/dev/mqueue"

// Command returns a command that runs spec confined, through self (the
// running privd's executable, which must call MaybeRunChild). The caller
// may set Stdin, Stdout, Stderr, ExtraFiles, Cancel and WaitDelay; not
// Path, Args, Env, Dir or SysProcAttr. The child gets its own session, so
// killing -pid ends everything it started.
func Command(ctx context.Context, self string, spec Spec) (*exec.Cmd, error) {
	if spec.UID == 0 || spec.GID == 0 {
		return nil, fmt.Errorf("confine: refusing to run as uid %d gid %d", spec.UID, spec.GID)
	}
	if spec.Path == "" || len(spec.Args) == 0 {
		return nil, errors.New("confine: no program")
	}
	spec.Limits = spec.Limits.withDefaults()
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("confine: %w", err)
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Args = []string{childArg0}
	cmd.Env = []string{envSpec + "=" + string(data)}
	cmd.Dir = "/"
	// A mount namespace of its own; Go makes its mounts private (no
	// propagation back to the host) before the child runs. An IPC
	// namespace of its own too: System V shared memory, semaphores and
	// message queues and POSIX message queues are no files the private
	// directories would catch, and a segment nothing has attached outlives
	// its creator, its user and its project; the kernel drops a namespace's
	// objects with its last process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC, Setsid: true}
	return cmd, nil
}

// MaybeRunChild turns this process into the confined program when it was
// started by Command, and never returns then; otherwise it returns at
// once.
func MaybeRunChild() {
	if len(os.Args) == 0 || os.Args[0] != childArg0 || os.Getenv(envSpec) == "" {
		return
	}
	err := child(os.Getenv(envSpec))
	fmt.Fprintf(os.Stderr, "opus-privd: could not start the confined program: %v\n", err)
	os.Exit(126)
}

// child sets up the confinement and execs the program. Everything here
// runs as root in the new mount namespace, before any tenant code.
func child(specJSON string) error {
	var spec Spec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	if spec.UID == 0 || spec.GID == 0 {
		return fmt.Errorf("refusing to run as uid %d gid %d", spec.UID, spec.GID)
	}
	if err := confine(spec); err != nil {
		return err
	}
	if !spec.Master {
		if err := syscall.Setgroups([]int{}); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setgid(int(spec.GID)); err != nil {
			return fmt.Errorf("setgid %d: %w", spec.GID, err)
		}
		if err := syscall.Setuid(int(spec.UID)); err != nil {
			return fmt.Errorf("setuid %d: %w", spec.UID, err)
		}
	}
	if err := os.Chdir(spec.Dir); err != nil {
		return fmt.Errorf("chdir: %w", err)
	}
	return syscall.Exec(spec.Path, spec.Args, spec.Env)
}

// confine joins the cgroups, makes the private directories, sets the
// limits and no new privileges, on the calling (locked) thread.
func confine(spec Spec) error {
	for _, f := range spec.CgroupProcs {
		if filepath.Base(f) != "cgroup.procs" || !strings.HasPrefix(f, "/sys/fs/cgroup/") {
			return fmt.Errorf("cgroup %q: not a cgroup.procs file", f)
		}
		if err := os.WriteFile(f, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	// no_new_privs is a property of the thread that execs: stay on it.
	runtime.LockOSThread()
	// Handles on what must stay visible, taken before the private
	// directories hide it.
	keep := map[string]int{}
	for _, k := range spec.Keep {
		if !filepath.IsAbs(k) || filepath.Clean(k) != k {
			return fmt.Errorf("keep %q: not a clean absolute path", k)
		}
		fd, err := unix.Open(k, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("keep %s: %w", k, err)
		}
		keep[k] = fd
	}
	for _, d := range privateDirs {
		if fi, err := os.Lstat(d); err != nil || !fi.IsDir() {
			continue
		}
		opts := fmt.Sprintf("size=%d,mode=1777", spec.Limits.TmpBytes)
		if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return fmt.Errorf("private %s: %w", d, err)
		}
	}
	// The host's /dev/mqueue (world-writable, where systemd mounts it)
	// shows the host's POSIX message queues: mounted afresh, it shows this
	// IPC namespace's own.
	if fi, err := os.Lstat(mqueueDir); err == nil && fi.IsDir() {
		if err := unix.Mount("mqueue", mqueueDir, "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("private %s: %w", mqueueDir, err)
		}
	}
	for k, fd := range keep {
		hidden := false
		for _, d := range privateDirs {
			hidden = hidden || strings.HasPrefix(k, d+"/")
		}
		if hidden {
			// Root makes the path in the fresh tmpfs (only this namespace
			// sees it) and mounts the kept directory there.
			if err := os.MkdirAll(k, 0o755); err != nil {
				return fmt.Errorf("keep %s: %w", k, err)
			}
			if err := unix.Mount("/proc/self/fd/"+strconv.Itoa(fd), k, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("keep %s: %w", k, err)
			}
		}
		unix.Close(fd)
	}
	for _, l := range []struct {
		res int
		max uint64
	}{{unix.RLIMIT_NPROC, spec.Limits.Tasks}, {unix.RLIMIT_NOFILE, spec.Limits.Files}, {unix.RLIMIT_FSIZE, spec.Limits.FileBytes}, {unix.RLIMIT_CORE, 0}} {
		if err := unix.Setrlimit(l.res, &unix.Rlimit{Cur: l.max, Max: l.max}); err != nil {
			return fmt.Errorf("setrlimit %d: %w", l.res, err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	return nil
}
