// Package credential is where opusd makes and checks the web console's
// secrets, and the one place that does: argon2id password hashes (with a
// process-wide bound on how many are computed at once), random tokens
// (login links, session ids, CSRF tokens), and the keys tokens are stored
// under (their SHA-256, so reading the state file signs no one in).
//
// The store keeps what this package returns as opaque strings; the
// service calls it (setting a password, making a link, signing in); the
// console's HTTP side needs none of it but NewToken for its sign-in form.
package credential

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"

	"golang.org/x/crypto/argon2"
)

// NewToken returns 32 random bytes, base64url: a login link token, a
// session id or a CSRF token.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// TokenKey is the key a login link token or session id is stored under:
// its SHA-256, hex. A token has 256 random bits, so no salt or slow hash is
// needed to keep the key from giving the token back.
func TokenKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// MaxTokenLen bounds a token a caller presents (NewToken's are 43
// characters); anything longer is no token and is not hashed.
const MaxTokenLen = 100

// LoginLinkPath is the console path a login link points at; the token
// follows as the query parameter "t". The service makes links, the console
// serves them: both take the path from here.
const LoginLinkPath = "/login/link"

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
	return phc(argonMemory, argonTime, argonThreads, salt, key), nil
}

func phc(memory, time uint32, threads uint8, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, memory, time, threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

// noPasswordHash is checked against when there is no password to check
// (no such user, no account, no password set), so that costs what a real
// check costs and timing does not tell which. Its key is all zeros: no
// password's argon2id is.
var noPasswordHash = phc(argonMemory, argonTime, argonThreads, make([]byte, 16), make([]byte, argonKeyLen))

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
