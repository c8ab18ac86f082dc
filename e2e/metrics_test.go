package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetrics scrapes opusd's metrics (metrics_listen in the host's
// opus.conf) over HTTP, as Prometheus does, around a deploy: the CREATE
// that succeeded is counted, the project is READY with its certificate's
// expiry ahead, its steps are timed, privd's calls are counted by method
// and code and a call refused by privd (made here, as another user) is
// counted by method, with nothing changed on the host. privd listens on no
// network port; an opusd without metrics_listen (the default) on none.
func TestMetrics(t *testing.T) {
	h := needHost(t)
	url := "http://" + h.cfg.MetricsListen + "/metrics"
	before := scrapeMetrics(t, url)

	name := h.newProject(t)
	h.mustCtl(t, h.otherID, "create", name, "--empty")
	after := scrapeMetrics(t, url)

	ops := func(m metricFamilies, result string) float64 {
		return m.value(t, "opus_operations_total", map[string]string{"kind": "CREATE", "result": result})
	}
	if d := ops(after, "SUCCEEDED") - ops(before, "SUCCEEDED"); d != 1 {
		t.Errorf("opus_operations_total{kind=CREATE,result=SUCCEEDED} grew by %v over one create; want 1", d)
	}
	if d := ops(after, "FAILED") - ops(before, "FAILED"); d != 0 {
		t.Errorf("opus_operations_total{kind=CREATE,result=FAILED} grew by %v", d)
	}
	if ready := after.value(t, "opus_projects", map[string]string{"phase": "READY"}); ready < 1 {
		t.Errorf("opus_projects{phase=READY} = %v after a deploy", ready)
	}
	exp := time.Unix(int64(after.value(t, "opus_certificate_expiry_timestamp_seconds", map[string]string{"project": name, "kind": "self-signed"})), 0)
	if now := time.Now(); !exp.After(now.Add(300*24*time.Hour)) || exp.After(now.Add(400*24*time.Hour)) {
		t.Errorf("certificate of %s expires %s; want about a year from now", name, exp)
	}
	// At least one each: a step may also run for another project at the
	// same time (a teardown left by an earlier test, a repair).
	for _, step := range []string{"user", "migrate", "certificate", "health"} {
		c := func(m metricFamilies) uint64 {
			for _, s := range m.series("opus_operation_step_seconds", map[string]string{"step": step}) {
				return s.GetHistogram().GetSampleCount()
			}
			return 0
		}
		if d := c(after) - c(before); d < 1 {
			t.Errorf("opus_operation_step_seconds{step=%q} counted no step over a create", step)
		}
	}
	if q := after.value(t, "opus_reconcile_queue_depth", nil); q < 0 {
		t.Errorf("opus_reconcile_queue_depth = %v", q)
	}
	if up := after.value(t, "opus_privd_up", nil); up != 1 {
		t.Errorf("opus_privd_up = %v", up)
	}
	ensure := func(m metricFamilies) float64 {
		return m.value(t, "opus_privd_calls_total", map[string]string{"method": "EnsureUser", "code": "OK"})
	}
	if ensure(after) < 1 || ensure(after) <= ensure(before) {
		t.Errorf("opus_privd_calls_total{method=EnsureUser,code=OK}: %v before the create, %v after", ensure(before), ensure(after))
	}

	// A call privd refuses: another user's, on a socket opened to all.
	sock := openPrivdToAll(t, h)
	state := hostState(t)
	refused := name + "x"
	if ans := asUID(t, h.otherID, h.otherGID, privdCall{Socket: sock, Method: "EnsureUser", Project: refused}); ans.Code != "PermissionDenied" {
		t.Fatalf("EnsureUser as uid %d: %s %s, want PermissionDenied", h.otherID, ans.Code, ans.Message)
	}
	if hostState(t) != state || exists(filepath.Join(h.cfg.BaseDir, "projects", refused)) {
		t.Errorf("the host changed after a refused call")
	}
	refusals := func(m metricFamilies) float64 {
		return m.value(t, "opus_privd_refusals_total", map[string]string{"method": "EnsureUser"})
	}
	last := scrapeMetrics(t, url)
	if d := refusals(last) - refusals(after); d != 1 {
		t.Errorf("opus_privd_refusals_total{method=EnsureUser} grew by %v over one refused call; want 1", d)
	}
	if d := ensure(last) - ensure(after); d != 0 {
		t.Errorf("the refused call counted as a call served (+%v)", d)
	}

	// Where the daemons listen: opusd on the metrics address and the
	// console, privd on no network port.
	metricsPort := portOf(t, h.cfg.MetricsListen)
	if l := tcpListeners(t, h.opusd.Process.Pid); !slices.Contains(l, metricsPort) || !slices.Contains(l, portOf(t, h.webAddr)) || len(l) != 2 {
		t.Errorf("opusd listens on TCP ports %v; want the metrics' %d and the console's", l, metricsPort)
	}
	if l := tcpListeners(t, h.privd.Process.Pid); len(l) != 0 {
		t.Errorf("opus-privd listens on TCP ports %v; want none", l)
	}

	t.Run("off by default", func(t *testing.T) { metricsOffByDefault(t, h) })
}

// metricsOffByDefault starts a second opusd, of its own state and socket,
// on a configuration without metrics_listen: it serves its socket and
// listens on no TCP port.
func metricsOffByDefault(t *testing.T, h *host) {
	dir := filepath.Join(root, "metrics-off-"+strconv.Itoa(os.Getpid()))
	cfg := h.cfg
	cfg.BaseDir, cfg.RunDir, cfg.MetricsListen = filepath.Join(dir, "base"), filepath.Join(dir, "run"), ""
	for _, d := range []string{dir, cfg.BaseDir, cfg.RunDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, int(h.opusUID), int(h.opusGID)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if strings.Contains(cfg.Format(), "metrics_listen 127") {
		t.Fatalf("the configuration still has metrics:\n%s", cfg.Format())
	}
	conf := filepath.Join(dir, "opus.conf")
	if err := os.WriteFile(conf, []byte(cfg.Format()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(h.bin, "opusd"), "--config", conf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: h.opusUID, Gid: h.opusGID, Groups: []uint32{}}}
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	if err := waitSocket(cfg.OpusdSocket(), cmd); err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	if l := tcpListeners(t, cmd.Process.Pid); len(l) != 0 {
		t.Errorf("opusd without metrics_listen listens on TCP ports %v; want none", l)
	}
}

// metricFamilies are one scrape, parsed.
type metricFamilies map[string]*dto.MetricFamily

// scrapeMetrics GETs url and parses Prometheus's text format.
func scrapeMetrics(t *testing.T, url string) metricFamilies {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET %s: %s %s\n%s", url, resp.Status, resp.Header.Get("Content-Type"), body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("%s does not parse as Prometheus's text format: %v\n%s", url, err, body)
	}
	return fams
}

// series are the metric's series whose labels include labels.
func (m metricFamilies) series(name string, labels map[string]string) []*dto.Metric {
	var out []*dto.Metric
	for _, s := range m[name].GetMetric() {
		n := 0
		for _, l := range s.GetLabel() {
			if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
				n++
			}
		}
		if n == len(labels) {
			out = append(out, s)
		}
	}
	return out
}

// value is the value of the one series of a counter or gauge with
// labels, 0 for a counter that has none yet.
func (m metricFamilies) value(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	ss := m.series(name, labels)
	switch {
	case len(ss) == 0 && m[name].GetType() == dto.MetricType_COUNTER:
		return 0
	case len(ss) != 1:
		t.Fatalf("%s%v: %d series, want 1", name, labels, len(ss))
	}
	if c := ss[0].GetCounter(); c != nil {
		return c.GetValue()
	}
	return ss[0].GetGauge().GetValue()
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// tcpListeners are the TCP ports process pid listens on: its sockets
// (/proc/PID/fd) that the kernel's TCP tables list in state LISTEN.
func tcpListeners(t *testing.T, pid int) []int {
	t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			f := strings.Fields(sc.Text())
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			p, err := strconv.ParseUint(hexPort, 16, 16)
			if err != nil {
				t.Fatalf("%s: local address %q", table, f[1])
			}
			ports = append(ports, int(p))
		}
		f.Close()
	}
	return ports
}
