package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/credential"
	"github.com/opus-hosting/opus/unprivd/store"
)

// The web console's sessions (opus.v1.ConsoleSessions): signing in with a
// password or a login link, looking a session up, signing out. Only the
// console inside opusd may call them (accessConsole: an in-process
// connection); its HTTP side holds no state and no secret of its own.
//
// A console account is its Unix user's (store.ConsoleAccountOf): every
// sign-in and every lookup of a session checks that the uid still has the
// user name the account was made for. Session ids and link tokens are
// stored only as their credential.TokenKey and never logged.

// DefaultConsoleSessionTTL is how long a console session lasts when
// Config.ConsoleSessionTTL is 0.
const DefaultConsoleSessionTTL = 12 * time.Hour

// Sign-in request bounds: a user field longer than maxUserField is no
// user's name; a password longer than maxSignInPassword is refused before
// it is hashed; remote_addr is an address, and keys failure counters.
const (
	maxUserField      = 256
	maxSignInPassword = 16 << 10
	maxRemoteAddr     = 100
)

// consoleSessions implements opusv1.ConsoleSessionsServer for a Service.
type consoleSessions struct {
	opusv1.UnimplementedConsoleSessionsServer
	s   *Service
	ttl time.Duration
	// Sign-in failures (signinlimit.go): unknown login links per address,
	// wrong passwords per account and per account and address.
	linkFails, accountFails, accountAddrFails *failures
	// checking holds the accounts whose password is being checked: one at
	// a time per account (signinlimit.go).
	checking inFlight
}

func newConsoleSessions(s *Service, ttl time.Duration) *consoleSessions {
	if ttl <= 0 {
		ttl = DefaultConsoleSessionTTL
	}
	return &consoleSessions{s: s, ttl: ttl,
		linkFails:        newFailures(MaxLinkFails, failWindow, maxFailKeys),
		accountFails:     newFailures(MaxAccountFails, failWindow, maxFailKeys),
		accountAddrFails: newFailures(MaxAccountAddrFails, failWindow, maxFailKeys)}
}

// Sign-in refusals the console shows as they are.
var (
	errWrongPassword = status.Error(codes.Unauthenticated, "Wrong user or password, or no console password set (opusctl web passwd).")
	errCheckFailed   = status.Error(codes.Internal, "The console could not check the password; ask the host administrator (opusd's log says why).")
	errDisabled      = status.Error(codes.PermissionDenied, "This console account is disabled; ask an admin.")
	errUserGone      = status.Error(codes.PermissionDenied, "The user this was made for no longer exists; sign in as the user you are now.")
	errNoSession     = status.Error(codes.Unauthenticated, "not signed in (or the session expired): sign in again")
)

// signInAddr is the browser address of a sign-in the interceptor let
// through, which failures count against.
func signInAddr(ctx context.Context, addr string) (string, error) {
	if _, err := callerFrom(ctx); err != nil {
		return "", err
	}
	if len(addr) > maxRemoteAddr {
		return "", invalid("remote_addr", "is %d bytes; an address has at most %d", len(addr), maxRemoteAddr)
	}
	return addr, nil
}

// SignInWithPassword signs in with a user name (or uid) and console
// password. Failures are limited per account and per account and address
// (signinlimit.go) and logged; when every hasher is busy, or a check of
// the account is under way, the answer is an immediate Unavailable.
func (cs *consoleSessions) SignInWithPassword(ctx context.Context, req *opusv1.SignInWithPasswordRequest) (*opusv1.SignInWithPasswordResponse, error) {
	s := cs.s
	addr, err := signInAddr(ctx, req.GetRemoteAddr())
	if err != nil {
		return nil, err
	}
	pw := req.GetPassword()
	if len(pw) > maxSignInPassword {
		return nil, invalid("password", "is %d bytes, longer than any console password (at most %d characters)", len(pw), maxConsolePassword)
	}
	field := strings.TrimSpace(req.GetUser())
	uid, name := cs.signInUser(field)
	acct, err := cs.signInAccount(ctx, uid, name)
	if err != nil {
		s.log.ErrorContext(ctx, "console: sign-in", "user", field, "err", err)
		return nil, errCheckFailed
	}
	account := failKey(uid, name, acct.epoch())
	now := time.Now()
	if !cs.accountFails.allowed(account, now) || !cs.accountAddrFails.allowed(account+" "+addr, now) {
		// Debug: these cost nothing and come as fast as they are sent; the
		// failure that crossed the limit was logged.
		s.log.DebugContext(ctx, "console: sign-in refused: too many failures", "user", field, "remote", addr)
		if name == "" {
			// Names no user has share one counter: whoever mistypes a
			// name is told just that, not that "their" account is locked.
			return nil, errWrongPassword
		}
		return nil, status.Errorf(codes.ResourceExhausted, "Too many failed sign-ins for this user within %d minutes; wait, set a new console password (opusctl web passwd), or use a login link (opusctl web login).", int(failWindow/time.Minute))
	}
	release, free := cs.checking.try(account)
	if !free {
		s.log.DebugContext(ctx, "console: sign-in refused: a check of this account is under way", "user", field, "remote", addr)
		return nil, status.Error(codes.Unavailable, "A sign-in for this user is being checked already; try again in a few seconds, or use a login link (opusctl web login).")
	}
	ok, err := cs.checkPassword(ctx, acct, uid, pw)
	release()
	if errors.Is(err, credential.ErrBusy) {
		s.log.DebugContext(ctx, "console: sign-in refused: password hashers busy", "user", field, "remote", addr)
		return nil, status.Error(codes.Unavailable, "The console is busy checking other sign-ins; try again in a few seconds, or use a login link (opusctl web login).")
	}
	if err != nil {
		s.log.ErrorContext(ctx, "console: sign-in", "user", field, "err", err)
		return nil, errCheckFailed
	}
	if !ok {
		cs.accountFails.fail(account, now)
		cs.accountAddrFails.fail(account+" "+addr, now)
		s.log.WarnContext(ctx, "console: sign-in failed", "user", field, "remote", addr)
		if !cs.accountFails.allowed(account, now) || !cs.accountAddrFails.allowed(account+" "+addr, now) {
			s.log.WarnContext(ctx, "console: too many failed sign-ins; refusing this account's password for a while", "user", field, "remote", addr, "for", failWindow)
		}
		return nil, errWrongPassword
	}
	id, sess, err := cs.startSession(ctx, uid, name, addr)
	if err != nil {
		return nil, cs.signInRefused(ctx, field, addr, err)
	}
	return &opusv1.SignInWithPasswordResponse{SessionId: id, Session: sess}, nil
}

// failKey is the account whose password failures a sign-in counts
// against: the uid, its user's name and its password's epoch, so a uid
// given to a new user, and an account whose owner set a new password,
// start afresh. Names no user has (name "") count together: there is no
// account behind them to protect, and made-up names cannot fill the
// counters.
func failKey(uid uint32, name, epoch string) string {
	if name == "" {
		return "unknown"
	}
	return strconv.FormatUint(uint64(uid), 10) + ":" + name + ":" + epoch
}

// signInAccountOf is what a password sign-in needs of an account, read
// once: its password hash ("" when none, or no account) and whether it is
// disabled.
type signInAccountOf struct {
	hash     string
	disabled bool
}

// epoch names the account's current password without revealing it: a
// short digest of its stored hash (salted, so a new password is a new
// epoch even when it is the old one again), "" when there is none.
func (a signInAccountOf) epoch() string {
	if a.hash == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(a.hash))
	return hex.EncodeToString(sum[:6])
}

// signInAccount reads uid's account for a password sign-in as name (""
// when no user has the name: nothing to read). An account of a former
// user of the uid is settled (dropped) on the way and reads as none.
func (cs *consoleSessions) signInAccount(ctx context.Context, uid uint32, name string) (signInAccountOf, error) {
	var a signInAccountOf
	if name == "" {
		return a, nil
	}
	stale := false
	err := cs.s.st.View(ctx, func(tx *store.Tx) error {
		acc, err := tx.ConsoleAccount(uid)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil
		case err != nil:
			return err
		case !acc.BelongsTo(name):
			stale = true
		default:
			a = signInAccountOf{hash: acc.PasswordHash, disabled: acc.Disabled}
		}
		return nil
	})
	if stale {
		cs.settle(ctx, uid, name)
	}
	return a, err
}

// signInUser resolves the sign-in form's user field (a login name or a
// uid) to a uid and that uid's login name now; name is "" when no user
// matches.
func (cs *consoleSessions) signInUser(field string) (uid uint32, name string) {
	if field == "" || len(field) > maxUserField {
		return 0, ""
	}
	if u, err := user.Lookup(field); err == nil {
		if n, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			uid = uint32(n)
		}
	} else if n, err := strconv.ParseUint(field, 10, 32); err == nil {
		uid = uint32(n)
	} else {
		return 0, ""
	}
	// The account is bound to the name the store's lookup gives, which a
	// typed name must agree with.
	name, err := cs.s.st.ConsoleUserName(uid)
	if err != nil || name == "" || (name != field && strconv.FormatUint(uint64(uid), 10) != field) {
		return 0, ""
	}
	return uid, name
}

// checkPassword checks pw against the account read by signInAccount,
// in one of the process's hashing slots (credential.ErrBusy when none is
// free). Without an account the hash is the dummy, so an unknown user
// costs what a known one does.
func (cs *consoleSessions) checkPassword(ctx context.Context, a signInAccountOf, uid uint32, pw string) (bool, error) {
	ok, err := credential.CheckPassword(a.hash, pw)
	if errors.Is(err, credential.ErrBadHash) {
		cs.s.log.ErrorContext(ctx, "console: unreadable password hash; the user must set the password again", "uid", uid)
		return false, nil
	}
	return ok && !a.disabled && pw != "", err
}

// SignInWithLink signs in with a one-time link from "opusctl web login".
// A valid link always works; unknown, used and expired ones count against
// the caller's address, and only those are refused once it has too many.
func (cs *consoleSessions) SignInWithLink(ctx context.Context, req *opusv1.SignInWithLinkRequest) (*opusv1.SignInWithLinkResponse, error) {
	s := cs.s
	addr, err := signInAddr(ctx, req.GetRemoteAddr())
	if err != nil {
		return nil, err
	}
	tok := req.GetToken()
	key := credential.TokenKey(tok)
	// Looked up in a read transaction first: a flood of unknown tokens
	// costs no write (and no fsync).
	var found bool
	err = s.st.View(ctx, func(tx *store.Tx) error {
		found = len(tok) <= credential.MaxTokenLen && tx.HasLoginLink(key)
		return nil
	})
	var l *store.LoginLink
	if err == nil && found {
		err = s.st.Update(ctx, func(tx *store.Tx) (err error) {
			l, err = tx.TakeLoginLink(key)
			return err
		})
	}
	if err != nil || !found {
		now := time.Now()
		was := cs.linkFails.allowed(addr, now)
		cs.linkFails.fail(addr, now)
		if !cs.linkFails.allowed(addr, now) {
			// Logged once, when the address crosses the limit: refused
			// links cost nothing and come as fast as they are sent.
			if was {
				s.log.WarnContext(ctx, "console: too many unknown login links; refusing this address's unknown links for a while", "remote", addr, "for", failWindow)
			}
			return nil, status.Error(codes.ResourceExhausted, "Too many unknown login links from your address; wait a few minutes, or run opusctl web login for a new one.")
		}
		reason := err
		if reason == nil {
			reason = store.ErrNotFound
		}
		s.log.WarnContext(ctx, "console: login link refused", "reason", reason, "remote", addr)
		return nil, status.Error(codes.Unauthenticated, "This login link is unknown, used or expired; run opusctl web login for a new one.")
	}
	id, sess, err := cs.startSession(ctx, l.UID, l.Name, addr)
	if err != nil {
		return nil, cs.signInRefused(ctx, "", addr, err)
	}
	return &opusv1.SignInWithLinkResponse{SessionId: id, Session: sess}, nil
}

// signInRefused logs a sign-in that startSession refused and returns what
// the console shows.
func (cs *consoleSessions) signInRefused(ctx context.Context, field, addr string, err error) error {
	cs.s.log.WarnContext(ctx, "console: sign-in refused", "user", field, "reason", status.Convert(err).Message(), "remote", addr)
	if _, ok := status.FromError(err); ok {
		return err
	}
	return cs.s.storeErr(ctx, err)
}

// startSession records a new session for uid, whose user was name when
// the link was made or the password checked, and returns its id. It
// refuses if the uid is no longer name's, or its account is disabled.
func (cs *consoleSessions) startSession(ctx context.Context, uid uint32, name, addr string) (string, *opusv1.ConsoleSession, error) {
	s := cs.s
	now, err := s.consoleUser(ctx, uid)
	if err != nil {
		return "", nil, err
	}
	if now == "" || now != name {
		cs.settle(ctx, uid, now)
		return "", nil, errUserGone
	}
	id, err := credential.NewToken()
	if err != nil {
		return "", nil, err
	}
	csrf, err := credential.NewToken()
	if err != nil {
		return "", nil, err
	}
	var rec store.ConsoleSession
	err = s.st.Update(ctx, func(tx *store.Tx) error {
		a, err := tx.EnsureConsoleAccount(uid, name)
		if err != nil {
			return err
		}
		if a.Disabled {
			return errDisabled
		}
		a.LastSignIn = tx.Now()
		if err := tx.PutConsoleAccount(a); err != nil {
			return err
		}
		if err := tx.PruneConsole(); err != nil {
			return err
		}
		rec = store.ConsoleSession{UID: uid, CSRF: csrf, CreateTime: tx.Now(), ExpireTime: tx.Now().Add(cs.ttl)}
		if err := tx.PutConsoleSession(credential.TokenKey(id), rec); err != nil {
			return err
		}
		return tx.TrimConsoleSessions(uid)
	})
	if err != nil {
		return "", nil, err
	}
	s.log.InfoContext(ctx, "console: signed in", "uid", uid, "user", name, "remote", addr)
	return id, &opusv1.ConsoleSession{Uid: uid, User: name, CsrfToken: csrf, ExpireTime: timestamppb.New(rec.ExpireTime)}, nil
}

// settle deletes uid's account (with its sessions and links) if it is not
// the account of the user now named name (store.ConsoleAccountOf).
func (cs *consoleSessions) settle(ctx context.Context, uid uint32, name string) {
	var dropped bool
	err := cs.s.st.Update(ctx, func(tx *store.Tx) error {
		before, err := tx.ConsoleAccount(uid)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		after, err := tx.ConsoleAccountOf(uid, name)
		dropped = after == nil || after.Name != before.Name
		return err
	})
	if err != nil {
		cs.s.log.ErrorContext(ctx, "console: drop an account whose user is gone", "uid", uid, "err", err)
	} else if dropped {
		cs.s.log.InfoContext(ctx, "console: account deleted, its user is gone", "uid", uid, "user_now", name)
	}
}

// GetConsoleSession returns the live session of an id. The session holds
// only while its account does: not disabled, and its uid still named as
// when the account was made. An account whose user is gone is deleted
// then and there, with its sessions. Unavailable means only that the user
// database could not say who the uid is now: refuse for now, delete
// nothing.
func (cs *consoleSessions) GetConsoleSession(ctx context.Context, req *opusv1.GetConsoleSessionRequest) (*opusv1.ConsoleSession, error) {
	if _, err := callerFrom(ctx); err != nil {
		return nil, err
	}
	id := req.GetSessionId()
	if id == "" || len(id) > credential.MaxTokenLen {
		return nil, errNoSession
	}
	var sess *store.ConsoleSession
	var a *store.ConsoleAccount
	err := cs.s.st.View(ctx, func(tx *store.Tx) (err error) {
		if sess, err = tx.ConsoleSession(credential.TokenKey(id)); err != nil {
			return err
		}
		if a, err = tx.ConsoleAccount(sess.UID); errors.Is(err, store.ErrNotFound) {
			a, err = nil, nil
		}
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNoSession
	}
	if err != nil {
		return nil, cs.s.storeErr(ctx, err)
	}
	name, err := cs.s.consoleUser(ctx, sess.UID)
	if err != nil {
		return nil, err
	}
	var why string
	switch {
	case a == nil:
		why = fmt.Sprintf("uid %d has no console account", sess.UID)
	case !a.BelongsTo(name):
		cs.settle(ctx, sess.UID, name)
		why = fmt.Sprintf("the console account of uid %d was %q's, its user is gone", sess.UID, a.Name)
	case a.Disabled:
		why = fmt.Sprintf("the console account of uid %d is disabled", sess.UID)
	default:
		return &opusv1.ConsoleSession{Uid: sess.UID, User: name, CsrfToken: sess.CSRF, ExpireTime: timestamppb.New(sess.ExpireTime)}, nil
	}
	return nil, status.Errorf(codes.Unauthenticated, "%s: sign in again", why)
}

// SignOut forgets a session; an unknown one is already signed out.
func (cs *consoleSessions) SignOut(ctx context.Context, req *opusv1.SignOutRequest) (*opusv1.SignOutResponse, error) {
	if _, err := callerFrom(ctx); err != nil {
		return nil, err
	}
	id := req.GetSessionId()
	if id == "" || len(id) > credential.MaxTokenLen {
		return &opusv1.SignOutResponse{}, nil
	}
	if err := cs.s.st.Update(ctx, func(tx *store.Tx) error { return tx.DeleteConsoleSession(credential.TokenKey(id)) }); err != nil {
		return nil, cs.s.storeErr(ctx, err)
	}
	return &opusv1.SignOutResponse{}, nil
}
