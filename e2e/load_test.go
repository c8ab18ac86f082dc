package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Load test shape. OPUS_LOAD_SECONDS overrides the duration (CI keeps
// the default).
const (
	loadClients   = 50
	loadDeployers = 10 // clients 0, 5, 10, ... create and destroy
	loadDuration  = 40 * time.Second
)

// loadClient is one Unix user driving opusctl.
type loadClient struct {
	name     string
	uid, gid uint32
}

// ctlAs runs opusctl as c without logging (the load test makes thousands
// of calls) and without failing the test from a client goroutine.
func (h *host) ctlAs(c loadClient, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.bin, "opusctl"), append([]string{"--socket", h.cfg.OpusdSocket()}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: c.uid, Gid: c.gid, Groups: []uint32{}}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{out: out.String(), err: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
		err = nil
	}
	return r, err
}

// privdAs calls privd directly as c through the helper binary.
func privdAs(bin string, c loadClient, call privdCall) (privdAnswer, error) {
	req, _ := json.Marshal(call)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^$")
	cmd.Env = []string{helperEnv + "=" + string(req)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: c.uid, Gid: c.gid, Groups: []uint32{}}}
	out, err := cmd.Output()
	if err != nil {
		return privdAnswer{}, fmt.Errorf("helper as %s: %w", c.name, err)
	}
	var ans privdAnswer
	err = json.Unmarshal(out, &ans)
	return ans, err
}

// loadStats counts what the clients did.
type loadStats struct {
	reads, refusals, creates, destroys, privdTries atomic.Int64
	mu                                             sync.Mutex
	errs                                           []string
}

func (s *loadStats) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) < 50 {
		s.errs = append(s.errs, fmt.Sprintf(format, args...))
	}
}

// projectJSON is what the load test reads of `show -o json`.
type projectJSON struct {
	Name               string `json:"name"`
	Phase              string `json:"phase"`
	OwnerUID           int64  `json:"owner_uid"`
	Generation         string `json:"generation"`
	ObservedGeneration string `json:"observed_generation"`
	LastError          string `json:"last_error"`
}

// TestLoad: 50 clients, each its own Unix user, for a bounded time: 10
// create light projects, check them, list them and destroy them, over and
// over; the others list, show someone else's project (which must be
// NotFound to them) and a few knock on privd's socket directly. No RPC
// error but the expected refusals, no lost update (every finished create
// shows READY at its generation, every destroy leaves NotFound), every
// operation reaches a final state, the store passes bbolt's consistency
// check, the host has no drift, and privd refused only the intruders,
// never the opus uid.
func TestLoad(t *testing.T) {
	h := needHost(t)
	dur := loadDuration
	if s, err := strconv.Atoi(os.Getenv("OPUS_LOAD_SECONDS")); err == nil && s > 0 {
		dur = time.Duration(s) * time.Second
	}
	clients := make([]loadClient, loadClients)
	for i := range clients {
		name, _ := addUser(t, fmt.Sprintf("l%02d", i))
		u, err := user.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		clients[i] = loadClient{name: name, uid: uint32(uid), gid: uint32(gid)}
	}
	helper := helperBinary(t)
	// Open privd's socket to everyone for the run, so that intruders get
	// past the socket's mode and privd's own peer check must refuse them.
	openPrivdToAll(t, h)
	privdLog := filepath.Join(h.logs, "privd.log")
	var logStart int64
	if fi, err := os.Stat(privdLog); err == nil {
		logStart = fi.Size()
	}

	// A project of client 0 that every reader tries to see.
	foreign := h.newProject(t)
	if r, err := h.ctlAs(clients[0], "create", foreign, "--empty"); err != nil || r.code != 0 {
		t.Fatalf("create %s as %s: %v %s", foreign, clients[0].name, err, r.err)
	}

	var st loadStats
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch {
			case i%(loadClients/loadDeployers) == 0:
				h.loadDeployer(t, c, deadline, &st)
			default:
				h.loadReader(c, i, foreign, helper, deadline, &st)
			}
		}()
	}
	wg.Wait()
	t.Logf("load: %d reads, %d expected refusals, %d creates, %d destroys, %d privd intrusions in %v",
		st.reads.Load(), st.refusals.Load(), st.creates.Load(), st.destroys.Load(), st.privdTries.Load(), dur)
	for _, e := range st.errs {
		t.Error(e)
	}
	if st.creates.Load() < int64(loadDeployers) || st.creates.Load() != st.destroys.Load() {
		t.Errorf("%d creates and %d destroys; want at least one per deployer, all destroyed", st.creates.Load(), st.destroys.Load())
	}
	h.mustCtl(t, 0, "destroy", foreign, "--yes")

	// Nothing of the load is left and every operation ended.
	var all struct {
		Projects []projectJSON `json:"projects"`
	}
	if err := json.Unmarshal([]byte(h.mustCtl(t, 0, "ls", "-o", "json")), &all); err != nil {
		t.Fatal(err)
	}
	loadUIDs := map[int64]bool{}
	for _, c := range clients {
		loadUIDs[int64(c.uid)] = true
	}
	for _, p := range all.Projects {
		if loadUIDs[p.OwnerUID] {
			t.Errorf("project %s of a load client survived: %+v", p.Name, p)
		}
	}
	h.doctorClean(t)

	// privd refused exactly the intruders, never opusd.
	data, err := os.ReadFile(privdLog)
	if err != nil {
		t.Fatal(err)
	}
	refusedRE := regexp.MustCompile(`msg="?refused[^"]*"? .*?uid=(\d+)`)
	refusedUIDs := map[int64]int{}
	for _, l := range strings.Split(string(data[min(logStart, int64(len(data))):]), "\n") {
		if m := refusedRE.FindStringSubmatch(l); m != nil {
			uid, _ := strconv.ParseInt(m[1], 10, 64)
			refusedUIDs[uid]++
		}
	}
	if refusedUIDs[int64(h.opusUID)] > 0 {
		t.Errorf("privd refused the opus uid %d %d times", h.opusUID, refusedUIDs[int64(h.opusUID)])
	}
	intruders := 0
	for uid, n := range refusedUIDs {
		if !loadUIDs[uid] {
			t.Errorf("privd refused uid %d (%d times), which is no load client", uid, n)
		}
		intruders += n
	}
	if int64(intruders) != st.privdTries.Load() || intruders == 0 {
		t.Errorf("privd logged %d refusals, the clients tried %d times", intruders, st.privdTries.Load())
	}

	// The store is consistent: bbolt's own check, with opusd stopped.
	h.stopOpusd(t)
	db, err := bolt.Open(filepath.Join(h.cfg.BaseDir, "opusd.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Error(err)
	}
	if err := h.startOpusd(); err != nil {
		t.Fatal(err)
	}
}

// loadDeployer creates a light project (no apps), checks it is READY at
// its generation and listed, destroys it and checks it is gone, until the
// deadline.
func (h *host) loadDeployer(t *testing.T, c loadClient, deadline time.Time, st *loadStats) {
	for n := 0; time.Now().Before(deadline); n++ {
		name := h.newProject(t)
		r, err := h.ctlAs(c, "create", name, "--empty")
		if err != nil || r.code != 0 {
			st.fail("%s: create %s: %v exit %d %s", c.name, name, err, r.code, r.err)
			return
		}
		st.creates.Add(1)
		var p projectJSON
		r, err = h.ctlAs(c, "show", name, "-o", "json")
		st.reads.Add(1)
		if err == nil && r.code == 0 {
			err = json.Unmarshal([]byte(r.out), &p)
		}
		if err != nil || r.code != 0 || p.Phase != "PHASE_READY" || p.Generation != p.ObservedGeneration || p.OwnerUID != int64(c.uid) {
			st.fail("%s: %s after create: %v exit %d %+v %s", c.name, name, err, r.code, p, r.err)
		}
		r, err = h.ctlAs(c, "ls")
		st.reads.Add(1)
		if err != nil || r.code != 0 || !strings.Contains(r.out, name) {
			st.fail("%s: ls lacks %s: %v exit %d %s%s", c.name, name, err, r.code, r.out, r.err)
		}
		r, err = h.ctlAs(c, "destroy", name, "--yes")
		if err != nil || r.code != 0 {
			st.fail("%s: destroy %s: %v exit %d %s", c.name, name, err, r.code, r.err)
			return
		}
		st.destroys.Add(1)
		r, err = h.ctlAs(c, "show", name)
		st.reads.Add(1)
		if err != nil || r.code != 1 || !strings.Contains(r.err, "not found") {
			st.fail("%s: show %s after destroy: %v exit %d %s", c.name, name, err, r.code, r.err)
		}
	}
}

// loadReader lists its (no) projects, tries to see another user's project
// and, for a few clients, to call privd, until the deadline.
func (h *host) loadReader(c loadClient, i int, foreign, helper string, deadline time.Time, st *loadStats) {
	tried := false
	for time.Now().Before(deadline) {
		r, err := h.ctlAs(c, "ls", "-o", "json")
		st.reads.Add(1)
		var l struct {
			Projects []projectJSON `json:"projects"`
		}
		if err == nil && r.code == 0 {
			err = json.Unmarshal([]byte(r.out), &l)
		}
		if err != nil || r.code != 0 || len(l.Projects) != 0 {
			st.fail("%s: ls: %v exit %d, %d projects (it owns none) %s", c.name, err, r.code, len(l.Projects), r.err)
		}
		r, err = h.ctlAs(c, "show", foreign)
		if err != nil || r.code != 1 || !strings.Contains(r.err, "not found") {
			st.fail("%s: show %s of another user: %v exit %d %q, want not found", c.name, foreign, err, r.code, r.out+r.err)
		} else {
			st.refusals.Add(1)
		}
		if i%10 == 1 && !tried {
			tried = true
			ans, err := privdAs(helper, c, privdCall{Socket: h.cfg.PrivdSocket(), Method: "EnsureUser", Project: foreign})
			st.privdTries.Add(1)
			if err != nil || ans.Code != "PermissionDenied" {
				st.fail("%s: privd EnsureUser: %v %+v, want PermissionDenied", c.name, err, ans)
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
}
