// Package web is opusd's web console: people deploy and manage their
// projects in a browser, each seeing only their own (admins see all).
//
// There is no second permission path, and no state of its own. The
// console is HTTP over opusd's own gRPC server, reached through an
// in-process listener (internal/peercred.InProcess). Signing in (a
// one-time link from "opusctl web login", or the console password set with
// "opusctl web passwd"), looking a session up and signing out are the
// service's opus.v1.ConsoleSessions, which its access table serves to this
// in-process console alone; every page then calls opus.v1.Opus as the
// signed-in uid, on a connection that carries that uid, so the service's
// interceptors, access table and owner checks decide what the console may
// show and do, as for opusctl.
//
// Browser safety: random session ids (the service keeps them hashed), cookies
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
// The service limits sign-in without locking anyone out, checks a
// password (argon2id, 64 MiB) only when one of credential.PasswordHashers
// slots is free, and binds each account to its Unix user
// (unprivd/service/consolesessions.go); the console turns its answers into
// pages: 401, 429, 503 with Retry-After, 403.
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
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opus-hosting/opus/internal/names"
	"github.com/opus-hosting/opus/internal/peercred"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/credential"
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

// contentSecurityPolicy allows only the console's own script, style and
// connections; no inline script or style, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Config wires a Console.
type Config struct {
	// Listener is the in-process listener opusd's gRPC server serves; the
	// console dials it as itself for ConsoleSessions, and as the
	// signed-in uid for the pages' Opus calls.
	Listener *peercred.InProcess
	Logger   *slog.Logger
	// Uploads are the API's and the upload store's limits, which the
	// console's upload forms keep to; MaxUpload is required.
	Uploads UploadLimits
}

// Console is the web console's HTTP handler.
type Console struct {
	conns *conns
	log   *slog.Logger
	pages map[string]*template.Template
	// uploads bound the upload forms; uploadSlots the ones handled at
	// once, uploadsBy each user's share of them (under uploadsMu).
	uploads     UploadLimits
	uploadSlots chan struct{}
	uploadsMu   sync.Mutex
	uploadsBy   map[uint32]int
	// handler is the routes behind cross-origin protection.
	handler http.Handler
}

// New returns a Console.
func New(cfg Config) (*Console, error) {
	if cfg.Listener == nil {
		return nil, errors.New("web: Listener is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Uploads.MaxUpload <= 0 {
		return nil, errors.New("web: Uploads.MaxUpload is required (the API's upload limit)")
	}
	c := &Console{conns: newConns(cfg.Listener), log: cfg.Logger, uploads: cfg.Uploads, uploadSlots: make(chan struct{}, uploadsAtOnce), uploadsBy: map[uint32]int{}}
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
	if r.ContentLength != 0 {
		// opusd's server bounds the reading of a request's headers only:
		// a body that never comes (the sign-in form's, before anyone is
		// signed in) would hold the connection and its goroutine for
		// good, even after the answer (the server reads on to the end).
		// An upload form gets longer once it has a slot (uploadTimeout).
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(formReadTimeout))
	}
	c.handler.ServeHTTP(w, r)
}

// formReadTimeout bounds the reading of a request's body: a form, or an
// upload form until it has one of the upload slots (a var for tests).
var formReadTimeout = 30 * time.Second

// formRead lifts the bound of formReadTimeout once a form was read whole
// (its CSRF token found in the urlencoded body that ParseForm read to its
// end; ParseForm reads no other kind of body): a handler that then waits
// on the API must not have its request cancelled by the deadline (the
// server's check for a closed connection reads on after the body).
func formRead(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
}

func (c *Console) parseTemplates() error {
	funcs := template.FuncMap{
		"phase":      phaseName,
		"opkind":     opKindName,
		"opstate":    opStateName,
		"stepstate":  stepStateName,
		"when":       when,
		"took":       took,
		"short":      shortCommit,
		"username":   userName,
		"owner":      ownerName,
		"final":      opFinal,
		"destroyed":  opDestroyed,
		"gitURL":     gitURL,
		"runningRef": runningRef,
		"envText":    envText,
		"hostsText":  hostsText,
		"errorOf":    errorOf,
		"invalid":    invalid,
		"running":    runningRevision,
		"newest":     newestFirst,
		"snapshot":   snapshotFor,
		"opsummary":  opSummary,
		"firstLine":  firstLine,
		// The name hint is the rule's own (package names).
		"projectPattern": func() string { return names.ProjectPattern },
		"maxProject":     func() int { return names.MaxProject },
		// The upload forms' bound, as the API's.
		"maxUpload":     func() int64 { return c.uploads.MaxUpload },
		"maxUploadText": func() string { return sizeText(c.uploads.MaxUpload) },
		"withApp":       func(p *page, app string) appView { return appView{page: p, App: app} },
		"fileField":     newFileField,
	}
	c.pages = map[string]*template.Template{}
	for _, name := range []string{"login", "projects", "new", "project", "remove", "operation", "error"} {
		files := []string{"assets/layout.html", "assets/" + name + ".html"}
		if name == "new" || name == "project" {
			files = append(files, "assets/upload.html")
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, files...)
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
	m.HandleFunc("GET "+credential.LoginLinkPath, c.loginLink)
	m.HandleFunc("POST /logout", c.signedIn(c.logout))
	m.HandleFunc("GET /{$}", c.signedIn(c.projectsPage))
	m.HandleFunc("GET /new", c.signedIn(c.newPage))
	m.HandleFunc("POST /new", c.signedIn(c.createProject))
	m.HandleFunc("POST /new/upload", c.uploadForm(c.createFromUpload))
	m.HandleFunc("GET /projects/{name}", c.signedIn(c.projectPage))
	m.HandleFunc("POST /projects/{name}/apps", c.signedIn(c.addApp))
	m.HandleFunc("POST /projects/{name}/apps/upload", c.uploadForm(c.addFromUpload))
	m.HandleFunc("POST /projects/{name}/apps/{app}/update", c.signedIn(c.updateApp))
	m.HandleFunc("POST /projects/{name}/apps/{app}/upload", c.uploadForm(c.updateByUpload))
	m.HandleFunc("POST /projects/{name}/apps/{app}/rollback", c.signedIn(c.rollbackApp))
	m.HandleFunc("GET /projects/{name}/apps/{app}/remove", c.signedIn(c.removePage))
	m.HandleFunc("POST /projects/{name}/apps/{app}/remove", c.signedIn(c.removeApp))
	m.HandleFunc("POST /projects/{name}/settings", c.signedIn(c.updateSettings))
	m.HandleFunc("POST /projects/{name}/destroy", c.signedIn(c.destroy))
	m.HandleFunc("GET /projects/{name}/logs/events", c.signedIn(c.logEvents))
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
func (c *Console) signedIn(h http.HandlerFunc) http.HandlerFunc { return c.guarded(h, false) }

// uploadForm is signedIn for a form that sends files
// (multipart/form-data): its first field must be the CSRF token, checked
// before anything else is read; the handler reads the rest (receive).
func (c *Console) uploadForm(h http.HandlerFunc) http.HandlerFunc { return c.guarded(h, true) }

func (c *Console) guarded(h http.HandlerFunc, multipartForm bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := c.session(r)
		if errors.Is(err, errLookup) {
			http.Error(w, "the console could not look up your user; try again in a moment", http.StatusServiceUnavailable)
			return
		}
		if err != nil {
			if ck, cerr := r.Cookie(sessionCookie); cerr == nil && ck.Value != "" {
				c.log.Info("console: session refused", "reason", err.Error(), "remote", remoteAddr(r), "path", r.URL.Path)
				http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
			}
			if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/events") {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			http.Error(w, "not signed in (or the session expired): sign in again", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost && multipartForm {
			var ok bool
			if r, ok = c.openUpload(w, r, v); !ok {
				return
			}
		} else if r.Method == http.MethodPost {
			if err := r.ParseForm(); err != nil {
				http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(v.CSRF)) != 1 {
				c.log.Warn("console: form without a valid CSRF token refused", "uid", v.UID, "remote", remoteAddr(r), "path", r.URL.Path)
				http.Error(w, "the form's CSRF token is missing or wrong: reload the page and try again", http.StatusForbidden)
				return
			}
			formRead(w)
		}
		h(w, r.WithContext(context.WithValue(r.Context(), viewerKey{}, v)))
	}
}

// errLookup means the service could not say whose a session is now (the
// user database did not answer, or opusd is shutting down): refuse for
// now; nothing was deleted.
var errLookup = errors.New("session lookup unavailable")

// session returns the viewer of a request's session cookie, as the
// service's ConsoleSessions looks it up: it holds only while its account
// does (not disabled, its uid still named as when the account was made).
func (c *Console) session(r *http.Request) (*viewer, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil, errors.New("no session cookie")
	}
	if len(ck.Value) > maxCookie {
		return nil, errors.New("session cookie too long")
	}
	sc, err := c.conns.sessions()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errLookup, err)
	}
	s, err := sc.GetConsoleSession(r.Context(), &opusv1.GetConsoleSessionRequest{SessionId: ck.Value})
	if status.Code(err) == codes.Unavailable {
		c.log.Error("console: session lookup", "err", status.Convert(err).Message())
		return nil, fmt.Errorf("%w: %s", errLookup, status.Convert(err).Message())
	}
	if err != nil {
		return nil, errors.New(status.Convert(err).Message())
	}
	rpc, err := c.conns.client(s.GetUid())
	if err != nil {
		return nil, err
	}
	return &viewer{UID: s.GetUid(), Name: s.GetUser(), CSRF: s.GetCsrfToken(), sessionID: ck.Value, rpc: rpc}, nil
}

// maxCookie bounds a session cookie the console passes on (the service's
// ids are 43 characters).
const maxCookie = 100

// setSession sets the cookie of a session the service started.
func (c *Console) setSession(w http.ResponseWriter, id string, s *opusv1.ConsoleSession) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", MaxAge: int(time.Until(s.GetExpireTime().AsTime()).Round(time.Second) / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func remoteAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ownerName is the name of p's owner: the one recorded with it, which
// holds on every host sharing the state (its uid is one of the host it
// was made through), or else the local name of its uid.
func ownerName(p *opusv1.Project) string {
	if n := p.GetOwnerName(); n != "" {
		return n
	}
	return userName(p.GetOwnerUid())
}

// userName is uid's login name, or the number.
func userName(uid uint32) string {
	s := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(s); err == nil {
		return u.Username
	}
	return "uid " + s
}
