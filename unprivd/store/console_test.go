package store

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

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

func TestPasswordHash(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=1$") {
		t.Fatalf("hash %q is not argon2id PHC", h)
	}
	h2, _ := HashPassword("correct horse")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for _, tc := range []struct {
		hash, pw string
		ok       bool
		err      error
	}{
		{h, "correct horse", true, nil},
		{h, "correct horse ", false, nil},
		{h, "", false, nil},
		{"", "x", false, ErrBadHash},
		{"$argon2i$v=19$m=1,t=1,p=1$AAAA$AAAA", "x", false, ErrBadHash},
		{"$argon2id$v=19$m=99999999,t=1,p=1$AAAA$AAAA", "x", false, ErrBadHash},
		{"$argon2id$v=19$m=8,t=1,p=1$!!$AAAA", "x", false, ErrBadHash},
	} {
		ok, err := CheckPassword(tc.hash, tc.pw)
		if ok != tc.ok || !errors.Is(err, tc.err) {
			t.Errorf("CheckPassword(%.30q, %q) = %v, %v; want %v, %v", tc.hash, tc.pw, ok, err, tc.ok, tc.err)
		}
	}
}

func FuzzCheckPassword(f *testing.F) {
	f.Add("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$AAAA", "pw")
	f.Add("$argon2id$v=19$m=0,t=0,p=0$$", "")
	f.Add("garbage", "x")
	f.Fuzz(func(t *testing.T, hash, pw string) {
		// Never panics, and a parse error is never a match.
		if ok, err := CheckPassword(hash, pw); ok && err != nil {
			t.Fatalf("match with error %v", err)
		}
	})
}

func TestLoginLinkIsSingleUseAndExpires(t *testing.T) {
	c := newClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := openClock(t, c)
	ctx := context.Background()
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	old, _ := NewToken()
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
	// Reading the file gives no token: keys are hashes.
	s.View(ctx, func(tx *Tx) error {
		return tx.tx.Bucket(bucketConsoleLinks).ForEach(func(k, _ []byte) error {
			if string(k) == tok || string(k) == old {
				t.Errorf("token stored in clear")
			}
			return nil
		})
	})
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
			if _, err := tx.EnsureConsoleAccount(uid); err != nil {
				return err
			}
			id, _ := NewToken()
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
		if n := tx.tx.Bucket(bucketConsoleSessions).Stats().KeyN; n != 0 {
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
