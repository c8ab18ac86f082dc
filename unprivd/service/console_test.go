package service

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
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
	if err != nil || u.Host != "127.0.0.1:8444" || u.Path != LoginLinkPath || len(u.Query().Get("t")) < 40 {
		t.Fatalf("link %q", res.GetUrl())
	}
	if d := res.GetExpireTime().AsTime().Sub(s.svc.cfg.Now()); d <= 0 || d > LoginLinkTTL {
		t.Fatalf("link expires in %v", d)
	}
	// The token is uidA's, once.
	var l *store.LoginLink
	if err := s.st.Update(context.Background(), func(tx *store.Tx) (err error) { l, err = tx.TakeLoginLink(u.Query().Get("t")); return err }); err != nil || l.UID != uidA {
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
	if ok, err := store.CheckPassword(a.PasswordHash, "a good long password"); !ok || err != nil {
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
	if err := disable(0, uidB, false); err != nil {
		t.Fatal(err)
	}
	if !consoleAccounts(t, s.st)[uidB].Disabled {
		t.Fatal("pre-emptive disable not recorded")
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
