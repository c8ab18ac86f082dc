package service

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/credential"
	"github.com/opus-hosting/opus/unprivd/store"
)

// asUID runs one unary handler as uid through the interceptor, so the
// access table applies as on the socket.
func asUID[Req, Res any](t *testing.T, s *Service, uid uint32, method string, h func(context.Context, Req) (Res, error), req Req) (Res, error) {
	t.Helper()
	var zero Res
	out, err := s.UnaryInterceptor()(peerCtx(uid), req, &grpc.UnaryServerInfo{FullMethod: method},
		func(ctx context.Context, r any) (any, error) { return h(ctx, r.(Req)) })
	if err != nil {
		return zero, err
	}
	return out.(Res), nil
}

func consoleAccounts(t *testing.T, st *store.Store) map[uint32]*store.ConsoleAccount {
	t.Helper()
	m := map[uint32]*store.ConsoleAccount{}
	err := st.View(context.Background(), func(tx *store.Tx) error {
		as, err := tx.ConsoleAccounts()
		for _, a := range as {
			m[a.UID] = a
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCreateLoginLink(t *testing.T) {
	s := startServer(t, serverOpt{})
	link := func(uid uint32) (*opusv1.CreateLoginLinkResponse, error) {
		return asUID(t, s.svc, uid, opusv1.Opus_CreateLoginLink_FullMethodName, s.svc.CreateLoginLink, &opusv1.CreateLoginLinkRequest{})
	}
	// Console off: refused, nothing recorded.
	if _, err := link(uidA); code(err) != codes.FailedPrecondition {
		t.Fatalf("console off: %v", err)
	}
	if n := len(consoleAccounts(t, s.st)); n != 0 {
		t.Fatalf("%d accounts recorded by a refused call", n)
	}
	s.svc.cfg.ConsoleURL = "https://127.0.0.1:8444"
	res, err := link(uidA)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(res.GetUrl())
	if err != nil || u.Host != "127.0.0.1:8444" || u.Path != credential.LoginLinkPath || len(u.Query().Get("t")) < 40 {
		t.Fatalf("link %q", res.GetUrl())
	}
	if d := res.GetExpireTime().AsTime().Sub(s.svc.cfg.Now()); d <= 0 || d > LoginLinkTTL {
		t.Fatalf("link expires in %v", d)
	}
	// The token is uidA's, once.
	var l *store.LoginLink
	if err := s.st.Update(context.Background(), func(tx *store.Tx) (err error) {
		l, err = tx.TakeLoginLink(credential.TokenKey(u.Query().Get("t")))
		return err
	}); err != nil || l.UID != uidA {
		t.Fatalf("link record: %+v %v", l, err)
	}
	res2, _ := link(uidA)
	if res2.GetUrl() == res.GetUrl() {
		t.Fatal("two links are the same")
	}
}

func TestConsolePasswordAndAdminCalls(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{0: true}})
	setPW := func(uid uint32, pw string) error {
		_, err := asUID(t, s.svc, uid, opusv1.Opus_SetConsolePassword_FullMethodName, s.svc.SetConsolePassword, &opusv1.SetConsolePasswordRequest{Password: pw})
		return err
	}
	list := func(uid uint32) (*opusv1.ListConsoleAccountsResponse, error) {
		return asUID(t, s.svc, uid, opusv1.Opus_ListConsoleAccounts_FullMethodName, s.svc.ListConsoleAccounts, &opusv1.ListConsoleAccountsRequest{})
	}
	disable := func(by, uid uint32, enable bool) error {
		_, err := asUID(t, s.svc, by, opusv1.Opus_DisableConsoleAccount_FullMethodName, s.svc.DisableConsoleAccount, &opusv1.DisableConsoleAccountRequest{Uid: uid, Enable: enable})
		return err
	}
	for _, tc := range []struct {
		pw   string
		want codes.Code
	}{
		{"short", codes.InvalidArgument},
		{strings.Repeat("x", 257), codes.InvalidArgument},
		{"bad\xffutf8-long-enough", codes.InvalidArgument},
	} {
		if err := setPW(uidA, tc.pw); code(err) != tc.want || !strings.HasPrefix(errMsg(err), "password:") {
			t.Errorf("password %.20q: %v, want %v naming the field", tc.pw, err, tc.want)
		}
	}
	if n := len(consoleAccounts(t, s.st)); n != 0 {
		t.Fatalf("refused passwords recorded %d accounts", n)
	}
	if err := setPW(uidA, "a good long password"); err != nil {
		t.Fatal(err)
	}
	a := consoleAccounts(t, s.st)[uidA]
	if ok, err := credential.CheckPassword(a.PasswordHash, "a good long password"); !ok || err != nil {
		t.Fatalf("stored hash does not check: %v %v", ok, err)
	}

	// Only admins list and disable; a refused call changes nothing.
	if _, err := list(uidB); code(err) != codes.PermissionDenied {
		t.Fatalf("list as non-admin: %v", err)
	}
	if err := disable(uidB, uidA, false); code(err) != codes.PermissionDenied {
		t.Fatalf("disable as non-admin: %v", err)
	}
	if consoleAccounts(t, s.st)[uidA].Disabled {
		t.Fatal("refused disable disabled the account")
	}
	// A session of uidA ends when the account is disabled.
	if err := s.st.Update(context.Background(), func(tx *store.Tx) error {
		return tx.PutConsoleSession("sess", store.ConsoleSession{UID: uidA, ExpireTime: tx.Now().Add(LoginLinkTTL)})
	}); err != nil {
		t.Fatal(err)
	}
	if err := disable(0, uidA, false); err != nil {
		t.Fatal(err)
	}
	if err := s.st.View(context.Background(), func(tx *store.Tx) error { _, err := tx.ConsoleSession("sess"); return err }); err == nil {
		t.Fatal("session of a disabled account survived")
	}
	res, err := list(0)
	if err != nil || len(res.GetAccounts()) != 1 || !res.GetAccounts()[0].GetDisabled() || !res.GetAccounts()[0].GetHasPassword() || res.GetAccounts()[0].GetUser() != "nobody" {
		t.Fatalf("list: %v %v", res, err)
	}
	// Disabled: no new password, no link.
	s.svc.cfg.ConsoleURL = "https://127.0.0.1:8444"
	if err := setPW(uidA, "another long password"); code(err) != codes.PermissionDenied {
		t.Fatalf("password on disabled account: %v", err)
	}
	if _, err := asUID(t, s.svc, uidA, opusv1.Opus_CreateLoginLink_FullMethodName, s.svc.CreateLoginLink, &opusv1.CreateLoginLinkRequest{}); code(err) != codes.PermissionDenied {
		t.Fatalf("link on disabled account: %v", err)
	}
	// Re-enabling: an unknown uid is NotFound, uidA works again.
	if err := disable(0, 4242, true); code(err) != codes.NotFound {
		t.Fatalf("enable unknown: %v", err)
	}
	if err := disable(0, uidA, true); err != nil {
		t.Fatal(err)
	}
	if err := setPW(uidA, "another long password"); err != nil {
		t.Fatalf("password after enable: %v", err)
	}
	// Disabling a uid with no account yet keeps it out from the start.
	if err := disable(0, 0, false); err != nil {
		t.Fatal(err)
	}
	if a := consoleAccounts(t, s.st)[0]; a == nil || !a.Disabled || a.Name != "root" {
		t.Fatalf("pre-emptive disable not recorded: %+v", a)
	}
	// A uid no user has has no account to disable.
	if err := disable(0, noUser, false); code(err) != codes.NotFound || !strings.Contains(errMsg(err), "no user has uid") {
		t.Fatalf("disable a uid without a user: %v", err)
	}
	if _, ok := consoleAccounts(t, s.st)[noUser]; ok {
		t.Fatal("disabling a uid without a user recorded an account")
	}
}

// noUser is a uid no user has.
const noUser = 4000000000

// sessionsOf counts the console sessions of uid.
func sessionsOf(t *testing.T, st *store.Store, ids ...string) int {
	t.Helper()
	n := 0
	st.View(context.Background(), func(tx *store.Tx) error {
		for _, id := range ids {
			if _, err := tx.ConsoleSession(id); err == nil {
				n++
			}
		}
		return nil
	})
	return n
}

// TestConsoleAccountsFollowUsers: a password change ends the account's
// sessions; the list drops accounts whose user is gone (and binds ones
// from before names were recorded, keeping only Disabled); a uid without
// a user gets no link; admins delete accounts, with their sessions.
func TestConsoleAccountsFollowUsers(t *testing.T) {
	s := startServer(t, serverOpt{admins: fakeAdmins{0: true}})
	s.svc.cfg.ConsoleURL = "https://127.0.0.1:8444"
	ctx := context.Background()
	setPW := func(uid uint32, pw string) error {
		_, err := asUID(t, s.svc, uid, opusv1.Opus_SetConsolePassword_FullMethodName, s.svc.SetConsolePassword, &opusv1.SetConsolePasswordRequest{Password: pw})
		return err
	}
	del := func(by, uid uint32) error {
		_, err := asUID(t, s.svc, by, opusv1.Opus_DeleteConsoleAccount_FullMethodName, s.svc.DeleteConsoleAccount, &opusv1.DeleteConsoleAccountRequest{Uid: uid})
		return err
	}
	session := func(uid uint32) string {
		id, _ := credential.NewToken()
		if err := s.st.Update(ctx, func(tx *store.Tx) error {
			return tx.PutConsoleSession(id, store.ConsoleSession{UID: uid, ExpireTime: tx.Now().Add(time.Hour)})
		}); err != nil {
			t.Fatal(err)
		}
		return id
	}

	if err := setPW(uidA, "a good long password"); err != nil {
		t.Fatal(err)
	}
	a1, a2 := session(uidA), session(uidA)
	if err := setPW(uidA, "another good password"); err != nil {
		t.Fatal(err)
	}
	if n := sessionsOf(t, s.st, a1, a2); n != 0 {
		t.Fatalf("%d sessions survived a password change", n)
	}
	if a := consoleAccounts(t, s.st)[uidA]; a.Name != "nobody" {
		t.Fatalf("account of uid %d bound to %q, want nobody", uidA, a.Name)
	}

	// Accounts of users since gone, and one from before names.
	if err := s.st.Update(ctx, func(tx *store.Tx) error {
		for _, a := range []*store.ConsoleAccount{
			{UID: noUser, Name: "ghost", PasswordHash: "h"},
			{UID: uidB, Name: "former-owner-of-the-uid", PasswordHash: "h"},
			{UID: 0, PasswordHash: "h", Disabled: true},
		} {
			if err := tx.PutConsoleAccount(a); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ghost, former, legacy, a3 := session(noUser), session(uidB), session(0), session(uidA)
	res, err := asUID(t, s.svc, 0, opusv1.Opus_ListConsoleAccounts_FullMethodName, s.svc.ListConsoleAccounts, &opusv1.ListConsoleAccountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32]*opusv1.ConsoleAccount{}
	for _, a := range res.GetAccounts() {
		got[a.GetUid()] = a
	}
	if len(got) != 2 || got[uidA].GetUser() != "nobody" || got[0].GetUser() != "root" || !got[0].GetDisabled() || got[0].GetHasPassword() {
		t.Fatalf("listed %v; want nobody's and root's (disabled, no password) only", res.GetAccounts())
	}
	stored := consoleAccounts(t, s.st)
	if _, ok := stored[noUser]; ok {
		t.Error("the account of a uid without a user is still stored")
	}
	if a, ok := stored[uidB]; ok && a.Name != "" {
		t.Errorf("the account of the uid's former user is still stored: %+v", a)
	}
	if n := sessionsOf(t, s.st, ghost, former, legacy); n != 0 {
		t.Errorf("%d sessions of dropped or rebound accounts survived", n)
	}
	if n := sessionsOf(t, s.st, a3); n != 1 {
		t.Error("a live account's session ended with the list")
	}

	// No user, no link.
	if _, err := asUID(t, s.svc, noUser, opusv1.Opus_CreateLoginLink_FullMethodName, s.svc.CreateLoginLink, &opusv1.CreateLoginLinkRequest{}); code(err) != codes.FailedPrecondition {
		t.Errorf("login link for a uid without a user: %v", err)
	}

	// Delete: admins only, a refusal changes nothing; then the account
	// and its sessions are gone; again is NotFound.
	if err := del(uidA, uidA); code(err) != codes.PermissionDenied {
		t.Fatalf("delete as non-admin: %v", err)
	}
	if _, ok := consoleAccounts(t, s.st)[uidA]; !ok || sessionsOf(t, s.st, a3) != 1 {
		t.Fatal("a refused delete changed the account")
	}
	if err := del(0, uidA); err != nil {
		t.Fatal(err)
	}
	if _, ok := consoleAccounts(t, s.st)[uidA]; ok || sessionsOf(t, s.st, a3) != 0 {
		t.Fatal("deleted account or its session still stored")
	}
	if err := del(0, uidA); code(err) != codes.NotFound || !strings.Contains(errMsg(err), "no web console account") {
		t.Fatalf("delete again: %v", err)
	}
}

func errMsg(err error) string {
	if err == nil {
		return ""
	}
	if i := strings.Index(err.Error(), "desc = "); i >= 0 {
		return err.Error()[i+7:]
	}
	return err.Error()
}

// TestSetConsolePasswordBusy: while every password hasher is busy,
// SetConsolePassword answers Unavailable, saying to try again.
func TestSetConsolePasswordBusy(t *testing.T) {
	s := startServer(t, serverOpt{})
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range credential.PasswordHashers {
		wg.Go(func() {
			for !stop.Load() {
				credential.CheckPassword("", "x")
			}
		})
	}
	var err error
	for range 50 {
		_, err = asUID(t, s.svc, uidA, opusv1.Opus_SetConsolePassword_FullMethodName, s.svc.SetConsolePassword, &opusv1.SetConsolePasswordRequest{Password: "a good long password"})
		if code(err) == codes.Unavailable {
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	if code(err) != codes.Unavailable || !strings.Contains(errMsg(err), "try again") {
		t.Fatalf("SetConsolePassword with every hasher busy: %v, want Unavailable", err)
	}
}
