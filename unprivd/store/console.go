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
// user made a login link or set a password.
type ConsoleAccount struct {
	UID uint32 `json:"uid"`
	// PasswordHash is an argon2id PHC string, empty when no password is set.
	PasswordHash string    `json:"password_hash,omitempty"`
	Disabled     bool      `json:"disabled,omitempty"`
	LastSignIn   time.Time `json:"last_sign_in"`
	CreateTime   time.Time `json:"create_time"`
}

// LoginLink is an unused one-time login link. Only the SHA-256 of its token
// is stored (as the key), so reading the state file signs no one in.
type LoginLink struct {
	UID        uint32    `json:"uid"`
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

// HashPassword returns an argon2id PHC string for password with a fresh
// random salt.
func HashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// ErrBadHash means a stored password hash cannot be parsed.
var ErrBadHash = errors.New("not an argon2id password hash")

// CheckPassword reports whether password matches the PHC string hash.
func CheckPassword(hash, password string) (bool, error) {
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
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
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

// EnsureConsoleAccount returns uid's account, creating an empty one.
func (tx *Tx) EnsureConsoleAccount(uid uint32) (*ConsoleAccount, error) {
	a, err := tx.ConsoleAccount(uid)
	if errors.Is(err, ErrNotFound) {
		a = &ConsoleAccount{UID: uid, CreateTime: tx.Now()}
		return a, tx.PutConsoleAccount(a)
	}
	return a, err
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

// DeleteConsoleSessionsOf forgets every session of uid (account disabled).
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
