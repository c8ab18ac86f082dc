package e2e

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestConsoleSessionsRefusedOnSocket: opus.v1.ConsoleSessions, the web
// console's own calls, are refused on opusd's socket before any handler
// runs, whoever calls: root, the opus user, the account's own user and
// another plain user. A correct password, an unused login link and a live
// session's id sign no one in, look nothing up and end nothing: the
// account's last sign-in, the session, the link and the host are as
// before. Each refusal is in opusd's log with its uid and method; no
// secret is.
func TestConsoleSessionsRefusedOnSocket(t *testing.T) {
	h := needHost(t)
	t.Cleanup(func() { h.dumpLogs(t) })
	const pw = "console password of the socket test"
	name, uid := h.passwordUser(t, "cs", pw)
	browser := consoleClient()
	h.mustSignIn(t, browser, name, pw)
	base, _ := url.Parse(h.consoleBase())
	var session string
	for _, ck := range browser.Jar.Cookies(base) {
		if ck.Name == "__Host-opus_session" {
			session = ck.Value
		}
	}
	if session == "" {
		t.Fatal("no session cookie after signing in")
	}
	link := h.loginLink(t, uid)
	lu, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	token := lu.Query().Get("t")
	accounts, state := h.consoleAccounts(t), hostState(t)

	sock := h.cfg.OpusdSocket()
	calls := []privdCall{
		{Socket: sock, Method: "console.SignInWithPassword", Project: name, Secret: pw},
		{Socket: sock, Method: "console.SignInWithLink", Secret: token},
		{Socket: sock, Method: "console.GetConsoleSession", Secret: session},
		{Socket: sock, Method: "console.SignOut", Secret: session},
	}
	callers := []uint32{0, h.opusUID, uid, h.otherID}
	for _, who := range callers {
		for _, c := range calls {
			ans := asUID(t, who, credOf(who).Gid, c)
			if ans.Code != "PermissionDenied" || !strings.Contains(ans.Message, "served only to opusd's web console") {
				t.Errorf("%s as uid %d on the socket: %s %q %s, want PermissionDenied naming the console", c.Method, who, ans.Code, ans.Message, ans.DialError)
			}
		}
	}

	if now := h.consoleAccounts(t); now != accounts {
		t.Errorf("the accounts changed (a sign-in?):\nbefore %s\nafter  %s", accounts, now)
	}
	if hostState(t) != state {
		t.Error("refused calls changed the host's accounts")
	}
	if !h.signedIn(t, browser) {
		t.Error("the session ended")
	}
	if a := consoleDo(t, consoleClient(), "GET", link, nil); a.code != http.StatusSeeOther || a.location != "/" {
		t.Errorf("the login link after the refused calls: %d %q", a.code, a.location)
	}
	data, err := os.ReadFile(filepath.Join(h.logs, "opusd.log"))
	if err != nil {
		t.Fatal(err)
	}
	log := string(data)
	for _, who := range callers {
		for _, m := range []string{"SignInWithPassword", "SignInWithLink", "GetConsoleSession", "SignOut"} {
			if want := "uid=" + strconv.FormatUint(uint64(who), 10) + " method=/opus.v1.ConsoleSessions/" + m; !strings.Contains(log, want) {
				t.Errorf("opusd's log lacks the refusal %q", want)
			}
		}
	}
	for what, secret := range map[string]string{"password": pw, "link token": token, "session id": session} {
		if strings.Contains(log, secret) {
			t.Errorf("opusd's log holds the %s", what)
		}
	}
}
