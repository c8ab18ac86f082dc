package service

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/credential"
	"github.com/opus-hosting/opus/unprivd/store"
)

// The web console's account calls. The console (unprivd/web) signs people
// in with what these record, through ConsoleSessions (consolesessions.go);
// once signed in, its pages call this service as the signed-in uid like
// any other client.

// LoginLinkTTL is how long a login link works (once).
const LoginLinkTTL = 5 * time.Minute

// Console password length limits, in characters. The hash is slow on
// purpose; a bound keeps one call from being slower still.
const (
	minConsolePassword = 10
	maxConsolePassword = 256
)

func consoleDisabled(uid uint32) error {
	return status.Errorf(codes.PermissionDenied, "the web console account of uid %d is disabled; ask an admin (opusctl web disable --enable)", uid)
}

func noConsoleAccount(uid uint32) error {
	return status.Errorf(codes.NotFound, "uid %d has no web console account (see opusctl web accounts)", uid)
}

// consoleUser is uid's login name now, which its console account is bound
// to (store.ConsoleAccountOf); "" when no user has uid.
func (s *Service) consoleUser(ctx context.Context, uid uint32) (string, error) {
	name, err := s.st.ConsoleUserName(uid)
	if err != nil {
		s.log.ErrorContext(ctx, "console: user lookup", "uid", uid, "err", err)
		return "", status.Errorf(codes.Unavailable, "opusd could not look up the user name of uid %d (see opusd's log); try again", uid)
	}
	return name, nil
}

// callerConsoleUser is the caller's login name; a uid without one has no
// console account.
func (s *Service) callerConsoleUser(ctx context.Context, c caller) (string, error) {
	name, err := s.consoleUser(ctx, c.uid)
	if err == nil && name == "" {
		err = status.Errorf(codes.FailedPrecondition, "uid %d has no user name on this host; the web console signs in named Unix users only", c.uid)
	}
	return name, err
}

// enabledConsoleAccount is uid's console account (made for name if it
// has none), refused when an admin disabled it.
func enabledConsoleAccount(tx *store.Tx, uid uint32, name string) (*store.ConsoleAccount, error) {
	a, err := tx.EnsureConsoleAccount(uid, name)
	if err != nil {
		return nil, err
	}
	if a.Disabled {
		return nil, consoleDisabled(uid)
	}
	return a, nil
}

// CreateLoginLink returns a single-use link signing the caller in to the
// web console. It signs in only the user who made it: not a later owner
// of the caller's uid.
func (s *Service) CreateLoginLink(ctx context.Context, _ *opusv1.CreateLoginLinkRequest) (*opusv1.CreateLoginLinkResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	if s.cfg.ConsoleURL == "" {
		return nil, status.Error(codes.FailedPrecondition, "the web console is off on this host (opusd runs without --web-addr)")
	}
	name, err := s.callerConsoleUser(ctx, c)
	if err != nil {
		return nil, err
	}
	token, err := credential.NewToken()
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	var expire time.Time
	err = s.st.Update(ctx, func(tx *store.Tx) error {
		if _, err := enabledConsoleAccount(tx, c.uid, name); err != nil {
			return err
		}
		if err := tx.PruneConsole(); err != nil {
			return err
		}
		expire = tx.Now().Add(LoginLinkTTL)
		return tx.PutLoginLink(credential.TokenKey(token), store.LoginLink{UID: c.uid, Name: name, ExpireTime: expire})
	})
	if err != nil {
		if status.Code(err) == codes.PermissionDenied {
			return nil, s.refuse(ctx, c, opusv1.Opus_CreateLoginLink_FullMethodName, "", err)
		}
		return nil, s.storeErr(ctx, err)
	}
	s.log.InfoContext(ctx, "console login link created", "uid", c.uid, "user", name, "expires", expire)
	return &opusv1.CreateLoginLinkResponse{
		Url:        s.cfg.ConsoleURL + credential.LoginLinkPath + "?t=" + token,
		ExpireTime: timestamppb.New(expire),
	}, nil
}

// SetConsolePassword sets the caller's own console password and ends every
// console session of theirs. There is no password form in the console
// (only opusctl, as the Unix user, sets one), so no session is the one
// that changed it: all end, which is what a user who changes a leaked
// password needs.
func (s *Service) SetConsolePassword(ctx context.Context, req *opusv1.SetConsolePasswordRequest) (*opusv1.SetConsolePasswordResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	pw := req.GetPassword()
	switch n := utf8.RuneCountInString(pw); {
	case !utf8.ValidString(pw):
		return nil, invalid("password", "is not valid UTF-8")
	case n < minConsolePassword:
		return nil, invalid("password", "is %d characters; use at least %d", n, minConsolePassword)
	case n > maxConsolePassword:
		return nil, invalid("password", "is %d characters; use at most %d", n, maxConsolePassword)
	}
	name, err := s.callerConsoleUser(ctx, c)
	if err != nil {
		return nil, err
	}
	// Hashed before the transaction: it takes a while on purpose, and
	// writers are serialized.
	hash, err := credential.HashPassword(pw)
	if errors.Is(err, credential.ErrBusy) {
		s.log.WarnContext(ctx, "console password refused: hashers busy", "uid", c.uid)
		return nil, status.Error(codes.Unavailable, "opusd is busy checking other console passwords; try again in a few seconds")
	}
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	err = s.st.Update(ctx, func(tx *store.Tx) error {
		a, err := enabledConsoleAccount(tx, c.uid, name)
		if err != nil {
			return err
		}
		return tx.SetConsolePassword(a, hash)
	})
	if err != nil {
		if status.Code(err) == codes.PermissionDenied {
			return nil, s.refuse(ctx, c, opusv1.Opus_SetConsolePassword_FullMethodName, "", err)
		}
		return nil, s.storeErr(ctx, err)
	}
	s.log.InfoContext(ctx, "console password set; its sessions ended", "uid", c.uid, "user", name)
	return &opusv1.SetConsolePasswordResponse{}, nil
}

// ListConsoleAccounts lists every console account (admins only: the
// interceptor refuses anyone else). Accounts whose user is gone (the uid
// has no user, or another one) are deleted, not listed.
func (s *Service) ListConsoleAccounts(ctx context.Context, _ *opusv1.ListConsoleAccountsRequest) (*opusv1.ListConsoleAccountsResponse, error) {
	if _, err := callerFrom(ctx); err != nil {
		return nil, err
	}
	var as []*store.ConsoleAccount
	err := s.st.View(ctx, func(tx *store.Tx) (err error) { as, err = tx.ConsoleAccounts(); return err })
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	// Look every uid up outside the transaction; settle the accounts that
	// no longer belong to their user in one write.
	now := map[uint32]string{}
	var stale []uint32
	for _, a := range as {
		name, err := s.st.ConsoleUserName(a.UID)
		if err != nil {
			// Unknown is not gone: list it as recorded.
			s.log.WarnContext(ctx, "console: user lookup", "uid", a.UID, "err", err)
			continue
		}
		if now[a.UID] = name; !a.BelongsTo(name) {
			stale = append(stale, a.UID)
		}
	}
	if len(stale) > 0 {
		kept := map[uint32]*store.ConsoleAccount{}
		err := s.st.Update(ctx, func(tx *store.Tx) error {
			for _, uid := range stale {
				a, err := tx.ConsoleAccountOf(uid, now[uid])
				if err != nil {
					return err
				}
				kept[uid] = a
			}
			return nil
		})
		if err != nil {
			return nil, s.storeErr(ctx, err)
		}
		out := as[:0]
		for _, a := range as {
			if k, ok := kept[a.UID]; !ok {
				out = append(out, a)
			} else if k != nil {
				out = append(out, k)
			} else {
				s.log.InfoContext(ctx, "console account deleted: its user is gone", "uid", a.UID, "user", a.Name, "uid_now", now[a.UID])
			}
		}
		as = out
	}
	res := &opusv1.ListConsoleAccountsResponse{}
	for _, a := range as {
		res.Accounts = append(res.Accounts, &opusv1.ConsoleAccount{
			Uid: a.UID, User: a.Name, HasPassword: a.PasswordHash != "", Disabled: a.Disabled, LastSignIn: ts(a.LastSignIn),
		})
	}
	return res, nil
}

// DisableConsoleAccount disables (or with enable, re-enables) uid's
// console account (admins only). Disabling ends the account's sessions at
// once; an account that did not exist yet is created disabled, so a user
// can be kept out before they first sign in.
func (s *Service) DisableConsoleAccount(ctx context.Context, req *opusv1.DisableConsoleAccountRequest) (*opusv1.DisableConsoleAccountResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	uid := req.GetUid()
	name, err := s.consoleUser(ctx, uid)
	if err != nil {
		return nil, err
	}
	var missing bool
	err = s.st.Update(ctx, func(tx *store.Tx) error {
		a, err := tx.ConsoleAccountOf(uid, name)
		if err != nil {
			return err
		}
		if a == nil {
			// Commit what ConsoleAccountOf dropped, then refuse.
			if missing = req.GetEnable() || name == ""; missing {
				return nil
			}
			if a, err = tx.EnsureConsoleAccount(uid, name); err != nil {
				return err
			}
		}
		a.Disabled = !req.GetEnable()
		if err := tx.PutConsoleAccount(a); err != nil {
			return err
		}
		if a.Disabled {
			return tx.DeleteConsoleSessionsOf(a.UID)
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, s.storeErr(ctx, err)
	case missing && name == "":
		return nil, status.Errorf(codes.NotFound, "no user has uid %d on this host (and so no web console account)", uid)
	case missing:
		return nil, noConsoleAccount(uid)
	}
	s.log.InfoContext(ctx, "console account changed", "uid", uid, "user", name, "disabled", !req.GetEnable(), "by_uid", c.uid)
	return &opusv1.DisableConsoleAccountResponse{}, nil
}

// DeleteConsoleAccount deletes uid's console account with its password,
// sessions and login links (admins only). The user may make a new one
// (opusctl web login); to keep them out, disable it instead.
func (s *Service) DeleteConsoleAccount(ctx context.Context, req *opusv1.DeleteConsoleAccountRequest) (*opusv1.DeleteConsoleAccountResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	uid := req.GetUid()
	err = s.st.Update(ctx, func(tx *store.Tx) error { return tx.DeleteConsoleAccount(uid) })
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, noConsoleAccount(uid)
	case err != nil:
		return nil, s.storeErr(ctx, err)
	}
	s.log.InfoContext(ctx, "console account deleted", "uid", uid, "by_uid", c.uid)
	return &opusv1.DeleteConsoleAccountResponse{}, nil
}
