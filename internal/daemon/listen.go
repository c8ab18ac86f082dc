package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"

	"github.com/coreos/go-systemd/v22/activation"

	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/internal/socklock"
)

// Socket is where a daemon serves its API: the Unix socket systemd passes
// (socket activation), or its own at Path.
type Socket struct {
	// Path is the daemon's own socket, made with Mode and Group (-1: the
	// daemon's own group) when systemd passes none.
	Path  string
	Mode  fs.FileMode
	Group int
	// LockActivated takes the socket's lock also when systemd passed the
	// socket, at the path systemd listens on (which a daemon started by
	// hand would bind): the lock file lies beside the socket, so this
	// needs the daemon to be able to write the socket's directory.
	LockActivated bool
}

// Listen returns the socket systemd passed, if it passed any, else binds
// s.Path. Before binding it takes the socket's lock (internal/socklock),
// held until Release or the end of the process, so that a second daemon
// started by mistake cannot remove the running one's socket and bind its
// own: it stops saying "another NAME is already serving PATH". The lock
// is nil when none was taken (socket activation without LockActivated).
//
// Peer credentials are the daemons' authentication, so systemd must pass
// exactly one socket, and a Unix one; anything else is refused.
func (d *Daemon) Listen(s Socket) (net.Listener, *socklock.Lock, error) {
	return d.listen(s, activation.Listeners)
}

// listen is Listen with systemd's sockets from activated.
func (d *Daemon) listen(s Socket, activated func() ([]net.Listener, error)) (net.Listener, *socklock.Lock, error) {
	ls, err := activated()
	if err != nil {
		return nil, nil, fmt.Errorf("systemd socket activation: %w", err)
	}
	if len(ls) == 0 {
		lock, err := d.lock(s.Path)
		if err != nil {
			return nil, nil, err
		}
		l, err := peercred.Listen(s.Path, s.Mode, s.Group)
		if err != nil {
			lock.Release()
			return nil, nil, err
		}
		d.Log.Info("listening", "socket", s.Path)
		return l, lock, nil
	}
	l, err := d.oneUnix(ls)
	if err != nil {
		for _, l := range ls {
			if l != nil {
				l.Close()
			}
		}
		return nil, nil, err
	}
	var lock *socklock.Lock
	if s.LockActivated {
		path := s.Path
		if addr := l.Addr().String(); filepath.IsAbs(addr) {
			path = addr
		}
		if lock, err = d.lock(path); err != nil {
			l.Close()
			return nil, nil, err
		}
	}
	d.Log.Info("using socket from systemd", "addr", l.Addr().String())
	return l, lock, nil
}

// oneUnix returns the one listener of ls, which must be a Unix socket.
func (d *Daemon) oneUnix(ls []net.Listener) (net.Listener, error) {
	if len(ls) != 1 {
		return nil, fmt.Errorf("systemd passed %d sockets; %s serves one Unix socket", len(ls), d.Name)
	}
	if ls[0] == nil {
		return nil, fmt.Errorf("systemd passed a descriptor that is not a listening socket; %s serves one Unix socket", d.Name)
	}
	if _, ok := ls[0].(*net.UnixListener); !ok {
		return nil, fmt.Errorf("systemd passed a %s socket; %s serves only a Unix socket (peer credentials are its authentication)", ls[0].Addr().Network(), d.Name)
	}
	return ls[0], nil
}

// lock takes socket's lock, saying plainly when another daemon holds it.
func (d *Daemon) lock(socket string) (*socklock.Lock, error) {
	lock, err := socklock.Acquire(socket, socklock.DefaultWait)
	if errors.Is(err, socklock.ErrHeld) {
		return nil, fmt.Errorf("another %s is already serving %s (%w); this one stops without touching it (stop the other one first, or give this one its own run_dir or --socket)", d.Name, socket, err)
	}
	return lock, err
}
