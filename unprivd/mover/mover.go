// Package mover carries a project from one host to another with its data
// (opusctl move). The API records the move in the project (store.Move)
// with a MOVE operation; then each host's mover does its part:
//
//   - the source (the project's host) exports a copy of the database and
//     the media files into BaseDir/moves and offers them on its peer
//     listener (unprivd/peer) to the bearer of the move's token;
//   - the target fetches them, checks their size and SHA-256, keeps them
//     as a data snapshot of its own and makes its copy of the project in
//     the "incoming" facet of the store, from the same spec, to restore
//     that snapshot; its incoming reconciler deploys that copy while the
//     source serves on, recording its steps in the MOVE operation;
//   - when the copy answers, Switch (run by that reconciler in the commit
//     that ends the operation) makes it the project, on the target, and
//     puts the source's record in the "departing" facet, which the
//     source's departing reconciler tears down (users, files, site) and
//     forgets.
//
// A move that fails before the switch leaves the project where it was:
// the target's copy is torn down as any failed first deploy is, and the
// move is cleared. Every file the mover writes is opusd's own, under its
// base directory, and bounded by snapshot_max_bytes.
package mover

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/datasize"
	"github.com/opus-hosting/opus/internal/limitio"
	privdv1 "github.com/opus-hosting/opus/proto/opus/privd/v1"
	"github.com/opus-hosting/opus/unprivd/peer"
	"github.com/opus-hosting/opus/unprivd/reconcile"
	"github.com/opus-hosting/opus/unprivd/snapshot"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Kicker asks a reconciler for a run of a project.
type Kicker interface{ Kick(name string) }

// Options wires a Mover.
type Options struct {
	// Host is this host's name.
	Host string
	// BaseDir is opusd's base directory: exports go to BaseDir/moves,
	// fetched data to the data snapshots under it.
	BaseDir string
	// MaxBytes bounds each file a move carries (snapshot_max_bytes).
	MaxBytes int64
	// Privd copies the data out of a project (DumpData).
	Privd privdv1.PrivdClient
	// Peer offers this host's exports; nil: this host takes part in no
	// move (the API refuses them).
	Peer *peer.Server
	// Incoming is the reconciler of the incoming facet, kicked when this
	// host made its copy of a project; Main is this host's own, kicked
	// when a move it gave up on leaves it to serve its copy again.
	Incoming, Main Kicker
	// Interval is how often the mover looks at every move without being
	// kicked (for moves whose other side acted); 0 means 5 seconds.
	Interval time.Duration
	Logger   *slog.Logger
}

// Mover does this host's part of every move.
type Mover struct {
	st, in, out *store.Store
	opt         Options
	log         *slog.Logger
	kick        chan struct{}
}

// New returns the mover of host opt.Host over st (the main store).
func New(st *store.Store, opt Options) *Mover {
	if opt.Interval <= 0 {
		opt.Interval = 5 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	return &Mover{st: st, in: st.Facet(store.FacetIncoming), out: st.Facet(store.FacetDeparting), opt: opt,
		log: opt.Logger.With("component", "mover"), kick: make(chan struct{}, 1)}
}

// Kick asks for a pass at once.
func (m *Mover) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run does passes until ctx ends: when kicked, when another host changed
// a project, and every Interval.
func (m *Mover) Run(ctx context.Context) {
	m.st.OnChangedElsewhere(func(string) { m.Kick() })
	t := time.NewTicker(m.opt.Interval)
	defer t.Stop()
	for {
		if err := m.pass(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("move pass", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-m.kick:
		case <-t.C:
		}
	}
}

func (m *Mover) dir() string { return filepath.Join(m.opt.BaseDir, "moves") }

// pass does what this host has to do for every move, then removes the
// exports no move needs any more.
func (m *Mover) pass(ctx context.Context) error {
	ps, err := m.st.ListProjects(ctx)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	var live map[string]bool
	for _, p := range ps {
		mv := p.Move
		if mv == nil {
			continue
		}
		var err error
		switch {
		case mv.From == m.opt.Host && p.Host == m.opt.Host:
			keep[mv.ID] = true
			final := mv.State == store.MoveSyncing || mv.State == store.MoveLast
			if final || mv.State != store.MoveDeploying && time.Since(mv.Time) > giveUp {
				if live == nil {
					live = m.liveHosts(ctx)
				}
				switch {
				case live == nil || live[mv.To]:
				case final:
					// This host stopped taking writes for a target that is
					// gone: it serves again at once.
					err = fmt.Errorf("host %s stopped answering before it took the project over", mv.To)
				default:
					err = fmt.Errorf("host %s is not answering and has not taken the data in %s", mv.To, giveUp)
				}
				if err != nil {
					break
				}
			}
			switch mv.State {
			case store.MoveExporting:
				err = m.export(ctx, p)
			case store.MoveSyncing:
				err = m.exportLast(ctx, p)
			default:
				err = m.offer(p)
			}
		case mv.To == m.opt.Host && mv.State == store.MoveExported:
			err = m.fetch(ctx, p)
		case mv.To == m.opt.Host && mv.State == store.MoveDeploying:
			err = m.watchDeploy(ctx, p)
		case mv.To == m.opt.Host && mv.State == store.MoveLast:
			err = m.takeOver(ctx, p)
		}
		if err != nil {
			m.fail(ctx, p, err)
		}
	}
	return m.prune(keep)
}

// liveHosts are the hosts listed now, by name; nil if the list cannot be
// read (then no move is given up on this pass).
func (m *Mover) liveHosts(ctx context.Context) map[string]bool {
	hs, err := m.st.Hosts(ctx)
	if err != nil {
		m.log.Warn("read the hosts", "err", err)
		return nil
	}
	live := make(map[string]bool, len(hs))
	for _, h := range hs {
		live[h.Name] = true
	}
	return live
}

// files are the ids a move carries: the database copy and the media.
func files(mv *store.Move) [2]string { return [2]string{mv.ID, snapshot.MediaID(mv.ID)} }

// lastSuffix names the last copy's files: ID-last and ID-last-media.
const lastSuffix = "-last"

func lastFiles(mv *store.Move) [2]string {
	id := mv.ID + lastSuffix
	return [2]string{id, snapshot.MediaID(id)}
}

// exportLast, once the target's copy answers: the source stops taking
// writes (its backend goes; the site answers 503 for the moment the rest
// takes), takes the data again and offers it. What was written since the
// first copy is in it.
func (m *Mover) exportLast(ctx context.Context, p *store.Project) error {
	mv := p.Move
	if err := m.step(ctx, mv.Operation, lastStep, store.StepRunning, "the old copy stopped taking writes"); err != nil {
		return err
	}
	if _, err := m.opt.Privd.RemoveBackend(ctx, &privdv1.RemoveBackendRequest{Project: p.Name}); err != nil {
		return fmt.Errorf("stop the old copy: %s", status.Convert(err).Message())
	}
	var out []store.MoveFile
	for i, id := range lastFiles(mv) {
		f, err := m.dump(ctx, p.Name, id, i == 1)
		if err != nil {
			return fmt.Errorf("export the data again: %w", err)
		}
		out = append(out, f)
	}
	p.Move.Last = out
	if err := m.offer(p); err != nil {
		return err
	}
	_, err := m.st.UpdateProject(ctx, p.Name, func(q *store.Project) error {
		if q.Move == nil || q.Move.ID != mv.ID || q.Move.State != store.MoveSyncing {
			return fmt.Errorf("the move changed meanwhile")
		}
		q.Move.Last, q.Move.State = out, store.MoveLast
		return nil
	})
	return err
}

// takeOver, on the target: loads the last copy into this host's copy and
// makes it the project (Switch's commit).
func (m *Mover) takeOver(ctx context.Context, p *store.Project) error {
	mv := p.Move
	addr, fp, ok, err := m.source(ctx, mv)
	if err != nil || !ok {
		return err
	}
	token, err := hex.DecodeString(mv.Token)
	if err != nil {
		return fmt.Errorf("the move's token: %w", err)
	}
	tmp := filepath.Join(m.dir(), "in-"+mv.ID+lastSuffix)
	if err := os.MkdirAll(m.dir(), 0o700); err != nil {
		return err
	}
	defer os.Remove(tmp)
	for i, f := range mv.Last {
		os.Remove(tmp)
		if err := peer.Fetch(ctx, addr, fp, f.ID, token, tmp, m.opt.MaxBytes, f.SHA256); err != nil {
			if transient(err) && time.Since(mv.Time) < giveUp {
				m.log.Warn("fetch the moving data: trying again", "project", p.Name, "from", mv.From, "err", err)
				return nil
			}
			return fmt.Errorf("fetch the last data from host %s: %w", mv.From, err)
		}
		r, err := os.Open(tmp)
		if err != nil {
			return err
		}
		err = reconcile.LoadData(ctx, m.opt.Privd, p.Name, i == 1, r)
		r.Close()
		if err != nil {
			return fmt.Errorf("load the last data: %w", err)
		}
	}
	// What privd loaded is the project user's; the tree's policy again,
	// as after any restore.
	if _, err := m.opt.Privd.SecureTree(ctx, &privdv1.SecureTreeRequest{Project: p.Name}); err != nil {
		return fmt.Errorf("after loading the last data: %s", status.Convert(err).Message())
	}
	return m.st.Update(ctx, func(tx *store.Tx) error {
		q, err := tx.Project(p.Name)
		if err != nil {
			return err
		}
		if q.Move == nil || q.Move.ID != mv.ID || q.Move.State != store.MoveLast {
			return fmt.Errorf("the move changed meanwhile")
		}
		c, err := tx.Facet(store.FacetIncoming).Project(p.Name)
		if err != nil {
			return err
		}
		op, err := tx.Operation(mv.Operation)
		if err != nil {
			return err
		}
		now := tx.Now()
		endStep(op, lastStep, store.StepDone, fmt.Sprintf("%s of data, %s of media files written since the first copy: loaded here", datasize.Text(mv.Last[0].Size), datasize.Text(mv.Last[1].Size)), now)
		op.State, op.EndTime = store.OpSucceeded, now
		if err := tx.PutOperation(op); err != nil {
			return err
		}
		return switchOver(tx, m.opt.Host, q, c)
	})
}

// source is where the move's source offers its data: its peer address and
// certificate fingerprint, and whether it is answering now.
func (m *Mover) source(ctx context.Context, mv *store.Move) (addr, fingerprint string, ok bool, err error) {
	hs, err := m.st.Hosts(ctx)
	if err != nil {
		return "", "", false, err
	}
	for _, h := range hs {
		if h.Name == mv.From {
			if h.PeerAddr == "" {
				return "", "", false, fmt.Errorf("host %s has no peer listener (peer_listen) to fetch the data from", mv.From)
			}
			return h.PeerAddr, h.PeerFingerprint, true, nil
		}
	}
	return "", "", false, nil // not answering: try again at the next pass
}

// endStep sets step name of op (adding it if missing) to state.
func endStep(op *store.Operation, name string, state store.StepState, msg string, now time.Time) {
	for i := range op.Steps {
		if op.Steps[i].Name == name {
			op.Steps[i].State, op.Steps[i].Message, op.Steps[i].EndTime = state, msg, now
			return
		}
	}
	op.Steps = append(op.Steps, store.Step{Name: name, State: state, StartTime: now, EndTime: now, Message: msg})
}

// export copies the project's data out (as privd dumps it for a data
// snapshot) and records the files, then offers them.
func (m *Mover) export(ctx context.Context, p *store.Project) error {
	mv := p.Move
	if m.opt.Peer == nil {
		return errors.New("this host has no peer listener (peer_listen) to send the data from")
	}
	if err := m.step(ctx, mv.Operation, "export data", store.StepRunning, ""); err != nil {
		return err
	}
	if err := os.MkdirAll(m.dir(), 0o700); err != nil {
		return err
	}
	var out []store.MoveFile
	for i, id := range files(mv) {
		f, err := m.dump(ctx, p.Name, id, i == 1)
		if err != nil {
			return fmt.Errorf("export the data: %w", err)
		}
		out = append(out, f)
	}
	// Offered before the target can know of them: it fetches as soon as
	// it sees them recorded.
	p.Move.Files = out
	if err := m.offer(p); err != nil {
		return err
	}
	_, err := m.st.UpdateProject(ctx, p.Name, func(q *store.Project) error {
		if q.Move == nil || q.Move.ID != mv.ID || q.Move.State != store.MoveExporting {
			return fmt.Errorf("the move changed meanwhile")
		}
		q.Move.Files, q.Move.State = out, store.MoveExported
		return nil
	})
	if err != nil {
		return err
	}
	return m.step(ctx, mv.Operation, "export data", store.StepDone, fmt.Sprintf("%s of data, %s of media files", datasize.Text(out[0].Size), datasize.Text(out[1].Size)))
}

// dump writes one file of the export: the database copy, or the media.
func (m *Mover) dump(ctx context.Context, project, id string, media bool) (store.MoveFile, error) {
	path := filepath.Join(m.dir(), id)
	os.Remove(path) // a pass cut short left it
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return store.MoveFile{}, err
	}
	h := sha256.New()
	w := &limitio.Writer{W: io.MultiWriter(f, h), Max: m.opt.MaxBytes, Err: errors.New("the data is larger than snapshot_max_bytes allows")}
	err = reconcile.DumpData(ctx, m.opt.Privd, project, media, w)
	if st, ok := status.FromError(err); ok && err != nil {
		// privd's message is for people; its code and wrapping are not.
		err = errors.New(st.Message())
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return store.MoveFile{}, err
	}
	return store.MoveFile{ID: id, Size: w.N, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// offer makes the export's files fetchable by the move's token (again,
// after a restart of this opusd).
func (m *Mover) offer(p *store.Project) error {
	mv := p.Move
	if m.opt.Peer == nil || len(mv.Files)+len(mv.Last) == 0 {
		return nil
	}
	token, err := hex.DecodeString(mv.Token)
	if err != nil {
		return fmt.Errorf("the move's token: %w", err)
	}
	for _, f := range append(slices.Clone(mv.Files), mv.Last...) {
		if err := m.opt.Peer.Offer(f.ID, filepath.Join(m.dir(), f.ID), token, f.Size, f.SHA256); err != nil {
			return fmt.Errorf("offer %s: %w", f.ID, err)
		}
	}
	return nil
}

// fetch takes the export from the source's peer listener into this
// host's data snapshots and makes this host's copy of the project.
func (m *Mover) fetch(ctx context.Context, p *store.Project) error {
	mv := p.Move
	hs, err := m.st.Hosts(ctx)
	if err != nil {
		return err
	}
	var from *store.Host
	for i := range hs {
		if hs[i].Name == mv.From {
			from = &hs[i]
		}
	}
	if from == nil {
		// The source is not answering: try again at the next pass.
		return nil
	}
	if from.PeerAddr == "" {
		return fmt.Errorf("host %s has no peer listener (peer_listen) to fetch the data from", mv.From)
	}
	token, err := hex.DecodeString(mv.Token)
	if err != nil {
		return fmt.Errorf("the move's token: %w", err)
	}
	if err := m.step(ctx, mv.Operation, "fetch data", store.StepRunning, ""); err != nil {
		return err
	}
	snaps := snapshot.NewDir(m.opt.BaseDir)
	tmp := filepath.Join(m.dir(), "in-"+mv.ID)
	if err := os.MkdirAll(m.dir(), 0o700); err != nil {
		return err
	}
	defer os.Remove(tmp)
	var got int64
	for _, f := range mv.Files {
		os.Remove(tmp)
		if err := peer.Fetch(ctx, from.PeerAddr, from.PeerFingerprint, f.ID, token, tmp, m.opt.MaxBytes, f.SHA256); err != nil {
			if transient(err) && time.Since(mv.Time) < giveUp {
				// The source restarted (it offers its files again at its
				// next pass, under a new certificate) or is busy.
				m.log.Warn("fetch the moving data: trying again", "project", p.Name, "from", mv.From, "err", err)
				return nil
			}
			return fmt.Errorf("fetch the data from host %s: %w", mv.From, err)
		}
		_, err := snaps.Write(p.Name, f.ID, m.opt.MaxBytes, func(w io.Writer) error {
			r, err := os.Open(tmp)
			if err != nil {
				return err
			}
			defer r.Close()
			_, err = io.Copy(w, r)
			return err
		})
		if err != nil {
			return fmt.Errorf("keep the data: %w", err)
		}
		got += f.Size
	}
	now := time.Now()
	err = m.st.Update(ctx, func(tx *store.Tx) error {
		q, err := tx.Project(p.Name)
		if err != nil {
			return err
		}
		if q.Move == nil || q.Move.ID != mv.ID || q.Move.State != store.MoveExported {
			return fmt.Errorf("the move changed meanwhile")
		}
		c := incomingCopy(q, m.opt.Host, now)
		if err := tx.Facet(store.FacetIncoming).CreateProject(c); err != nil {
			return err
		}
		q.Move.State = store.MoveDeploying
		return tx.PutProject(q)
	})
	if err != nil {
		snaps.Remove(p.Name, mv.ID)
		snaps.Remove(p.Name, snapshot.MediaID(mv.ID))
		return err
	}
	if err := m.step(ctx, mv.Operation, "fetch data", store.StepDone, fmt.Sprintf("%s from host %s", datasize.Text(got), mv.From)); err != nil {
		return err
	}
	m.opt.Incoming.Kick(p.Name)
	return nil
}

// giveUp is how long after a move began the target stops trying to fetch
// its data from a source that does not offer it; and after which the
// source ends a move its target has not taken up (fetched the data and
// begun its copy) if the target is not answering: otherwise a target
// that died would leave the project moving, every change to it refused,
// until that host came back. Ending it races with nothing: the target
// takes the move up in a commit that finds it still EXPORTED, and fail
// clears it in one that finds it not yet DEPLOYING.
const giveUp = 10 * time.Minute

// transient says a fetch may succeed if tried again: the source does not
// offer the file yet or again (it restarted), is busy, or is out of
// reach for now. A wrong file or certificate is no reason to try again.
func transient(err error) bool {
	return !errors.Is(err, peer.ErrCorrupt) && !errors.Is(err, peer.ErrTooLarge)
}

// incomingCopy is this host's copy of p, to be deployed from p's spec
// and to restore the data the move carried: a new project as the
// reconciler sees it (its first deploy; removed whole if that fails).
func incomingCopy(p *store.Project, host string, now time.Time) *store.Project {
	mv := p.Move
	c := &store.Project{
		Name: p.Name, OwnerUID: p.OwnerUID, OwnerName: p.OwnerName, Host: host, Spec: p.Spec.Clone(), Generation: p.Generation,
		Status: store.Status{Phase: store.PhasePending},
	}
	if p.Secrets != nil {
		s := *p.Secrets
		c.Secrets = &s
	}
	db, media := mv.Files[0], mv.Files[1]
	c.Snapshots = []store.Snapshot{{ID: mv.ID, Time: now, Size: db.Size, Engine: snapshot.SQLite,
		Generation: p.Generation, Media: true, MediaSize: media.Size}}
	c.Spec.RestoreSnapshot = mv.ID
	return c
}

// watchDeploy keeps a move's copy deploying, and ends a move whose copy
// failed if that was not done with its operation (Switch does it).
func (m *Mover) watchDeploy(ctx context.Context, p *store.Project) error {
	op, err := m.st.GetOperation(ctx, p.Move.Operation)
	if err != nil {
		return err
	}
	if !op.State.Final() {
		// Its copy deploys (again, after a restart of this opusd; or
		// first, for a copy a restore made here from a backup).
		m.opt.Incoming.Kick(p.Name)
		return nil
	}
	if _, err := m.in.GetProject(ctx, p.Name); err == nil {
		return nil // its teardown is still going on
	}
	_, err = m.st.UpdateProject(ctx, p.Name, func(q *store.Project) error {
		if q.Move != nil && q.Move.ID == p.Move.ID {
			q.Move = nil
		}
		return nil
	})
	return err
}

// Switch is the incoming reconciler's Finish (its commit that ends a run
// of a copy, in tx). A copy deployed from the first copy of the data
// answers: the source is to stop taking writes and take the data again
// (SYNCING), so the operation goes on; a copy restored from a backup
// (nothing to copy again: its host is gone) becomes the project at once
// (switchOver). A copy that failed, and was torn down (c.Deleting), ends
// the move instead, leaving the project where it was — and if the source
// had stopped taking writes, it deploys its own copy again.
func Switch(host string) func(tx *store.Tx, c *store.Project) error {
	return func(tx *store.Tx, c *store.Project) error {
		main := tx.Main()
		old, err := main.Project(c.Name)
		if err != nil {
			return err
		}
		mv := old.Move
		if c.Deleting {
			if mv != nil && mv.To == host {
				old.Move = nil
				if err := main.PutProject(old); err != nil {
					return err
				}
				// Ended here if the teardown ran under an operation of
				// its own (the move's had been handed to the mover).
				if op, err := tx.Operation(mv.Operation); err == nil && !op.State.Final() {
					op.State, op.EndTime = store.OpFailed, tx.Now()
					if op.Error == "" {
						op.Error = "move to host " + host + ": called off"
					}
					if err := tx.PutOperation(op); err != nil {
						return err
					}
				}
				if mv.State == store.MoveSyncing || mv.State == store.MoveLast {
					// Its backend went for the last copy: a run of its own
					// brings it back.
					if _, err := main.NewOperation(old, store.OpReconcile, old.OwnerUID); err != nil {
						return err
					}
				}
			}
			return tx.DeleteProject(c.Name)
		}
		if mv == nil || mv.To != host {
			return fmt.Errorf("project %s is no longer moving here", c.Name)
		}
		if len(mv.Files) == 0 {
			return switchOver(tx, host, old, c)
		}
		if err := tx.PutProject(c); err != nil {
			return err
		}
		if mv.State == store.MoveDeploying {
			// (A run again after a restart leaves a later state be.)
			mv.State = store.MoveSyncing
			if err := main.PutProject(old); err != nil {
				return err
			}
		}
		op, err := tx.Operation(mv.Operation)
		if err != nil {
			return err
		}
		// Not over yet: the mover's from here (Claimed), ended with the
		// switch (takeOver).
		op.State, op.EndTime = store.OpRunning, time.Time{}
		if !Handed(op) {
			endStep(op, lastStep, store.StepRunning, "the copy here answers; the old copy is to stop taking writes and send what it wrote since", tx.Now())
		}
		return tx.PutOperation(op)
	}
}

// lastStep is the move's last step, the mover's: from its start the
// incoming reconciler leaves the operation be (Handed).
const lastStep = "last copy"

// Handed says a move's operation has been handed to the mover (its copy
// deployed): the incoming reconciler's Options.Claim is !Handed.
func Handed(op *store.Operation) bool {
	return slices.ContainsFunc(op.Steps, func(s store.Step) bool { return s.Name == lastStep })
}

// switchOver makes c, this host's copy, the project (on this host), and
// the source's record old a departing one, for its host to tear down.
func switchOver(tx *store.Tx, host string, old, c *store.Project) error {
	gone := old.Clone()
	gone.Move, gone.Deleting = nil, true
	if err := tx.Facet(store.FacetDeparting).CreateProject(gone); err != nil {
		return err
	}
	now := c.Clone()
	now.Host, now.Move, now.CreateTime = host, nil, old.CreateTime
	if err := tx.Main().PutProject(now); err != nil {
		return err
	}
	return tx.Facet(store.FacetIncoming).DeleteProject(c.Name)
}

// fail ends a move that cannot go on: its operation fails with why, the
// move is cleared (the project stays where it was), and what this host
// made for it goes.
func (m *Mover) fail(ctx context.Context, p *store.Project, why error) {
	m.log.Error("move failed", "project", p.Name, "to", p.Move.To, "err", why)
	mv := p.Move
	err := m.st.Update(ctx, func(tx *store.Tx) error {
		q, err := tx.Project(p.Name)
		if err != nil {
			return err
		}
		if q.Move == nil || q.Move.ID != mv.ID {
			return nil
		}
		op, err := tx.Operation(mv.Operation)
		if err != nil {
			return err
		}
		final := q.Move.State == store.MoveSyncing || q.Move.State == store.MoveLast
		switch {
		case q.Move.State == store.MoveDeploying:
			return nil // the incoming reconciler ends it
		case final && mv.From == m.opt.Host:
			// The source gives up on a target that is gone: it ends the
			// move and deploys its own copy again (its backend went for
			// the last copy). The target's copy is torn down when that
			// host is back (its incoming record, marked here).
			in := tx.Facet(store.FacetIncoming)
			if c, err := in.Project(p.Name); err == nil {
				c.Deleting = true
				if err := in.PutProject(c); err != nil {
					return err
				}
			}
			q.Move = nil
			if err := tx.PutProject(q); err != nil {
				return err
			}
			if _, err := tx.NewOperation(q, store.OpReconcile, q.OwnerUID); err != nil {
				return err
			}
		case final:
			// The target's copy answers and is to go: its reconciler
			// tears it down and, in the commit that ends the operation
			// (failed with why), ends the move (Switch), the source
			// deploying its own copy again.
			in := tx.Facet(store.FacetIncoming)
			c, err := in.Project(p.Name)
			if err != nil {
				return err
			}
			c.Deleting = true
			if err := in.PutProject(c); err != nil {
				return err
			}
			op.Error = "move to host " + mv.To + ": " + why.Error()
			endStep(op, lastStep, store.StepFailed, why.Error(), tx.Now())
			return tx.PutOperation(op)
		}
		q.Move = nil
		if err := tx.PutProject(q); err != nil {
			return err
		}
		if !op.State.Final() {
			op.State, op.Error, op.EndTime = store.OpFailed, "move to host "+mv.To+": "+why.Error(), tx.Now()
			for i := range op.Steps {
				if op.Steps[i].State == store.StepRunning {
					op.Steps[i].State, op.Steps[i].EndTime, op.Steps[i].Message = store.StepFailed, tx.Now(), why.Error()
				}
			}
			return tx.PutOperation(op)
		}
		return nil
	})
	if err != nil {
		m.log.Error("record the failed move", "project", p.Name, "err", err)
	}
	if mv.To == m.opt.Host {
		m.opt.Incoming.Kick(p.Name)
	}
	if mv.From == m.opt.Host && m.opt.Main != nil {
		m.opt.Main.Kick(p.Name)
	}
	snaps := snapshot.NewDir(m.opt.BaseDir)
	if mv.To == m.opt.Host {
		snaps.Remove(p.Name, mv.ID)
		snaps.Remove(p.Name, snapshot.MediaID(mv.ID))
	}
}

// prune withdraws and removes the exports of moves that are over, and
// whatever else is under moves/: a fetch is done within its pass (its
// file, "in-ID", removed when it returns), so one there now is what a
// fetch cut short by the end of opusd left.
func (m *Mover) prune(keep map[string]bool) error {
	es, err := os.ReadDir(m.dir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range es {
		id := strings.TrimSuffix(strings.TrimSuffix(e.Name(), "-media"), lastSuffix)
		if keep[id] {
			continue
		}
		if m.opt.Peer != nil {
			m.opt.Peer.Withdraw(e.Name())
		}
		if err := os.Remove(filepath.Join(m.dir(), e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// step records a step of the move in its operation (the mover's own: the
// incoming reconciler records the deploy's).
func (m *Mover) step(ctx context.Context, opID, name string, state store.StepState, msg string) error {
	_, err := m.st.UpdateOperation(ctx, opID, func(op *store.Operation) error {
		now := time.Now()
		// The operation stays PENDING until the incoming reconciler
		// claims it: one it finds RUNNING it takes for a run an opusd
		// left half done, and starts its steps afresh.
		for i := range op.Steps {
			if op.Steps[i].Name == name {
				op.Steps[i].State, op.Steps[i].Message = state, msg
				if state != store.StepRunning {
					op.Steps[i].EndTime = now
				}
				return nil
			}
		}
		op.Steps = append(op.Steps, store.Step{Name: name, State: state, StartTime: now, Message: msg})
		return nil
	})
	return err
}
