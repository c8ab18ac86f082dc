package store

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/user"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/argon2"
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
	// PasswordHash is an argon2id PHC string, empty when no password is set.
	PasswordHash string    `json:"password_hash,omitempty"`
	Disabled     bool      `json:"disabled,omitempty"`
	LastSignIn   time.Time `json:"last_sign_in"`
	CreateTime   time.Time `json:"create_time"`
}

// LoginLink is an unused one-time login link. Only the SHA-256 of its token
// is stored (as the key), so reading the state file signs no one in.
type LoginLink struct {
	UID uint32 `json:"uid"`
	// Name is the login name of the user who made the link; it signs in
	// only while uid still has that name.
	Name       string    `json:"name,omitempty"`
	ExpireTime time.Time `json:"expire_time"`
}

// ConsoleSession is a signed-in browser. Only the SHA-256 of the session id
// is stored (as the key).
type ConsoleSession struct {
	UID uint32 `json:"uid"`
	// CSRF is the token every form of this session must carry.
	CSRF       string    `json:"csrf"`
	CreateTime time.Time `json:"create_time"`
	ExpireTime time.Time `json:"expire_time"`
}

// NewToken returns 32 random bytes, base64url: a login link token, a
// session id or a CSRF token.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func tokenKey(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return []byte(hex.EncodeToString(sum[:]))
}

func uidKey(uid uint32) []byte { return []byte(strconv.FormatUint(uint64(uid), 10)) }

// Argon2id parameters (RFC 9106's second recommendation, scaled to a small
// host): 64 MiB, 3 passes, 1 lane, 32-byte key. Stored in each hash, so
// they can change without invalidating old passwords.
const (
	argonTime    = 3
	argonMemory  = 64 << 10
	argonThreads = 1
	argonKeyLen  = 32
)

// PasswordHashers is how many argon2id computations run at once in this
// process. Each holds 64 MiB while it runs, and sign-in reaches one without
// signing in: unbounded, a burst of sign-ins is a burst of 64 MiB
// allocations. Beyond the bound, HashPassword and CheckPassword fail at
// once with ErrBusy, and callers answer "busy, try again" rather than
// queue (a queue would only hold the flood's requests open).
const PasswordHashers = 2

// ErrBusy means PasswordHashers passwords are being hashed already.
var ErrBusy = errors.New("too many passwords are being checked at once")

// hashSlots is the bound, for the whole process: the console's sign-in and
// the API's SetConsolePassword share one memory.
var hashSlots = make(slots, PasswordHashers)

// slots is a counting semaphore that never waits.
type slots chan struct{}

// try takes a slot if one is free; release gives it back.
func (s slots) try() (release func(), ok bool) {
	select {
	case s <- struct{}{}:
		return func() { <-s }, true
	default:
		return nil, false
	}
}

// HashPassword returns an argon2id PHC string for password with a fresh
// random salt, or ErrBusy.
func HashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	key, err := idKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// noPasswordHash is checked against when there is no password to check
// (no such user, no account, no password set), so that costs what a real
// check costs and timing does not tell which. Its key is all zeros: no
// password's argon2id is.
var noPasswordHash = fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
	base64.RawStdEncoding.EncodeToString(make([]byte, 16)), base64.RawStdEncoding.EncodeToString(make([]byte, argonKeyLen)))

// ErrBadHash means a stored password hash cannot be parsed.
var ErrBadHash = errors.New("not an argon2id password hash")

// CheckPassword reports whether password matches the PHC string hash. An
// empty hash (no account, or no password set) costs the same as a real one
// and never matches. It returns ErrBusy when PasswordHashers checks run
// already.
func CheckPassword(hash, password string) (bool, error) {
	none := hash == ""
	if none {
		hash = noPasswordHash
	}
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return false, ErrBadHash
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 || m > 1<<20 || t > 100 {
		return false, ErrBadHash
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false, ErrBadHash
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(want) == 0 || len(want) > 128 {
		return false, ErrBadHash
	}
	got, err := idKey([]byte(password), salt, t, m, p, uint32(len(want)))
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(got, want) == 1 && !none, nil
}

// idKey is argon2.IDKey in one of the hashSlots, or ErrBusy. The slot is
// given back only once the memory argon2 took is back with the system:
// left to the garbage collector, a few checks' worth of 64 MiB blocks
// pile up before a collection (measured: 350 MiB resident with two slots
// under a stream of sign-ins, where the live blocks are 128 MiB). A forced
// collection costs about a millisecond next to a check's quarter second.
func idKey(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) ([]byte, error) {
	release, ok := hashSlots.try()
	if !ok {
		return nil, ErrBusy
	}
	defer release()
	key := argon2.IDKey(password, salt, time, memory, threads, keyLen)
	debug.FreeOSMemory()
	return key, nil
}

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

// bucketFor returns a console bucket, creating it in a write transaction;
// in a read transaction it is nil until the first write made it.
func (tx *Tx) bucketFor(name []byte) (*bolt.Bucket, error) {
	if b := tx.tx.Bucket(name); b != nil || !tx.writable {
		return b, nil
	}
	return tx.tx.CreateBucket(name)
}

func (tx *Tx) getJSON(bucket, key []byte, v any) error {
	b, err := tx.bucketFor(bucket)
	if err != nil {
		return err
	}
	var data []byte
	if b != nil {
		data = b.Get(key)
	}
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
	b, err := tx.bucketFor(bucket)
	if err != nil {
		return err
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: encode %s: %w", bucket, err)
	}
	return b.Put(key, data)
}

func (tx *Tx) deleteKey(bucket, key []byte) error {
	b, err := tx.bucketFor(bucket)
	if err != nil || b == nil {
		return err
	}
	return b.Delete(key)
}

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
	b, err := tx.bucketFor(bucketConsoleAccounts)
	if err != nil || b == nil {
		return nil, err
	}
	var out []*ConsoleAccount
	err = b.ForEach(func(k, v []byte) error {
		a := new(ConsoleAccount)
		if err := json.Unmarshal(v, a); err != nil {
			return fmt.Errorf("console account %s: corrupt record: %w", k, err)
		}
		out = append(out, a)
		return nil
	})
	return out, err
}

// PutLoginLink records an unused login link for token.
func (tx *Tx) PutLoginLink(token string, l LoginLink) error {
	return tx.putJSON(bucketConsoleLinks, tokenKey(token), l)
}

// HasLoginLink reports whether token is a recorded login link (expired or
// not), without writing: TakeLoginLink needs a write transaction.
func (tx *Tx) HasLoginLink(token string) bool {
	b := tx.tx.Bucket(bucketConsoleLinks)
	return b != nil && b.Get(tokenKey(token)) != nil
}

// TakeLoginLink deletes the link of token and returns it: a link works
// once. An unknown or expired token is an error wrapping ErrNotFound (an
// expired one is deleted too).
func (tx *Tx) TakeLoginLink(token string) (*LoginLink, error) {
	l := new(LoginLink)
	key := tokenKey(token)
	if err := tx.getJSON(bucketConsoleLinks, key, l); err != nil {
		return nil, fmt.Errorf("login link: %w", err)
	}
	if err := tx.deleteKey(bucketConsoleLinks, key); err != nil {
		return nil, err
	}
	if !tx.Now().Before(l.ExpireTime) {
		return nil, fmt.Errorf("login link expired: %w", ErrNotFound)
	}
	return l, nil
}

// PutConsoleSession records a session under its id.
func (tx *Tx) PutConsoleSession(id string, s ConsoleSession) error {
	return tx.putJSON(bucketConsoleSessions, tokenKey(id), s)
}

// MaxConsoleSessions bounds the live sessions of one uid: signing in more
// often ends the oldest, so no user can grow the store without end.
const MaxConsoleSessions = 20

// TrimConsoleSessions deletes the oldest sessions of uid beyond
// MaxConsoleSessions.
func (tx *Tx) TrimConsoleSessions(uid uint32) error {
	b, err := tx.bucketFor(bucketConsoleSessions)
	if err != nil || b == nil {
		return err
	}
	type kept struct {
		key     []byte
		created time.Time
	}
	var mine []kept
	if err := b.ForEach(func(k, v []byte) error {
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
		if err := b.Delete(s.key); err != nil {
			return err
		}
	}
	return nil
}

// ConsoleSession returns the live session of id. Unknown and expired are
// both errors wrapping ErrNotFound.
func (tx *Tx) ConsoleSession(id string) (*ConsoleSession, error) {
	s := new(ConsoleSession)
	if err := tx.getJSON(bucketConsoleSessions, tokenKey(id), s); err != nil {
		return nil, fmt.Errorf("console session: %w", err)
	}
	if !tx.Now().Before(s.ExpireTime) {
		return nil, fmt.Errorf("console session expired: %w", ErrNotFound)
	}
	return s, nil
}

// DeleteConsoleSession forgets session id (sign-out).
func (tx *Tx) DeleteConsoleSession(id string) error {
	return tx.deleteKey(bucketConsoleSessions, tokenKey(id))
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
	b, err := tx.bucketFor(bucket)
	if err != nil {
		return err
	}
	var keys [][]byte
	if err := b.ForEach(func(k, v []byte) error {
		if drop(v) {
			keys = append(keys, append([]byte(nil), k...))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
