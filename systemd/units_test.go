// Package systemd holds no Go code: the directory ships the unit files and
// the default configuration that `make install` puts in place. These tests
// check what we promise about them: systemd accepts the units exactly as
// installed, they carry the promised hardening and agree with the built-in
// configuration defaults, `make install`/`make uninstall` lay out and remove
// the tree (creating no users under DESTDIR), and opus-privd really serves
// through a socket passed to it by socket activation.
package systemd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/config"
	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/internal/testrun"
	"github.com/opus-hosting/opus/privd/account"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/credential"
)

// units are the unit files this directory ships.
var units = []string{"opusd.service", "opusd.socket", "opus-privd.service", "opus-privd.socket", "opus-backend@.service"}

// verifiable is units as systemd-analyze takes them: a template by one of
// its instances.
func verifiable() []string {
	out := slices.Clone(units)
	for i, u := range out {
		out[i] = strings.Replace(u, "@.", "@blog.", 1)
	}
	return out
}

// maxOutput bounds what is kept of any subprocess's output.
const maxOutput = 256 << 10

// helperEnv selects helper mode: the test binary re-executed under the
// stand-in opus user to call opus-privd, so the kernel's peer credentials
// are really that user's.
const helperEnv = "OPUS_SYSTEMD_HELPER"

func TestMain(m *testing.M) {
	if req := os.Getenv(helperEnv); req != "" {
		os.Exit(runHelper(req))
	}
	os.Exit(testrun.Main(m))
}

// repoDir is the checkout's top directory (go test runs in systemd/).
func repoDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// unit is a parsed unit file: section → key → values in file order.
type unit map[string]map[string][]string

// parseUnit reads a unit file in systemd's syntax (no line continuations:
// ours have none, and a continuation would show up as a bogus key).
func parseUnit(data []byte) (unit, error) {
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
			continue
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: %q is neither a section nor key=value", n, line)
		}
		key = strings.TrimSpace(key)
		u[section][key] = append(u[section][key], strings.TrimSpace(value))
	}
	return u, sc.Err()
}

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u, err := parseUnit(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return u
}

// one returns the single value of section.key, failing on zero or several.
func (u unit) one(t *testing.T, name, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Errorf("%s: [%s] %s= set %d times %q, want exactly once", name, section, key, len(vs), vs)
		return ""
	}
	return vs[0]
}

func TestParseUnit(t *testing.T) {
	tests := []struct {
		name, in string
		want     unit
		wantErr  bool
	}{
		{"sections and repeats", "# c\n[Unit]\nA=1\n\n[Service]\nB = x y\nB=\n; c\n", unit{"Unit": {"A": {"1"}}, "Service": {"B": {"x y", ""}}}, false},
		{"key before section", "A=1\n", nil, true},
		{"not key=value", "[Unit]\nA\n", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseUnit([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestUnitsHardening checks the settings the design promises, and that the
// units agree with the built-in defaults the daemons use (socket paths,
// state directory, opus user, config path).
func TestUnitsHardening(t *testing.T) {
	def := config.Default()
	fields := strings.Fields
	tests := []struct {
		unit, section, key string
		// want is the exact value; wantWords, when set, the value's
		// space-separated words in any order.
		want      string
		wantWords []string
	}{
		{"opusd.service", "Service", "Type", "notify", nil},
		{"opusd.service", "Service", "User", def.OpusUser, nil},
		{"opusd.service", "Service", "Group", def.OpusUser, nil},
		{"opusd.service", "Service", "ExecStart", "/usr/local/sbin/opusd --config " + config.DefaultPath, nil},
		{"opusd.service", "Service", "NoNewPrivileges", "yes", nil},
		// opusd pings at half of it (internal/daemon's watchdog); a kill by the
		// watchdog counts as a failure, so Restart= brings it back.
		{"opusd.service", "Service", "WatchdogSec", "30s", nil},
		{"opusd.service", "Service", "Restart", "on-failure", nil},
		{"opusd.service", "Service", "ProtectSystem", "strict", nil},
		{"opusd.service", "Service", "ReadWritePaths", def.BaseDir, nil},
		{"opusd.service", "Service", "PrivateTmp", "yes", nil},
		{"opusd.service", "Service", "ProtectHome", "yes", nil},
		{"opusd.service", "Service", "PrivateDevices", "yes", nil},
		// AF_INET(6) for git fetches of https sources; nothing else.
		{"opusd.service", "Service", "RestrictAddressFamilies", "", fields("AF_UNIX AF_INET AF_INET6")},
		{"opusd.service", "Service", "CapabilityBoundingSet", "", nil},
		{"opusd.service", "Service", "MemoryDenyWriteExecute", "yes", nil},
		{"opusd.service", "Service", "RestrictNamespaces", "yes", nil},
		{"opusd.service", "Unit", "Requires", "", fields("opusd.socket opus-privd.socket")},
		// At boot privd starts the managed Apache for installed sites.
		{"opusd.service", "Unit", "Wants", "opus-privd.service", nil},
		{"opusd.socket", "Socket", "ListenStream", def.OpusdSocket(), nil},
		// Any local user may connect: identity is the peer uid, per call.
		{"opusd.socket", "Socket", "SocketMode", "0666", nil},
		{"opusd.socket", "Socket", "SocketUser", def.OpusUser, nil},
		{"opus-privd.service", "Service", "Type", "notify", nil},
		{"opus-privd.service", "Service", "ExecStart", "/usr/local/sbin/opus-privd --config " + config.DefaultPath, nil},
		{"opus-privd.service", "Service", "CapabilityBoundingSet", "", fields("CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_SETUID CAP_SETGID CAP_KILL CAP_NET_BIND_SERVICE CAP_AUDIT_WRITE")},
		{"opus-privd.service", "Service", "ProtectHome", "yes", nil},
		{"opus-privd.service", "Service", "PrivateTmp", "yes", nil},
		{"opus-privd.service", "Service", "ProtectKernelModules", "yes", nil},
		{"opus-privd.service", "Unit", "Requires", "opus-privd.socket", nil},
		{"opus-privd.socket", "Socket", "ListenStream", def.PrivdSocket(), nil},
		// Only root and the opus group reach the root daemon.
		{"opus-privd.socket", "Socket", "SocketUser", "root", nil},
		{"opus-privd.socket", "Socket", "SocketGroup", def.OpusUser, nil},
		{"opus-privd.socket", "Socket", "SocketMode", "0660", nil},
		// A backend: Debian's apache2 on privd's configuration, systemd
		// restarting it and ending every process of it; the defaults of
		// opus.conf as its bounds (privd's drop-in sets the configured ones).
		{"opus-backend@.service", "Service", "Type", "forking", nil},
		{"opus-backend@.service", "Service", "PIDFile", def.ApacheDir + "/backends/%i/run/httpd.pid", nil},
		{"opus-backend@.service", "Service", "Restart", "on-failure", nil},
		{"opus-backend@.service", "Service", "KillMode", "control-group", nil},
		{"opus-backend@.service", "Service", "NoNewPrivileges", "yes", nil},
		{"opus-backend@.service", "Service", "PrivateTmp", "yes", nil},
		{"opus-backend@.service", "Service", "PrivateDevices", "yes", nil},
		{"opus-backend@.service", "Service", "ProtectSystem", "strict", nil},
		{"opus-backend@.service", "Service", "ProtectProc", "invisible", nil},
		{"opus-backend@.service", "Service", "CapabilityBoundingSet", "", fields("CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_CHOWN CAP_KILL")},
		{"opus-backend@.service", "Service", "MemoryMax", strconv.FormatInt(def.BackendMemory>>30, 10) + "G", nil},
		{"opus-backend@.service", "Service", "TasksMax", strconv.Itoa(def.BackendTasks), nil},
		{"opus-backend@.service", "Service", "CPUQuota", strconv.Itoa(def.BackendCPU) + "%", nil},
	}
	parsed := map[string]unit{}
	for _, name := range units {
		parsed[name] = readUnit(t, name)
	}
	for _, tc := range tests {
		t.Run(tc.unit+"/"+tc.key, func(t *testing.T) {
			got := parsed[tc.unit].one(t, tc.unit, tc.section, tc.key)
			if tc.wantWords != nil {
				if w := fields(got); !sameSet(w, tc.wantWords) {
					t.Errorf("%s: %s=%s, want the words %q", tc.unit, tc.key, got, tc.wantWords)
				}
				return
			}
			if got != tc.want {
				t.Errorf("%s: %s=%q, want %q", tc.unit, tc.key, got, tc.want)
			}
		})
	}
	// privd runs as root (it creates users): no User= may sneak in.
	if u := parsed["opus-privd.service"]["Service"]["User"]; len(u) != 0 {
		t.Errorf("opus-privd.service sets User=%q; it must run as root", u)
	}
	// The opus user's services must not gain privileges back.
	if v := parsed["opus-privd.service"]["Service"]["AmbientCapabilities"]; len(v) != 0 {
		t.Errorf("opus-privd.service sets AmbientCapabilities=%q", v)
	}
}

// TestOpusdMemorySized: opusd.service's memory limits hold what opusd is
// measured to need at once — itself at 1,000 projects with headroom (64
// MiB), every console password hasher (64 MiB each), and one git fetch at
// the default size limit (about its size) — below MemoryHigh; GOMEMLIMIT
// lies between that need and MemoryHigh (the collector works harder
// before the kernel throttles), and MemoryMax above.
func TestOpusdMemorySized(t *testing.T) {
	u := readUnit(t, "opusd.service")
	high := systemdBytes(t, u.one(t, "opusd.service", "Service", "MemoryHigh"))
	hard := systemdBytes(t, u.one(t, "opusd.service", "Service", "MemoryMax"))
	var goLimit int64
	for _, e := range u["Service"]["Environment"] {
		if v, ok := strings.CutPrefix(e, "GOMEMLIMIT="); ok {
			goLimit = goBytes(t, v)
		}
	}
	need := int64(64<<20) + credential.PasswordHashers*64<<20 + int64(config.Default().GitMaxBytes)
	if !(need < goLimit && goLimit < high && high < hard) {
		t.Errorf("opusd.service: want need %d MiB < GOMEMLIMIT %d MiB < MemoryHigh %d MiB < MemoryMax %d MiB",
			need>>20, goLimit>>20, high>>20, hard>>20)
	}
}

// systemdBytes parses a systemd memory size: a number with K, M, G or T
// (powers of 1024).
func systemdBytes(t *testing.T, s string) int64 {
	t.Helper()
	mult := map[byte]int64{'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}
	if s == "" || mult[s[len(s)-1]] == 0 {
		t.Fatalf("memory size %q: want a number with K, M, G or T", s)
	}
	n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil {
		t.Fatalf("memory size %q: %v", s, err)
	}
	return n * mult[s[len(s)-1]]
}

// goBytes parses a GOMEMLIMIT value with KiB, MiB or GiB.
func goBytes(t *testing.T, s string) int64 {
	t.Helper()
	for suffix, mult := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if v, ok := strings.CutSuffix(s, suffix); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("GOMEMLIMIT %q: %v", s, err)
			}
			return n * mult
		}
	}
	t.Fatalf("GOMEMLIMIT %q: want a number with KiB, MiB or GiB", s)
	return 0
}

// TestUnitsWatchdog: a WatchdogSec= on a daemon that never sends
// WATCHDOG=1 makes systemd kill it every period. A service may only set it
// if its binary links code that asks go-systemd whether the watchdog is on
// (the daemons share that code, in internal/daemon).
func TestUnitsWatchdog(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool on PATH to list the daemons' packages")
	}
	for _, name := range []string{"opusd", "opus-privd"} {
		u := readUnit(t, name+".service")
		if len(u["Service"]["WatchdogSec"]) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		list := exec.CommandContext(ctx, goBin, "list", "-deps", "-f", `{{if not .Standard}}{{.Dir}}{{"\t"}}{{join .GoFiles ","}}{{end}}`, "./cmd/"+name)
		list.Dir = repoDir(t)
		out, err := list.Output()
		cancel()
		if err != nil {
			t.Fatalf("go list -deps ./cmd/%s: %v", name, err)
		}
		pings := false
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			dir, files, _ := strings.Cut(line, "\t")
			if !strings.HasPrefix(dir, repoDir(t)) || files == "" {
				continue // only Opus's own code counts
			}
			for _, f := range strings.Split(files, ",") {
				data, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				pings = pings || bytes.Contains(data, []byte("SdWatchdogEnabled"))
			}
		}
		if !pings {
			t.Errorf("%s.service sets WatchdogSec=%v but %s never sends WATCHDOG=1", name, u["Service"]["WatchdogSec"], name)
		}
	}
}

// TestDefaultConfigShowsDefaults: opus.conf promises every "#key value"
// line shows the built-in default; uncommented, they must parse to exactly
// config.Default().
func TestDefaultConfigShowsDefaults(t *testing.T) {
	data, err := os.ReadFile("opus.conf")
	if err != nil {
		t.Fatal(err)
	}
	var settings []string
	for _, l := range strings.Split(string(data), "\n") {
		// Prose comments are "# text"; settings are "#key value".
		if strings.HasPrefix(l, "#") && len(l) > 1 && l[1] != ' ' && l[1] != '#' {
			settings = append(settings, l[1:])
		}
	}
	if len(settings) < 10 {
		t.Fatalf("opus.conf shows only %d settings: %q", len(settings), settings)
	}
	c := config.Config{}
	if err := c.Parse(strings.NewReader(strings.Join(settings, "\n")), "opus.conf"); err != nil {
		t.Fatalf("opus.conf's commented settings do not parse: %v", err)
	}
	if c != config.Default() {
		t.Errorf("opus.conf shows %+v\nbuilt-in defaults are %+v", c, config.Default())
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// cappedBuffer keeps the first max bytes written to it.
type cappedBuffer struct {
	max     int
	buf     bytes.Buffer
	dropped int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	room := max(b.max-b.buf.Len(), 0)
	if room < len(p) {
		b.buf.Write(p[:room])
		b.dropped += len(p) - room
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *cappedBuffer) String() string {
	if b.dropped > 0 {
		return fmt.Sprintf("%s\n[… %d bytes dropped]", b.buf.String(), b.dropped)
	}
	return b.buf.String()
}

// command runs name with a timeout and bounded combined output.
func command(ctx context.Context, timeout time.Duration, dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	out := &cappedBuffer{max: maxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return out.String(), err
}

// makeEnv is the environment for a nested make: ours, without what an
// outer make or the caller's shell could slip into the install.
func makeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DESTDIR", "PREFIX", "UNITDIR":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// needMake skips unless make and go are there; the install builds the
// three binaries, which is not a -short test.
func needMake(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the daemons with make install; skipped in -short mode")
	}
	for _, tool := range []string{"make", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// installLock is the lock e2e's TestInstallOnHost holds while it runs the
// real `make install` onto this machine (the same path is spelled there).
// Tests here running make take it too: their builds into bin/ would race
// that one, and TestInstallTree's "no account appears on the host" check
// would see the opus user that install creates.
const installLock = "/tmp/opus-install.lock"

// lockInstall holds installLock until the test ends. Without access to it
// (not root) no host install can run either, so the test goes on unlocked.
func lockInstall(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(installLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Logf("running without %s: %v", installLock, err)
		return
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("lock %s: %v", installLock, err)
	}
	t.Cleanup(func() { f.Close() })
}

// makeRun runs `make TARGET DESTDIR=destdir PREFIX=prefix` in the checkout.
func makeRun(t *testing.T, target, destdir, prefix string) string {
	t.Helper()
	out, err := command(context.Background(), 10*time.Minute, repoDir(t), makeEnv(),
		"make", "--no-print-directory", target, "DESTDIR="+destdir, "PREFIX="+prefix)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// TestUnitsVerify installs the tree into a temporary root as `make
// install` does and has systemd-analyze verify the four units there, so
// the check sees the installed units and real executables at their
// ExecStart paths. Any output line about our units is a failure.
func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("needs systemd-analyze (Debian package systemd) to verify the units: ", err)
	}
	needMake(t)
	lockInstall(t)
	// The units pull in sysinit.target, sockets.target and friends: the
	// temporary root gets a copy of the host's vendor units.
	const vendor = "/usr/lib/systemd/system"
	if _, err := os.Stat(filepath.Join(vendor, "sysinit.target")); err != nil {
		t.Skipf("needs the host's systemd units in %s to resolve our dependencies: %v", vendor, err)
	}
	root := t.TempDir()
	makeRun(t, "install", root, "/usr/local")
	if err := copyTree(vendor, filepath.Join(root, vendor)); err != nil {
		t.Fatal(err)
	}
	// The backend unit runs Debian's apache2.
	if err := os.MkdirAll(filepath.Join(root, "usr/sbin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "/usr/sbin/apache2", filepath.Join(root, "usr/sbin/apache2")).CombinedOutput(); err != nil {
		t.Fatalf("copy apache2: %v %s", err, out)
	}

	verify := func(root string) (string, error) {
		args := append([]string{"verify", "--root=" + root, "--man=no"}, verifiable()...)
		return command(context.Background(), 2*time.Minute, root, []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "SYSTEMD_LOG_COLOR=0"}, analyze, args...)
	}
	out, err := verify(root)
	t.Logf("systemd-analyze verify:\n%s", out)
	if err != nil {
		t.Errorf("systemd-analyze verify failed: %v", err)
	}
	if bad := aboutOurUnits(out); len(bad) > 0 {
		t.Errorf("systemd-analyze verify complains about our units:\n%s", strings.Join(bad, "\n"))
	}

	// systemd's own rating of the backend's sandbox (offline: PID 1 here
	// is not systemd), at most 3.0 of 10 ("OK"; the master must stay root
	// to bind its port and switch users).
	t.Run("backend exposure", func(t *testing.T) {
		out, err := command(context.Background(), 2*time.Minute, root, []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "SYSTEMD_LOG_COLOR=0"},
			analyze, "security", "--offline=true", "--root="+root, "--threshold=30", "--no-pager", "opus-backend@blog.service")
		last := strings.TrimSpace(out)
		if i := strings.LastIndex(last, "\n"); i >= 0 {
			last = last[i+1:]
		}
		t.Log(last)
		if err != nil {
			t.Errorf("systemd-analyze security: %v\n%s", err, out)
		}
	})

	// The same check on a broken copy must fail: an unknown key and a
	// missing executable are both reported, so a clean run above means
	// something.
	t.Run("detects a broken unit", func(t *testing.T) {
		broken := filepath.Join(root, "etc/systemd/system/opusd.service")
		f, err := os.OpenFile(broken, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(f, "[Service]\nPrivateTmpp=yes")
		f.Close()
		if err := os.Remove(filepath.Join(root, "usr/local/sbin/opus-privd")); err != nil {
			t.Fatal(err)
		}
		out, _ := verify(root)
		bad := aboutOurUnits(out)
		for _, want := range []string{"PrivateTmpp", "opus-privd"} {
			if !slices.ContainsFunc(bad, func(l string) bool { return strings.Contains(l, want) }) {
				t.Errorf("broken units: no complaint mentioning %q in %q", want, out)
			}
		}
	})
}

// aboutOurUnits returns the lines of systemd-analyze output that concern
// our units or binaries (by unit name, file path or ExecStart path);
// complaints about the host's own units are not ours to fix.
func aboutOurUnits(out string) []string {
	var bad []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "opusd") || strings.Contains(l, "opus-privd") || strings.Contains(l, "opus-backend") {
			bad = append(bad, l)
		}
	}
	return bad
}

// copyTree copies regular files, directories and symbolic links (as links).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(to, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case d.Type().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(to, data, 0o644)
		}
		return nil
	})
}

// accountEntries returns the lines of the user and group databases (with
// shadow files) that name one of names. Tests compare these for the names
// they care about rather than the whole files, which other tests running
// in parallel change.
func accountEntries(t *testing.T, names ...string) string {
	t.Helper()
	var b strings.Builder
	for _, f := range []string{"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"} {
		data, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(data), "\n") {
			if name, _, _ := strings.Cut(l, ":"); slices.Contains(names, name) {
				fmt.Fprintf(&b, "%s: %s\n", f, l)
			}
		}
	}
	return b.String()
}

// files lists the regular files under dir, relative, with their modes.
func files(t *testing.T, dir string) map[string]fs.FileMode {
	t.Helper()
	got := map[string]fs.FileMode{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		got["/"+rel] = fi.Mode()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestInstallTree runs `make install` and `make uninstall` into a DESTDIR
// and checks the exact tree, the PREFIX rewriting of the units, that an
// admin's edited configuration survives both, and that no user or group is
// created on the host.
func TestInstallTree(t *testing.T) {
	needMake(t)
	lockInstall(t)
	tests := []struct {
		prefix string
		// editConf: the admin edits /etc/opus/opus.conf after installing;
		// a reinstall and the uninstall must keep it.
		editConf bool
	}{
		{"/usr/local", false},
		{"/opt/opus", true},
		// Characters a sed replacement would interpret.
		{"/opt/o&p|us", false},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(tc.prefix, "/", "_"), func(t *testing.T) {
			// What install.sh creates when installing onto the host.
			hostAccounts := []string{"opus", "opus-admin"}
			before := accountEntries(t, hostAccounts...)
			_, varLibErr := os.Stat("/var/lib/opus")
			dest := t.TempDir()
			makeRun(t, "install", dest, tc.prefix)

			p := tc.prefix
			want := map[string]fs.FileMode{
				p + "/bin/opusctl":              0o755,
				p + "/sbin/opusd":               0o755,
				p + "/sbin/opus-privd":          0o755,
				p + "/share/doc/opus/README.md": 0o644,
				"/etc/opus/opus.conf":           0o644,
			}
			for _, u := range units {
				want["/etc/systemd/system/"+u] = 0o644
			}
			got := files(t, dest)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("installed files:\n%v\nwant\n%v", got, want)
			}
			// The binaries are the real, runnable daemons.
			for _, b := range []string{p + "/sbin/opusd", p + "/sbin/opus-privd", p + "/bin/opusctl"} {
				if out, err := command(context.Background(), time.Minute, dest, nil, filepath.Join(dest, b), "--help"); err != nil {
					t.Errorf("installed %s --help: %v\n%s", b, err, out)
				}
			}
			for _, u := range units {
				src, err := os.ReadFile(u)
				if err != nil {
					t.Fatal(err)
				}
				inst, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system", u))
				if err != nil {
					t.Fatal(err)
				}
				if w := strings.ReplaceAll(string(src), "/usr/local/", p+"/"); string(inst) != w {
					t.Errorf("installed %s:\n%s\nwant\n%s", u, inst, w)
				}
				// The backend template runs Debian's apache2, not a binary of ours.
				if ex := readUnit(t, filepath.Join(dest, "etc/systemd/system", u))["Service"]["ExecStart"]; strings.HasSuffix(u, ".service") && !strings.Contains(u, "@") &&
					(len(ex) != 1 || !strings.HasPrefix(ex[0], p+"/sbin/"+strings.TrimSuffix(u, ".service")+" ")) {
					t.Errorf("installed %s: ExecStart=%q, want under %s/sbin", u, ex, p)
				}
			}
			for from, to := range map[string]string{"opus.conf": "etc/opus/opus.conf", "../README.md": strings.TrimPrefix(p, "/") + "/share/doc/opus/README.md"} {
				a, _ := os.ReadFile(from)
				b, err := os.ReadFile(filepath.Join(dest, to))
				if err != nil || !bytes.Equal(a, b) || len(a) == 0 {
					t.Errorf("%s is not a copy of %s (err %v)", to, from, err)
				}
			}

			conf := filepath.Join(dest, "etc/opus/opus.conf")
			edited := []byte("# the admin's\nhttp_port 80\n")
			if tc.editConf {
				if err := os.WriteFile(conf, edited, 0o644); err != nil {
					t.Fatal(err)
				}
				makeRun(t, "install", dest, tc.prefix)
				if data, _ := os.ReadFile(conf); !bytes.Equal(data, edited) {
					t.Errorf("reinstall overwrote the admin's opus.conf: %q", data)
				}
			}

			makeRun(t, "uninstall", dest, tc.prefix)
			left := files(t, dest)
			wantLeft := map[string]fs.FileMode{}
			if tc.editConf {
				wantLeft["/etc/opus/opus.conf"] = 0o644
			}
			if fmt.Sprint(left) != fmt.Sprint(wantLeft) {
				t.Errorf("after uninstall, files left: %v, want %v", left, wantLeft)
			}
			if data, _ := os.ReadFile(conf); tc.editConf && !bytes.Equal(data, edited) {
				t.Errorf("uninstall changed the admin's opus.conf: %q", data)
			}
			if _, err := os.Stat(filepath.Join(dest, "etc/opus")); !tc.editConf && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("uninstall left /etc/opus behind (stat: %v)", err)
			}

			if after := accountEntries(t, hostAccounts...); after != before {
				t.Errorf("make install/uninstall with DESTDIR changed the host's users or groups:\nbefore:\n%safter:\n%s", before, after)
			}
			if _, err := os.Stat("/var/lib/opus"); (err == nil) != (varLibErr == nil) {
				t.Errorf("make install with DESTDIR changed the host's /var/lib/opus (before: %v, after: %v)", varLibErr, err)
			}
		})
	}

	// ExecStart= must be absolute: a relative PREFIX is refused and
	// nothing is installed.
	t.Run("relative PREFIX", func(t *testing.T) {
		dest := t.TempDir()
		out, err := command(context.Background(), 10*time.Minute, repoDir(t), makeEnv(),
			"make", "--no-print-directory", "install", "DESTDIR="+dest, "PREFIX=usr/local")
		if err == nil || !strings.Contains(out, "PREFIX must be an absolute path") {
			t.Errorf("make install PREFIX=usr/local: %v\n%s", err, out)
		}
		if got := files(t, dest); len(got) != 0 {
			t.Errorf("refused install left files: %v", got)
		}
	})
}

// privdCall is what the helper does; privdAnswer what it saw.
type privdCall struct {
	Socket, Method, Project string
	// UID is EnsureUser's id for a new user.
	UID uint32
}

type privdAnswer struct {
	Code, Message string
}

func runHelper(req string) int {
	var c privdCall
	if err := json.Unmarshal([]byte(req), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code, msg := callPrivd(ctx, c)
	if err := json.NewEncoder(os.Stdout).Encode(privdAnswer{Code: code.String(), Message: msg}); err != nil {
		return 2
	}
	return 0
}

// callPrivd makes one call over the socket, insisting the server is root.
func callPrivd(ctx context.Context, c privdCall) (codes.Code, string) {
	conn, err := grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(peercred.ClientExpecting(0)))
	if err != nil {
		return codes.Unknown, err.Error()
	}
	defer conn.Close()
	pc := privdv1.NewPrivdClient(conn)
	switch c.Method {
	case "EnsureUser":
		_, err = pc.EnsureUser(ctx, &privdv1.EnsureUserRequest{Project: c.Project, Uid: c.UID})
	case "DeleteUser":
		_, err = pc.DeleteUser(ctx, &privdv1.DeleteUserRequest{Project: c.Project})
	default:
		return codes.Unknown, "unknown method " + c.Method
	}
	st := status.Convert(err)
	return st.Code(), st.Message()
}

// copyHelper copies the test binary to path, where another user may run
// it (go test builds the binary in a directory only root can enter).
func copyHelper(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.WriteFile(path, data, 0o755)
	}
	if err != nil {
		t.Fatalf("copy test binary: %v", err)
	}
}

// asUser runs c in helper, a copy of the test binary (copyHelper), as
// uid:gid, so the peer credentials privd sees are really that user's.
func asUser(t *testing.T, helper string, uid, gid uint32, c privdCall) privdAnswer {
	t.Helper()
	req, _ := json.Marshal(c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helper, "-test.run=^$")
	cmd.Env = []string{helperEnv + "=" + string(req)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	stderr := &cappedBuffer{max: maxOutput}
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper as uid %d: %v: %s", uid, err, stderr)
	}
	var a privdAnswer
	if err := json.Unmarshal(out, &a); err != nil {
		t.Fatalf("helper answer %q: %v", out, err)
	}
	t.Logf("privd %s(%s) as uid %d → %s %s", c.Method, c.Project, uid, a.Code, a.Message)
	return a
}

// findSocketActivate returns systemd-socket-activate's path, or "".
func findSocketActivate() string {
	if p, err := exec.LookPath("systemd-socket-activate"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/lib/systemd/systemd-socket-activate", "/lib/systemd/systemd-socket-activate"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// randomProject is a project name: "s" and six lowercase letters.
func randomProject() string {
	b := make([]byte, 6)
	rand.Read(b)
	for i := range b {
		b[i] = 'a' + b[i]%26
	}
	return "s" + string(b)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// passwdEntry returns user name's /etc/passwd fields, or nil.
func passwdEntry(t *testing.T, name string) []string {
	t.Helper()
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Split(l, ":"); len(f) == 7 && f[0] == name {
			return f
		}
	}
	return nil
}

// TestSocketActivation runs the real opus-privd the way opus-privd.socket
// does: systemd-socket-activate holds a listening socket with the unit's
// owner and mode, starts privd on the first connection and passes it the
// socket (LISTEN_FDS) and a notify socket. The opus user's call goes
// through; root's is refused; privd reports READY=1 and stops cleanly.
func TestSocketActivation(t *testing.T) {
	run := testrun.Need(t, "builds and runs opus-privd, which creates users, and a stand-in opus user")
	activate := findSocketActivate()
	if activate == "" {
		t.Skip("needs systemd-socket-activate (Debian package systemd) to test socket activation")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go tool to build opus-privd: ", err)
	}
	// Everything is in the run's directory: privd's and the activator's
	// command lines name it, so what a killed run left is stopped by the
	// next run.
	actRoot := run.TempDir(t)
	for _, d := range []string{filepath.Join(actRoot, "bin"), filepath.Join(actRoot, "run")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	privdBin := filepath.Join(actRoot, "bin", "opus-privd")
	if out, err := command(ctx, 5*time.Minute, repoDir(t), os.Environ(), "go", "build", "-trimpath", "-o", privdBin, "./cmd/opus-privd"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	helper := filepath.Join(actRoot, "bin", "helper")
	copyHelper(t, helper)
	actUser, uid, gid := run.NewUser(t, "o") // stands in for the opus user

	cfg := config.Default()
	cfg.BaseDir = filepath.Join(actRoot, "base")
	cfg.RunDir = filepath.Join(actRoot, "run")
	cfg.OpusUser = actUser
	cfg.ApacheDir = filepath.Join(actRoot, "apache")
	cfg.HTTPPort, cfg.HTTPSPort = freePort(t), freePort(t)
	cfg.UserPrefix = run.UserPrefix()
	cfg.ProjectUIDs = run.UIDs()
	conf := filepath.Join(actRoot, "opus.conf")
	if err := os.WriteFile(conf, []byte(cfg.Format()), 0o644); err != nil {
		t.Fatal(err)
	}

	// The notify socket stands in for systemd's: Type=notify needs READY=1.
	notifyPath := filepath.Join(actRoot, "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	notes := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := notify.ReadFromUnix(buf)
			if err != nil {
				close(notes)
				return
			}
			notes <- string(buf[:n])
		}
	}()

	// Like opus-privd.socket: ListenStream= is the configured privd socket.
	sock := cfg.PrivdSocket()
	logPath := filepath.Join(actRoot, "privd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, activate, "--listen="+sock,
		"--setenv=PATH=/usr/sbin:/usr/bin:/sbin:/bin", "--setenv=NOTIFY_SOCKET="+notifyPath,
		privdBin, "--config", conf)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	privdLog := func() string {
		data, _ := os.ReadFile(logPath)
		return string(data)
	}

	var st syscall.Stat_t
	for deadline := time.Now().Add(20 * time.Second); syscall.Stat(sock, &st) != nil; {
		select {
		case err := <-exited:
			t.Fatalf("systemd-socket-activate exited: %v\n%s", err, privdLog())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket at %s after 20s\n%s", sock, privdLog())
		}
	}
	// What SocketUser=root SocketGroup=opus SocketMode=0660 make of it.
	if err := os.Chown(sock, 0, int(gid)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o660); err != nil {
		t.Fatal(err)
	}
	inode := st.Ino

	// Activation is on demand: until a client connects, privd is not running.
	exe := func() string { p, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); return p }
	if e := exe(); e == privdBin {
		t.Errorf("opus-privd started before any client connected")
	}

	project := randomProject()
	pu := names.User(cfg.UserPrefix, project)
	t.Cleanup(func() {
		_, _ = (&account.Accounts{BaseDir: cfg.BaseDir, Prefix: cfg.UserPrefix}).DeleteUser(context.Background(), project)
	})
	id, err := testrun.FreeID(cfg.ProjectUIDs)
	if err != nil {
		t.Fatal(err)
	}
	if a := asUser(t, helper, uid, gid, privdCall{Socket: sock, Method: "EnsureUser", Project: project, UID: id}); a.Code != codes.OK.String() {
		t.Fatalf("EnsureUser as the opus user through the activated socket: %s %s\n%s", a.Code, a.Message, privdLog())
	}
	if f := passwdEntry(t, pu); f == nil || f[4] != names.Marker(project) {
		t.Errorf("after EnsureUser, /etc/passwd has %q for %s, want GECOS %q", f, pu, names.Marker(project))
	}
	if e := exe(); e != privdBin {
		t.Errorf("pid %d runs %q after the first call, want %s (exec'd by socket activation)", pid, e, privdBin)
	}
	var ist syscall.Stat_t
	if err := syscall.Stat(sock, &ist); err != nil || ist.Ino != inode {
		t.Errorf("privd replaced the passed socket with its own (inode %d → %d, %v)", inode, ist.Ino, err)
	}
	if !strings.Contains(privdLog(), "using socket from systemd") {
		t.Errorf("privd did not report using the passed socket:\n%s", privdLog())
	}
	waitNote := func(want string) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case n, ok := <-notes:
				if !ok {
					t.Errorf("notify socket closed before %q", want)
					return
				}
				if slices.Contains(strings.Split(n, "\n"), want) {
					return
				}
			case <-timeout:
				t.Errorf("no %q on the notify socket within 20s", want)
				return
			}
		}
	}
	waitNote("READY=1")

	// An opus-privd started by hand beside the activated one (same
	// configuration, no socket passed) is refused and leaves the socket
	// alone; the calls below show the activated one still serves.
	second := exec.CommandContext(ctx, privdBin, "--config", conf)
	second.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	secondOut := cappedBuffer{max: maxOutput}
	second.Stdout, second.Stderr = &secondOut, &secondOut
	second.WaitDelay = 5 * time.Second
	var exit *exec.ExitError
	if err := second.Run(); !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(secondOut.String(), "another opus-privd is already serving "+sock) {
		t.Errorf("a second opus-privd beside the activated one: %v, want exit 1 saying another serves %s:\n%s", err, sock, secondOut.String())
	}
	if err := syscall.Stat(sock, &ist); err != nil || ist.Ino != inode {
		t.Errorf("the second opus-privd replaced the activated socket (inode %d → %d, %v)", inode, ist.Ino, err)
	}

	// Root is refused, and nothing changes.
	other := randomProject()
	otherUser := names.User(cfg.UserPrefix, other)
	before := accountEntries(t, pu, otherUser)
	for _, c := range []privdCall{{Socket: sock, Method: "EnsureUser", Project: other}, {Socket: sock, Method: "DeleteUser", Project: project}} {
		if code, msg := callPrivd(ctx, c); code != codes.PermissionDenied {
			t.Errorf("%s(%s) as root: %s %s, want PermissionDenied", c.Method, c.Project, code, msg)
		}
	}
	if after := accountEntries(t, pu, otherUser); after != before || passwdEntry(t, otherUser) != nil || passwdEntry(t, pu) == nil {
		t.Errorf("root's refused calls changed the user database:\nbefore:\n%safter:\n%s", before, after)
	}

	if a := asUser(t, helper, uid, gid, privdCall{Socket: sock, Method: "DeleteUser", Project: project}); a.Code != codes.OK.String() {
		t.Errorf("DeleteUser as the opus user: %s %s", a.Code, a.Message)
	}
	if f := passwdEntry(t, pu); f != nil {
		t.Errorf("after DeleteUser, /etc/passwd still has %q", f)
	}

	// systemctl stop sends SIGTERM; privd says STOPPING=1 and exits 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("privd after SIGTERM: %v\n%s", err, privdLog())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("privd still running 40s after SIGTERM\n%s", privdLog())
	}
	waitNote("STOPPING=1")
	if t.Failed() {
		t.Logf("privd log:\n%s", privdLog())
	}
}
