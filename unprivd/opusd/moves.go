package opusd

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/opus-hosting/opus/internal/config"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/mover"
	"github.com/opus-hosting/opus/unprivd/peer"
	"github.com/opus-hosting/opus/unprivd/reconcile"
	"github.com/opus-hosting/opus/unprivd/store"
)

// moves is this host's part in moving projects between hosts
// (unprivd/mover): the peer listener that sends the data, the reconcilers
// of the incoming and departing facets (each the main reconciler's
// options, but its own kind of operation and no ACME: a copy's name does
// not resolve to it yet, or any more), and the mover. Nil on a store no
// other host shares: all its methods do nothing then.
type moves struct {
	peer    *peer.Server
	in, out *reconcile.Reconciler
	mover   *mover.Mover
	log     *slog.Logger
}

func newMoves(cfg config.Config, st *store.Store, privd privdv1.PrivdClient, ropt reconcile.Options, main *reconcile.Reconciler, log *slog.Logger) (*moves, error) {
	if !st.Shared() {
		return nil, nil
	}
	m := &moves{log: log}
	if cfg.PeerListen != "" {
		var err error
		if m.peer, err = peer.Listen(cfg.PeerListen, peer.Options{Log: log.With("component", "peer")}); err != nil {
			return nil, fmt.Errorf("peer_listen: %w", err)
		}
	}
	in := ropt
	in.ACME, in.Succeeded = nil, nil
	// A copy left marked for teardown (its move given up while this host
	// was away) is torn down under a MOVE operation of its own.
	in.Kinds, in.DeleteKind = []store.OpKind{store.OpMove}, store.OpMove
	in.Finish = mover.Switch(cfg.Host())
	in.Claim = func(op *store.Operation) bool { return !mover.Handed(op) }
	// A copy's deploy that ends (a failed one: its move is to be
	// cleared) wakes the mover at once.
	in.Observer = endKicker{Observer: ropt.Observer, kick: func() { m.mover.Kick() }}
	m.in = reconcile.New(st.Facet(store.FacetIncoming), privd, in)
	out := ropt
	out.ACME, out.Succeeded = nil, nil
	out.Kinds, out.DeleteKind = []store.OpKind{store.OpDepart}, store.OpDepart
	m.out = reconcile.New(st.Facet(store.FacetDeparting), privd, out)
	m.mover = mover.New(st, mover.Options{Host: cfg.Host(), BaseDir: cfg.BaseDir, MaxBytes: cfg.SnapshotMaxBytes,
		Privd: privd, Peer: m.peer, Incoming: m.in, Main: main, Logger: log})
	return m, nil
}

// kicker is what the API tells of a move it recorded.
func (m *moves) kicker() interface{ Kick() } {
	if m == nil {
		return nil
	}
	return m.mover
}

// start starts serving the peer listener, the facets' reconcilers and the
// mover.
func (m *moves) start(ctx context.Context) error {
	if m == nil {
		return nil
	}
	if m.peer != nil {
		go func() {
			if err := m.peer.Serve(); err != nil {
				m.log.Error("peer listener", "err", err)
			}
		}()
	}
	for _, r := range []*reconcile.Reconciler{m.in, m.out} {
		if err := r.Start(context.WithoutCancel(ctx)); err != nil {
			return err
		}
	}
	go m.mover.Run(ctx)
	return nil
}

// peerAddr is what this host publishes of its peer listener: where the
// other hosts reach it and its certificate's fingerprint.
func (m *moves) peerAddr(cfg config.Config) (addr, fingerprint string) {
	if m == nil || m.peer == nil {
		return "", ""
	}
	return cfg.Peer(), m.peer.Fingerprint()
}

func (m *moves) stop(ctx context.Context) {
	if m == nil {
		return
	}
	for _, r := range []*reconcile.Reconciler{m.in, m.out} {
		if err := r.Stop(ctx); err != nil {
			m.log.Warn("move reconciler stopped with steps cut short", "err", err)
		}
	}
}

func (m *moves) close() {
	if m != nil && m.peer != nil {
		m.peer.Close()
	}
}

// endKicker tells an Observer what it is told, and calls kick when an
// operation ends.
type endKicker struct {
	reconcile.Observer
	kick func()
}

func (o endKicker) StepEnded(step string, d time.Duration) {
	if o.Observer != nil {
		o.Observer.StepEnded(step, d)
	}
}

func (o endKicker) OperationEnded(kind store.OpKind, state store.OpState) {
	if o.Observer != nil {
		o.Observer.OperationEnded(kind, state)
	}
	o.kick()
}
