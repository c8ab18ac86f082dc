// Package account creates and deletes the Linux system user of a project
// ("opus-NAME" with a group of the same name) with the real shadow-utils
// tools. Opus writes a marker into the GECOS field when it creates a user and
// refuses to touch any user that does not carry exactly that marker, so a
// compromised caller can never make privd delete or adopt a user Opus did
// not make.
package account

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/opus-hosting/opus/internal/colondb"
	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/procs"
	"github.com/opus-hosting/opus/internal/subprocess"
)

// ErrNotOurs means a user or group of the project's name exists but Opus did
// not make it (its GECOS is not the project's marker).
var ErrNotOurs = errors.New("not made by Opus")

// ErrNoUser means the project has no user.
var ErrNoUser = errors.New("no such user")

// ErrIDInUse means the id a new project user was to get is in use on the
// host: by another user or group, or by processes still running as it.
// The caller records it as taken and asks again with another.
var ErrIDInUse = errors.New("id in use")

// ErrIDOutOfRange means the id a new project user was to get lies outside
// the configured project_uids.
var ErrIDOutOfRange = errors.New("id outside project_uids")

// User is a project's Linux user as /etc/passwd records it.
type User struct {
	Name  string
	UID   uint32
	GID   uint32
	GECOS string
	Home  string
	Shell string
}

// Tool paths and limits. They are fixed rather than looked up on PATH so that
// privd never runs whatever happens to be first on its PATH.
const (
	useradd  = "/usr/sbin/useradd"
	userdel  = "/usr/sbin/userdel"
	groupadd = "/usr/sbin/groupadd"
	groupdel = "/usr/sbin/groupdel"
	shell    = "/usr/sbin/nologin"

	// toolTimeout bounds each useradd/userdel/groupdel run.
	toolTimeout = 30 * time.Second
)

// Accounts manages project users. The zero value is not usable; set BaseDir.
type Accounts struct {
	// Prefix starts every project user's name (names.DefaultUserPrefix
	// if empty).
	Prefix string
	// BaseDir is privd's configured base directory; a user's home is its
	// project's root under it (mod_wsgi needs home= to exist).
	BaseDir string
	// UIDs is the configured project_uids: a new user's id must lie in it
	// (config.Default's when zero).
	UIDs config.UIDRange
	// ProcDir is where processes are looked for (/proc if empty).
	ProcDir string
	// PasswdPath and GroupPath default to /etc/passwd and /etc/group.
	PasswdPath, GroupPath string

	// mu serializes changes: shadow-utils lock the databases themselves, but
	// a second concurrent useradd fails instead of waiting.
	mu sync.Mutex
}

// User returns the name of project's user.
func (a *Accounts) User(project string) string {
	if a.Prefix == "" {
		return names.User(names.DefaultUserPrefix, project)
	}
	return names.User(a.Prefix, project)
}

func (a *Accounts) passwd() string {
	if a.PasswdPath != "" {
		return a.PasswdPath
	}
	return "/etc/passwd"
}

func (a *Accounts) group() string {
	if a.GroupPath != "" {
		return a.GroupPath
	}
	return "/etc/group"
}

// LookupUser returns project's user. It returns an error wrapping ErrNoUser
// when there is none and ErrNotOurs when the user exists without the marker
// (or is uid 0).
func (a *Accounts) LookupUser(project string) (User, error) {
	if err := names.ValidateProject(project); err != nil {
		return User{}, err
	}
	name := a.User(project)
	u, ok, err := lookupPasswd(a.passwd(), name)
	if err != nil {
		return User{}, err
	}
	if !ok {
		return User{}, fmt.Errorf("user %s: %w", name, ErrNoUser)
	}
	if err := checkOurs(u, project); err != nil {
		return User{}, err
	}
	return u, nil
}

func checkOurs(u User, project string) error {
	if u.GECOS != names.Marker(project) {
		return fmt.Errorf("user %s (uid %d) has GECOS %q, not %q: %w", u.Name, u.UID, u.GECOS, names.Marker(project), ErrNotOurs)
	}
	if u.UID == 0 || u.GID == 0 {
		return fmt.Errorf("user %s has uid %d gid %d: %w", u.Name, u.UID, u.GID, ErrNotOurs)
	}
	return nil
}

// EnsureUser creates project's user and its private group, both with id
// uid, or returns the existing user if Opus made it (whatever its id: a
// project made before ids were allocated keeps its own). created reports
// whether this call made it.
//
// uid must lie in the configured range and be free on the host: no user
// has it, no group has it as gid (but the project's own group left by an
// interrupted earlier call), and no process runs as it. Otherwise the
// error wraps ErrIDOutOfRange or ErrIDInUse and nothing is changed.
func (a *Accounts) EnsureUser(ctx context.Context, project string, uid uint32) (u User, created bool, err error) {
	if err := names.ValidateProject(project); err != nil {
		return User{}, false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	u, err = a.LookupUser(project)
	if err == nil {
		return u, false, nil
	}
	if !errors.Is(err, ErrNoUser) {
		return User{}, false, fmt.Errorf("ensure user: %w", err)
	}
	name := a.User(project)
	if ids := a.uids(); !ids.Contains(uid) {
		return User{}, false, fmt.Errorf("ensure user %s: uid %d is outside project_uids %s: %w", name, uid, ids, ErrIDOutOfRange)
	}
	groupMade, err := a.checkFree(name, uid)
	if err != nil {
		return User{}, false, fmt.Errorf("ensure user %s: %w", name, err)
	}
	id := strconv.FormatUint(uint64(uid), 10)
	if !groupMade {
		if err := run(ctx, groupadd, "--gid", id, "--", name); err != nil {
			return User{}, false, fmt.Errorf("ensure user %s: %w", name, err)
		}
	}
	home := layout.For(a.BaseDir, project).Root
	// --system: no subordinate ids, no password ageing; --no-log-init:
	// no lastlog/faillog records, which for a high uid would be a huge
	// sparse file.
	if err := run(ctx, useradd, "--system", "--uid", id, "--gid", id, "--no-create-home", "--no-log-init",
		"--home-dir", home, "--shell", shell, "--comment", names.Marker(project), "--", name); err != nil {
		// Leave the host as it was: the group this call made goes.
		if !groupMade {
			if gerr := run(context.WithoutCancel(ctx), groupdel, "--", name); gerr != nil {
				err = fmt.Errorf("%w (and removing the group it made failed: %v)", err, gerr)
			}
		}
		return User{}, false, fmt.Errorf("ensure user %s: %w", name, err)
	}
	u, err = a.LookupUser(project)
	if err != nil {
		return User{}, false, fmt.Errorf("ensure user %s: after useradd: %w", name, err)
	}
	return u, true, nil
}

func (a *Accounts) uids() config.UIDRange {
	if a.UIDs == (config.UIDRange{}) {
		return config.Default().ProjectUIDs
	}
	return a.UIDs
}

// checkFree makes sure id is free for a new project user name and its
// group. groupMade reports that the group already exists as an earlier,
// interrupted call made it: named name, with gid id, no members, nobody's
// primary group.
func (a *Accounts) checkFree(name string, id uint32) (groupMade bool, err error) {
	if owner, ok, err := uidOwner(a.passwd(), id); err != nil {
		return false, err
	} else if ok {
		return false, fmt.Errorf("uid %d is already used by user %s: %w", id, owner, ErrIDInUse)
	}
	if inUse, err := primaryGroupInUse(a.passwd(), id); err != nil {
		return false, err
	} else if inUse {
		return false, fmt.Errorf("gid %d is some user's primary group: %w", id, ErrIDInUse)
	}
	gname, members, ok, err := groupByGID(a.group(), id)
	if err != nil {
		return false, err
	}
	if ok {
		if gname != name || members != "" {
			return false, fmt.Errorf("gid %d is already used by group %s: %w", id, gname, ErrIDInUse)
		}
		groupMade = true
	} else if gid, _, exists, err := lookupGroup(a.group(), name); err != nil {
		return false, err
	} else if exists {
		return false, fmt.Errorf("a group %s with gid %d exists, and groups carry no marker: nothing proves Opus made it; remove it (groupdel %s) if it is not in use: %w", name, gid, name, ErrNotOurs)
	}
	if pids := a.processesOf(id); len(pids) > 0 {
		return false, fmt.Errorf("uid %d still runs processes (pids %v): %w", id, pids, ErrIDInUse)
	}
	return groupMade, nil
}

// processesOf returns up to ten pids of processes that run as uid.
func (a *Accounts) processesOf(uid uint32) []int {
	return procs.Table{Dir: a.ProcDir}.Of(uid, 10)
}

// Bounds of ending a project user's processes.
const (
	// termGrace is how long processes get to exit after SIGTERM.
	termGrace = 2 * time.Second
	// killRounds bounds the SIGKILL rounds (a process may fork while the
	// first round runs).
	killRounds = 10
	killBin    = "/bin/kill"
)

// endProcesses ends every process of the project user u: SIGTERM, a short
// grace, then SIGKILL until none is left. The signals are sent by kill(1)
// running as u itself with pid -1 ("every process I may signal"), so they
// reach exactly u's processes, however many it forks or detaches
// meanwhile, and nothing else.
func (a *Accounts) endProcesses(ctx context.Context, u User) error {
	if u.UID == 0 || u.GID == 0 {
		return fmt.Errorf("user %s has uid %d gid %d: %w", u.Name, u.UID, u.GID, ErrNotOurs)
	}
	if len(a.processesOf(u.UID)) == 0 {
		return nil
	}
	signal := func(sig string) {
		ctx, cancel := context.WithTimeout(ctx, toolTimeout)
		defer cancel()
		// procps' kill takes "-SIG -1"; "-s SIG -1" or "--" it misreads.
		cmd := exec.CommandContext(ctx, killBin, "-"+sig, "-1")
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: []uint32{}}}
		cmd.WaitDelay = time.Second
		// kill(1) exits non-zero when a signal could not be sent (the
		// process exited meanwhile): what counts is whether any is left.
		_ = cmd.Run()
	}
	signal("TERM")
	for deadline := time.Now().Add(termGrace); time.Now().Before(deadline) && len(a.processesOf(u.UID)) > 0; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	for range killRounds {
		if len(a.processesOf(u.UID)) == 0 {
			return nil
		}
		signal("KILL")
		time.Sleep(50 * time.Millisecond)
	}
	if pids := a.processesOf(u.UID); len(pids) > 0 {
		return fmt.Errorf("user %s (uid %d) still runs processes after SIGKILL (pids %v)", u.Name, u.UID, pids)
	}
	return nil
}

// DeleteUser ends every process of project's user (see endProcesses),
// then deletes the user and its group. An absent user is not an error
// (deleted is false); a user without the marker is refused with an error
// wrapping ErrNotOurs and left alone, its processes too.
func (a *Accounts) DeleteUser(ctx context.Context, project string) (deleted bool, err error) {
	if err := names.ValidateProject(project); err != nil {
		return false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	name := a.User(project)
	u, err := a.LookupUser(project)
	switch {
	case errors.Is(err, ErrNoUser):
		// A group of this name without the user is left alone: groups carry
		// no marker, so nothing proves Opus made it.
		return false, nil
	case err != nil:
		return false, fmt.Errorf("delete user: %w", err)
	}
	// Whatever the project left running (a process its code detached
	// survives its Apache daemon) goes first: userdel refuses a user that
	// runs something, and the destroy must not depend on the tenant.
	if err := a.endProcesses(ctx, u); err != nil {
		return false, fmt.Errorf("delete user %s: %w", name, err)
	}
	if err := run(ctx, userdel, "--", name); err != nil {
		return false, fmt.Errorf("delete user %s: %w", name, err)
	}
	// userdel removes the user's private group itself when USERGROUPS_ENAB
	// is set; make sure of it either way.
	if err := a.removeGroup(ctx, name, u.GID); err != nil {
		return true, fmt.Errorf("delete user %s: %w", name, err)
	}
	return true, nil
}

// removeGroup deletes group name if it still exists after userdel, has gid
// wantGID (the deleted user's primary group), no members and is no other
// user's primary group; otherwise it is left in place and reported.
func (a *Accounts) removeGroup(ctx context.Context, name string, wantGID uint32) error {
	gid, members, ok, err := lookupGroup(a.group(), name)
	if err != nil || !ok {
		return err
	}
	inUse, err := primaryGroupInUse(a.passwd(), gid)
	if err != nil {
		return err
	}
	if gid != wantGID || members != "" || inUse {
		return fmt.Errorf("group %s (gid %d, members %q) is not the user's private group; left in place: %w", name, gid, members, ErrNotOurs)
	}
	if err := run(ctx, groupdel, "--", name); err != nil {
		return fmt.Errorf("delete group %s: %w", name, err)
	}
	return nil
}

// run runs a shadow-utils tool with a timeout, a fixed environment and
// bounded output; a failure carries what the tool said.
func run(ctx context.Context, tool string, args ...string) error {
	_, err := subprocess.Run(ctx, toolTimeout, []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}, tool, args...)
	return err
}

// lookupPasswd finds name in a passwd(5) file.
func lookupPasswd(path, name string) (User, bool, error) {
	var found User
	ok := false
	err := colondb.Scan(path, colondb.PasswdFields, func(f []string) bool {
		if f[0] != name {
			return true
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			return true
		}
		found = User{Name: f[0], UID: uint32(uid), GID: uint32(gid), GECOS: f[4], Home: f[5], Shell: f[6]}
		ok = true
		return false
	})
	return found, ok, err
}

// uidOwner returns the name of the user with uid in a passwd(5) file.
func uidOwner(path string, uid uint32) (name string, ok bool, err error) {
	want := strconv.FormatUint(uint64(uid), 10)
	err = colondb.Scan(path, colondb.PasswdFields, func(f []string) bool {
		if f[2] == want {
			name, ok = f[0], true
			return false
		}
		return true
	})
	return name, ok, err
}

// groupByGID finds the group with gid in a group(5) file.
func groupByGID(path string, gid uint32) (name, members string, ok bool, err error) {
	want := strconv.FormatUint(uint64(gid), 10)
	err = colondb.Scan(path, colondb.GroupFields, func(f []string) bool {
		if f[2] == want {
			name, members, ok = f[0], f[3], true
			return false
		}
		return true
	})
	return name, members, ok, err
}

// primaryGroupInUse reports whether any user has gid as primary group.
func primaryGroupInUse(path string, gid uint32) (bool, error) {
	want := strconv.FormatUint(uint64(gid), 10)
	inUse := false
	err := colondb.Scan(path, colondb.PasswdFields, func(f []string) bool {
		if f[3] == want {
			inUse = true
			return false
		}
		return true
	})
	return inUse, err
}

// lookupGroup finds name in a group(5) file.
func lookupGroup(path, name string) (gid uint32, members string, ok bool, err error) {
	err = colondb.Scan(path, colondb.GroupFields, func(f []string) bool {
		if f[0] != name {
			return true
		}
		g, perr := strconv.ParseUint(f[2], 10, 32)
		if perr != nil {
			return true
		}
		gid, members, ok = uint32(g), f[3], true
		return false
	})
	return gid, members, ok, err
}
