package opusd

import (
	"fmt"
	"log/slog"

	"github.com/opus-hosting/opus/unprivd/metrics"
)

// metricsServer serves the metrics on metrics_listen, off (nil srv) when
// it is empty. All its wiring is here.
type metricsServer struct{ srv *metrics.Server }

// listenMetrics binds addr, so that an address in use stops opusd at
// start, not later.
func listenMetrics(m *metrics.Metrics, addr string) (*metricsServer, error) {
	if addr == "" {
		return &metricsServer{}, nil
	}
	srv, err := m.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics_listen: %w", err)
	}
	return &metricsServer{srv: srv}, nil
}

// serve serves the metrics; its failure is sent on failed.
func (ms *metricsServer) serve(log *slog.Logger, failed chan<- error) {
	if ms.srv == nil {
		return
	}
	go func() {
		if err := ms.srv.Serve(); err != nil {
			failed <- fmt.Errorf("metrics: %w", err)
		}
	}()
	log.Info("metrics serving", "url", "http://"+ms.srv.Addr().String()+metrics.Path)
}

// close stops serving at once; closing again does nothing.
func (ms *metricsServer) close() {
	if ms.srv != nil {
		ms.srv.Close()
		ms.srv = nil
	}
}
