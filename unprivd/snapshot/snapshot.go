// Package snapshot keeps copies of projects' databases, taken before a
// change runs migrations, so that a rollback with data and the undo of a
// failed change can put the database back.
//
// The copies live in opusd's own directory, BaseDir/snapshots/NAME/ (0700,
// files 0600), where no tenant can write; their records are in the
// project's store record (store.Snapshot). Which to keep (Retain) and
// which a rollback restores (ForRollback) are decided here, as pure
// functions of those records.
package snapshot

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/opus-hosting/opus/internal/atomicfile"
	"github.com/opus-hosting/opus/internal/layout"
	"github.com/opus-hosting/opus/internal/limitio"
	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/unprivd/store"
)

// Engines a snapshot is of.
const (
	SQLite     = "sqlite"
	PostgreSQL = "postgresql"
)

// ErrTooLarge says a copy passed the bound.
var ErrTooLarge = errors.New("the database is larger than snapshot_max_bytes")

// Dir is the snapshots directory under a base directory.
type Dir struct{ root string }

// NewDir returns the snapshots directory of base.
func NewDir(base string) Dir { return Dir{root: filepath.Join(base, layout.SnapshotsDir)} }

func (d Dir) project(name string) (string, error) {
	if err := names.ValidateProject(name); err != nil {
		return "", err
	}
	return filepath.Join(d.root, name), nil
}

// NewID makes a snapshot id: its time and a random part, which sorts by
// time and names a file.
func NewID(now time.Time) string {
	var b [3]byte
	rand.Read(b[:])
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// validID accepts the ids NewID makes (and nothing that could be a path).
func validID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("snapshot id %q is not one Opus made", id)
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r == '-') {
			return fmt.Errorf("snapshot id %q is not one Opus made", id)
		}
	}
	return nil
}

// Write stores a new snapshot id of project with what fill writes, at most
// max bytes (more fails with ErrTooLarge and keeps nothing). The file
// appears whole or not at all. It returns its size.
func (d Dir) Write(project, id string, max int64, fill func(io.Writer) error) (int64, error) {
	dir, err := d.project(project)
	if err != nil {
		return 0, err
	}
	if err := validID(id); err != nil {
		return 0, err
	}
	for _, p := range []string{d.root, dir} {
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return 0, fmt.Errorf("snapshot directory: %w", err)
		}
	}
	var w *limitio.Writer
	err = atomicfile.WriteFrom(filepath.Join(dir, id), 0o600, func(f io.Writer) error {
		w = &limitio.Writer{W: f, Max: max, Err: ErrTooLarge}
		err := fill(w)
		if w.Over {
			return ErrTooLarge
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	return w.N, nil
}

// MediaID is the id under which the media files of snapshot id are kept
// (Write and Open it like a snapshot; Prune keeps it with its snapshot's
// record when that says Media).
func MediaID(id string) string { return id + "-media" }

// Open opens snapshot id of project for reading.
func (d Dir) Open(project, id string) (*os.File, error) {
	dir, err := d.project(project)
	if err != nil {
		return nil, err
	}
	if err := validID(id); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(dir, id), os.O_RDONLY|noFollow, 0)
}

// Prune removes every file of project's that keep does not name (dropped
// snapshots, and partial ones a crash left).
func (d Dir) Prune(project string, keep []store.Snapshot) error {
	dir, err := d.project(project)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	kept := map[string]bool{}
	for _, s := range keep {
		kept[s.ID] = true
		if s.Media {
			kept[MediaID(s.ID)] = true
		}
	}
	for _, e := range entries {
		if !kept[e.Name()] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// Remove removes snapshot id of project, if it is there (also one the
// per-user quota dropped from another project's record: that project's
// own Prune may be running, so only the file named goes).
func (d Dir) Remove(project, id string) error {
	dir, err := d.project(project)
	if err != nil {
		return err
	}
	if err := validID(id); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// RemoveAll removes all of project's snapshots (teardown).
func (d Dir) RemoveAll(project string) error {
	dir, err := d.project(project)
	if err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// Retain decides which of a project's snapshots (oldest first) to keep:
// the newest, at most keep of them and at most maxBytes together, and
// every pinned one (one a pending restore names) whatever the bounds. The
// newest is always kept: it was taken within the bound. Both lists keep
// snaps' order.
func Retain(snaps []store.Snapshot, keep int, maxBytes int64, pinned ...string) (kept, dropped []store.Snapshot) {
	pin := map[string]bool{}
	for _, id := range pinned {
		pin[id] = true
	}
	keepIt := make([]bool, len(snaps))
	var count int
	var bytes int64
	for i := len(snaps) - 1; i >= 0; i-- {
		if pin[snaps[i].ID] {
			keepIt[i] = true
			count++
			bytes += snaps[i].Bytes()
		}
	}
	for i := len(snaps) - 1; i >= 0; i-- {
		s := snaps[i]
		if keepIt[i] {
			continue
		}
		if i == len(snaps)-1 || (count < keep && bytes+s.Bytes() <= maxBytes) {
			keepIt[i] = true
			count++
			bytes += s.Bytes()
		} else {
			// Older ones would be older still: once one does not fit,
			// none after it is kept (a smaller older one would make a
			// gap in the history).
			break
		}
	}
	for i, s := range snaps {
		if keepIt[i] {
			kept = append(kept, s)
		} else {
			dropped = append(dropped, s)
		}
	}
	return kept, dropped
}

// ForRollback returns the snapshot a rollback of app to revision rev with
// data restores: the newest one taken while app ran rev, that is the data
// as that revision last saw it, before the change that moved it on. Nil
// when none is kept.
func ForRollback(snaps []store.Snapshot, app string, rev int) *store.Snapshot {
	byTime := make([]store.Snapshot, len(snaps))
	copy(byTime, snaps)
	sort.SliceStable(byTime, func(i, j int) bool { return byTime[i].Time.Before(byTime[j].Time) })
	for i := len(byTime) - 1; i >= 0; i-- {
		if byTime[i].Revisions[app] == rev {
			s := byTime[i]
			return &s
		}
	}
	return nil
}
