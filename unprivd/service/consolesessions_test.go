package service

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/opus-hosting/opus/internal/peercred"
	"github.com/opus-hosting/opus/internal/testrun"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/credential"
	"github.com/opus-hosting/opus/unprivd/store"
)

// rootPassword is the console password the tests give root's account.
const rootPassword = "root's console password"

// consoleClient serves s's service on an in-process listener, as opusd
// does for its web console, and returns the console's ConsoleSessions
// client on it (dialed as this process, like the console).
func consoleClient(t *testing.T, s *server) opusv1.ConsoleSessionsClient {
	t.Helper()
	lis := peercred.NewInProcess()
	g := grpc.NewServer(append(s.svc.ServerOptions(), grpc.Creds(peercred.Server()))...)
	s.svc.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	self := peercred.Cred{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), PID: int32(os.Getpid())}
	cc, err := grpc.NewClient("passthrough:///console",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialAs(ctx, self) }),
		grpc.WithTransportCredentials(peercred.Client()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return opusv1.NewConsoleSessionsClient(cc)
}

// callConsoleSessions makes one ConsoleSessions call (as helperMain's
// actions of the same names): with root's console password, with a login
// link's token, or with a session id (arg).
func callConsoleSessions(ctx context.Context, cl opusv1.ConsoleSessionsClient, action, arg string) (err error) {
	switch action {
	case "console-password":
		_, err = cl.SignInWithPassword(ctx, &opusv1.SignInWithPasswordRequest{User: "root", Password: arg, RemoteAddr: "127.0.0.1"})
	case "console-link":
		_, err = cl.SignInWithLink(ctx, &opusv1.SignInWithLinkRequest{Token: arg, RemoteAddr: "127.0.0.1"})
	case "console-session":
		_, err = cl.GetConsoleSession(ctx, &opusv1.GetConsoleSessionRequest{SessionId: arg})
	case "console-signout":
		_, err = cl.SignOut(ctx, &opusv1.SignOutRequest{SessionId: arg})
	default:
		err = fmt.Errorf("unknown console action %q", action)
	}
	return err
}

// consoleState is a digest of every console record: accounts (with their
// hashes and sign-in times), live sessions and unused links by key.
func consoleState(t *testing.T, st *store.Store, linkTokens, sessionIDs []string) string {
	t.Helper()
	var b strings.Builder
	err := st.View(context.Background(), func(tx *store.Tx) error {
		as, err := tx.ConsoleAccounts()
		for _, a := range as {
			fmt.Fprintf(&b, "account %+v\n", *a)
		}
		for _, tok := range linkTokens {
			fmt.Fprintf(&b, "link %v\n", tx.HasLoginLink(credential.TokenKey(tok)))
		}
		for _, id := range sessionIDs {
			s, err := tx.ConsoleSession(credential.TokenKey(id))
			fmt.Fprintf(&b, "session %+v %v\n", s, err)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// consoleRig is root's console account with a password, one unused login
// link and one live session, made through the service.
type consoleRig struct {
	s       *server
	console opusv1.ConsoleSessionsClient
	link    string // the unused link's token
	session string // the live session's id
}

func newConsoleRig(t *testing.T, o serverOpt) *consoleRig {
	t.Helper()
	s := startServer(t, o)
	s.svc.cfg.ConsoleURL = "https://127.0.0.1:8444"
	r := &consoleRig{s: s, console: consoleClient(t, s)}
	if _, err := asUID(t, s.svc, 0, opusv1.Opus_SetConsolePassword_FullMethodName, s.svc.SetConsolePassword, &opusv1.SetConsolePasswordRequest{Password: rootPassword}); err != nil {
		t.Fatal(err)
	}
	r.link = r.newLink(t, 0)
	res, err := r.console.SignInWithPassword(context.Background(), &opusv1.SignInWithPasswordRequest{User: "root", Password: rootPassword, RemoteAddr: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	r.session = res.GetSessionId()
	return r
}

// newLink makes a login link as uid and returns its token.
func (r *consoleRig) newLink(t *testing.T, uid uint32) string {
	t.Helper()
	res, err := asUID(t, r.s.svc, uid, opusv1.Opus_CreateLoginLink_FullMethodName, r.s.svc.CreateLoginLink, &opusv1.CreateLoginLinkRequest{})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(res.GetUrl())
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("t")
}

// TestConsoleSessionsAreConsoleOnly: the access table serves every
// ConsoleSessions method to the in-process console alone, and nothing
// else so.
func TestConsoleSessionsAreConsoleOnly(t *testing.T) {
	methods := map[string]bool{}
	for _, m := range opusv1.ConsoleSessions_ServiceDesc.Methods {
		methods["/"+opusv1.ConsoleSessions_ServiceDesc.ServiceName+"/"+m.MethodName] = true
	}
	if len(methods) != 4 || len(opusv1.ConsoleSessions_ServiceDesc.Streams) != 0 {
		t.Fatalf("ConsoleSessions serves %v and %d streams; this test knows four methods", methods, len(opusv1.ConsoleSessions_ServiceDesc.Streams))
	}
	for m, a := range methodAccess {
		if (a == accessConsole) != methods[m] {
			t.Errorf("%s is served as %s", m, a)
		}
	}
}

// TestConsoleSessionsRefusedOnSocket: every ConsoleSessions call over
// opusd's Unix socket is refused before its handler runs, whoever calls:
// opusd's own uid (this process) and, as root, root and a plain user.
// Each refusal is logged with the uid and method; nothing changes: the
// link still signs in, the session still holds, no session is added, no
// failure is counted.
func TestConsoleSessionsRefusedOnSocket(t *testing.T) {
	r := newConsoleRig(t, serverOpt{})
	s := r.s
	before := consoleState(t, s.st, []string{r.link}, []string{r.session})
	calls := map[string]string{
		"console-password": rootPassword,
		"console-link":     r.link,
		"console-session":  r.session,
		"console-signout":  r.session,
	}
	methods := map[string]string{
		"console-password": opusv1.ConsoleSessions_SignInWithPassword_FullMethodName,
		"console-link":     opusv1.ConsoleSessions_SignInWithLink_FullMethodName,
		"console-session":  opusv1.ConsoleSessions_GetConsoleSession_FullMethodName,
		"console-signout":  opusv1.ConsoleSessions_SignOut_FullMethodName,
	}
	check := func(who, code, msg string) {
		t.Helper()
		if code != "PermissionDenied" || !strings.Contains(msg, "served only to opusd's web console") {
			t.Errorf("%s: %s %q, want PermissionDenied naming the console", who, code, msg)
		}
	}
	self := uint32(os.Getuid())
	socket := opusv1.NewConsoleSessionsClient(s.cc)
	for action, arg := range calls {
		err := callConsoleSessions(context.Background(), socket, action, arg)
		check(fmt.Sprintf("%s as opusd's own uid %d on the socket", action, self), code(err).String(), errMsg(err))
	}
	uids := []uint32{self}
	if os.Geteuid() == 0 && !testing.Short() {
		run := testrun.Need(t, "creates a user and runs helper processes as root and as it")
		_, plain, _ := run.NewUser(t, "c")
		for _, uid := range []uint32{0, plain} {
			for action, arg := range calls {
				got := s.as(t, uid, action, arg)
				check(fmt.Sprintf("%s as uid %d", action, uid), got.Code, got.Msg)
			}
			uids = append(uids, uid)
		}
	}
	t.Logf("socket callers refused: uids %v", uids)
	for _, uid := range uids {
		for _, m := range methods {
			if want := fmt.Sprintf("uid=%d method=%s", uid, m); !strings.Contains(s.logs.String(), want) {
				t.Errorf("no refusal logged with %q", want)
			}
		}
	}
	if after := consoleState(t, s.st, []string{r.link}, []string{r.session}); after != before {
		t.Errorf("refused calls changed the console's records:\nbefore %s\nafter  %s", before, after)
	}
	sessions := s.svc.sessions
	if n := sessions.linkFails.len() + sessions.accountFails.len() + sessions.accountAddrFails.len(); n != 0 {
		t.Errorf("refused calls counted %d failure keys", n)
	}
	// The session and the link still work for the console.
	if _, err := r.console.GetConsoleSession(context.Background(), &opusv1.GetConsoleSessionRequest{SessionId: r.session}); err != nil {
		t.Errorf("the session after refused calls: %v", err)
	}
	if _, err := r.console.SignInWithLink(context.Background(), &opusv1.SignInWithLinkRequest{Token: r.link, RemoteAddr: "127.0.0.1"}); err != nil {
		t.Errorf("the link after refused calls: %v", err)
	}
}

// TestConsoleSessionLifecycle: the in-process console signs in with a
// link and a password, looks the sessions up (uid, user, CSRF token) and
// signs out. The state file holds neither link token nor session id in
// clear, only their keys, and the log names none of them or the password.
func TestConsoleSessionLifecycle(t *testing.T) {
	r := newConsoleRig(t, serverOpt{})
	ctx := context.Background()
	res, err := r.console.SignInWithLink(ctx, &opusv1.SignInWithLinkRequest{Token: r.link, RemoteAddr: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	byLink := res.GetSessionId()
	if _, err := r.console.SignInWithLink(ctx, &opusv1.SignInWithLinkRequest{Token: r.link, RemoteAddr: "127.0.0.1"}); code(err) != codes.Unauthenticated {
		t.Fatalf("a used link: %v, want Unauthenticated", err)
	}
	for _, id := range []string{r.session, byLink} {
		sess, err := r.console.GetConsoleSession(ctx, &opusv1.GetConsoleSessionRequest{SessionId: id})
		if err != nil || sess.GetUid() != 0 || sess.GetUser() != "root" || len(sess.GetCsrfToken()) < 40 || sess.GetCsrfToken() == id {
			t.Fatalf("session: %v %v", sess, err)
		}
		if d := sess.GetExpireTime().AsTime().Sub(r.s.svc.cfg.Now()); d <= DefaultConsoleSessionTTL-time.Minute || d > DefaultConsoleSessionTTL {
			t.Errorf("session expires in %v, want %v", d, DefaultConsoleSessionTTL)
		}
	}
	if byLink == r.session || res.GetSession().GetCsrfToken() == "" {
		t.Fatalf("sign-in by link: %v", res)
	}
	data, err := os.ReadFile(r.s.st.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{r.link, r.session, byLink} {
		if strings.Contains(string(data), secret) {
			t.Errorf("the state file holds a token in clear")
		}
	}
	if !strings.Contains(string(data), credential.TokenKey(r.session)) {
		t.Errorf("the state file lacks the session's key: the check above proves nothing")
	}
	if _, err := r.console.SignOut(ctx, &opusv1.SignOutRequest{SessionId: byLink}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.console.GetConsoleSession(ctx, &opusv1.GetConsoleSessionRequest{SessionId: byLink}); code(err) != codes.Unauthenticated {
		t.Errorf("a signed-out session: %v, want Unauthenticated", err)
	}
	if _, err := r.console.GetConsoleSession(ctx, &opusv1.GetConsoleSessionRequest{SessionId: r.session}); err != nil {
		t.Errorf("the other session after a sign-out: %v", err)
	}
	for _, bad := range []string{"", "garbage", strings.Repeat("x", credential.MaxTokenLen+1)} {
		if _, err := r.console.GetConsoleSession(ctx, &opusv1.GetConsoleSessionRequest{SessionId: bad}); code(err) != codes.Unauthenticated {
			t.Errorf("session %.20q: %v, want Unauthenticated", bad, err)
		}
	}
	if _, err := r.console.SignInWithPassword(ctx, &opusv1.SignInWithPasswordRequest{User: "root", Password: rootPassword, RemoteAddr: strings.Repeat("1", maxRemoteAddr+1)}); code(err) != codes.InvalidArgument {
		t.Errorf("an overlong remote address: %v, want InvalidArgument", err)
	}
	logs := r.s.logs.String()
	if !strings.Contains(logs, "console: signed in") {
		t.Fatalf("no sign-in logged: the check below proves nothing")
	}
	for _, secret := range []string{r.link, r.session, byLink, rootPassword, res.GetSession().GetCsrfToken()} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds a secret: %.10s...", secret)
		}
	}
}

// TestConsoleSignInNoLockout: wrong passwords for one account count
// against that account alone (one key per account, one per account and
// address); unknown links against the address alone; a valid link and
// another account's password still sign in.
func TestConsoleSignInNoLockout(t *testing.T) {
	r := newConsoleRig(t, serverOpt{})
	ctx := context.Background()
	const addr = "192.0.2.7"
	for i := range MaxLinkFails {
		_, err := r.console.SignInWithLink(ctx, &opusv1.SignInWithLinkRequest{Token: fmt.Sprint("bogus", i), RemoteAddr: addr})
		want := codes.Unauthenticated
		if i == MaxLinkFails-1 {
			want = codes.ResourceExhausted
		}
		if code(err) != want {
			t.Fatalf("unknown link %d: %v, want %v", i, err, want)
		}
	}
	if _, err := r.console.SignInWithLink(ctx, &opusv1.SignInWithLinkRequest{Token: r.newLink(t, uidA), RemoteAddr: addr}); err != nil {
		t.Fatalf("a valid link after a flood from its address: %v", err)
	}
	if _, err := asUID(t, r.s.svc, uidA, opusv1.Opus_SetConsolePassword_FullMethodName, r.s.svc.SetConsolePassword, &opusv1.SetConsolePasswordRequest{Password: "password of nobody"}); err != nil {
		t.Fatal(err)
	}
	for i := range MaxAccountAddrFails {
		if _, err := r.console.SignInWithPassword(ctx, &opusv1.SignInWithPasswordRequest{User: "nobody", Password: fmt.Sprint("wrong ", i), RemoteAddr: addr}); code(err) != codes.Unauthenticated {
			t.Fatalf("wrong password %d: %v", i, err)
		}
	}
	if _, err := r.console.SignInWithPassword(ctx, &opusv1.SignInWithPasswordRequest{User: "nobody", Password: "password of nobody", RemoteAddr: addr}); code(err) != codes.ResourceExhausted {
		t.Errorf("the right password after a flood: %v, want ResourceExhausted", err)
	}
	if _, err := r.console.SignInWithPassword(ctx, &opusv1.SignInWithPasswordRequest{User: "root", Password: rootPassword, RemoteAddr: addr}); err != nil {
		t.Errorf("another account's password from the address: %v", err)
	}
	cs := r.s.svc.sessions
	if l, n, m := cs.linkFails.len(), cs.accountFails.len(), cs.accountAddrFails.len(); l != 1 || n != 1 || m != 1 {
		t.Errorf("failure keys: %d per address, %d per account, %d per account and address; want the address's and nobody's alone", l, n, m)
	}
}

// TestSignInUser: what the form's user field names, and which failures a
// sign-in counts against: by name or uid the same account; a uid's new
// user another; every name no user has one shared key.
func TestSignInUser(t *testing.T) {
	const alice, bob = 61001, 61002
	names := map[uint32]string{0: "root", alice: "alice", bob: "bob"}
	s := startServer(t, serverOpt{userName: func(uid uint32) (string, error) {
		if n, ok := names[uid]; ok {
			return n, nil
		}
		return "", fmt.Errorf("uid %d: %w", uid, store.ErrNoUser)
	}})
	cs := s.svc.sessions
	for _, tc := range []struct {
		field   string
		uid     uint32
		name    string
		failKey string
	}{
		{"root", 0, "root", "0:root:"},
		{"0", 0, "root", "0:root:"},
		{"61001", alice, "alice", "61001:alice:"},
		{"61002", bob, "bob", "61002:bob:"},
		{"alice", 0, "", "unknown"}, // the test's names are not the host's
		{"no-such-user-here", 0, "", "unknown"},
		{"61999", 0, "", "unknown"}, // a uid no user has
		{"", 0, "", "unknown"},
		{strings.Repeat("r", maxUserField+1), 0, "", "unknown"},
		{"-1", 0, "", "unknown"},
	} {
		uid, name := cs.signInUser(tc.field)
		if uid != tc.uid || name != tc.name || failKey(uid, name, "") != tc.failKey {
			t.Errorf("signInUser(%.20q) = %d, %q (key %q); want %d, %q (key %q)", tc.field, uid, name, failKey(uid, name, ""), tc.uid, tc.name, tc.failKey)
		}
	}
	// The uid's next user is another account.
	names[alice] = "carol"
	if uid, name := cs.signInUser("61001"); failKey(uid, name, "") != "61001:carol:" {
		t.Errorf("after the uid changed hands: %d %q", uid, name)
	}
}
