// Package web is opusd's web console: people deploy and manage their
// projects in a browser, each seeing only their own (admins see all).
//
// There is no second permission path. The console only signs people in
// (a one-time link from "opusctl web login", or the console password set
// with "opusctl web passwd"); every page then calls opusd's own gRPC server
// as the signed-in uid, through an in-process listener whose connections
// carry that uid (internal/peercred.InProcess), so the service's
// interceptors, access table and owner checks decide what the console may
// show and do, as for opusctl.
//
// Browser safety: random session ids kept hashed in the store, cookies
// HttpOnly, Secure, SameSite=Strict with the __Host- prefix, a per-session
// CSRF token on every form and, in front of every form, net/http's
// CrossOriginProtection (a POST a browser marks as coming from another
// site, by Sec-Fetch-Site or Origin, is refused whatever it carries), a
// Content-Security-Policy without inline script, no Referer sent to other
// sites (login links carry a token; with "same-origin" rather than
// "no-referrer" browsers still send the real Origin on the console's own
// forms). Pages are html/template with embedded assets and work without
// JavaScript; a small script shows an operation's progress live from
// server-sent events (WatchOperation).
//
// Sign-in is limited without locking anyone out (limit.go), and a password
// check (argon2id, 64 MiB) runs only when one of store.PasswordHashers
// slots is free; otherwise the answer is an immediate 503. A console
// account is its Unix user's (store.ConsoleAccountOf): every sign-in and
// every request of a session checks that the uid still has the user name
// the account was made for.
package web

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/peercred"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/service"
	"github.com/opus-hosting/opus/unprivd/store"
)

//go:embed assets
var assets embed.FS

// Cookie names. __Host- makes the browser insist on Secure, Path=/ and no
// Domain, so no other host (a project's vhost under the same suffix, say)
// can set or read them.
const (
	sessionCookie = "__Host-opus_session"
	preCookie     = "__Host-opus_signin" // double-submit CSRF token of the sign-in form
)

// DefaultSessionTTL is how long a console session lasts.
const DefaultSessionTTL = 12 * time.Hour

// contentSecurityPolicy allows only the console's own script, style and
// connections; no inline script or style, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Config wires a Console.
type Config struct {
	// Store holds console accounts, login links and sessions.
	Store *store.Store
	// Listener is the in-process listener opusd's gRPC server serves; the
	// console dials it as the signed-in uid.
	Listener *peercred.InProcess
	// SessionTTL defaults to DefaultSessionTTL.
	SessionTTL time.Duration
	Logger     *slog.Logger
}

// Console is the web console's HTTP handler.
type Console struct {
	st    *store.Store
	conns *conns
	ttl   time.Duration
	log   *slog.Logger
	pages map[string]*template.Template
	// handler is the routes behind cross-origin protection.
	handler http.Handler
	// Sign-in failures (limit.go): unknown login links per address, wrong
	// passwords per account and per account and address.
	linkFails, accountFails, accountAddrFails *failures
	// checking holds the accounts whose password is being checked: one at
	// a time per account (limit.go).
	checking inFlight
}

// New returns a Console.
func New(cfg Config) (*Console, error) {
	if cfg.Store == nil || cfg.Listener == nil {
		return nil, errors.New("web: Store and Listener are required")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Console{st: cfg.Store, conns: newConns(cfg.Listener), ttl: cfg.SessionTTL, log: cfg.Logger,
		linkFails:        newFailures(maxLinkFails, failWindow, maxFailKeys),
		accountFails:     newFailures(maxAccountFails, failWindow, maxFailKeys),
		accountAddrFails: newFailures(maxAccountAddrFails, failWindow, maxFailKeys)}
	if err := c.parseTemplates(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

// Close closes the console's gRPC connections.
func (c *Console) Close() error {
	c.conns.closeAll()
	return nil
}

// ServeHTTP implements http.Handler, adding the security headers every
// answer carries.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	c.handler.ServeHTTP(w, r)
}

func (c *Console) parseTemplates() error {
	funcs := template.FuncMap{
		"phase":     phaseName,
		"opkind":    opKindName,
		"opstate":   opStateName,
		"stepstate": stepStateName,
		"when":      when,
		"took":      took,
		"short":     shortCommit,
		"username":  userName,
		"final":     opFinal,
		"gitURL":    gitURL,
		"envText":   envText,
		"hostsText": hostsText,
		// The name hint is the rule's own (package names).
		"projectPattern": func() string { return names.ProjectPattern },
		"maxProject":     func() int { return names.MaxProject },
	}
	c.pages = map[string]*template.Template{}
	for _, name := range []string{"login", "projects", "new", "project", "operation", "error"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "assets/layout.html", "assets/"+name+".html")
		if err != nil {
			return fmt.Errorf("web: template %s: %w", name, err)
		}
		c.pages[name] = t
	}
	return nil
}

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets/static")
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /login", c.loginPage)
	m.HandleFunc("POST /login", c.loginPassword)
	m.HandleFunc("GET "+service.LoginLinkPath, c.loginLink)
	m.HandleFunc("POST /logout", c.signedIn(c.logout))
	m.HandleFunc("GET /{$}", c.signedIn(c.projectsPage))
	m.HandleFunc("GET /new", c.signedIn(c.newPage))
	m.HandleFunc("POST /new", c.signedIn(c.createProject))
	m.HandleFunc("GET /projects/{name}", c.signedIn(c.projectPage))
	m.HandleFunc("POST /projects/{name}/apps", c.signedIn(c.addApp))
	m.HandleFunc("POST /projects/{name}/apps/{app}/update", c.signedIn(c.updateApp))
	m.HandleFunc("POST /projects/{name}/apps/{app}/rollback", c.signedIn(c.rollbackApp))
	m.HandleFunc("POST /projects/{name}/apps/{app}/remove", c.signedIn(c.removeApp))
	m.HandleFunc("POST /projects/{name}/settings", c.signedIn(c.updateSettings))
	m.HandleFunc("POST /projects/{name}/destroy", c.signedIn(c.destroy))
	m.HandleFunc("GET /ops/{id}", c.signedIn(c.operationPage))
	m.HandleFunc("GET /ops/{id}/events", c.signedIn(c.operationEvents))
	// Every POST, the sign-in form's too, passes the standard library's
	// cross-origin check first; the CSRF tokens stay as the second line
	// (for browsers that send neither Sec-Fetch-Site nor Origin).
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.log.Warn("console: cross-origin form refused", "remote", remoteAddr(r), "path", r.URL.Path,
			"origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
		http.Error(w, "cross-origin request refused: submit the console's forms from the console's own pages", http.StatusForbidden)
	}))
	c.handler = cop.Handler(m)
}

// viewer is the signed-in person of a request.
type viewer struct {
	UID  uint32
	Name string
	CSRF string
	// sessionID is the cookie value (never rendered).
	sessionID string
	rpc       opusv1.OpusClient
}

type viewerKey struct{}

func viewerFrom(r *http.Request) *viewer { return r.Context().Value(viewerKey{}).(*viewer) }

// signedIn wraps a handler that needs a session. Without a live one, a
// page request is sent to the sign-in page and anything else refused. A
// POST must carry the session's CSRF token in the form field "csrf".
func (c *Console) signedIn(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := c.session(r)
		if errors.Is(err, errLookup) {
			http.Error(w, "the console could not look up your user; try again in a moment", http.StatusServiceUnavailable)
			return
		}
		if err != nil {
			if ck, cerr := r.Cookie(sessionCookie); cerr == nil && ck.Value != "" {
				c.log.Info("console: session refused", "reason", err, "remote", remoteAddr(r), "path", r.URL.Path)
				http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
			}
			if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/events") {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			http.Error(w, "not signed in (or the session expired): sign in again", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			if err := r.ParseForm(); err != nil {
				http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(v.CSRF)) != 1 {
				c.log.Warn("console: form without a valid CSRF token refused", "uid", v.UID, "remote", remoteAddr(r), "path", r.URL.Path)
				http.Error(w, "the form's CSRF token is missing or wrong: reload the page and try again", http.StatusForbidden)
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), viewerKey{}, v)))
	}
}

// errLookup means the user database could not say who a uid is now (not
// that no one is): refuse for now, delete nothing.
var errLookup = errors.New("user lookup failed")

// session returns the viewer of a request's session cookie. The session
// holds only while its account does: not disabled, and its uid still
// named as when the account was made. An account whose user is gone is
// deleted then and there, with its sessions.
func (c *Console) session(r *http.Request) (*viewer, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil, errors.New("no session cookie")
	}
	if len(ck.Value) > 100 {
		return nil, errors.New("session cookie too long")
	}
	var s *store.ConsoleSession
	var a *store.ConsoleAccount
	err = c.st.View(r.Context(), func(tx *store.Tx) (err error) {
		if s, err = tx.ConsoleSession(ck.Value); err != nil {
			return err
		}
		if a, err = tx.ConsoleAccount(s.UID); errors.Is(err, store.ErrNotFound) {
			a, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	name, err := c.lookupName(s.UID)
	if err != nil {
		return nil, err
	}
	switch {
	case a == nil:
		return nil, fmt.Errorf("uid %d has no console account", s.UID)
	case !a.BelongsTo(name):
		c.settle(r, s.UID, name)
		return nil, fmt.Errorf("the console account of uid %d was %q's, its user is gone", s.UID, a.Name)
	case a.Disabled:
		return nil, fmt.Errorf("console account of uid %d is disabled", s.UID)
	}
	rpc, err := c.conns.client(s.UID)
	if err != nil {
		return nil, err
	}
	return &viewer{UID: s.UID, Name: name, CSRF: s.CSRF, sessionID: ck.Value, rpc: rpc}, nil
}

// lookupName is uid's login name now ("" when no user has it), or
// errLookup.
func (c *Console) lookupName(uid uint32) (string, error) {
	name, err := c.st.ConsoleUserName(uid)
	if err != nil {
		c.log.Error("console: user lookup", "uid", uid, "err", err)
		return "", fmt.Errorf("%w: %w", errLookup, err)
	}
	return name, nil
}

// settle deletes uid's account (with its sessions and links) if it is not
// the account of the user now named name (store.ConsoleAccountOf).
func (c *Console) settle(r *http.Request, uid uint32, name string) {
	var dropped bool
	err := c.st.Update(r.Context(), func(tx *store.Tx) error {
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
		c.log.Error("console: drop an account whose user is gone", "uid", uid, "err", err)
	} else if dropped {
		c.log.Info("console: account deleted, its user is gone", "uid", uid, "user_now", name)
	}
}

// startSession records a new session for uid, whose user was name when
// the link was made or the password checked, and sets its cookie. It
// refuses if the uid is no longer name's.
func (c *Console) startSession(w http.ResponseWriter, r *http.Request, uid uint32, name string) error {
	now, err := c.lookupName(uid)
	if err != nil {
		return err
	}
	if now == "" || now != name {
		c.settle(r, uid, now)
		return errUserGone
	}
	id, err := store.NewToken()
	if err != nil {
		return err
	}
	csrf, err := store.NewToken()
	if err != nil {
		return err
	}
	err = c.st.Update(r.Context(), func(tx *store.Tx) error {
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
		if err := tx.PutConsoleSession(id, store.ConsoleSession{UID: uid, CSRF: csrf, CreateTime: tx.Now(), ExpireTime: tx.Now().Add(c.ttl)}); err != nil {
			return err
		}
		return tx.TrimConsoleSessions(uid)
	})
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", MaxAge: int(c.ttl / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	c.log.Info("console: signed in", "uid", uid, "user", name, "remote", remoteAddr(r))
	return nil
}

var (
	errDisabled = errors.New("this console account is disabled; ask an admin")
	errUserGone = errors.New("the user this was made for no longer exists; sign in as the user you are now")
)

func remoteAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// userName is uid's login name, or the number.
func userName(uid uint32) string {
	s := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(s); err == nil {
		return u.Username
	}
	return "uid " + s
}
