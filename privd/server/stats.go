package server

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc/codes"

	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
)

// statsMethod is the full name of the Stats call.
const statsMethod = "/opus.privd.v1.Privd/Stats"

// otherMethod labels every call of a method privd does not serve. The
// method name of such a call is the caller's text: keeping it would let
// anyone who can connect grow privd's memory (and opusd's metrics) without
// bound, one name at a time.
const otherMethod = "other"

// numCodes is the number of gRPC status codes (OK through Unauthenticated);
// a larger code counts as Unknown.
const numCodes = int(codes.Unauthenticated) + 1

// methodStats are one method's counters.
type methodStats struct {
	name     string // short name: "EnsureUser", or otherMethod
	calls    [numCodes]atomic.Uint64
	refusals atomic.Uint64
}

// stats counts privd's calls. Its map is made once, from the allowlist, and
// never written again: counting takes no lock and no memory, whoever calls.
type stats struct {
	methods map[string]*methodStats // by full method name
	other   *methodStats
	order   []*methodStats // the allowlist's methods by name, then other
}

func newStats() *stats {
	s := &stats{methods: make(map[string]*methodStats, len(allowed)), other: &methodStats{name: otherMethod}}
	for full := range allowed {
		m := &methodStats{name: full[strings.LastIndexByte(full, '/')+1:]}
		s.methods[full] = m
		s.order = append(s.order, m)
	}
	slices.SortFunc(s.order, func(a, b *methodStats) int { return strings.Compare(a.name, b.name) })
	s.order = append(s.order, s.other)
	return s
}

// of is the counters of the full method name: its own when privd serves
// it, else other's.
func (s *stats) of(method string) *methodStats {
	if m, ok := s.methods[method]; ok {
		return m
	}
	return s.other
}

// called counts a call of method that reached its handler and ended with c.
func (s *stats) called(method string, c codes.Code) {
	if int(c) >= numCodes {
		c = codes.Unknown
	}
	s.of(method).calls[c].Add(1)
}

// refused counts a call of method refused before any handler.
func (s *stats) refused(method string) { s.of(method).refusals.Add(1) }

// snapshot is the counters as the Stats call returns them: every method's
// refusals (zeros included, so that a refusal's first appearance is a
// change from 0) and the codes each method has ended with.
func (s *stats) snapshot() *privdv1.StatsResponse {
	resp := &privdv1.StatsResponse{}
	for _, m := range s.order {
		for c := range m.calls {
			if n := m.calls[c].Load(); n > 0 {
				resp.Calls = append(resp.Calls, &privdv1.CallCount{Method: m.name, Code: codes.Code(c).String(), Count: n})
			}
		}
		resp.Refusals = append(resp.Refusals, &privdv1.RefusalCount{Method: m.name, Count: m.refusals.Load()})
	}
	return resp
}

// Stats implements privdv1.PrivdServer: privd's call counters, for
// opusd's metrics. It reads only counters in memory.
func (s *Server) Stats(context.Context, *privdv1.StatsRequest) (*privdv1.StatsResponse, error) {
	return s.stats.snapshot(), nil
}
