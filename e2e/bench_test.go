package e2e

// Benchmarks of Opus on the real stack (root, the managed Apache of the
// shared harness). They run only with -bench (`make bench`), never in
// `make test`. Each records its figures; after each benchmark the figures
// gathered so far are written as JSON (-bench.out, default ../bench.json)
// and as a table beside it (.txt), so the last one written holds them all.
// docs/performance.md explains the figures.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"

	"github.com/opus-hosting/opus/client"
	"github.com/opus-hosting/opus/internal/peercred"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
)

var (
	benchOut  = flag.String("bench.out", "../bench.json", "benchmarks write their figures as JSON here, and a table beside it (.txt)")
	benchRuns = flag.Int("bench.runs", 5, "runs per latency figure (medians are reported)")
	benchN    = flag.Int("bench.disturb", 25, "other projects deployed during BenchmarkDisturbance")
	benchAPIN = flag.Int("bench.api", 1000, "projects in the store for BenchmarkAPI")
)

// rttEnv selects the privd round-trip helper: the test binary re-executed
// as the opus user (privd serves no one else) to time calls to privd.
const rttEnv = "OPUS_BENCH_PRIVD_RTT"

func init() {
	// Before TestMain: this process is only the helper.
	if sock := os.Getenv(rttEnv); sock != "" {
		os.Exit(privdRoundTrips(sock))
	}
}

// ---- figures, JSON and table ----

// figure is one measured number.
type figure struct {
	Bench string  `json:"bench"`
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Note  string  `json:"note,omitempty"`
}

var (
	figMu   sync.Mutex
	figures []figure
)

// record keeps a figure and reports it as a benchmark metric.
func record(b *testing.B, bench, name string, value float64, unit, note string) {
	figMu.Lock()
	figures = append(figures, figure{bench, name, value, unit, note})
	figMu.Unlock()
	b.ReportMetric(value, strings.ReplaceAll(name+"_"+unit, " ", "_"))
}

// machine describes where the figures were taken.
func machine() map[string]string {
	m := map[string]string{"cores": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/etc/debian_version"); err == nil {
		m["debian"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		// Other work on the host skews every figure: say how busy it was.
		m["loadavg"] = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := bytes.Cut(b, []byte("\n")); ok {
			m["memory"] = strings.Join(strings.Fields(string(l))[1:], " ")
		}
	}
	for k, argv := range map[string][]string{
		"apache":   {"/usr/sbin/apache2", "-v"},
		"django":   {"/usr/bin/python3", "-c", "import django; print(django.get_version())"},
		"python":   {"/usr/bin/python3", "-V"},
		"mod_wsgi": {"dpkg-query", "-W", "-f", "${Version}", "libapache2-mod-wsgi-py3"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
		cancel()
		if err == nil {
			l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
			m[k] = strings.TrimPrefix(l, "Server version: ")
		}
	}
	return m
}

// saveFigures writes every figure so far as JSON and as a table, and
// prints the table.
func saveFigures(b *testing.B) {
	figMu.Lock()
	defer figMu.Unlock()
	report := struct {
		Time    time.Time         `json:"time"`
		Machine map[string]string `json:"machine"`
		Figures []figure          `json:"figures"`
	}{time.Now().UTC().Truncate(time.Second), machine(), figures}
	data, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		b.Fatal(err)
	}
	var tbl bytes.Buffer
	var keys []string
	for k := range report.Machine {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fmt.Fprintf(&tbl, "Opus benchmarks, %s\n", report.Time.Format(time.RFC3339))
	for _, k := range keys {
		fmt.Fprintf(&tbl, "  %-9s %s\n", k, report.Machine[k])
	}
	fmt.Fprintln(&tbl)
	w := tabwriter.NewWriter(&tbl, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "benchmark\tfigure\tvalue\tunit\tnote")
	for _, f := range figures {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", f.Bench, f.Name, strconv.FormatFloat(f.Value, 'f', -1, 64), f.Unit, f.Note)
	}
	w.Flush()
	if *benchOut != "" {
		if err := os.WriteFile(*benchOut, append(data, '\n'), 0o644); err != nil {
			b.Errorf("write %s: %v", *benchOut, err)
		}
		txt := strings.TrimSuffix(*benchOut, filepath.Ext(*benchOut)) + ".txt"
		if err := os.WriteFile(txt, tbl.Bytes(), 0o644); err != nil {
			b.Errorf("write %s: %v", txt, err)
		}
	}
	fmt.Print(tbl.String())
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// quantile returns the q-quantile (nearest rank) of xs.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s)) + 0.5)
	return s[min(max(i-1, 0), len(s)-1)]
}

func round3(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }

// ---- the harness, from a benchmark ----

// benchEnv is the shared host plus a client of its opusd.
type benchEnv struct {
	h *host
	c *client.Client
}

// benchHost is needHost for a benchmark.
func benchHost(b *testing.B) *benchEnv {
	b.Helper()
	if skipReason != "" {
		b.Skip(skipReason)
	}
	sharedOnce.Do(func() { shared, sharedErr = startHost() })
	if sharedErr != nil {
		b.Fatalf("starting opus: %v", sharedErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, shared.cfg.OpusdSocket())
	if err != nil {
		b.Fatalf("dial opusd: %v", err)
	}
	b.Cleanup(func() { c.Close() })
	return &benchEnv{h: shared, c: c}
}

func benchName() string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	n := []byte(projPrefix)
	for range 6 {
		n = append(n, letters[rand.IntN(len(letters))])
	}
	return string(n)
}

// track destroys name when the benchmark ends, should it still exist.
func (e *benchEnv) track(b *testing.B, name string) {
	b.Cleanup(func() {
		if _, err := user.Lookup(projUser(name)); err == nil || exists(filepath.Join(e.h.cfg.BaseDir, "projects", name)) {
			_ = e.destroy(name)
		}
	})
}

func benchCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Minute)
}

// helloApp uploads examples/hello and returns it as an app.
func (e *benchEnv) helloApp(ctx context.Context) (*opusv1.AppSpec, error) {
	digest, err := e.c.UploadDir(ctx, filepath.Join("..", "examples", "hello"))
	if err != nil {
		return nil, fmt.Errorf("upload hello: %w", err)
	}
	return &opusv1.AppSpec{Name: "hello", Source: client.UploadedSource(digest, "examples/hello")}, nil
}

// create creates name with apps, the admin and a superuser, and waits.
func (e *benchEnv) create(ctx context.Context, name string, apps ...*opusv1.AppSpec) (*opusv1.Operation, error) {
	op, err := e.c.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: name, Apps: apps, Admin: true,
		Superuser: &opusv1.Superuser{Username: "admin", Email: "admin@example.com", Password: adminPassword}})
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	return e.c.Wait(ctx, op.GetId(), nil)
}

func (e *benchEnv) destroy(name string) error {
	ctx, cancel := benchCtx()
	defer cancel()
	op, err := e.c.DeleteProject(ctx, name)
	if err != nil {
		return fmt.Errorf("destroy %s: %w", name, err)
	}
	_, err = e.c.Wait(ctx, op.GetId(), nil)
	return err
}

// fleet deploys n projects with the hello app at once and waits until
// each answers; the benchmark's end destroys them.
func (e *benchEnv) fleet(b *testing.B, n int) []string {
	names := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range names {
		names[i] = benchName()
		e.track(b, names[i])
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := benchCtx()
			defer cancel()
			app, err := e.helloApp(ctx)
			if err == nil {
				_, err = e.create(ctx, names[i], app)
			}
			if err == nil {
				err = e.until200(ctx, names[i], "/hello/", "Hello from Opus")
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		e.h.dumpLogsB(b)
		b.Fatal(err)
	}
	return names
}

// destroyAll destroys names at once and returns how long it took.
func (e *benchEnv) destroyAll(b *testing.B, names []string) time.Duration {
	start := time.Now()
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = e.destroy(n) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Error(err)
	}
	return time.Since(start)
}

// dumpLogsB is dumpLogs for a benchmark.
func (h *host) dumpLogsB(b *testing.B) {
	for _, f := range []string{"privd.log", "opusd.log"} {
		data, _ := os.ReadFile(filepath.Join(h.logs, f))
		if len(data) > 6000 {
			data = data[len(data)-6000:]
		}
		b.Logf("--- %s (tail) ---\n%s", f, data)
	}
}

var httpClient = webClient()

// fetch GETs path on project name over HTTP and returns status and body.
func (e *benchEnv) fetch(ctx context.Context, name, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.h.url(name, "http", path), nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body), nil
}

// until200 requests path until it answers 200 containing want.
func (e *benchEnv) until200(ctx context.Context, name, path, want string) error {
	last := ""
	for {
		code, body, err := e.fetch(ctx, name, path)
		if err == nil && code == 200 && strings.Contains(body, want) {
			return nil
		}
		last = fmt.Sprintf("%d %.120q %v", code, body, err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s%s: no 200 with %q (last: %s)", name, path, want, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stepSeconds returns each step's duration from an operation.
func stepSeconds(op *opusv1.Operation) map[string]float64 {
	m := map[string]float64{}
	for _, s := range op.GetSteps() {
		if s.GetStartTime() != nil && s.GetEndTime() != nil {
			m[s.GetName()] += s.GetEndTime().AsTime().Sub(s.GetStartTime().AsTime()).Seconds()
		}
	}
	return m
}

// gracefuls counts the graceful restarts Apache logged (AH00493).
func (e *benchEnv) gracefuls() int {
	b, _ := os.ReadFile(filepath.Join(e.h.cfg.ApacheDir, "logs", "error.log"))
	return bytes.Count(b, []byte("AH00493"))
}

// wsgiPids returns the pids of project's mod_wsgi daemon processes.
func wsgiPids(project string) []int {
	pids := pidsWhere(func(cmd []byte) bool { return bytes.HasPrefix(cmd, []byte("(wsgi:"+project+")")) })
	slices.Sort(pids)
	return pids
}

// ---- CPU accounting from /proc ----

// procStat is what /proc/PID/stat says about CPU and parentage.
type procStat struct {
	ppid int
	cpu  int64 // utime + stime + cutime + cstime, in clock ticks
}

func readStats() map[int]procStat {
	m := map[int]procStat{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		// After "comm": state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
		if len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		var cpu int64
		for _, k := range f[11:15] {
			v, _ := strconv.ParseInt(k, 10, 64)
			cpu += v
		}
		m[pid] = procStat{ppid: ppid, cpu: cpu}
	}
	return m
}

// treeCPU returns the CPU seconds of roots and all their descendants: each
// live process's own time plus that of its children it has reaped, so a
// process that ended in between is still counted, in its parent.
func treeCPU(roots ...int) float64 {
	stats := readStats()
	in := map[int]bool{}
	for _, r := range roots {
		if r > 0 {
			in[r] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for pid, s := range stats {
			if !in[pid] && in[s.ppid] {
				in[pid], changed = true, true
			}
		}
	}
	var ticks int64
	for pid := range in {
		ticks += stats[pid].cpu
	}
	return float64(ticks) / 100 // USER_HZ is 100 on Linux
}

// stackCPU returns the CPU seconds of privd's, opusd's and the front
// Apache's process trees, and of every project's backend (its master's
// tree: workers and mod_wsgi daemon; a backend's master is no child of
// privd's once it has detached).
func (e *benchEnv) stackCPU(b *testing.B) [4]float64 {
	backends := 0.0
	pids, _ := filepath.Glob(filepath.Join(e.h.cfg.ApacheDir, "backends", "*", "run", "httpd.pid"))
	for _, f := range pids {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
			backends += treeCPU(pid)
		}
	}
	return [4]float64{treeCPU(e.h.privd.Process.Pid), treeCPU(e.h.opusd.Process.Pid), treeCPU(e.h.frontPid(b)), backends}
}

// ---- the hand-made baselines ----

// script runs scripts/bench/NAME and returns its step and total seconds.
func (e *benchEnv) script(name string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	work := filepath.Join(root, "bench-scripts")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", filepath.Join("..", "scripts", "bench", name))
	project := benchName()
	if err := testRun.NoteAccount(projUser(project)); err != nil {
		return nil, err
	}
	cmd.Env = append(os.Environ(), "APACHE_DIR="+e.h.cfg.ApacheDir, "WORK="+work, "NAME="+project, "USER_NAME="+projUser(project),
		"HTTP_PORT="+strconv.Itoa(e.h.cfg.HTTPPort), "HTTPS_PORT="+strconv.Itoa(e.h.cfg.HTTPSPort), "PYTHON="+e.h.cfg.Python)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s%s", name, err, out, stderr.Bytes())
	}
	m := map[string]float64{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 3 && f[0] == "step":
			m[f[1]], _ = strconv.ParseFloat(f[2], 64)
		case len(f) == 2 && f[0] == "total":
			m["total"], _ = strconv.ParseFloat(f[1], 64)
		}
	}
	if _, ok := m["total"]; !ok {
		return nil, fmt.Errorf("%s printed no total:\n%s", name, out)
	}
	return m, nil
}

// ---- the benchmarks ----

// BenchmarkDeploy: a one-app project (examples/hello, admin, superuser)
// from the create call to its first 200 through Apache, by step, beside
// the floor (scripts/bench/floor.sh) and the seed's procedure
// (scripts/bench/seed.sh) on the same Apache. Medians of -bench.runs.
func BenchmarkDeploy(b *testing.B) {
	e := benchHost(b)
	ctx, cancel := benchCtx()
	defer cancel()
	// Warm up: starts Apache and fills the page cache for everyone.
	warm := benchName()
	e.track(b, warm)
	t0 := time.Now()
	app, err := e.helloApp(ctx)
	if err == nil {
		_, err = e.create(ctx, warm, app)
	}
	if err != nil {
		e.h.dumpLogsB(b)
		b.Fatal(err)
	}
	b.Logf("warm-up create: %v", time.Since(t0))
	if err := e.destroy(warm); err != nil {
		b.Fatal(err)
	}
	b.Logf("warm-up create+destroy: %v", time.Since(t0))

	opusSteps := map[string][]float64{}
	floorSteps := map[string][]float64{}
	seedSteps := map[string][]float64{}
	var stepOrder []string
	b.ResetTimer()
	for range *benchRuns {
		name := benchName()
		e.track(b, name)
		start := time.Now()
		app, err := e.helloApp(ctx)
		if err != nil {
			b.Fatal(err)
		}
		uploaded := time.Now()
		op, err := e.create(ctx, name, app)
		if err != nil {
			e.h.dumpLogsB(b)
			b.Fatal(err)
		}
		if err := e.until200(ctx, name, "/hello/", "Hello from Opus"); err != nil {
			b.Fatal(err)
		}
		total := time.Since(start).Seconds()
		steps := stepSeconds(op)
		if stepOrder == nil {
			for _, s := range op.GetSteps() {
				stepOrder = append(stepOrder, s.GetName())
			}
		}
		var sum float64
		for k, v := range steps {
			opusSteps[k] = append(opusSteps[k], v)
			sum += v
		}
		opusSteps["(client upload)"] = append(opusSteps["(client upload)"], uploaded.Sub(start).Seconds())
		opusSteps["(queue, watch, first GET)"] = append(opusSteps["(queue, watch, first GET)"], total-uploaded.Sub(start).Seconds()-sum)
		opusSteps["total"] = append(opusSteps["total"], total)
		b.StopTimer()
		t := time.Now()
		if err := e.destroy(name); err != nil {
			b.Fatal(err)
		}
		opusSteps["(destroy)"] = append(opusSteps["(destroy)"], time.Since(t).Seconds())
		for _, s := range []struct {
			script string
			into   map[string][]float64
		}{{"floor.sh", floorSteps}, {"seed.sh", seedSteps}} {
			m, err := e.script(s.script)
			if err != nil {
				b.Fatal(err)
			}
			for k, v := range m {
				s.into[k] = append(s.into[k], v)
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	note := fmt.Sprintf("median of %d", *benchRuns)
	for _, k := range append(append([]string{"(client upload)"}, stepOrder...), "(queue, watch, first GET)") {
		record(b, "deploy", "opus step "+k, round3(median(opusSteps[k])), "s", note)
	}
	for _, k := range []string{"user", "files", "python", "certificate", "vhost", "graceful", "request"} {
		record(b, "deploy", "floor step "+k, round3(median(floorSteps[k])), "s", note)
	}
	for _, k := range []string{"user", "startproject", "files", "migrate", "createsuperuser", "collectstatic", "certificate", "vhost", "graceful", "request"} {
		record(b, "deploy", "seed step "+k, round3(median(seedSteps[k])), "s", note)
	}
	o, f, s := median(opusSteps["total"]), median(floorSteps["total"]), median(seedSteps["total"])
	record(b, "deploy", "opus total", round3(o), "s", note+"; create call to first 200 through Apache")
	record(b, "deploy", "floor total", round3(f), "s", note+"; scripts/bench/floor.sh")
	record(b, "deploy", "seed total", round3(s), "s", note+"; scripts/bench/seed.sh")
	record(b, "deploy", "opus / floor", round3(o/f), "x", "")
	record(b, "deploy", "seed / floor", round3(s/f), "x", "")
	record(b, "deploy", "seed / opus", round3(s/o), "x", "how many times faster than the seed's procedure Opus is")
	record(b, "deploy", "opus destroy", round3(median(opusSteps["(destroy)"])), "s", note+"; DeleteProject call to operation done")
	saveFigures(b)
}

// BenchmarkUpdate: moving a git app to another tag on a live project, to
// the first 200 showing the new version, and how many mod_wsgi daemons of
// other projects that restarted (must be 0).
func BenchmarkUpdate(b *testing.B) {
	e := benchHost(b)
	ctx, cancel := benchCtx()
	defer cancel()
	shop, err := benchGitApp("shop")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(filepath.Dir(shop))
	others := e.fleet(b, 3)
	name := benchName()
	e.track(b, name)
	if _, err := e.create(ctx, name, &opusv1.AppSpec{Name: "shop", Source: client.GitSource(shop, "v1")}); err != nil {
		e.h.dumpLogsB(b)
		b.Fatal(err)
	}
	if err := e.until200(ctx, name, "/shop/", "shop version v1"); err != nil {
		b.Fatal(err)
	}
	before := map[string][]int{}
	for _, o := range others {
		before[o] = wsgiPids(o)
		if len(before[o]) == 0 {
			b.Fatalf("no (wsgi:%s) daemon", o)
		}
	}
	graceful0 := e.gracefuls()
	var totals []float64
	steps := map[string][]float64{}
	var order []string
	ownRestarts := 0
	b.ResetTimer()
	for i := range *benchRuns {
		tag := []string{"v2", "v1"}[i%2]
		own := wsgiPids(name)
		start := time.Now()
		op, err := e.c.UpdateApp(ctx, name, "shop", client.GitSource(shop, tag))
		if err == nil {
			op, err = e.c.Wait(ctx, op.GetId(), nil)
		}
		if err != nil {
			e.h.dumpLogsB(b)
			b.Fatal(err)
		}
		if err := e.until200(ctx, name, "/shop/", "shop version "+tag); err != nil {
			b.Fatal(err)
		}
		totals = append(totals, time.Since(start).Seconds())
		for k, v := range stepSeconds(op) {
			steps[k] = append(steps[k], v)
		}
		if order == nil {
			for _, s := range op.GetSteps() {
				order = append(order, s.GetName())
			}
		}
		if !slices.Equal(own, wsgiPids(name)) {
			ownRestarts++
		}
	}
	b.StopTimer()
	restarted := 0
	for _, o := range others {
		if !slices.Equal(before[o], wsgiPids(o)) {
			restarted++
		}
	}
	note := fmt.Sprintf("median of %d", *benchRuns)
	for _, k := range order {
		record(b, "update", "step "+k, round3(median(steps[k])), "s", note)
	}
	record(b, "update", "total", round3(median(totals)), "s", note+"; UpdateApp call to first 200 of the new tag")
	record(b, "update", "other daemons restarted", float64(restarted), "projects", fmt.Sprintf("of %d others, by (wsgi:NAME) pids; must be 0", len(others)))
	record(b, "update", "own daemon restarted", float64(ownRestarts), "updates", fmt.Sprintf("of %d (by touching its wsgi.py)", *benchRuns))
	record(b, "update", "graceful restarts", float64(e.gracefuls()-graceful0), "restarts", "AH00493 in Apache's error.log; should be 0")
	if restarted != 0 {
		b.Errorf("an update restarted the daemons of %d other projects", restarted)
	}
	saveFigures(b)
}

// benchGitApp makes a git repository of an app "name" whose view answers
// "NAME version TAG", tagged v1 and v2. It returns the repository path.
func benchGitApp(name string) (string, error) {
	dir := filepath.Join(root, "git", "bench"+strconv.FormatInt(time.Now().UnixNano(), 36), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	git := func(args ...string) error {
		cmd := exec.Command("git", append([]string{"-c", "user.name=b", "-c", "user.email=b@example.com"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %v: %w: %s", args, err, out)
		}
		return nil
	}
	files := map[string]string{
		"__init__.py": "",
		"urls.py":     "from django.urls import path\n\nfrom . import views\n\nurlpatterns = [path(\"\", views.index)]\n",
	}
	if err := git("init", "-q", "-b", "main"); err != nil {
		return "", err
	}
	for _, tag := range []string{"v1", "v2"} {
		files["views.py"] = fmt.Sprintf("from django.http import HttpResponse\n\n\ndef index(request):\n    return HttpResponse(%q)\n", name+" version "+tag)
		for f, text := range files {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(text), 0o644); err != nil {
				return "", err
			}
		}
		for _, args := range [][]string{{"add", "-A"}, {"commit", "-q", "-m", tag}, {"tag", tag}} {
			if err := git(args...); err != nil {
				return "", err
			}
		}
	}
	return dir, nil
}

// BenchmarkBurst: 20 projects created at once: the wall time until all
// answer, the graceful restarts the front performed, how many of the
// projects already serving had their Python restarted, and the CPU the
// stack spent.
func BenchmarkBurst(b *testing.B) {
	e := benchHost(b)
	ctx, cancel := benchCtx()
	defer cancel()
	const n = 20
	// Apache must be up before, or starting it would be counted.
	warm := benchName()
	e.track(b, warm)
	app, err := e.helloApp(ctx)
	if err == nil {
		_, err = e.create(ctx, warm, app)
	}
	if err != nil {
		b.Fatal(err)
	}
	// Projects already serving: the burst must restart none of their
	// Python (by the pids of their (wsgi:NAME) daemons).
	others := append(e.fleet(b, 3), warm)
	daemons := map[string][]int{}
	for _, o := range others {
		if daemons[o] = wsgiPids(o); len(daemons[o]) == 0 {
			b.Fatalf("no (wsgi:%s) daemon", o)
		}
	}
	g0, cpu0 := e.gracefuls(), e.stackCPU(b)
	b.ResetTimer()
	start := time.Now()
	names := e.fleet(b, n)
	wall := time.Since(start).Seconds()
	b.StopTimer()
	g1, cpu1 := e.gracefuls(), e.stackCPU(b)
	restarted := 0
	for o, before := range daemons {
		if !slices.Equal(wsgiPids(o), before) {
			restarted++
		}
	}
	record(b, "burst", "wall time to all answering", round3(wall), "s", fmt.Sprintf("%d creates at once (upload, create, wait, GET /hello/ until 200)", n))
	record(b, "burst", "graceful restarts", float64(g1-g0), "restarts", "AH00493 lines in Apache's error.log")
	record(b, "burst", "other daemons restarted", float64(restarted), "projects", fmt.Sprintf("of %d projects serving before the burst, by (wsgi:NAME) pids; must be 0", len(others)))
	var cpu [4]float64
	for i := range cpu {
		cpu[i] = cpu1[i] - cpu0[i]
	}
	all := cpu[0] + cpu[1] + cpu[2] + cpu[3]
	record(b, "burst", "CPU", round3(all), "CPU-s", "utime+stime from /proc of privd, opusd, the front, the backends and all their descendants, live or reaped")
	record(b, "burst", "CPU per project", round3(all/n), "CPU-s", "")
	record(b, "burst", "wall / (CPU / cores)", round3(wall/(all/float64(runtime.NumCPU()))), "x",
		fmt.Sprintf("%d cores; near 1 when the stack keeps every core busy, higher when it waits", runtime.NumCPU()))
	record(b, "burst", "CPU privd tree", round3(cpu[0]), "CPU-s", "privd and its children: manage.py (Python), useradd, apache2 -t / -k graceful")
	record(b, "burst", "CPU opusd tree", round3(cpu[1]), "CPU-s", "")
	record(b, "burst", "CPU front Apache tree", round3(cpu[2]), "CPU-s", "master and workers (no Python)")
	record(b, "burst", "CPU backends", round3(cpu[3]), "CPU-s", "every backend's master, workers and mod_wsgi daemon (importing Django)")
	d := e.destroyAll(b, append(names, others...))
	record(b, "burst", "destroy all at once", round3(d.Seconds()), "s", fmt.Sprintf("%d projects", n+len(others)))
	saveFigures(b)
}

// latencyProbe requests one project's page in a loop and keeps each
// request's latency, tagged with the phase it started in.
type latencyProbe struct {
	mu     sync.Mutex
	phase  string
	lat    map[string][]float64
	fails  map[string]int
	stop   chan struct{}
	doneWG sync.WaitGroup
}

func (e *benchEnv) startProbe(name string) *latencyProbe {
	p := &latencyProbe{phase: "idle", lat: map[string][]float64{}, fails: map[string]int{}, stop: make(chan struct{})}
	p.doneWG.Add(1)
	go func() {
		defer p.doneWG.Done()
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			p.mu.Lock()
			phase := p.phase
			p.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			start := time.Now()
			code, body, err := e.fetch(ctx, name, "/hello/")
			d := time.Since(start).Seconds()
			cancel()
			p.mu.Lock()
			p.lat[phase] = append(p.lat[phase], d)
			if err != nil || code != 200 || !strings.Contains(body, "Hello from Opus") {
				p.fails[phase]++
			}
			p.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return p
}

func (p *latencyProbe) set(phase string) {
	p.mu.Lock()
	p.phase = phase
	p.mu.Unlock()
}

func (p *latencyProbe) end() {
	close(p.stop)
	p.doneWG.Wait()
}

// BenchmarkDisturbance: with -bench.disturb other projects deployed and
// warm, the worst latency a probe on one of them sees while another
// project is created, updated (git tag) and destroyed.
func BenchmarkDisturbance(b *testing.B) {
	e := benchHost(b)
	ctx, cancel := benchCtx()
	defer cancel()
	shop, err := benchGitApp("shop")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(filepath.Dir(shop))
	others := e.fleet(b, *benchN)
	// Warm every daemon (the fleet's GETs did), then settle.
	time.Sleep(time.Second)
	e.recordBackendMemory(b, others)
	daemons := map[string][]int{}
	for _, o := range others {
		daemons[o] = wsgiPids(o)
	}
	p := e.startProbe(others[0])
	time.Sleep(3 * time.Second)
	name := benchName()
	e.track(b, name)
	b.ResetTimer()
	p.set("create")
	app, err := e.helloApp(ctx)
	if err == nil {
		_, err = e.create(ctx, name, app, &opusv1.AppSpec{Name: "shop", Source: client.GitSource(shop, "v1")})
	}
	if err != nil {
		p.end()
		e.h.dumpLogsB(b)
		b.Fatal(err)
	}
	_ = e.until200(ctx, name, "/shop/", "shop version v1")
	time.Sleep(time.Second)
	p.set("update")
	op, err := e.c.UpdateApp(ctx, name, "shop", client.GitSource(shop, "v2"))
	if err == nil {
		_, err = e.c.Wait(ctx, op.GetId(), nil)
	}
	if err != nil {
		p.end()
		b.Fatal(err)
	}
	_ = e.until200(ctx, name, "/shop/", "shop version v2")
	time.Sleep(time.Second)
	p.set("hosts")
	op, err = e.c.UpdateSettings(ctx, name, map[string]string{"hosts": "www." + name + ".example.org"}, nil)
	if err == nil {
		_, err = e.c.Wait(ctx, op.GetId(), nil)
	}
	if err != nil {
		p.end()
		b.Fatal(err)
	}
	time.Sleep(time.Second)
	p.set("destroy")
	if err := e.destroy(name); err != nil {
		p.end()
		b.Fatal(err)
	}
	time.Sleep(time.Second)
	p.end()
	b.StopTimer()
	for _, ph := range []string{"idle", "create", "update", "hosts", "destroy"} {
		l := p.lat[ph]
		note := fmt.Sprintf("%d requests, %d not 200", len(l), p.fails[ph])
		record(b, "disturbance", ph+" worst", round3(quantile(l, 1)*1000), "ms", note)
		record(b, "disturbance", ph+" median", round3(median(l)*1000), "ms", "")
	}
	restarted := 0
	for o, before := range daemons {
		if !slices.Equal(wsgiPids(o), before) {
			restarted++
		}
	}
	record(b, "disturbance", "other daemons restarted", float64(restarted), "projects", fmt.Sprintf("of %d others, by (wsgi:NAME) pids, over create, update, hosts and destroy; must be 0", len(others)))
	record(b, "disturbance", "other projects", float64(len(others)), "projects", "deployed and warm; the probe is on one of them")
	e.destroyAll(b, others)
	saveFigures(b)
}

// recordBackendMemory records what each project's backend adds beyond its
// mod_wsgi daemon (its Apache master and workers, PSS) and the host's
// memory in use with the fleet deployed.
func (e *benchEnv) recordBackendMemory(b *testing.B, projects []string) {
	var per []float64
	for _, p := range projects {
		conf := []byte(filepath.Join(e.h.cfg.ApacheDir, "backends", p) + "/")
		kib := 0.0
		// A mod_wsgi daemon rewrites its argv to (wsgi:NAME) in place:
		// the rest of the master's command line stays behind it.
		for _, pid := range pidsWhere(func(cmd []byte) bool {
			return bytes.Contains(cmd, conf) && !bytes.HasPrefix(cmd, []byte("(wsgi:"))
		}) {
			kib += pssKiB(pid)
		}
		per = append(per, kib/1024)
	}
	record(b, "memory", "backend beyond its daemon, median", round3(median(per)), "MiB", fmt.Sprintf("PSS of each backend's Apache master and workers, over %d projects; target ≤ 15", len(per)))
	record(b, "memory", "backend beyond its daemon, max", round3(quantile(per, 1)), "MiB", "")
	record(b, "memory", "host in use", round3(hostUsedMiB()), "MiB", fmt.Sprintf("MemTotal - MemAvailable with %d projects deployed and warm", len(projects)))
}

// pssKiB is a process's proportional set size.
func pssKiB(pid int) float64 { return kibField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss") }

// hostUsedMiB is MemTotal - MemAvailable.
func hostUsedMiB() float64 {
	return (kibField("/proc/meminfo", "MemTotal") - kibField("/proc/meminfo", "MemAvailable")) / 1024
}

// kibField reads the "Key:   N kB" line key of a /proc file, in KiB.
func kibField(path, key string) float64 {
	b, _ := os.ReadFile(path)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.ParseFloat(f[0], 64)
				return n
			}
		}
	}
	return 0
}

// ---- API at scale, against a stub privd ----

// stubPrivd answers every privd call with success at once: only opusd's
// own work (store, rendering, certificates, API) is left to measure.
type stubPrivd struct {
	privdv1.UnimplementedPrivdServer
	mu  sync.Mutex
	uid uint32
}

func (s *stubPrivd) EnsureUser(_ context.Context, req *privdv1.EnsureUserRequest) (*privdv1.EnsureUserResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uid++
	return &privdv1.EnsureUserResponse{User: projUser(req.GetProject()), Uid: 70000 + s.uid, Gid: 70000 + s.uid, Created: true}, nil
}
func (s *stubPrivd) DeleteUser(context.Context, *privdv1.DeleteUserRequest) (*privdv1.DeleteUserResponse, error) {
	return &privdv1.DeleteUserResponse{Deleted: true}, nil
}
func (s *stubPrivd) SecureTree(context.Context, *privdv1.SecureTreeRequest) (*privdv1.SecureTreeResponse, error) {
	return &privdv1.SecureTreeResponse{}, nil
}
func (s *stubPrivd) RemoveTree(context.Context, *privdv1.RemoveTreeRequest) (*privdv1.RemoveTreeResponse, error) {
	return &privdv1.RemoveTreeResponse{}, nil
}
func (s *stubPrivd) RunManage(context.Context, *privdv1.RunManageRequest) (*privdv1.RunManageResponse, error) {
	return &privdv1.RunManageResponse{Output: "stub\n"}, nil
}
func (s *stubPrivd) EnsureBackend(context.Context, *privdv1.EnsureBackendRequest) (*privdv1.EnsureBackendResponse, error) {
	return &privdv1.EnsureBackendResponse{MasterPid: 1, Started: true}, nil
}
func (s *stubPrivd) RemoveBackend(context.Context, *privdv1.RemoveBackendRequest) (*privdv1.RemoveBackendResponse, error) {
	return &privdv1.RemoveBackendResponse{Removed: true}, nil
}
func (s *stubPrivd) InstallSite(context.Context, *privdv1.InstallSiteRequest) (*privdv1.InstallSiteResponse, error) {
	return &privdv1.InstallSiteResponse{Changed: true}, nil
}
func (s *stubPrivd) RemoveSite(context.Context, *privdv1.RemoveSiteRequest) (*privdv1.RemoveSiteResponse, error) {
	return &privdv1.RemoveSiteResponse{Removed: true}, nil
}
func (s *stubPrivd) ReloadApache(context.Context, *privdv1.ReloadApacheRequest) (*privdv1.ReloadApacheResponse, error) {
	return &privdv1.ReloadApacheResponse{MasterPid: 1}, nil
}
func (s *stubPrivd) TailLog(context.Context, *privdv1.TailLogRequest) (*privdv1.TailLogResponse, error) {
	return &privdv1.TailLogResponse{}, nil
}

// settledRSS waits until opusd's resident memory stops shrinking (the Go
// runtime returns freed memory to the kernel over seconds), at most 15 s,
// and returns VmRSS, RssAnon and RssFile in KiB.
func settledRSS(pid int) (rss, anon, file float64) {
	last := rssKiB(pid, "VmRSS")
	for range 15 {
		time.Sleep(time.Second)
		now := rssKiB(pid, "VmRSS")
		if now > last*0.98 {
			break
		}
		last = now
	}
	return rssKiB(pid, "VmRSS"), rssKiB(pid, "RssAnon"), rssKiB(pid, "RssFile")
}

// rssKiB reads a field of /proc/PID/status in KiB: VmRSS (all resident
// memory), RssAnon (heap and stacks) or RssFile (mapped files: the bbolt
// store and the binary).
func rssKiB(pid int, field string) float64 {
	return kibField(fmt.Sprintf("/proc/%d/status", pid), field)
}

// BenchmarkAPI: -bench.api projects in the store of a second opusd whose
// privd is a stub answering success at once (host work is NOT done for
// this figure): GetProject and ListProjects latency through the Go client
// over the Unix socket, opusd's RSS at 0 and at N projects (before and
// after those reads); and the round trip of a cheap call to the real
// privd.
func BenchmarkAPI(b *testing.B) {
	e := benchHost(b)
	dir := filepath.Join(root, "api")
	os.RemoveAll(dir)
	b.Cleanup(func() { os.RemoveAll(dir) })
	runDir, baseDir := filepath.Join(dir, "run"), filepath.Join(dir, "base")
	for _, d := range []string{dir, runDir, baseDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.Chown(runDir, 0, int(e.h.opusGID)); err != nil {
		b.Fatal(err)
	}
	os.Chmod(runDir, 0o775)
	if err := os.Chown(baseDir, int(e.h.opusUID), int(e.h.opusGID)); err != nil {
		b.Fatal(err)
	}
	// The health check's HTTP answer.
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(web)
	defer srv.Close()
	httpsPort, _ := freePort()
	cfg := e.h.cfg
	cfg.BaseDir, cfg.RunDir = baseDir, runDir
	cfg.HTTPPort, cfg.HTTPSPort = web.Addr().(*net.TCPAddr).Port, httpsPort
	conf := fmt.Sprintf("base_dir %s\nrun_dir %s\nopus_user %s\nadmin_group %s\nserver_suffix %s\napache_mode %s\napache_dir %s\nhttp_port %d\nhttps_port %d\npython %s\n",
		cfg.BaseDir, cfg.RunDir, cfg.OpusUser, cfg.AdminGroup, cfg.ServerSuffix, cfg.ApacheMode, filepath.Join(dir, "apache"), cfg.HTTPPort, cfg.HTTPSPort, cfg.Python)
	confPath := filepath.Join(dir, "opus.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	// The stub privd listens as root (this process), as opusd demands.
	lis, err := net.Listen("unix", cfg.PrivdSocket())
	if err != nil {
		b.Fatal(err)
	}
	os.Chmod(cfg.PrivdSocket(), 0o666)
	gs := grpc.NewServer(grpc.Creds(peercred.Server()))
	privdv1.RegisterPrivdServer(gs, &stubPrivd{})
	go gs.Serve(lis)
	defer gs.Stop()

	opusd := exec.Command(filepath.Join(e.h.bin, "opusd"), "--config", confPath, "--log-level", "warn")
	logf, err := os.Create(filepath.Join(dir, "opusd.log"))
	if err != nil {
		b.Fatal(err)
	}
	opusd.Stdout, opusd.Stderr = logf, logf
	opusd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: e.h.opusUID, Gid: e.h.opusGID, Groups: []uint32{}}}
	if err := opusd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { opusd.Process.Kill() }()
	if err := waitSocket(cfg.OpusdSocket(), opusd); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := benchCtx()
	defer cancel()
	c, err := client.Dial(ctx, cfg.OpusdSocket())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ListProjects(ctx); err != nil {
		b.Fatal(err)
	}
	rss0, anon0, file0 := settledRSS(opusd.Process.Pid)

	// N projects through the API, 16 at a time.
	n := *benchAPIN
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("api%05d", i)
	}
	start := time.Now()
	if err := createAll(ctx, c, names, 16); err != nil {
		data, _ := os.ReadFile(filepath.Join(dir, "opusd.log"))
		b.Fatalf("%v\n%s", err, data[max(0, len(data)-3000):])
	}
	createWall := time.Since(start).Seconds()
	rssN, anonN, fileN := settledRSS(opusd.Process.Pid)

	b.ResetTimer()
	get, list, err := readLatencies(ctx, c, names, 2000, 200)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	// Again after the reads: what serving them keeps (opusd's decode
	// cache of project records) counts too.
	rssR, anonR, fileR := settledRSS(opusd.Process.Pid)
	rtt, err := e.privdRTT()
	if err != nil {
		b.Fatal(err)
	}
	stub := fmt.Sprintf("%d projects; privd stubbed (no host work)", n)
	record(b, "api", "create through the API", round3(createWall), "s", stub+", 16 clients at once")
	record(b, "api", "GetProject p50", round3(quantile(get, 0.5)*1e6), "µs", stub)
	record(b, "api", "GetProject p99", round3(quantile(get, 0.99)*1e6), "µs", "")
	record(b, "api", "ListProjects p50", round3(quantile(list, 0.5)*1e3), "ms", fmt.Sprintf("all %d projects in one answer", n))
	record(b, "api", "ListProjects p99", round3(quantile(list, 0.99)*1e3), "ms", "")
	record(b, "api", "opusd RSS at 0 projects", round3(rss0/1024), "MiB", fmt.Sprintf("VmRSS once settled: %.1f anonymous + %.1f file-backed", anon0/1024, file0/1024))
	record(b, "api", fmt.Sprintf("opusd RSS at %d projects", n), round3(rssN/1024), "MiB", fmt.Sprintf("VmRSS once settled: %.1f anonymous + %.1f file-backed", anonN/1024, fileN/1024))
	record(b, "api", fmt.Sprintf("opusd RSS at %d projects, after the reads", n), round3(rssR/1024), "MiB", fmt.Sprintf("VmRSS once settled: %.1f anonymous + %.1f file-backed", anonR/1024, fileR/1024))
	record(b, "api", "privd round trip p50", round3(quantile(rtt, 0.5)*1e6), "µs", "TailLog on the real opus-privd, as the opus user")
	record(b, "api", "privd round trip p99", round3(quantile(rtt, 0.99)*1e6), "µs", "")
	saveFigures(b)
}

// createAll creates the projects names (no apps) through c, clients at
// a time, each call followed by a wait for its operation to end; the
// first error, if any, names its project.
func createAll(ctx context.Context, c *client.Client, names []string, clients int) error {
	work := make(chan string)
	errs := make(chan error, len(names))
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				op, err := c.CreateProject(ctx, &opusv1.CreateProjectRequest{Name: name})
				if err == nil {
					_, err = c.Wait(ctx, op.GetId(), nil)
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
				}
			}
		}()
	}
	for _, name := range names {
		work <- name
	}
	close(work)
	wg.Wait()
	close(errs)
	return <-errs
}

// readLatencies times gets GetProject calls over names and lists
// ListProjects calls, each of which must answer every one of names; in
// seconds. BenchmarkAPI makes 2,000 and 200 (so p99 is not simply the
// worst of a few).
func readLatencies(ctx context.Context, c *client.Client, names []string, gets, lists int) (get, list []float64, err error) {
	n := len(names)
	for i := range gets {
		t := time.Now()
		if _, err := c.GetProject(ctx, names[(i*7919)%n]); err != nil {
			return nil, nil, err
		}
		get = append(get, time.Since(t).Seconds())
	}
	for range lists {
		t := time.Now()
		ps, err := c.ListProjects(ctx)
		if err != nil {
			return nil, nil, err
		}
		if len(ps) != n {
			return nil, nil, fmt.Errorf("ListProjects: %d projects, want %d", len(ps), n)
		}
		list = append(list, time.Since(t).Seconds())
	}
	return get, list, nil
}

// privdRTT times calls to the real privd from a helper process running as
// the opus user.
func (e *benchEnv) privdRTT() ([]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// go test builds the binary where only root may enter: run a copy.
	bin := filepath.Join(e.h.bin, "e2e-bench-helper")
	data, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.WriteFile(bin, data, 0o755)
	}
	if err != nil {
		return nil, fmt.Errorf("copy test binary: %w", err)
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = []string{rttEnv + "=" + e.h.cfg.PrivdSocket()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: e.h.opusUID, Gid: e.h.opusGID, Groups: []uint32{}}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("privd round trips: %w: %s", err, stderr.Bytes())
	}
	var d []float64
	if err := json.Unmarshal(out, &d); err != nil {
		return nil, fmt.Errorf("privd round trips: %w: %s", err, out)
	}
	return d, nil
}

// privdRoundTrips is the helper: 500 TailLog calls on one connection
// after a warm-up, their durations in seconds as JSON on stdout.
func privdRoundTrips(sock string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(peercred.ClientExpecting(0)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer conn.Close()
	pc := privdv1.NewPrivdClient(conn)
	var d []float64
	for i := range 550 {
		t := time.Now()
		if _, err := pc.TailLog(ctx, &privdv1.TailLogRequest{Project: "enosuch", Lines: 1}); err != nil {
			fmt.Fprintln(os.Stderr, "TailLog:", err)
			return 1
		}
		if i >= 50 {
			d = append(d, time.Since(t).Seconds())
		}
	}
	json.NewEncoder(os.Stdout).Encode(d)
	return 0
}
