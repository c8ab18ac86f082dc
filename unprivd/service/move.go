package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/snapshot"
	"github.com/opus-hosting/opus/unprivd/store"
)

// MoveProject records a move of a project to another host and the MOVE
// operation that reports it; the hosts' movers and reconcilers do the
// rest (unprivd/mover). Only a project that can move as a whole is taken:
// deployed, its data in SQLite (a copy of which travels), its apps from
// git (an uploaded archive is kept by the host that received it).
func (s *Service) MoveProject(ctx context.Context, req *opusv1.MoveProjectRequest) (*opusv1.Operation, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	name, to := req.GetName(), req.GetTo()
	if err := validateProject("name", name); err != nil {
		return nil, err
	}
	if to == "" {
		return nil, invalid("to", "is missing: name the host to move the project to (see opusctl hosts)")
	}
	if !s.st.Shared() {
		return nil, status.Errorf(codes.FailedPrecondition, "this Opus has one host, %s: there is no other host to move %q to", s.cfg.HostName, name)
	}
	token := make([]byte, 32)
	if _, err := rand.Read(token); err != nil {
		return nil, err
	}
	var op *store.Operation
	err = s.st.Update(ctx, func(tx *store.Tx) error {
		p, err := s.visibleProject(ctx, tx, c, opusv1.Opus_MoveProject_FullMethodName, name)
		if err != nil {
			return err
		}
		if err := s.movable(tx, p, to); err != nil {
			return err
		}
		now := tx.Now()
		p.Move = &store.Move{ID: snapshot.NewID(now), From: p.Host, To: to, Token: hex.EncodeToString(token), State: store.MoveExporting, Time: now}
		if op, err = tx.NewOperation(p, store.OpMove, c.uid); err != nil {
			return err
		}
		p.Move.Operation = op.ID
		return tx.PutProject(p)
	})
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	s.log.InfoContext(ctx, "project move requested", "project", name, "uid", c.uid, "from", op.Project, "to", to, "operation", op.ID)
	if s.cfg.Mover != nil {
		s.cfg.Mover.Kick()
	}
	return toOperation(op), nil
}

// movable says why p cannot move to host to now, or nil.
func (s *Service) movable(tx *store.Tx, p *store.Project, to string) error {
	if p.Deleting {
		return status.Errorf(codes.FailedPrecondition, "project %q is being deleted", p.Name)
	}
	if err := s.changeable(p); err != nil {
		return err
	}
	if to == p.Host {
		return invalid("to", "project %q is already on host %s", p.Name, to)
	}
	hs, err := tx.Hosts()
	if err != nil {
		return err
	}
	if hostIndex(hs, to) < 0 {
		return notAnswering("to", to, hs)
	}
	for _, h := range []string{p.Host, to} {
		if j := hostIndex(hs, h); j >= 0 && hs[j].PeerAddr == "" {
			return status.Errorf(codes.FailedPrecondition, "host %s takes part in no moves: set peer_listen in its opus.conf", h)
		}
	}
	if !deployed(p) {
		return status.Errorf(codes.FailedPrecondition, "project %q is not deployed at its current spec (phase %s): let its change finish, or undo it, then move it", p.Name, p.Status.Phase)
	}
	if p.Spec.Database != nil {
		return status.Errorf(codes.FailedPrecondition, "project %q keeps its data in PostgreSQL: a move carries SQLite data only, for now", p.Name)
	}
	for _, a := range p.Spec.Apps {
		if a.Upload != nil {
			return status.Errorf(codes.FailedPrecondition, "app %q of project %q was uploaded, and its archive is kept by host %s alone: a move carries apps from git only, for now", a.Name, p.Name, p.Host)
		}
	}
	// A copy the last move left on either side must be gone first.
	for _, f := range []string{store.FacetIncoming, store.FacetDeparting} {
		if _, err := tx.Facet(f).Project(p.Name); err == nil {
			return status.Errorf(codes.FailedPrecondition, "project %q still has a copy from its last move being %s: try again in a minute", p.Name, map[string]string{store.FacetIncoming: "set up", store.FacetDeparting: "removed"}[f])
		}
	}
	return nil
}

// moving refuses changes to a project while it moves: the target's copy,
// made from the spec as the move began, becomes the project at its end.
func moving(p *store.Project) error {
	if p.Move == nil {
		return nil
	}
	return status.Error(codes.FailedPrecondition, fmt.Sprintf("project %q is moving to host %s: changes to it are refused until the move is done (follow it with 'opusctl wait %s'); try again then", p.Name, p.Move.To, p.Move.Operation))
}
