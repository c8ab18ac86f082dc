package service

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/drift"
)

// HostChecker compares the store with the host (implemented by
// drift.Host). projects reads the store; Check may call it more than once.
type HostChecker interface {
	Check(ctx context.Context, projects func(context.Context) ([]drift.Project, error)) ([]drift.Finding, int, error)
}

// CheckHost implements opusv1.OpusServer: it reports drift between the
// store and the host. Admins only (the interceptor refuses everyone else;
// the handler checks again, so a table mistake cannot open it).
func (s *Service) CheckHost(ctx context.Context, _ *opusv1.CheckHostRequest) (*opusv1.CheckHostResponse, error) {
	const method = "CheckHost"
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	if !c.admin {
		return nil, s.refuse(ctx, c, method, "", status.Error(codes.PermissionDenied, "only root and members of the admin group may check the host"))
	}
	if s.cfg.HostCheck == nil {
		return nil, status.Error(codes.Unimplemented, "this opusd has no host check configured")
	}
	findings, checked, err := s.cfg.HostCheck.Check(ctx, s.driftProjects)
	if err != nil {
		if ctx.Err() != nil {
			return nil, s.storeErr(ctx, ctx.Err())
		}
		s.log.ErrorContext(ctx, "host check", "err", err)
		return nil, status.Errorf(codes.Internal, "host check failed: %v", err)
	}
	resp := &opusv1.CheckHostResponse{Checked: int32(checked)}
	for _, f := range findings {
		resp.Drift = append(resp.Drift, &opusv1.Drift{Kind: f.Kind, Project: f.Project, Detail: f.Detail})
	}
	s.log.InfoContext(ctx, "host checked", "uid", c.uid, "projects", checked, "drift", len(findings))
	return resp, nil
}

// driftProjects is the store as the host check sees it: a project is
// deployed when its last run succeeded at its current spec.
func (s *Service) driftProjects(ctx context.Context) ([]drift.Project, error) {
	ps, err := s.st.ListProjects(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]drift.Project, 0, len(ps))
	for _, p := range ps {
		if !s.servedHere(p) {
			continue // another host's: not on this one to compare
		}
		c := p.Status.Certificate
		out = append(out, drift.Project{
			Name:             p.Name,
			Deployed:         deployed(p),
			CertificateError: c.Error, CertificateErrorSince: c.ErrorSince,
			CertificateNotAfter: c.NotAfter, CertificateRetry: c.RenewAt,
		})
	}
	return out, nil
}
