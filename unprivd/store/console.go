package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/user"
	"sort"
	"strconv"
	"time"
)

// The web console's buckets. They are created on first write, so a file
// written before the console existed opens unchanged (no schema bump: an
// older opusd ignores buckets it does not know).
var (
	bucketConsoleAccounts = []byte("console_accounts")
	bucketConsoleLinks    = []byte("console_links")
	bucketConsoleSessions = []byte("console_sessions")
)

// ConsoleAccount is a Unix user's web console account. It exists once the
// user made a login link or set a password (or an admin disabled them).
//
// It is the account of a user, not of a uid: a uid is freed by userdel and
// may be given to someone else, who must not inherit the old user's
// password, sessions or links. So the account records the user's login
// name, and holds only while the uid still has that name (BelongsTo,
// ConsoleAccountOf); otherwise it is deleted with everything that signs
// in.
type ConsoleAccount struct {
	UID uint32 `json:"uid"`
	// Name is the login name of the user the account was made for. Empty
	// in accounts written before names were recorded (ConsoleAccountOf).
	Name string `json:"name,omitempty"`
	// PasswordHash is the password's hash as unprivd/credential made it
	// (opaque here), empty when no password is set.
	PasswordHash string    `json:"password_hash,omitempty"`
	Disabled     bool      `json:"disabled,omitempty"`
	LastSignIn   time.Time `json:"last_sign_in"`
	CreateTime   time.Time `json:"create_time"`
}

// LoginLink is an unused one-time login link. It is stored under a key the
// caller derives from its token (credential.TokenKey: a hash, so reading
// the state file signs no one in); the store never sees the token.
type LoginLink struct {
	UID uint32 `json:"uid"`
	// Name is the login name of the user who made the link; it signs in
	// only while uid still has that name.
	Name       string    `json:"name,omitempty"`
	ExpireTime time.Time `json:"expire_time"`
}

// ConsoleSession is a signed-in browser, stored under a key the caller
// derives from the session id (credential.TokenKey), as a LoginLink.
type ConsoleSession struct {
	UID uint32 `json:"uid"`
	// CSRF is the token every form of this session must carry.
	CSRF       string    `json:"csrf"`
	CreateTime time.Time `json:"create_time"`
	ExpireTime time.Time `json:"expire_time"`
}

func uidKey(uid uint32) []byte { return []byte(strconv.FormatUint(uint64(uid), 10)) }

// ErrNoUser means no Unix user has a uid.
var ErrNoUser = errors.New("no such user")

// SystemUserName returns uid's login name in the host's user database, or
// an error wrapping ErrNoUser when no user has it. Any other failure (an
// NSS source down) is a different error: the user may still exist, so
// nothing of theirs should be deleted for it.
func SystemUserName(uid uint32) (string, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	var unknown user.UnknownUserIdError
	switch {
	case errors.As(err, &unknown):
		return "", fmt.Errorf("uid %d: %w", uid, ErrNoUser)
	case err != nil:
		return "", fmt.Errorf("look up uid %d: %w", uid, err)
	}
	return u.Username, nil
}

// ConsoleUserName returns uid's login name now (Options.UserName): "" and
// no error when no user has uid (the answer for ConsoleAccountOf), an
// error when the user database could not say.
func (s *Store) ConsoleUserName(uid uint32) (string, error) {
	name, err := s.userName(uid)
	if errors.Is(err, ErrNoUser) {
		return "", nil
	}
	return name, err
}

func (tx *Tx) getJSON(bucket, key []byte, v any) error {
	data := tx.kv.get(bucket, key)
	if data == nil {
		return ErrNotFound
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: corrupt record: %w", bucket, err)
	}
	return nil
}

func (tx *Tx) putJSON(bucket, key []byte, v any) error {
	if !tx.writable {
		return errors.New("store: write in a read-only transaction")
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: encode %s: %w", bucket, err)
	}
	return tx.kv.put(bucket, key, data)
}

func (tx *Tx) deleteKey(bucket, key []byte) error { return tx.kv.del(bucket, key) }

// ConsoleAccount returns uid's account, or an error wrapping ErrNotFound.
func (tx *Tx) ConsoleAccount(uid uint32) (*ConsoleAccount, error) {
	a := new(ConsoleAccount)
	if err := tx.getJSON(bucketConsoleAccounts, uidKey(uid), a); err != nil {
		return nil, fmt.Errorf("console account %d: %w", uid, err)
	}
	return a, nil
}

// BelongsTo reports whether a is the account of the user now named name
// (its uid's login name now; "" when no user has the uid).
func (a *ConsoleAccount) BelongsTo(name string) bool { return name != "" && a.Name == name }

// ConsoleAccountOf returns uid's account if it belongs to the user now
// named name (uid's login name now, "" when no user has it), or nil when
// it has none; it needs a write transaction. An account made for another
// user — one deleted since, whose uid is now someone else's or no one's —
// is deleted with its sessions and login links, and the answer is nil. An
// error means only that the store failed: "no account" is not one, so a
// caller that refuses on nil still commits the deletion.
//
// An account written before accounts recorded their user's name cannot
// say whose it was. What signs in (its password, sessions, links) is
// dropped, so it cannot pass to a new owner of the uid; what keeps out (an
// admin's Disabled) is kept, and the account is bound to the uid's current
// user, so the upgrade lets no one in who was kept out.
func (tx *Tx) ConsoleAccountOf(uid uint32, name string) (*ConsoleAccount, error) {
	a, err := tx.ConsoleAccount(uid)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if a.BelongsTo(name) {
		return a, nil
	}
	if err := tx.DeleteConsoleAccount(uid); err != nil {
		return nil, err
	}
	if a.Name == "" && name != "" {
		a = &ConsoleAccount{UID: uid, Name: name, Disabled: a.Disabled, LastSignIn: a.LastSignIn, CreateTime: a.CreateTime}
		return a, tx.PutConsoleAccount(a)
	}
	return nil, nil
}

// EnsureConsoleAccount returns the account of uid's user, now named name,
// creating an empty one; an account of a former user of uid is dropped
// first (ConsoleAccountOf). A uid without a user (name "") has none: an
// error wrapping ErrNoUser.
func (tx *Tx) EnsureConsoleAccount(uid uint32, name string) (*ConsoleAccount, error) {
	if name == "" {
		return nil, fmt.Errorf("console account %d: %w", uid, ErrNoUser)
	}
	a, err := tx.ConsoleAccountOf(uid, name)
	if err != nil || a != nil {
		return a, err
	}
	a = &ConsoleAccount{UID: uid, Name: name, CreateTime: tx.Now()}
	return a, tx.PutConsoleAccount(a)
}

// SetConsolePassword stores a's new password hash and ends every session
// of a: whoever signed in with the old password (a leaked one, say) is out.
func (tx *Tx) SetConsolePassword(a *ConsoleAccount, hash string) error {
	a.PasswordHash = hash
	if err := tx.PutConsoleAccount(a); err != nil {
		return err
	}
	return tx.DeleteConsoleSessionsOf(a.UID)
}

// DeleteConsoleAccount deletes uid's account, its sessions and its login
// links; an error wrapping ErrNotFound when there is no account.
func (tx *Tx) DeleteConsoleAccount(uid uint32) error {
	if _, err := tx.ConsoleAccount(uid); err != nil {
		return err
	}
	if err := tx.deleteKey(bucketConsoleAccounts, uidKey(uid)); err != nil {
		return err
	}
	if err := tx.DeleteConsoleSessionsOf(uid); err != nil {
		return err
	}
	return tx.deleteWhere(bucketConsoleLinks, func(v []byte) bool {
		var l LoginLink
		return json.Unmarshal(v, &l) != nil || l.UID == uid
	})
}

// PutConsoleAccount stores a over its previous record.
func (tx *Tx) PutConsoleAccount(a *ConsoleAccount) error {
	return tx.putJSON(bucketConsoleAccounts, uidKey(a.UID), a)
}

// ConsoleAccounts returns every console account (in key order).
func (tx *Tx) ConsoleAccounts() ([]*ConsoleAccount, error) {
	var out []*ConsoleAccount
	err := tx.kv.ascend(bucketConsoleAccounts, nil, func(k, v []byte) error {
		a := new(ConsoleAccount)
		if err := json.Unmarshal(v, a); err != nil {
			return fmt.Errorf("console account %s: corrupt record: %w", k, err)
		}
		out = append(out, a)
		return nil
	})
	return out, err
}

// PutLoginLink records an unused login link under key (its token's
// credential.TokenKey).
func (tx *Tx) PutLoginLink(key string, l LoginLink) error {
	return tx.putJSON(bucketConsoleLinks, []byte(key), l)
}

// HasLoginLink reports whether a login link is recorded under key (expired
// or not), without writing: TakeLoginLink needs a write transaction.
func (tx *Tx) HasLoginLink(key string) bool {
	return tx.kv.get(bucketConsoleLinks, []byte(key)) != nil
}

// TakeLoginLink deletes the link under key and returns it: a link works
// once. An unknown or expired link is an error wrapping ErrNotFound (an
// expired one is deleted too).
func (tx *Tx) TakeLoginLink(key string) (*LoginLink, error) {
	l := new(LoginLink)
	if err := tx.getJSON(bucketConsoleLinks, []byte(key), l); err != nil {
		return nil, fmt.Errorf("login link: %w", err)
	}
	if err := tx.deleteKey(bucketConsoleLinks, []byte(key)); err != nil {
		return nil, err
	}
	if !tx.Now().Before(l.ExpireTime) {
		return nil, fmt.Errorf("login link expired: %w", ErrNotFound)
	}
	return l, nil
}

// PutConsoleSession records a session under key (its id's
// credential.TokenKey).
func (tx *Tx) PutConsoleSession(key string, s ConsoleSession) error {
	return tx.putJSON(bucketConsoleSessions, []byte(key), s)
}

// MaxConsoleSessions bounds the live sessions of one uid: signing in more
// often ends the oldest, so no user can grow the store without end.
const MaxConsoleSessions = 20

// TrimConsoleSessions deletes the oldest sessions of uid beyond
// MaxConsoleSessions.
func (tx *Tx) TrimConsoleSessions(uid uint32) error {
	type kept struct {
		key     []byte
		created time.Time
	}
	var mine []kept
	if err := tx.kv.ascend(bucketConsoleSessions, nil, func(k, v []byte) error {
		var s ConsoleSession
		if json.Unmarshal(v, &s) == nil && s.UID == uid {
			mine = append(mine, kept{append([]byte(nil), k...), s.CreateTime})
		}
		return nil
	}); err != nil {
		return err
	}
	if len(mine) <= MaxConsoleSessions {
		return nil
	}
	sort.Slice(mine, func(i, j int) bool { return mine[i].created.Before(mine[j].created) })
	for _, s := range mine[:len(mine)-MaxConsoleSessions] {
		if err := tx.kv.del(bucketConsoleSessions, s.key); err != nil {
			return err
		}
	}
	return nil
}

// ConsoleSession returns the live session under key. Unknown and expired
// are both errors wrapping ErrNotFound.
func (tx *Tx) ConsoleSession(key string) (*ConsoleSession, error) {
	s := new(ConsoleSession)
	if err := tx.getJSON(bucketConsoleSessions, []byte(key), s); err != nil {
		return nil, fmt.Errorf("console session: %w", err)
	}
	if !tx.Now().Before(s.ExpireTime) {
		return nil, fmt.Errorf("console session expired: %w", ErrNotFound)
	}
	return s, nil
}

// DeleteConsoleSession forgets the session under key (sign-out).
func (tx *Tx) DeleteConsoleSession(key string) error {
	return tx.deleteKey(bucketConsoleSessions, []byte(key))
}

// DeleteConsoleSessionsOf forgets every session of uid (account disabled,
// password changed, account deleted).
func (tx *Tx) DeleteConsoleSessionsOf(uid uint32) error {
	return tx.deleteWhere(bucketConsoleSessions, func(v []byte) bool {
		var s ConsoleSession
		return json.Unmarshal(v, &s) != nil || s.UID == uid
	})
}

// PruneConsole deletes expired login links and sessions, so neither bucket
// grows with time.
func (tx *Tx) PruneConsole() error {
	now := tx.Now()
	if err := tx.deleteWhere(bucketConsoleLinks, func(v []byte) bool {
		var l LoginLink
		return json.Unmarshal(v, &l) != nil || !now.Before(l.ExpireTime)
	}); err != nil {
		return err
	}
	return tx.deleteWhere(bucketConsoleSessions, func(v []byte) bool {
		var s ConsoleSession
		return json.Unmarshal(v, &s) != nil || !now.Before(s.ExpireTime)
	})
}

func (tx *Tx) deleteWhere(bucket []byte, drop func(v []byte) bool) error {
	if !tx.writable {
		return errors.New("store: write in a read-only transaction")
	}
	var keys [][]byte
	if err := tx.kv.ascend(bucket, nil, func(k, v []byte) error {
		if drop(v) {
			keys = append(keys, append([]byte(nil), k...))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := tx.kv.del(bucket, k); err != nil {
			return err
		}
	}
	return nil
}
