package service

import (
	"context"
	"errors"
	"os/user"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// The web console's account calls. The console itself (unprivd/web) signs
// people in with what these record; once signed in, its pages call this
// service as the signed-in uid like any other client.

// LoginLinkTTL is how long a login link works (once).
const LoginLinkTTL = 5 * time.Minute

// LoginLinkPath is the console path a login link points at; the token
// follows as the query parameter "t".
const LoginLinkPath = "/login/link"

// Console password length limits, in characters. The hash is slow on
// purpose; a bound keeps one call from being slower still.
const (
	minConsolePassword = 10
	maxConsolePassword = 256
)

func consoleDisabled(uid uint32) error {
	return status.Errorf(codes.PermissionDenied, "the web console account of uid %d is disabled; ask an admin (opusctl web disable --enable)", uid)
}

// CreateLoginLink returns a single-use link signing the caller in to the
// web console.
func (s *Service) CreateLoginLink(ctx context.Context, _ *opusv1.CreateLoginLinkRequest) (*opusv1.CreateLoginLinkResponse, error) {
	c, err := callerFrom(ctx)
	if err != nil {
		return nil, err
	}
	if s.cfg.ConsoleURL == "" {
		return nil, status.Error(codes.FailedPrecondition, "the web console is off on this host (opusd runs without --web-addr)")
	}
	token, err := store.NewToken()
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	var expire time.Time
	err = s.st.Update(ctx, func(tx *store.Tx) error {
		a, err := tx.EnsureConsoleAccount(c.uid)
		if err != nil {
			return err
		}
		if a.Disabled {
			return consoleDisabled(c.uid)
		}
		if err := tx.PruneConsole(); err != nil {
			return err
		}
		expire = tx.Now().Add(LoginLinkTTL)
		return tx.PutLoginLink(token, store.LoginLink{UID: c.uid, ExpireTime: expire})
	})
	if err != nil {
		if status.Code(err) == codes.PermissionDenied {
			return nil, s.refuse(ctx, c, opusv1.Opus_CreateLoginLink_FullMethodName, "", err)
		}
		return nil, s.storeErr(ctx, err)
	}
	s.log.InfoContext(ctx, "console login link created", "uid", c.uid, "expires", expire)
	return &opusv1.CreateLoginLinkResponse{
		Url:        s.cfg.ConsoleURL + LoginLinkPath + "?t=" + token,
		ExpireTime: timestamppb.New(expire),
	}, nil
}

// SetConsolePassword sets the caller's own console password.
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
	// Hashed before the transaction: it takes a while on purpose, and
	// writers are serialized.
	hash, err := store.HashPassword(pw)
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	err = s.st.Update(ctx, func(tx *store.Tx) error {
		a, err := tx.EnsureConsoleAccount(c.uid)
		if err != nil {
			return err
		}
		if a.Disabled {
			return consoleDisabled(c.uid)
		}
		a.PasswordHash = hash
		return tx.PutConsoleAccount(a)
	})
	if err != nil {
		if status.Code(err) == codes.PermissionDenied {
			return nil, s.refuse(ctx, c, opusv1.Opus_SetConsolePassword_FullMethodName, "", err)
		}
		return nil, s.storeErr(ctx, err)
	}
	s.log.InfoContext(ctx, "console password set", "uid", c.uid)
	return &opusv1.SetConsolePasswordResponse{}, nil
}

// ListConsoleAccounts lists every console account (admins only: the
// interceptor refuses anyone else).
func (s *Service) ListConsoleAccounts(ctx context.Context, _ *opusv1.ListConsoleAccountsRequest) (*opusv1.ListConsoleAccountsResponse, error) {
	if _, err := callerFrom(ctx); err != nil {
		return nil, err
	}
	var as []*store.ConsoleAccount
	err := s.st.View(ctx, func(tx *store.Tx) (err error) { as, err = tx.ConsoleAccounts(); return err })
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	res := &opusv1.ListConsoleAccountsResponse{}
	for _, a := range as {
		name := ""
		if u, err := user.LookupId(strconv.FormatUint(uint64(a.UID), 10)); err == nil {
			name = u.Username
		}
		res.Accounts = append(res.Accounts, &opusv1.ConsoleAccount{
			Uid: a.UID, User: name, HasPassword: a.PasswordHash != "", Disabled: a.Disabled, LastSignIn: ts(a.LastSignIn),
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
	err = s.st.Update(ctx, func(tx *store.Tx) error {
		a, err := tx.ConsoleAccount(req.GetUid())
		if errors.Is(err, store.ErrNotFound) {
			if req.GetEnable() {
				return status.Errorf(codes.NotFound, "uid %d has no web console account", req.GetUid())
			}
			a, err = tx.EnsureConsoleAccount(req.GetUid())
		}
		if err != nil {
			return err
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
	if err != nil {
		return nil, s.storeErr(ctx, err)
	}
	s.log.InfoContext(ctx, "console account changed", "uid", req.GetUid(), "disabled", !req.GetEnable(), "by_uid", c.uid)
	return &opusv1.DisableConsoleAccountResponse{}, nil
}
