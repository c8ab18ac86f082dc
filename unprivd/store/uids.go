package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// The uid allocation bucket (made on its first write, like the console's):
//
//	bucket "uids"   key uid as 10 decimal digits (zero-padded, so byte
//	                order is numeric order) → UIDRecord
//
// A record is never deleted: an id once handed out, or skipped, is never
// handed out again, so nothing a destroyed project left on the host (a
// setuid file in /tmp, a process it detached) can ever belong to a later
// project.
var bucketUIDs = []byte("uids")

// UIDRecord is what became of one project uid (and the gid of the same
// number).
type UIDRecord struct {
	UID uint32 `json:"uid"`
	// Project is the project the id was allocated to; empty when it was
	// skipped.
	Project string    `json:"project,omitempty"`
	Time    time.Time `json:"time"`
	// Taken says privd found the id in use on the host (another account,
	// or processes of it running) when the project's user was to be made
	// with it: it was skipped, and is never offered again.
	Taken string `json:"taken,omitempty"`
}

// ErrUIDsExhausted means every id of the configured range has been handed
// out.
var ErrUIDsExhausted = errors.New("every id of project_uids has been handed out (each goes to one project, once)")

func uidKey10(uid uint32) []byte { return fmt.Appendf(nil, "%010d", uid) }

// AllocateUID hands project the lowest id in first..last above every id
// ever recorded in that range, and records it. An error wrapping
// ErrUIDsExhausted means there is none left.
func (tx *Tx) AllocateUID(project string, first, last uint32) (uint32, error) {
	next := uint64(first)
	// The highest recorded id of the range: the last key below last+1.
	var k []byte
	err := tx.kv.descend(bucketUIDs, uidKey10(last+1), func(key, _ []byte) error {
		k = bytes.Clone(key)
		return errStop
	})
	if err != nil {
		return 0, err
	}
	if k != nil {
		if id, err := strconv.ParseUint(string(k), 10, 32); err == nil && id >= uint64(first) && id <= uint64(last) {
			next = id + 1
		}
	}
	if next > uint64(last) {
		return 0, fmt.Errorf("project_uids %d-%d: %w", first, last, ErrUIDsExhausted)
	}
	uid := uint32(next)
	rec := UIDRecord{UID: uid, Project: project, Time: tx.Now()}
	return uid, tx.putJSON(bucketUIDs, uidKey10(uid), rec)
}

// MarkUIDTaken records that uid was in use on the host (why says by
// what), so that no project gets it.
func (tx *Tx) MarkUIDTaken(uid uint32, why string) error {
	var rec UIDRecord
	if err := tx.getJSON(bucketUIDs, uidKey10(uid), &rec); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	rec.UID, rec.Project, rec.Taken = uid, "", why
	if rec.Time.IsZero() {
		rec.Time = tx.Now()
	}
	return tx.putJSON(bucketUIDs, uidKey10(uid), rec)
}

// UIDs returns every recorded id, lowest first.
func (tx *Tx) UIDs() ([]UIDRecord, error) {
	var out []UIDRecord
	err := tx.kv.ascend(bucketUIDs, nil, func(k, v []byte) error {
		var r UIDRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("uid %s: corrupt record: %w", k, err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}
