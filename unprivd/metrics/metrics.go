// Package metrics is opusd's metrics in Prometheus's text format: what the
// reconciler did (operations by kind and result, step times), its queue,
// the projects by phase and their certificates' expiry (read from the
// store at each scrape), and opus-privd's calls and refusals (asked of
// privd at each scrape: privd opens no network port). Everything is in a
// registry of its own, never the process-wide default one, and every label
// takes its values from a fixed set (kinds, results, steps, phases,
// privd's method and code names) except the project's name on the
// certificate metric, which opusd validated when the project was made.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Path is where the metrics are served.
const Path = "/metrics"

// Bounds of one scrape's reads: a slow store or privd costs that scrape
// these metrics (privd's also opus_privd_up 0), never a hung handler.
const (
	storeTimeout = 5 * time.Second
	privdTimeout = 3 * time.Second
)

// Config is what the metrics read.
type Config struct {
	// Store is opusd's state: projects by phase, certificates.
	Store *store.Store
	// Privd is asked for its counters at each scrape.
	Privd privdv1.PrivdClient
	// Queue reports the reconciler's projects waiting and being worked
	// on (reconcile.Reconciler.Queue).
	Queue func() (waiting, running int)
	// Logger receives the handler's errors (slog.Default() if nil).
	Logger *slog.Logger
}

// Metrics are opusd's metrics. It implements reconcile.Observer.
type Metrics struct {
	reg        *prometheus.Registry
	operations *prometheus.CounterVec
	steps      *prometheus.HistogramVec
	log        *slog.Logger
}

// Results of an operation (its final states).
var results = []store.OpState{store.OpSucceeded, store.OpFailed}

// stepBuckets span a step's times: milliseconds (a directory), seconds (a
// graceful restart), minutes (migrations, a backend's first answer).
var stepBuckets = []float64{0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// New makes the metrics and their registry.
func New(cfg Config) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "opus_operations_total",
			Help: "Operations that ended since opusd started, by kind (CREATE, ADD_APP, ...) and result (SUCCEEDED, FAILED).",
		}, []string{"kind", "result"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "opus_operation_step_seconds",
			Help:    "Time reconcile steps took to succeed or fail, by step.",
			Buckets: stepBuckets,
		}, []string{"step"}),
		log: cfg.Logger,
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	// Every kind and result from the start: a first failure is then a
	// change from 0, which rate() and increase() see.
	for _, k := range store.OpKinds {
		for _, r := range results {
			m.operations.WithLabelValues(string(k), string(r))
		}
	}
	m.reg.MustRegister(m.operations, m.steps,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.Queue != nil {
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "opus_reconcile_queue_depth",
				Help: "Projects waiting for the reconciler.",
			}, func() float64 { w, _ := cfg.Queue(); return float64(w) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "opus_reconcile_running",
				Help: "Projects the reconciler is working on.",
			}, func() float64 { _, r := cfg.Queue(); return float64(r) }))
	}
	if cfg.Store != nil {
		m.reg.MustRegister(projectsCollector{st: cfg.Store})
	}
	if cfg.Privd != nil {
		m.reg.MustRegister(privdCollector{privd: cfg.Privd})
	}
	return m
}

// StepEnded implements reconcile.Observer.
func (m *Metrics) StepEnded(step string, d time.Duration) {
	m.steps.WithLabelValues(step).Observe(d.Seconds())
}

// OperationEnded implements reconcile.Observer.
func (m *Metrics) OperationEnded(kind store.OpKind, state store.OpState) {
	m.operations.WithLabelValues(string(kind), string(state)).Inc()
}

// Registry is the metrics' own registry.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves GET (and HEAD) of Path and nothing else. At most two
// scrapes run at once (more are answered 503 at once); a scrape takes at
// most 10 s. A collector that fails costs its own metrics only; the
// error is logged.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+Path, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 2,
		Timeout:             10 * time.Second,
	}))
	return mux
}

// Server serves the metrics on a listener.
type Server struct {
	lis net.Listener
	srv *http.Server
}

// Listen binds addr (an IP:PORT that config.CheckMetricsListen accepted).
func (m *Metrics) Listen(addr string) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &Server{lis: lis, srv: &http.Server{
		Handler:           m.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
	}}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Serve serves until Close; it returns nil then.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops serving at once: a scrape is cheap to repeat.
func (s *Server) Close() error { return s.srv.Close() }

var (
	projectsDesc = prometheus.NewDesc("opus_projects", "Projects by phase.", []string{"phase"}, nil)
	certDesc     = prometheus.NewDesc("opus_certificate_expiry_timestamp_seconds",
		"When each project's installed TLS certificate expires (Unix time), by project and kind (self-signed, owner).",
		[]string{"project", "kind"}, nil)
	renewalDesc = prometheus.NewDesc("opus_certificate_renewal_failing_since_timestamp_seconds",
		"Since when (Unix time) each project's certificate has failed to come from the ACME CA (the installed one keeps serving); no series while renewals succeed.",
		[]string{"project"}, nil)
)

// projectsCollector reads the projects from the store at each scrape: a
// read transaction over the records the store keeps decoded, no file in a
// project's tree.
type projectsCollector struct{ st *store.Store }

func (c projectsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- projectsDesc
	ch <- certDesc
	ch <- renewalDesc
}

func (c projectsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	phases := make(map[store.Phase]int, len(store.Phases))
	var certs []prometheus.Metric
	err := c.st.View(ctx, func(tx *store.Tx) error {
		return tx.EachProject(func(p store.Project) error {
			phases[p.Status.Phase]++
			if cs := p.Status.Certificate; cs.Kind != "" && !cs.NotAfter.IsZero() {
				certs = append(certs, prometheus.MustNewConstMetric(certDesc, prometheus.GaugeValue,
					float64(cs.NotAfter.Unix()), p.Name, cs.Kind))
			}
			if cs := p.Status.Certificate; cs.Error != "" && !cs.ErrorSince.IsZero() {
				certs = append(certs, prometheus.MustNewConstMetric(renewalDesc, prometheus.GaugeValue,
					float64(cs.ErrorSince.Unix()), p.Name))
			}
			return nil
		})
	})
	if err != nil {
		ch <- prometheus.NewInvalidMetric(projectsDesc, err)
		return
	}
	// Every phase, at 0 too: a phase that empties must read 0, not vanish.
	for _, ph := range store.Phases {
		ch <- prometheus.MustNewConstMetric(projectsDesc, prometheus.GaugeValue, float64(phases[ph]), string(ph))
	}
	for _, m := range certs {
		ch <- m
	}
}

var (
	privdUpDesc    = prometheus.NewDesc("opus_privd_up", "1 when opus-privd answered this scrape's request for its counters, else 0.", nil, nil)
	privdCallsDesc = prometheus.NewDesc("opus_privd_calls_total",
		"Calls opus-privd served (past its peer check and allowlist) since it started, by method and gRPC status code.",
		[]string{"method", "code"}, nil)
	privdRefusalsDesc = prometheus.NewDesc("opus_privd_refusals_total",
		"Calls opus-privd refused before any handler since it started (a caller other than opusd, a method it does not serve: method \"other\"), by method.",
		[]string{"method"}, nil)
)

// privdMethods and codeNames are the label values privd's counters may
// carry: its methods (and "other"), gRPC's code names. Anything else in
// its answer is dropped, so labels stay a fixed set whatever it says.
var privdMethods, codeNames = func() (map[string]bool, map[string]bool) {
	ms := map[string]bool{"other": true}
	d := privdv1.Privd_ServiceDesc
	for _, m := range d.Methods {
		ms[m.MethodName] = true
	}
	for _, s := range d.Streams {
		ms[s.StreamName] = true
	}
	cs := map[string]bool{}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		cs[c.String()] = true
	}
	return ms, cs
}()

// privdCollector asks privd for its counters at each scrape.
type privdCollector struct{ privd privdv1.PrivdClient }

func (c privdCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- privdUpDesc
	ch <- privdCallsDesc
	ch <- privdRefusalsDesc
}

func (c privdCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), privdTimeout)
	defer cancel()
	resp, err := c.privd.Stats(ctx, &privdv1.StatsRequest{})
	if err != nil {
		ch <- prometheus.MustNewConstMetric(privdUpDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(privdUpDesc, prometheus.GaugeValue, 1)
	type call struct{ method, code string }
	calls := map[call]uint64{}
	for _, cc := range resp.GetCalls() {
		if privdMethods[cc.GetMethod()] && codeNames[cc.GetCode()] {
			calls[call{cc.GetMethod(), cc.GetCode()}] += cc.GetCount()
		}
	}
	for k, n := range calls {
		ch <- prometheus.MustNewConstMetric(privdCallsDesc, prometheus.CounterValue, float64(n), k.method, k.code)
	}
	refusals := map[string]uint64{}
	for _, r := range resp.GetRefusals() {
		if privdMethods[r.GetMethod()] {
			refusals[r.GetMethod()] += r.GetCount()
		}
	}
	for m, n := range refusals {
		ch <- prometheus.MustNewConstMetric(privdRefusalsDesc, prometheus.CounterValue, float64(n), m)
	}
}
