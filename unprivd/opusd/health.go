package opusd

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/opus-hosting/opus/internal/daemon"
	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/unprivd/store"
)

// opusd's health checks, which the watchdog (internal/daemon) runs before
// each ping.
//
// What they (storeWorking, apiServing) catch: a store whose
// reads fail or hang, a write transaction in progress for longer than
// writeStallLimit (a writer stuck in fsync on a dead disk, or an Update
// whose function blocks: every later write queues behind it while reads
// still work), and an API socket that does not answer the gRPC health
// check. What they do NOT catch: a reconciler stuck in a slow step
// (Apache, pip, a migration) outside any transaction, which looks the same
// as a slow but healthy migration, so it is left to the steps' own
// timeouts; and a wedged handler for other RPCs, as the health service
// answers from memory and only proves the server accepts and serves calls.

// writeStallLimit is how long a store write transaction may run before
// opusd counts as hung. Healthy ones write a few small records and take
// milliseconds (seconds on a very busy disk); a stalled one is caught at
// the first check past the limit, so with WatchdogSec=30s (checks every
// 15 s, the last ping at most 15 s before that check) systemd restarts
// opusd 35-50 s after the write began. Any WatchdogSec works with it: the
// limit only has to exceed the longest healthy write.
const writeStallLimit = 20 * time.Second

// storeWorking: no write transaction has been in progress for longer than
// stallLimit, and a read transaction on the state file goes through. The
// read alone proves little, since bbolt readers never wait for the writer.
//
// On etcd, an unreachable cluster does not fail it, on purpose: each
// commit gives up within the store's request timeouts (well under
// writeStallLimit) and the change is refused with Unavailable, while reads
// answer from opusd's copy. A restart would not bring etcd back, and an
// opusd that cannot reach etcd at start does not start: the API would go
// dark for reads too.
func storeWorking(st *store.Store, stallLimit time.Duration) daemon.HealthCheck {
	return daemon.HealthCheck{Name: "state store", Check: func(ctx context.Context) error {
		if d, stalled := st.WriteStalled(time.Now(), stallLimit); stalled {
			return fmt.Errorf("a write transaction has been in progress for %s (limit %s): disk or writer stuck", d.Round(time.Millisecond), stallLimit)
		}
		return st.View(ctx, func(tx *store.Tx) error {
			_, err := tx.Projects()
			return err
		})
	}}
}

// apiServing: the API socket accepts a connection and the gRPC server
// answers the standard health check SERVING, exactly as a client would see
// it (through the same peer-credential transport and interceptors). The
// client connects on the first check and lives as long as the process.
func apiServing(socket string) daemon.HealthCheck {
	var (
		once sync.Once
		hc   healthpb.HealthClient
		err  error
	)
	return daemon.HealthCheck{Name: "API", Check: func(ctx context.Context) error {
		once.Do(func() {
			var cc *grpc.ClientConn
			cc, err = grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(peercred.Client()))
			hc = healthpb.NewHealthClient(cc)
		})
		if err != nil {
			return fmt.Errorf("client for %s: %w", socket, err)
		}
		res, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if res.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health status %s", res.Status)
		}
		return nil
	}}
}
