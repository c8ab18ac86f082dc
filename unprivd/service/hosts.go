package service

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Hosts: with the state in etcd several hosts are one Opus. Every opusd
// answers the whole API; each project is served (deployed, reconciled)
// by one host, named in its record. A project whose host is not listed
// (its opusd stopped renewing its registration) is UNREACHABLE, and
// changes to it are refused until the host is back. What only the
// serving host has (its logs, its files, the uploads it received) is
// asked of that host.

// hostsFresh is how long a read of the live hosts is reused: a list of
// 1,000 projects renders every phase against one read.
const hostsFresh = 500 * time.Millisecond

type liveHosts struct {
	mu   sync.Mutex
	at   time.Time
	live map[string]store.Host
}

// live returns the hosts listed now, by name (nil on a store that only
// this host uses: then every project is this host's).
func (s *Service) live() map[string]store.Host {
	if !s.st.Shared() {
		return nil
	}
	s.hosts.mu.Lock()
	defer s.hosts.mu.Unlock()
	if now := time.Now(); s.hosts.live == nil || now.Sub(s.hosts.at) > hostsFresh {
		hs, err := s.st.Hosts(context.Background())
		if err != nil {
			s.log.Warn("read the hosts", "err", err)
			return s.hosts.live
		}
		m := make(map[string]store.Host, len(hs))
		for _, h := range hs {
			m[h.Name] = h
		}
		s.hosts.live, s.hosts.at = m, now
	}
	return s.hosts.live
}

// unreachable says p's host is not answering.
func (s *Service) unreachable(p *store.Project) bool {
	live := s.live()
	if live == nil {
		return false
	}
	_, ok := live[p.Host]
	return !ok
}

// ports are the ports p's front serves it on: its host's (as it
// registered them), or this host's.
func (s *Service) ports(p *store.Project) (http, https int) {
	if h, ok := s.live()[p.Host]; ok && h.HTTPPort > 0 {
		return h.HTTPPort, h.HTTPSPort
	}
	return s.cfg.HTTPPort, s.cfg.HTTPSPort
}

// servedHere says this host serves p: the only one that has its files,
// logs and uploads.
func (s *Service) servedHere(p *store.Project) bool { return s.st.ServedHere(p) }

// elsewhere is the refusal of what only p's own host can do.
func (s *Service) elsewhere(p *store.Project, what string) error {
	return status.Errorf(codes.FailedPrecondition,
		"project %q is served by host %s: %s there (run opusctl on %s)", p.Name, p.Host, what, p.Host)
}

// changeable refuses a change to a project whose host is not answering:
// the change could not be applied (or undone) until it is back.
func (s *Service) changeable(p *store.Project) error {
	if err := moving(p); err != nil {
		return err
	}
	if s.unreachable(p) {
		return status.Errorf(codes.FailedPrecondition,
			"project %q is served by host %s, which is not answering: changes to it are refused until that host is back (see 'opusctl hosts'); try again then", p.Name, p.Host)
	}
	return nil
}

// place chooses the host of a new project: want when given (it must be
// live), this host for a project made from uploads (the archives are
// kept by the host that received them), or else the live host with the
// lowest share of its capacity in use (fewest projects, then name).
func (s *Service) place(tx *store.Tx, want string, spec store.Spec) (string, error) {
	if !s.st.Shared() {
		if want != "" && want != s.cfg.HostName {
			return "", invalid("host", "this Opus has one host, %s", s.cfg.HostName)
		}
		return s.cfg.HostName, nil
	}
	hs, err := tx.Hosts()
	if err != nil {
		return "", err
	}
	uploads := slices.ContainsFunc(spec.Apps, func(a store.AppSpec) bool { return a.Upload != nil })
	switch {
	case want != "" && hostIndex(hs, want) < 0:
		return "", notAnswering("host", want, hs)
	case uploads && want != "" && want != s.cfg.HostName:
		return "", invalid("host", "a project made from an upload starts on the host that received the upload (%s); create it there, or from git", s.cfg.HostName)
	case uploads:
		return s.cfg.HostName, nil
	case want != "":
		return want, nil
	case len(hs) == 0:
		return "", status.Error(codes.Unavailable, "no host is answering: a new project has nowhere to go")
	}
	count := map[string]int{}
	if err := tx.EachProject(func(p store.Project) error { count[p.Host]++; return nil }); err != nil {
		return "", err
	}
	best := hs[0]
	for _, h := range hs[1:] {
		// count/capacity below best's, compared without division.
		if count[h.Name]*max(best.Capacity, 1) < count[best.Name]*max(h.Capacity, 1) {
			best = h
		}
	}
	return best.Name, nil
}

// newUpload says spec names an uploaded archive that before did not:
// only the host that received it has it.
func newUpload(before, after store.Spec) bool {
	had := map[string]bool{}
	for _, a := range before.Apps {
		if a.Upload != nil {
			had[a.Upload.Digest] = true
		}
	}
	for _, a := range after.Apps {
		if a.Upload != nil && !had[a.Upload.Digest] {
			return true
		}
	}
	return false
}

// ListHosts lists the hosts and how many projects each serves.
func (s *Service) ListHosts(ctx context.Context, _ *opusv1.ListHostsRequest) (*opusv1.ListHostsResponse, error) {
	if _, err := callerFrom(ctx); err != nil {
		return nil, err
	}
	res := &opusv1.ListHostsResponse{}
	err := s.st.View(ctx, func(tx *store.Tx) error {
		hs, err := tx.Hosts()
		if err != nil {
			return err
		}
		count := map[string]int32{}
		if err := tx.EachProject(func(p store.Project) error {
			if !s.st.Shared() {
				p.Host = s.cfg.HostName // the one host serves them all
			}
			count[p.Host]++
			return nil
		}); err != nil {
			return err
		}
		for _, h := range hs {
			if !s.st.Shared() && h.Name != s.cfg.HostName {
				continue // a name this host had before
			}
			res.Hosts = append(res.Hosts, &opusv1.Host{
				Name: h.Name, Front: h.Front, Capacity: int32(h.Capacity), Projects: count[h.Name],
				Since: ts(h.Since), This: h.Name == s.cfg.HostName,
			})
		}
		return nil
	})
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	return res, nil
}

// hostIndex is the index of host name in hs, or -1.
func hostIndex(hs []store.Host, name string) int {
	return slices.IndexFunc(hs, func(h store.Host) bool { return h.Name == name })
}

// notAnswering refuses field's host name, which is not among the live
// hosts hs, naming those.
func notAnswering(field, name string, hs []store.Host) error {
	names := make([]string, 0, len(hs))
	for _, h := range hs {
		names = append(names, h.Name)
	}
	return invalid(field, "no host %q is answering; the live hosts are %s", name, strings.Join(names, ", "))
}
