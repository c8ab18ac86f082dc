package apache

import (
	"context"
	"net/netip"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// IncludeGuard is Sites for the system Apache: it refuses InstallSite
// with FailedPrecondition while Debian's configuration does not include
// privd's vhost directory, because such a vhost would pass configtest and
// never be served — the deploy would "succeed" into a 404. The check runs
// on every install (a walk of /etc/apache2), so an administrator who adds
// the line need not restart privd. Removing sites, reloading and reading
// logs pass through: they must keep working to clean up whatever the
// include says.
type IncludeGuard struct {
	*Sites
	// Check is System.CheckInclude (a stand-in in tests).
	Check func() error
}

// Install refuses with the line to add while the include is missing, and
// otherwise installs the site.
func (g IncludeGuard) Install(ctx context.Context, req *privdv1.InstallSiteRequest, backend netip.AddrPort) (*privdv1.InstallSiteResponse, error) {
	if err := g.Check(); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return g.Sites.Install(ctx, req, backend)
}
