package testrun

import (
	"os"
	"os/user"
	"strconv"
	"sync"
	"testing"
)

// The test binary's own run, started by the first Need and ended by Main.
var (
	mainCalled   bool
	mainCleaners []Cleaner
	mainOnce     sync.Once
	mainRun      *Run
	mainErr      error
)

// Main runs a package's tests and then ends the run Need started, if any;
// call it from TestMain as os.Exit(testrun.Main(m)). cleaners remove what
// the run, and dead runs when Need starts it, noted (see Note).
func Main(m *testing.M, cleaners ...Cleaner) int {
	mainCalled, mainCleaners = true, cleaners
	code := m.Run()
	if mainRun != nil {
		mainRun.End()
	}
	return code
}

// Need returns the test binary's run, starting it on first use, for a test
// that changes the host: creates accounts, starts daemons, Apache or
// PostgreSQL, or runs processes as other users. It skips the test under
// -short (`make unit` starts nothing and changes no account) and when not
// root; why says what the test does, for the skip message.
func Need(t testing.TB, why string) *Run {
	t.Helper()
	if !mainCalled {
		t.Fatal("testrun.Need: the package's TestMain must run its tests with testrun.Main")
	}
	SkipShort(t, why)
	if os.Geteuid() != 0 {
		t.Skipf("needs root: %s", why)
	}
	mainOnce.Do(func() { mainRun, mainErr = StartWith(mainCleaners...) })
	if mainErr != nil {
		t.Fatal(mainErr)
	}
	return mainRun
}

// SkipShort skips t under -short: `make unit` starts no daemon, Apache or
// PostgreSQL and changes no account. why says what the test does.
func SkipShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("%s: skipped under -short (make unit starts nothing and changes no account)", why)
	}
}

// NewUser makes a user of the run, Account(role) (see AddUser), and
// returns its name, uid and gid; an error fails t.
func (r *Run) NewUser(t testing.TB, role string) (name string, uid, gid uint32) {
	t.Helper()
	name = r.Account(role)
	if err := r.AddUser(name); err != nil {
		t.Fatal(err)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	u64, err1 := strconv.ParseUint(u.Uid, 10, 32)
	g64, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("user %s: uid %q gid %q", name, u.Uid, u.Gid)
	}
	return name, uint32(u64), uint32(g64)
}
