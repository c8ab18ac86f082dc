package opusprivd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opus-hosting/opus/privd/apache"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// unprivilegedPortStart is the sysctl of the first port any user may bind.
const unprivilegedPortStart = "/proc/sys/net/ipv4/ip_unprivileged_port_start"

// checkBackendPort refuses a backend port unprivileged users may bind
// (net.ipv4.ip_unprivileged_port_start lowered): a tenant could then take
// another project's backend address while its backend is down.
func checkBackendPort(port int, sysctl string) error {
	b, err := os.ReadFile(sysctl)
	if err != nil {
		return nil // no such sysctl: ports below 1024 are root's
	}
	start, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err == nil && port >= start {
		return fmt.Errorf("backend_port %d: this host lets any user bind ports from %d (net.ipv4.ip_unprivileged_port_start), so a tenant could stand in for another project's backend; choose a port below %d", port, start, start)
	}
	return nil
}

// apacheStartTimeout bounds bringing the managed Apache up at start-up.
const apacheStartTimeout = 2 * time.Minute

// bringUpApache starts the managed front Apache when it is down but has
// vhosts to serve — after a reboot nothing else would start it until some
// project changed. A running front is left alone: a graceful restart
// would be work for nothing (it restarts no project's Python). It goes
// through Sites.Reload, so it is configtested and serialised with any
// InstallSite that arrives meanwhile.
func bringUpApache(m *apache.Managed, sites *apache.Sites, log *slog.Logger) {
	if pid := m.Running(); pid != 0 {
		log.Info("managed Apache already running", "master_pid", pid)
		return
	}
	vhosts, err := filepath.Glob(filepath.Join(m.Sites(), "*.conf"))
	if err != nil || len(vhosts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), apacheStartTimeout)
	defer cancel()
	res, err := sites.Reload(ctx, &privdv1.ReloadApacheRequest{})
	if err != nil {
		log.Error("could not start the managed Apache for the installed sites", "sites", len(vhosts), "err", err)
		return
	}
	log.Info("started the managed Apache for the installed sites", "sites", len(vhosts), "master_pid", res.GetMasterPid(), "started", res.GetStarted())
}
