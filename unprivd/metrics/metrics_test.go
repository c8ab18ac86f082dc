package metrics

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

var quiet = slog.New(slog.DiscardHandler)

// openStore is a real store holding projects.
func openStore(t *testing.T, projects ...*store.Project) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "opusd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	err = st.Update(context.Background(), func(tx *store.Tx) error {
		for _, p := range projects {
			if err := tx.CreateProject(p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func project(name string, phase store.Phase, certKind string, notAfter time.Time) *store.Project {
	return &store.Project{Name: name, Status: store.Status{Phase: phase,
		Certificate: store.CertificateStatus{Kind: certKind, NotAfter: notAfter}}}
}

// failing marks p's certificate as failing to renew since since.
func failing(p *store.Project, msg string, since time.Time) *store.Project {
	p.Status.Certificate.Error, p.Status.Certificate.ErrorSince = msg, since
	return p
}

// TestProjectsCollector: projects are counted by phase, every phase
// present (0 included); each installed certificate's expiry is its
// project's; a project with none has no expiry; a failing renewal
// says since when.
func TestProjectsCollector(t *testing.T) {
	exp := time.Date(2027, 12, 5, 9, 0, 0, 0, time.UTC) // 1827997200
	st := openStore(t,
		project("blog", store.PhaseReady, "self-signed", exp),
		project("shop", store.PhaseReady, "owner", exp.Add(time.Hour)),
		project("wiki", store.PhaseFailed, "", time.Time{}),
		project("news", store.PhaseDeploying, "", time.Time{}),
		failing(project("acme", store.PhaseReady, "acme", exp.Add(2*time.Hour)), "the CA is unreachable", exp.Add(-24*time.Hour)),
	)
	const want = `
# HELP opus_projects Projects by phase.
# TYPE opus_projects gauge
opus_projects{phase="DELETING"} 0
opus_projects{phase="DEPLOYING"} 1
opus_projects{phase="FAILED"} 1
opus_projects{phase="PENDING"} 0
opus_projects{phase="READY"} 3
# HELP opus_certificate_expiry_timestamp_seconds When each project's installed TLS certificate expires (Unix time), by project and kind (self-signed, owner).
# TYPE opus_certificate_expiry_timestamp_seconds gauge
opus_certificate_expiry_timestamp_seconds{kind="self-signed",project="blog"} 1.8279972e+09
opus_certificate_expiry_timestamp_seconds{kind="owner",project="shop"} 1.8280008e+09
opus_certificate_expiry_timestamp_seconds{kind="acme",project="acme"} 1.8280044e+09
# HELP opus_certificate_renewal_failing_since_timestamp_seconds Since when (Unix time) each project's certificate has failed to come from the ACME CA (the installed one keeps serving); no series while renewals succeed.
# TYPE opus_certificate_renewal_failing_since_timestamp_seconds gauge
opus_certificate_renewal_failing_since_timestamp_seconds{project="acme"} 1.8279108e+09
`
	if err := testutil.CollectAndCompare(projectsCollector{st: st}, strings.NewReader(want)); err != nil {
		t.Error(err)
	}

	// An empty host: every phase at 0, no certificate.
	const empty = `
# HELP opus_projects Projects by phase.
# TYPE opus_projects gauge
opus_projects{phase="DELETING"} 0
opus_projects{phase="DEPLOYING"} 0
opus_projects{phase="FAILED"} 0
opus_projects{phase="PENDING"} 0
opus_projects{phase="READY"} 0
`
	if err := testutil.CollectAndCompare(projectsCollector{st: openStore(t)}, strings.NewReader(empty)); err != nil {
		t.Error(err)
	}
}

// fakePrivd answers Stats.
type fakePrivd struct {
	privdv1.PrivdClient
	resp *privdv1.StatsResponse
	err  error
}

func (f fakePrivd) Stats(context.Context, *privdv1.StatsRequest, ...grpc.CallOption) (*privdv1.StatsResponse, error) {
	return f.resp, f.err
}

// TestPrivdCollector: privd's counters become counters by method and code
// and refusals by method, with opus_privd_up 1; names that are not
// privd's methods or gRPC's codes are dropped (labels stay a fixed set,
// whatever privd says), duplicates add up; when privd does not answer,
// only opus_privd_up, at 0.
func TestPrivdCollector(t *testing.T) {
	c := privdCollector{privd: fakePrivd{resp: &privdv1.StatsResponse{
		Calls: []*privdv1.CallCount{
			{Method: "EnsureUser", Code: "OK", Count: 3},
			{Method: "EnsureUser", Code: "InvalidArgument", Count: 1},
			{Method: "DumpData", Code: "NotFound", Count: 2},
			{Method: "DumpData", Code: "NotFound", Count: 1},
			{Method: "Exec /bin/sh", Code: "OK", Count: 9},
			{Method: "TailLog", Code: "Code(99)", Count: 9},
		},
		Refusals: []*privdv1.RefusalCount{
			{Method: "EnsureUser", Count: 2},
			{Method: "Stats", Count: 0},
			{Method: "other", Count: 5},
			{Method: "/evil.Service/M", Count: 7},
		},
	}}}
	const want = `
# HELP opus_privd_up 1 when opus-privd answered this scrape's request for its counters, else 0.
# TYPE opus_privd_up gauge
opus_privd_up 1
# HELP opus_privd_calls_total Calls opus-privd served (past its peer check and allowlist) since it started, by method and gRPC status code.
# TYPE opus_privd_calls_total counter
opus_privd_calls_total{code="OK",method="EnsureUser"} 3
opus_privd_calls_total{code="InvalidArgument",method="EnsureUser"} 1
opus_privd_calls_total{code="NotFound",method="DumpData"} 3
# HELP opus_privd_refusals_total Calls opus-privd refused before any handler since it started (a caller other than opusd, a method it does not serve: method "other"), by method.
# TYPE opus_privd_refusals_total counter
opus_privd_refusals_total{method="EnsureUser"} 2
opus_privd_refusals_total{method="Stats"} 0
opus_privd_refusals_total{method="other"} 5
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}

	down := privdCollector{privd: fakePrivd{err: status.Error(codes.Unavailable, "connection refused")}}
	const wantDown = `
# HELP opus_privd_up 1 when opus-privd answered this scrape's request for its counters, else 0.
# TYPE opus_privd_up gauge
opus_privd_up 0
`
	if err := testutil.CollectAndCompare(down, strings.NewReader(wantDown)); err != nil {
		t.Error(err)
	}
}

// TestObserved: the reconciler's reports become opus_operations_total
// (every kind and result there from the start, at 0) and the step
// histogram; the queue gauges read the reconciler's queue at scrape.
func TestObserved(t *testing.T) {
	waiting, running := 3, 1
	m := New(Config{Logger: quiet, Queue: func() (int, int) { return waiting, running }})
	if n := testutil.CollectAndCount(m.operations); n != len(store.OpKinds)*2 {
		t.Errorf("%d operation series before any operation; want every kind and result", n)
	}
	m.OperationEnded(store.OpCreate, store.OpSucceeded)
	m.OperationEnded(store.OpCreate, store.OpSucceeded)
	m.OperationEnded(store.OpAddApp, store.OpFailed)
	if got := testutil.ToFloat64(m.operations.WithLabelValues("CREATE", "SUCCEEDED")); got != 2 {
		t.Errorf("CREATE SUCCEEDED = %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.operations.WithLabelValues("ADD_APP", "FAILED")); got != 1 {
		t.Errorf("ADD_APP FAILED = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.operations.WithLabelValues("CREATE", "FAILED")); got != 0 {
		t.Errorf("CREATE FAILED = %v, want 0", got)
	}

	m.StepEnded("migrate", 3*time.Second)
	m.StepEnded("migrate", 40*time.Millisecond)
	const wantSteps = `
# HELP opus_operation_step_seconds Time reconcile steps took to succeed or fail, by step.
# TYPE opus_operation_step_seconds histogram
opus_operation_step_seconds_bucket{step="migrate",le="0.005"} 0
opus_operation_step_seconds_bucket{step="migrate",le="0.025"} 0
opus_operation_step_seconds_bucket{step="migrate",le="0.1"} 1
opus_operation_step_seconds_bucket{step="migrate",le="0.25"} 1
opus_operation_step_seconds_bucket{step="migrate",le="0.5"} 1
opus_operation_step_seconds_bucket{step="migrate",le="1"} 1
opus_operation_step_seconds_bucket{step="migrate",le="2.5"} 1
opus_operation_step_seconds_bucket{step="migrate",le="5"} 2
opus_operation_step_seconds_bucket{step="migrate",le="10"} 2
opus_operation_step_seconds_bucket{step="migrate",le="30"} 2
opus_operation_step_seconds_bucket{step="migrate",le="60"} 2
opus_operation_step_seconds_bucket{step="migrate",le="120"} 2
opus_operation_step_seconds_bucket{step="migrate",le="300"} 2
opus_operation_step_seconds_bucket{step="migrate",le="+Inf"} 2
opus_operation_step_seconds_sum{step="migrate"} 3.04
opus_operation_step_seconds_count{step="migrate"} 2
`
	if err := testutil.CollectAndCompare(m.steps, strings.NewReader(wantSteps)); err != nil {
		t.Error(err)
	}

	const wantQueue = `
# HELP opus_reconcile_queue_depth Projects waiting for the reconciler.
# TYPE opus_reconcile_queue_depth gauge
opus_reconcile_queue_depth 3
# HELP opus_reconcile_running Projects the reconciler is working on.
# TYPE opus_reconcile_running gauge
opus_reconcile_running 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(wantQueue), "opus_reconcile_queue_depth", "opus_reconcile_running"); err != nil {
		t.Error(err)
	}
	waiting, running = 0, 0
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(strings.NewReplacer(" 3\n", " 0\n", " 1\n", " 0\n").Replace(wantQueue)),
		"opus_reconcile_queue_depth", "opus_reconcile_running"); err != nil {
		t.Error(err)
	}
}

// TestHandler scrapes the handler as Prometheus does: the text format
// parses and holds opusd's metrics; only GET and HEAD of /metrics are
// served; a store that fails costs its own metrics, not the scrape.
func TestHandler(t *testing.T) {
	st := openStore(t, project("blog", store.PhaseReady, "self-signed", time.Now().Add(time.Hour)))
	m := New(Config{Store: st, Privd: fakePrivd{resp: &privdv1.StatsResponse{}}, Logger: quiet, Queue: func() (int, int) { return 0, 0 }})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	fams := scrape(t, srv.URL+Path)
	for _, name := range []string{"opus_operations_total", "opus_reconcile_queue_depth", "opus_projects",
		"opus_certificate_expiry_timestamp_seconds", "opus_privd_up", "go_goroutines", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s in the scrape", name)
		}
	}
	for _, c := range []struct{ method, path string }{{"POST", Path}, {"GET", "/"}, {"GET", "/debug/pprof/"}, {"PUT", Path}} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("%s %s: %s, want a refusal", c.method, c.path, resp.Status)
		}
	}

	st.Close() // reads fail from now on
	fams = scrape(t, srv.URL+Path)
	if fams["opus_projects"] != nil || fams["opus_operations_total"] == nil || fams["opus_privd_up"] == nil {
		t.Errorf("with a failing store: projects %v, operations %v, privd %v; want the others only",
			fams["opus_projects"] != nil, fams["opus_operations_total"] != nil, fams["opus_privd_up"] != nil)
	}
}

// scrape GETs url and parses Prometheus's text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("scrape does not parse: %v\n%s", err, body)
	}
	return parsed
}

// TestListen: the server binds the address and serves the metrics there;
// Close stops it and Serve returns nil.
func TestListen(t *testing.T) {
	m := New(Config{Logger: quiet})
	s, err := m.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	fams := scrape(t, "http://"+s.Addr().String()+Path)
	if fams["opus_operations_total"] == nil {
		t.Error("no opus_operations_total")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
	if _, err := http.Get("http://" + s.Addr().String() + Path); err == nil {
		t.Error("still serving after Close")
	}
}
