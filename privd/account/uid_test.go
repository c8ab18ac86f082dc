package account

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/testrun"
)

func passwdFields(t *testing.T, name string) []string {
	t.Helper()
	if l := passwdLine(t, name); l != "" {
		return strings.Split(l, ":")
	}
	return nil
}

func groupFields(t *testing.T, name string) []string {
	t.Helper()
	if l := groupLine(t, name); l != "" {
		return strings.Split(l, ":")
	}
	return nil
}

// TestEnsureUserIDs: a project user is made with exactly the id asked
// for (uid and gid), only inside the range and only while nothing on the
// host uses it — another user, another group, a process running as it —
// and every refusal leaves the host as it was. A group an interrupted
// call left behind is taken up; an existing user keeps its id.
func TestEnsureUserIDs(t *testing.T) {
	run, a := runAccounts(t)
	ctx := context.Background()
	project := func() string {
		p := "u" + run.ID + strconv.Itoa(rand.IntN(1e6))
		t.Cleanup(func() { a.DeleteUser(context.Background(), p) })
		return p
	}
	state := func(p string, id uint32) string {
		s := strconv.FormatUint(uint64(id), 10)
		out, _ := exec.Command("getent", "passwd", a.User(p), s).Output()
		g, _ := exec.Command("getent", "group", a.User(p), s).Output()
		return string(out) + "|" + string(g)
	}

	t.Run("made with the id asked for", func(t *testing.T) {
		p, id := project(), testrun.MustFreeID(t, run.UIDs())
		u, created, err := a.EnsureUser(ctx, p, id)
		if err != nil || !created || u.UID != id || u.GID != id || u.GECOS != names.Marker(p) {
			t.Fatalf("EnsureUser = %+v, %v, %v; want uid and gid %d", u, created, err, id)
		}
		if g := groupFields(t, a.User(p)); g == nil || g[2] != strconv.Itoa(int(id)) || g[3] != "" {
			t.Fatalf("group of %s: %q", a.User(p), g)
		}
		// Asked again with another id: the existing user, unchanged.
		u2, created, err := a.EnsureUser(ctx, p, testrun.MustFreeID(t, run.UIDs()))
		if err != nil || created || u2 != u {
			t.Fatalf("EnsureUser again = %+v, %v, %v; want %+v unchanged", u2, created, err, u)
		}
	})

	t.Run("outside the range", func(t *testing.T) {
		r := run.UIDs()
		for _, id := range []uint32{0, r.First - 1, r.Last + 1, 65534} {
			p := project()
			before := state(p, id)
			if _, _, err := a.EnsureUser(ctx, p, id); !errors.Is(err, ErrIDOutOfRange) {
				t.Errorf("uid %d: %v; want ErrIDOutOfRange", id, err)
			}
			if after := state(p, id); after != before {
				t.Errorf("uid %d refused, but the host changed: %q -> %q", id, before, after)
			}
		}
	})

	t.Run("id of another user or group", func(t *testing.T) {
		id := testrun.MustFreeID(t, run.UIDs())
		other := run.Account("o" + strconv.Itoa(rand.IntN(1e4)))
		if err := run.NoteAccount(other); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("useradd", "--system", "--no-create-home", "--no-log-init", "--uid", fmt.Sprint(id), "--user-group", other).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v %s", other, err, out)
		}
		t.Cleanup(func() { exec.Command("userdel", other).Run() })
		p := project()
		before := state(p, id)
		if _, _, err := a.EnsureUser(ctx, p, id); !errors.Is(err, ErrIDInUse) || !strings.Contains(err.Error(), other) {
			t.Errorf("uid of user %s: %v; want ErrIDInUse naming it", other, err)
		}
		if after := state(p, id); after != before {
			t.Errorf("refused, but the host changed: %q -> %q", before, after)
		}

		gid := testrun.MustFreeID(t, run.UIDs())
		grp := run.Account("g" + strconv.Itoa(rand.IntN(1e4)))
		if err := run.NoteAccount(grp); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("groupadd", "--gid", fmt.Sprint(gid), grp).CombinedOutput(); err != nil {
			t.Fatalf("groupadd %s: %v %s", grp, err, out)
		}
		t.Cleanup(func() { exec.Command("groupdel", grp).Run() })
		p = project()
		before = state(p, gid)
		if _, _, err := a.EnsureUser(ctx, p, gid); !errors.Is(err, ErrIDInUse) || !strings.Contains(err.Error(), grp) {
			t.Errorf("gid of group %s: %v; want ErrIDInUse naming it", grp, err)
		}
		if after := state(p, gid); after != before {
			t.Errorf("refused, but the host changed: %q -> %q", before, after)
		}
	})

	t.Run("id a process still runs as", func(t *testing.T) {
		id := testrun.MustFreeID(t, run.UIDs())
		sleep := exec.Command("sleep", "60")
		sleep.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: id, Gid: id, Groups: []uint32{}}}
		if err := sleep.Start(); err != nil {
			t.Fatal(err)
		}
		p := project()
		before := state(p, id)
		_, _, err := a.EnsureUser(ctx, p, id)
		if !errors.Is(err, ErrIDInUse) || !strings.Contains(err.Error(), strconv.Itoa(sleep.Process.Pid)) {
			t.Errorf("uid of a running process: %v; want ErrIDInUse naming pid %d", err, sleep.Process.Pid)
		}
		if after := state(p, id); after != before {
			t.Errorf("refused, but the host changed: %q -> %q", before, after)
		}
		sleep.Process.Kill()
		sleep.Wait()
		if u, _, err := a.EnsureUser(ctx, p, id); err != nil || u.UID != id {
			t.Errorf("once the process is gone: %+v %v", u, err)
		}
	})

	t.Run("group left by an interrupted call", func(t *testing.T) {
		p, id := project(), testrun.MustFreeID(t, run.UIDs())
		if err := run.NoteAccount(a.User(p)); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("groupadd", "--gid", fmt.Sprint(id), a.User(p)).CombinedOutput(); err != nil {
			t.Fatalf("groupadd: %v %s", err, out)
		}
		u, created, err := a.EnsureUser(ctx, p, id)
		if err != nil || !created || u.UID != id || u.GID != id {
			t.Fatalf("EnsureUser over its own half-made group: %+v %v %v", u, created, err)
		}
		// The same group name with another gid is not ours to take.
		q, qid := project(), testrun.MustFreeID(t, run.UIDs())
		if err := run.NoteAccount(a.User(q)); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("groupadd", "--gid", fmt.Sprint(qid), a.User(q)).CombinedOutput(); err != nil {
			t.Fatalf("groupadd: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("groupdel", a.User(q)).Run() })
		other := testrun.MustFreeID(t, run.UIDs())
		if _, _, err := a.EnsureUser(ctx, q, other); !errors.Is(err, ErrNotOurs) {
			t.Errorf("a group of the user's name with another gid: %v; want ErrNotOurs", err)
		}
		if passwdFields(t, a.User(q)) != nil {
			t.Errorf("a user was made beside a group that is not ours")
		}
	})
}

// TestDeleteUserEndsProcesses: processes a project's user left running,
// even detached ones that ignore SIGTERM, are ended before userdel, so the
// user goes; another user's processes are untouched.
func TestDeleteUserEndsProcesses(t *testing.T) {
	run, a := runAccounts(t)
	ctx := context.Background()
	p := "k" + run.ID + strconv.Itoa(rand.IntN(1e6))
	u, _, err := a.EnsureUser(ctx, p, testrun.MustFreeID(t, a.UIDs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.DeleteUser(context.Background(), p) })
	bystander := run.Account("by")
	if err := run.AddUser(bystander); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("userdel", bystander).Run() })
	start := func(uid, gid uint32) *exec.Cmd {
		cmd := exec.Command("/usr/bin/setsid", "/bin/sh", "-c", "trap '' TERM HUP; while :; do sleep 1; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait() // reap it, so it does not linger as a zombie
		return cmd
	}
	for range 3 {
		start(u.UID, u.GID)
	}
	by := passwdFields(t, bystander)
	byUID, _ := strconv.Atoi(by[2])
	byGID, _ := strconv.Atoi(by[3])
	other := start(uint32(byUID), uint32(byGID))
	t.Cleanup(func() { other.Process.Kill() })
	time.Sleep(200 * time.Millisecond)
	if n := len(a.processesOf(u.UID)); n < 3 {
		t.Fatalf("%d processes of %s running, want 3 or more", n, u.Name)
	}

	deleted, err := a.DeleteUser(ctx, p)
	if err != nil || !deleted {
		t.Fatalf("DeleteUser = %v, %v", deleted, err)
	}
	if left := a.processesOf(u.UID); len(left) > 0 {
		t.Errorf("processes of the deleted user %s still run: %v", u.Name, left)
	}
	if passwdFields(t, u.Name) != nil {
		t.Errorf("user %s is still there", u.Name)
	}
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the other user's process was ended too: %v", err)
	}
}
