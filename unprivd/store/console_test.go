package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// keys counts newKey's keys.
var keys atomic.Int64

// newKey is a distinct record key, as the service derives from a token
// (the store treats keys as opaque strings).
func newKey() string { return fmt.Sprintf("key-%d", keys.Add(1)) }

// clock is a settable store clock.
type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.t.Load()) }
func (c *clock) add(d time.Duration) { c.t.Add(int64(d)) }
func newClock(t time.Time) *clock    { c := &clock{}; c.t.Store(t.UnixNano()); return c }
func openClock(t *testing.T, c *clock) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "opusd.db"), Options{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestLoginLinkIsSingleUseAndExpires(t *testing.T) {
	c := newClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := openClock(t, c)
	ctx := context.Background()
	tok, old := newKey(), newKey()
	put := func(token string, ttl time.Duration) {
		if err := s.Update(ctx, func(tx *Tx) error {
			return tx.PutLoginLink(token, LoginLink{UID: 1000, ExpireTime: tx.Now().Add(ttl)})
		}); err != nil {
			t.Fatal(err)
		}
	}
	take := func(token string) (*LoginLink, error) {
		var l *LoginLink
		err := s.Update(ctx, func(tx *Tx) (err error) { l, err = tx.TakeLoginLink(token); return err })
		return l, err
	}
	put(tok, 5*time.Minute)
	put(old, time.Minute)
	c.add(2 * time.Minute)
	if _, err := take(old); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired link: %v", err)
	}
	l, err := take(tok)
	if err != nil || l.UID != 1000 {
		t.Fatalf("first use: %+v %v", l, err)
	}
	if _, err := take(tok); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second use: %v", err)
	}
	if _, err := take("garbage"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("garbage: %v", err)
	}
}

func TestConsoleSessionsAndAccounts(t *testing.T) {
	c := newClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := openClock(t, c)
	ctx := context.Background()
	// A fresh file reads as empty without a write.
	if err := s.View(ctx, func(tx *Tx) error {
		if _, err := tx.ConsoleSession("x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("session on empty file: %v", err)
		}
		as, err := tx.ConsoleAccounts()
		if err != nil || len(as) != 0 {
			t.Errorf("accounts on empty file: %v %v", as, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ids := map[uint32]string{}
	err := s.Update(ctx, func(tx *Tx) error {
		for _, uid := range []uint32{1000, 1001} {
			if _, err := tx.EnsureConsoleAccount(uid, fmt.Sprint("user", uid)); err != nil {
				return err
			}
			id := newKey()
			ids[uid] = id
			if err := tx.PutConsoleSession(id, ConsoleSession{UID: uid, CSRF: "c", ExpireTime: tx.Now().Add(time.Hour)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	get := func(id string) (*ConsoleSession, error) {
		var cs *ConsoleSession
		err := s.View(ctx, func(tx *Tx) (err error) { cs, err = tx.ConsoleSession(id); return err })
		return cs, err
	}
	if cs, err := get(ids[1000]); err != nil || cs.UID != 1000 {
		t.Fatalf("session: %+v %v", cs, err)
	}
	// Disabling a user ends their sessions only.
	if err := s.Update(ctx, func(tx *Tx) error { return tx.DeleteConsoleSessionsOf(1000) }); err != nil {
		t.Fatal(err)
	}
	if _, err := get(ids[1000]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("session of disabled user: %v", err)
	}
	if _, err := get(ids[1001]); err != nil {
		t.Fatalf("other user's session: %v", err)
	}
	// Expiry, then pruning removes the record.
	c.add(2 * time.Hour)
	if _, err := get(ids[1001]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired session: %v", err)
	}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.PruneConsole() }); err != nil {
		t.Fatal(err)
	}
	s.View(ctx, func(tx *Tx) error {
		if n := countKeys(tx, bucketConsoleSessions); n != 0 {
			t.Errorf("%d sessions left after prune", n)
		}
		return nil
	})
	var as []*ConsoleAccount
	s.View(ctx, func(tx *Tx) (err error) { as, err = tx.ConsoleAccounts(); return err })
	if len(as) != 2 || as[0].UID != 1000 || as[1].UID != 1001 {
		t.Fatalf("accounts: %+v", as)
	}
}

func TestSystemUserName(t *testing.T) {
	if name, err := SystemUserName(0); err != nil || name != "root" {
		t.Errorf("uid 0: %q %v", name, err)
	}
	if name, err := SystemUserName(4000000000); !errors.Is(err, ErrNoUser) {
		t.Errorf("a uid no one has: %q %v, want ErrNoUser", name, err)
	}
}

// TestConsoleAccountBelongsToItsUser: an account is its user's, not its
// uid's. When the uid has another name, or none, the account goes with its
// sessions and links (other uids' stay); an account from before names were
// recorded keeps only its Disabled flag, bound to the current user.
func TestConsoleAccountBelongsToItsUser(t *testing.T) {
	const uid, other = 1000, 1001
	type state struct {
		account                *ConsoleAccount
		sessions, links, other int
	}
	for _, tc := range []struct {
		name   string
		stored ConsoleAccount
		now    string // uid's login name now; "" when no user has it
		want   *ConsoleAccount
	}{
		{"same user", ConsoleAccount{Name: "alice", PasswordHash: "h"}, "alice", &ConsoleAccount{Name: "alice", PasswordHash: "h"}},
		{"uid given to another user", ConsoleAccount{Name: "alice", PasswordHash: "h"}, "bob", nil},
		{"disabled, uid given to another user", ConsoleAccount{Name: "alice", Disabled: true}, "bob", nil},
		{"user deleted", ConsoleAccount{Name: "alice", PasswordHash: "h"}, "", nil},
		{"before names, user deleted", ConsoleAccount{PasswordHash: "h", Disabled: true}, "", nil},
		{"before names", ConsoleAccount{PasswordHash: "h"}, "carol", &ConsoleAccount{Name: "carol"}},
		{"before names, disabled", ConsoleAccount{PasswordHash: "h", Disabled: true}, "carol", &ConsoleAccount{Name: "carol", Disabled: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openClock(t, newClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)))
			ctx := context.Background()
			err := s.Update(ctx, func(tx *Tx) error {
				a := tc.stored
				a.UID = uid
				if err := tx.PutConsoleAccount(&a); err != nil {
					return err
				}
				if _, err := tx.EnsureConsoleAccount(other, "dave"); err != nil {
					return err
				}
				for _, u := range []uint32{uid, other} {
					tok := newKey()
					if err := tx.PutConsoleSession(tok, ConsoleSession{UID: u, ExpireTime: tx.Now().Add(time.Hour)}); err != nil {
						return err
					}
					if err := tx.PutLoginLink(tok, LoginLink{UID: u, ExpireTime: tx.Now().Add(time.Hour)}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			var got state
			err = s.Update(ctx, func(tx *Tx) (err error) {
				if got.account, err = tx.ConsoleAccountOf(uid, tc.now); err != nil {
					return err
				}
				count := func(bucket []byte, of uint32) (n int) {
					tx.kv.ascend(bucket, nil, func(_, v []byte) error {
						var r struct{ UID uint32 }
						json.Unmarshal(v, &r)
						if r.UID == of {
							n++
						}
						return nil
					})
					return n
				}
				got.sessions, got.links = count(bucketConsoleSessions, uid), count(bucketConsoleLinks, uid)
				got.other = count(bucketConsoleSessions, other) + count(bucketConsoleLinks, other)
				if _, err := tx.ConsoleAccount(uid); (err == nil) != (tc.want != nil) {
					t.Errorf("account stored after: %v, want stored: %v", err, tc.want != nil)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			kept := tc.want != nil && tc.want.Name == tc.stored.Name
			if tc.want == nil {
				if got.account != nil {
					t.Errorf("account %+v, want none", got.account)
				}
			} else if got.account == nil || got.account.Name != tc.want.Name || got.account.PasswordHash != tc.want.PasswordHash || got.account.Disabled != tc.want.Disabled {
				t.Errorf("account %+v, want %+v", got.account, tc.want)
			}
			if want := map[bool]int{true: 1, false: 0}[kept]; got.sessions != want || got.links != want {
				t.Errorf("%d sessions and %d links of uid %d left, want %d each", got.sessions, got.links, uid, want)
			}
			if got.other != 2 {
				t.Errorf("another uid's session and link: %d left, want 2", got.other)
			}
		})
	}
}

// TestConsoleAccountChanges: no account for a uid without a user; a new
// password ends the account's sessions (not others'); deleting an account
// deletes its sessions and links and is NotFound the second time.
func TestConsoleAccountChanges(t *testing.T) {
	s := openClock(t, newClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)))
	ctx := context.Background()
	sessions := func() map[uint32]int {
		m := map[uint32]int{}
		s.View(ctx, func(tx *Tx) error {
			return tx.kv.ascend(bucketConsoleSessions, nil, func(_, v []byte) error {
				var cs ConsoleSession
				json.Unmarshal(v, &cs)
				m[cs.UID]++
				return nil
			})
		})
		return m
	}
	err := s.Update(ctx, func(tx *Tx) error {
		if _, err := tx.EnsureConsoleAccount(7, ""); !errors.Is(err, ErrNoUser) {
			t.Errorf("account for a uid without a user: %v", err)
		}
		for _, u := range []uint32{1000, 1001} {
			if _, err := tx.EnsureConsoleAccount(u, fmt.Sprint("user", u)); err != nil {
				return err
			}
			for range 2 {
				tok := newKey()
				if err := tx.PutConsoleSession(tok, ConsoleSession{UID: u, ExpireTime: tx.Now().Add(time.Hour)}); err != nil {
					return err
				}
			}
		}
		tok := newKey()
		return tx.PutLoginLink(tok, LoginLink{UID: 1001, ExpireTime: tx.Now().Add(time.Hour)})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *Tx) error {
		a, err := tx.ConsoleAccount(1000)
		if err != nil {
			return err
		}
		return tx.SetConsolePassword(a, "new hash")
	}); err != nil {
		t.Fatal(err)
	}
	if m := sessions(); m[1000] != 0 || m[1001] != 2 {
		t.Fatalf("sessions after uid 1000's password change: %v", m)
	}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.DeleteConsoleAccount(1001) }); err != nil {
		t.Fatal(err)
	}
	if m := sessions(); m[1001] != 0 {
		t.Fatalf("sessions after uid 1001's account was deleted: %v", m)
	}
	s.View(ctx, func(tx *Tx) error {
		if n := countKeys(tx, bucketConsoleLinks); n != 0 {
			t.Errorf("%d login links left after the account was deleted", n)
		}
		if a, err := tx.ConsoleAccount(1000); err != nil || a.PasswordHash != "new hash" {
			t.Errorf("uid 1000's account: %+v %v", a, err)
		}
		return nil
	})
	if err := s.Update(ctx, func(tx *Tx) error { return tx.DeleteConsoleAccount(1001) }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting it again: %v", err)
	}
}

// TestTrimConsoleSessions: a uid keeps at most MaxConsoleSessions live
// sessions, the newest; another uid's are untouched.
func TestTrimConsoleSessions(t *testing.T) {
	c := newClock(time.Now())
	s := openClock(t, c)
	ctx := context.Background()
	put := func(uid uint32, id string) {
		t.Helper()
		err := s.Update(ctx, func(tx *Tx) error {
			if err := tx.PutConsoleSession(id, ConsoleSession{UID: uid, CreateTime: tx.Now(), ExpireTime: tx.Now().Add(time.Hour)}); err != nil {
				return err
			}
			return tx.TrimConsoleSessions(uid)
		})
		if err != nil {
			t.Fatal(err)
		}
		c.add(time.Second)
	}
	put(2000, "other")
	for i := range MaxConsoleSessions + 5 {
		put(1000, fmt.Sprint("s", i))
	}
	live := func(id string) bool {
		err := s.View(ctx, func(tx *Tx) error { _, err := tx.ConsoleSession(id); return err })
		return err == nil
	}
	for i := range MaxConsoleSessions + 5 {
		if want := i >= 5; live(fmt.Sprint("s", i)) != want {
			t.Errorf("session s%d live = %v, want %v", i, !want, want)
		}
	}
	if !live("other") {
		t.Error("another uid's session was trimmed")
	}
}

// countKeys counts the entries of bucket.
func countKeys(tx *Tx, bucket []byte) (n int) {
	tx.kv.ascend(bucket, nil, func(_, _ []byte) error { n++; return nil })
	return n
}
