package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The hosts bucket: which opusds share this state now.
//
//	bucket "hosts"  key host name → Host
//
// On etcd each key is bound to a lease its opusd renews (RegisterHost):
// it disappears EtcdOptions.HostTTL after that opusd stops or is cut off
// from the cluster, and the projects of a host not listed are UNREACHABLE. In a
// bbolt file the one record is this host's.
var bucketHosts = []byte("hosts")

// Host is one host of an Opus installation, as its opusd registers it.
type Host struct {
	// Name is the host's name (config host_name), unique in the cluster.
	Name string `json:"name"`
	// Front is HOST:PORT where the host's web front answers for its
	// projects: where a project's name must resolve.
	Front string `json:"front"`
	// HTTPPort and HTTPSPort are the ports its front serves projects on
	// (its http_port and https_port): a project's URLs name its host's.
	HTTPPort  int `json:"http_port,omitempty"`
	HTTPSPort int `json:"https_port,omitempty"`
	// Capacity is how many projects the host takes; placement puts a new
	// project on the live host with the lowest share of it used.
	Capacity int `json:"capacity"`
	// Since is when this opusd registered.
	Since time.Time `json:"since"`
	// Instance tells this host's opusd from another's that claims the
	// same name: it is kept in the host's base directory, so the opusd
	// of the same host, restarted, takes its own place back at once (the
	// last one's lease may not have run out yet), and another host's is
	// refused.
	Instance string `json:"instance,omitempty"`
	// PeerAddr is HOST:PORT where the host's opusd serves files to other
	// hosts (package peer); empty if it serves none.
	PeerAddr string `json:"peer_addr,omitempty"`
	// PeerFingerprint is the hex SHA-256 of the certificate PeerAddr
	// presents (peer.Server.Fingerprint): new at each start of opusd, and
	// what another host pins when it fetches from this one.
	PeerFingerprint string `json:"peer_fingerprint,omitempty"`
}

// RegisterHost lists h among the hosts until this opusd stops (see
// EtcdOptions.HostTTL); it returns once h is listed.
func (s *Store) RegisterHost(ctx context.Context, h Host) error {
	if h.Name == "" {
		return errors.New("store: host without a name")
	}
	data, err := json.Marshal(h)
	if err != nil {
		return err
	}
	mine := func(old []byte) bool {
		var o Host
		return json.Unmarshal(old, &o) == nil && h.Instance != "" && o.Instance == h.Instance
	}
	err = s.kv.register(ctx, bucketHosts, []byte(h.Name), data, mine)
	var taken *TakenError
	if errors.As(err, &taken) {
		var o Host
		json.Unmarshal(taken.Record, &o)
		return fmt.Errorf("host_name %s is another host's: its opusd (front %s, up since %s) holds it; give each host a host_name of its own", h.Name, o.Front, o.Since.UTC().Format(time.RFC3339))
	}
	if err != nil {
		return fmt.Errorf("register host %s: %w", h.Name, err)
	}
	return nil
}

// Shared reports whether several hosts share this state (etcd): then
// each project is worked on by its own host's opusd only.
func (s *Store) Shared() bool { return s.kv.shared() }

// ServedHere says this host serves p, so that its opusd (alone) works on
// it and has its files: every project, on a store no other host shares.
func (s *Store) ServedHere(p *Project) bool { return !s.kv.shared() || p.Host == s.host }

// HostName is this host's name on a shared store (EtcdOptions.Host); ""
// on a bbolt store.
func (s *Store) HostName() string { return s.host }

// Hosts returns the hosts listed now, by name.
func (tx *Tx) Hosts() ([]Host, error) {
	var out []Host
	err := tx.kv.ascend(bucketHosts, nil, func(k, v []byte) error {
		var h Host
		if err := json.Unmarshal(v, &h); err != nil {
			return fmt.Errorf("host %s: corrupt record: %w", k, err)
		}
		out = append(out, h)
		return nil
	})
	return out, err
}

// Hosts returns the hosts listed now, by name.
func (s *Store) Hosts(ctx context.Context) ([]Host, error) {
	var hs []Host
	err := s.View(ctx, func(tx *Tx) (err error) { hs, err = tx.Hosts(); return err })
	return hs, err
}

// OnChangedElsewhere has fn called (as well as any function given before)
// with the name of every project whose
// record another host's commit changed or deleted (never on a bbolt
// store: nothing else writes it). Work this opusd's own calls commit is
// kicked by those calls; this is how a host learns of the rest. fn must
// not block.
func (s *Store) OnChangedElsewhere(fn func(project string)) {
	for {
		old := s.elsewhere.Load()
		var fns []func(string)
		if old != nil {
			fns = append(fns, *old...)
		}
		fns = append(fns, fn)
		if s.elsewhere.CompareAndSwap(old, &fns) {
			return
		}
	}
}
