package web

import (
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/user"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/store"
)

// page is what every template gets.
type page struct {
	Title string
	User  *viewer
	// Errors are the API's messages by form field ("name", "app0",
	// "add.url", ...); "" is the form as a whole.
	Errors map[string]string
	Form   map[string]string
	// Page-specific.
	Projects  []*opusv1.Project
	Project   *opusv1.Project
	Ops       []*opusv1.Operation
	Op        *opusv1.Operation
	Logs      []string
	LogsError string
	Message   string
	AppRows   []int
}

func (c *Console) render(w http.ResponseWriter, code int, name string, p *page) {
	var b strings.Builder
	if err := c.pages[name].ExecuteTemplate(&b, "layout", p); err != nil {
		c.log.Error("console: render", "page", name, "err", err)
		http.Error(w, "the console could not render this page; see opusd's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	io.WriteString(w, b.String())
}

// apiError renders a failed API call that has no form to go back to:
// NotFound is a 404 page with the API's own message, and so on.
func (c *Console) apiError(w http.ResponseWriter, r *http.Request, err error) {
	st := status.Convert(err)
	code := httpCode(st.Code())
	c.render(w, code, "error", &page{Title: http.StatusText(code), User: viewerFrom(r), Message: st.Message()})
}

func httpCode(c codes.Code) int {
	switch c {
	case codes.NotFound:
		return http.StatusNotFound
	case codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists, codes.OutOfRange:
		return http.StatusUnprocessableEntity
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// apiFieldRE is the "field: message" form of the service's InvalidArgument
// errors.
var apiFieldRE = regexp.MustCompile(`^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+)*): `)

// fieldOf maps the request field an API error names to a form field,
// through m (request field prefix → form field); the whole form ("") when
// none matches.
func fieldOf(err error, m map[string]string) (string, string) {
	msg := status.Convert(err).Message()
	f := apiFieldRE.FindStringSubmatch(msg)
	if f != nil {
		// The longest matching prefix wins.
		best, bestLen := "", -1
		for prefix, field := range m {
			if (f[1] == prefix || strings.HasPrefix(f[1], prefix+".") || strings.HasPrefix(f[1], prefix+"[")) && len(prefix) > bestLen {
				best, bestLen = field, len(prefix)
			}
		}
		if bestLen >= 0 {
			return best, msg
		}
	}
	return "", msg
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, err := c.session(r); err == nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	c.renderLogin(w, r, http.StatusOK, "", "")
}

// renderLogin shows the sign-in form with a fresh double-submit token.
func (c *Console) renderLogin(w http.ResponseWriter, r *http.Request, code int, userField, msg string) {
	tok, err := store.NewToken()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: preCookie, Value: tok, Path: "/", MaxAge: 3600, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	p := &page{Title: "Sign in", Form: map[string]string{"user": userField, "csrf": tok}}
	if msg != "" {
		p.Errors = map[string]string{"": msg}
	}
	c.render(w, code, "login", p)
}

// Sign-in form bounds: the whole form, and the user field (longer is no
// user's name).
const (
	maxSignInForm = 16 << 10
	maxUserField  = 256
)

// retryBusy is the Retry-After, in seconds, when every password hasher is
// busy: about what two checks take.
const retryBusy = "2"

// loginPassword signs in with a user name (or uid) and console password.
// Failures are limited per account and per account and address (limit.go)
// and logged; when every hasher is busy the answer is an immediate 503.
func (c *Console) loginPassword(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxSignInForm)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	ck, err := r.Cookie(preCookie)
	if err != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(ck.Value)) != 1 {
		c.log.Warn("console: sign-in form without a valid CSRF token refused", "remote", remoteAddr(r))
		http.Error(w, "the form's CSRF token is missing or wrong: reload the sign-in page", http.StatusForbidden)
		return
	}
	field := strings.TrimSpace(r.PostForm.Get("user"))
	pw := r.PostForm.Get("password")
	uid, name := c.signInUser(field)
	acct, err := c.signInAccount(r, uid, name)
	if err != nil {
		c.log.Error("console: sign-in", "user", field, "err", err)
		c.renderLogin(w, r, http.StatusInternalServerError, field, "The console could not check the password; ask the host administrator (opusd's log says why).")
		return
	}
	account := failKey(uid, name, acct.epoch())
	addr := remoteAddr(r)
	now := time.Now()
	if !c.accountFails.allowed(account, now) || !c.accountAddrFails.allowed(account+" "+addr, now) {
		// Debug: these cost nothing and come as fast as they are sent; the
		// failure that crossed the limit was logged.
		c.log.Debug("console: sign-in refused: too many failures", "user", field, "remote", addr)
		if name == "" {
			// Names no user has share one counter: whoever mistypes a
			// name is told just that, not that "their" account is locked.
			c.renderLogin(w, r, http.StatusUnauthorized, field, "Wrong user or password, or no console password set (opusctl web passwd).")
			return
		}
		c.renderLogin(w, r, http.StatusTooManyRequests, field, "Too many failed sign-ins for this user within 10 minutes; wait, set a new console password (opusctl web passwd), or use a login link (opusctl web login).")
		return
	}
	release, free := c.checking.try(account)
	if !free {
		c.log.Debug("console: sign-in refused: a check of this account is under way", "user", field, "remote", addr)
		w.Header().Set("Retry-After", retryBusy)
		c.renderLogin(w, r, http.StatusServiceUnavailable, field, "A sign-in for this user is being checked already; try again in a few seconds, or use a login link (opusctl web login).")
		return
	}
	ok, err := c.checkPassword(acct, uid, pw)
	release()
	if errors.Is(err, store.ErrBusy) {
		c.log.Debug("console: sign-in refused: password hashers busy", "user", field, "remote", addr)
		w.Header().Set("Retry-After", retryBusy)
		c.renderLogin(w, r, http.StatusServiceUnavailable, field, "The console is busy checking other sign-ins; try again in a few seconds, or use a login link (opusctl web login).")
		return
	}
	if err != nil {
		c.log.Error("console: sign-in", "user", field, "err", err)
		c.renderLogin(w, r, http.StatusInternalServerError, field, "The console could not check the password; ask the host administrator (opusd's log says why).")
		return
	}
	if !ok {
		c.accountFails.fail(account, now)
		c.accountAddrFails.fail(account+" "+addr, now)
		c.log.Warn("console: sign-in failed", "user", field, "remote", addr)
		if !c.accountFails.allowed(account, now) || !c.accountAddrFails.allowed(account+" "+addr, now) {
			c.log.Warn("console: too many failed sign-ins; refusing this account's password for a while", "user", field, "remote", addr, "for", failWindow)
		}
		c.renderLogin(w, r, http.StatusUnauthorized, field, "Wrong user or password, or no console password set (opusctl web passwd).")
		return
	}
	if err := c.startSession(w, r, uid, name); err != nil {
		c.signInRefused(w, r, field, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: preCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
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
func (c *Console) signInAccount(r *http.Request, uid uint32, name string) (signInAccountOf, error) {
	var a signInAccountOf
	if name == "" {
		return a, nil
	}
	stale := false
	err := c.st.View(r.Context(), func(tx *store.Tx) error {
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
		c.settle(r, uid, name)
	}
	return a, err
}

// signInUser resolves the sign-in form's user field (a login name or a
// uid) to a uid and that uid's login name now; name is "" when no user
// matches.
func (c *Console) signInUser(field string) (uid uint32, name string) {
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
	name, err := c.st.ConsoleUserName(uid)
	if err != nil || name == "" || (name != field && strconv.FormatUint(uint64(uid), 10) != field) {
		return 0, ""
	}
	return uid, name
}

// checkPassword checks pw against the account read by signInAccount,
// in one of the host's hashing slots (store.ErrBusy when none is free).
// Without an account the hash is the store's dummy, so an unknown user
// costs what a known one does.
func (c *Console) checkPassword(a signInAccountOf, uid uint32, pw string) (bool, error) {
	ok, err := store.CheckPassword(a.hash, pw)
	if errors.Is(err, store.ErrBadHash) {
		c.log.Error("console: unreadable password hash; the user must set the password again", "uid", uid)
		return false, nil
	}
	return ok && !a.disabled && pw != "", err
}

// loginLink signs in with a one-time link from "opusctl web login". A
// valid link always works; unknown, used and expired ones count against
// the caller's address, and only those are refused once it has too many.
func (c *Console) loginLink(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("t")
	// Looked up in a read transaction first: a flood of unknown tokens
	// costs no write (and no fsync).
	var found bool
	err := c.st.View(r.Context(), func(tx *store.Tx) error {
		found = len(tok) <= 100 && tx.HasLoginLink(tok)
		return nil
	})
	var l *store.LoginLink
	if err == nil && found {
		err = c.st.Update(r.Context(), func(tx *store.Tx) (err error) {
			l, err = tx.TakeLoginLink(tok)
			return err
		})
	}
	if err != nil || !found {
		addr, now := remoteAddr(r), time.Now()
		was := c.linkFails.allowed(addr, now)
		c.linkFails.fail(addr, now)
		if !c.linkFails.allowed(addr, now) {
			// Logged once, when the address crosses the limit: refused
			// links cost nothing and come as fast as they are sent.
			if was {
				c.log.Warn("console: too many unknown login links; refusing this address's unknown links for a while", "remote", addr, "for", failWindow)
			}
			c.renderLogin(w, r, http.StatusTooManyRequests, "", "Too many unknown login links from your address; wait a few minutes, or run opusctl web login for a new one.")
			return
		}
		c.log.Warn("console: login link refused", "reason", cmp.Or(err, store.ErrNotFound), "remote", addr)
		c.renderLogin(w, r, http.StatusUnauthorized, "", "This login link is unknown, used or expired; run opusctl web login for a new one.")
		return
	}
	if err := c.startSession(w, r, l.UID, l.Name); err != nil {
		c.signInRefused(w, r, "", err)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// signInRefused answers a sign-in that startSession refused.
func (c *Console) signInRefused(w http.ResponseWriter, r *http.Request, field string, err error) {
	c.log.Warn("console: sign-in refused", "user", field, "reason", err, "remote", remoteAddr(r))
	switch {
	case errors.Is(err, errDisabled), errors.Is(err, errUserGone):
		c.renderLogin(w, r, http.StatusForbidden, field, err.Error())
	case errors.Is(err, errLookup):
		w.Header().Set("Retry-After", retryBusy)
		c.renderLogin(w, r, http.StatusServiceUnavailable, field, "The console could not look up your user; try again in a moment.")
	default:
		c.renderLogin(w, r, http.StatusInternalServerError, field, "The console could not sign you in; see opusd's log.")
	}
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	if err := c.st.Update(r.Context(), func(tx *store.Tx) error { return tx.DeleteConsoleSession(v.sessionID) }); err != nil {
		c.log.Error("console: sign out", "err", err)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	c.log.Info("console: signed out", "uid", v.UID)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (c *Console) projectsPage(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	res, err := v.rpc.ListProjects(r.Context(), &opusv1.ListProjectsRequest{})
	if err != nil {
		c.apiError(w, r, err)
		return
	}
	c.render(w, http.StatusOK, "projects", &page{Title: "Projects", User: v, Projects: res.GetProjects()})
}

// newAppRows is how many app rows the create form has (no script adds
// rows; more apps are added on the project page).
const newAppRows = 3

func (c *Console) newPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, http.StatusOK, "new", &page{Title: "New project", User: viewerFrom(r), Form: map[string]string{"admin": "on"}, AppRows: rows()})
}

func rows() []int {
	out := make([]int, newAppRows)
	for i := range out {
		out[i] = i
	}
	return out
}

// gitAppSpec makes an app from a form's git URL, ref and optional name;
// the name defaults to the URL's last element without ".git", as opusctl
// does.
func gitAppSpec(rawURL, ref, name string) *opusv1.AppSpec {
	rawURL, ref, name = strings.TrimSpace(rawURL), strings.TrimSpace(ref), strings.TrimSpace(name)
	if name == "" {
		name = strings.TrimSuffix(path.Base(strings.TrimRight(rawURL, "/")), ".git")
	}
	return &opusv1.AppSpec{Name: name, Source: &opusv1.AppSource{Kind: &opusv1.AppSource_Git{Git: &opusv1.GitSource{Url: rawURL, Ref: ref}}}}
}

func formMap(r *http.Request) map[string]string {
	m := map[string]string{}
	for k, v := range r.PostForm {
		if k != "csrf" && len(v) > 0 {
			m[k] = v[0]
		}
	}
	return m
}

func (c *Console) createProject(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	f := r.PostForm
	req := &opusv1.CreateProjectRequest{Name: strings.TrimSpace(f.Get("name")), Admin: f.Get("admin") == "on"}
	fields := map[string]string{"name": "name", "apps": ""}
	for i := range newAppRows {
		u := f.Get(fmt.Sprintf("url%d", i))
		if strings.TrimSpace(u) == "" {
			continue
		}
		fields[fmt.Sprintf("apps[%d]", len(req.Apps))] = fmt.Sprintf("app%d", i)
		req.Apps = append(req.Apps, gitAppSpec(u, f.Get(fmt.Sprintf("ref%d", i)), f.Get(fmt.Sprintf("app%d", i))))
	}
	op, err := v.rpc.CreateProject(r.Context(), req)
	if err != nil {
		field, msg := fieldOf(err, fields)
		c.render(w, httpCode(status.Code(err)), "new", &page{Title: "New project", User: v, Form: formMap(r), AppRows: rows(),
			Errors: map[string]string{field: msg}})
		return
	}
	http.Redirect(w, r, "/ops/"+op.GetId(), http.StatusSeeOther)
}

// projectPage shows a project: apps, settings, operations, logs, forms.
func (c *Console) projectPage(w http.ResponseWriter, r *http.Request) {
	c.renderProject(w, r, http.StatusOK, nil)
}

func (c *Console) renderProject(w http.ResponseWriter, r *http.Request, code int, errs map[string]string) {
	v := viewerFrom(r)
	name := r.PathValue("name")
	p, err := v.rpc.GetProject(r.Context(), &opusv1.GetProjectRequest{Name: name})
	if err != nil {
		c.apiError(w, r, err)
		return
	}
	pg := &page{Title: p.GetName(), User: v, Project: p, Errors: errs, Form: map[string]string{}}
	if code != http.StatusOK {
		pg.Form = formMap(r)
	}
	if ops, err := v.rpc.ListOperations(r.Context(), &opusv1.ListOperationsRequest{Project: name, Limit: 10}); err == nil {
		pg.Ops = ops.GetOperations()
	}
	logs, err := v.rpc.GetLogs(r.Context(), &opusv1.GetLogsRequest{Project: name, Lines: 50})
	if err != nil {
		pg.LogsError = status.Convert(err).Message()
	} else {
		pg.Logs = logs.GetLines()
	}
	c.render(w, code, "project", pg)
}

// mutated follows up a project form: on success to the operation's live
// page, on failure back to the project page with the API's message next
// to the field it concerns (form.field, through fields).
func (c *Console) mutated(w http.ResponseWriter, r *http.Request, op *opusv1.Operation, err error, form string, fields map[string]string) {
	if err != nil {
		field, msg := fieldOf(err, fields)
		if field == "" {
			field = form
		} else {
			field = form + "." + field
		}
		code := httpCode(status.Code(err))
		if status.Code(err) == codes.NotFound && strings.HasPrefix(msg, "project ") {
			c.apiError(w, r, err)
			return
		}
		c.renderProject(w, r, code, map[string]string{field: msg})
		return
	}
	http.Redirect(w, r, "/ops/"+op.GetId(), http.StatusSeeOther)
}

func (c *Console) addApp(w http.ResponseWriter, r *http.Request) {
	v, f := viewerFrom(r), r.PostForm
	op, err := v.rpc.AddApp(r.Context(), &opusv1.AddAppRequest{Project: r.PathValue("name"), App: gitAppSpec(f.Get("url"), f.Get("ref"), f.Get("app"))})
	c.mutated(w, r, op, err, "add", map[string]string{"app.name": "app", "app.source": "url", "app.source.git.ref": "ref", "app": "url"})
}

func (c *Console) updateApp(w http.ResponseWriter, r *http.Request) {
	v, f := viewerFrom(r), r.PostForm
	app := r.PathValue("app")
	spec := gitAppSpec(f.Get("url"), f.Get("ref"), app)
	op, err := v.rpc.UpdateApp(r.Context(), &opusv1.UpdateAppRequest{Project: r.PathValue("name"), App: app, Source: spec.GetSource()})
	c.mutated(w, r, op, err, "update-"+app, map[string]string{"source": "url", "source.git.ref": "ref", "app": ""})
}

func (c *Console) rollbackApp(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	app := r.PathValue("app")
	op, err := v.rpc.UpdateApp(r.Context(), &opusv1.UpdateAppRequest{Project: r.PathValue("name"), App: app, Rollback: true})
	c.mutated(w, r, op, err, "update-"+app, nil)
}

func (c *Console) removeApp(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	app := r.PathValue("app")
	op, err := v.rpc.RemoveApp(r.Context(), &opusv1.RemoveAppRequest{Project: r.PathValue("name"), App: app, DropData: r.PostForm.Get("drop_data") == "on"})
	c.mutated(w, r, op, err, "remove-"+app, nil)
}

// updateSettings turns the settings form into UpdateSettings' set/unset:
// every field is sent, so the form is the whole truth; env variables
// missing from the text are unset.
func (c *Console) updateSettings(w http.ResponseWriter, r *http.Request) {
	v, f := viewerFrom(r), r.PostForm
	name := r.PathValue("name")
	req := &opusv1.UpdateSettingsRequest{Project: name, Set: map[string]string{
		"debug": strconv.FormatBool(f.Get("debug") == "on"),
		"admin": strconv.FormatBool(f.Get("admin") == "on"),
	}}
	if hosts := strings.Join(strings.Fields(strings.ReplaceAll(f.Get("hosts"), ",", " ")), ","); hosts != "" {
		req.Set["hosts"] = hosts
	} else {
		req.Unset = append(req.Unset, "hosts")
	}
	env := map[string]bool{}
	for i, line := range strings.Split(f.Get("env"), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, val, ok := strings.Cut(line, "=")
		if !ok {
			c.renderProject(w, r, http.StatusUnprocessableEntity, map[string]string{"settings.env": fmt.Sprintf("line %d: write NAME=VALUE", i+1)})
			return
		}
		req.Set["env."+strings.TrimSpace(k)] = val
		env[strings.TrimSpace(k)] = true
	}
	if p, err := v.rpc.GetProject(r.Context(), &opusv1.GetProjectRequest{Name: name}); err == nil {
		for k := range p.GetSettings().GetEnv() {
			if !env[k] {
				req.Unset = append(req.Unset, "env."+k)
			}
		}
	}
	op, err := v.rpc.UpdateSettings(r.Context(), req)
	if err != nil && status.Code(err) != codes.NotFound {
		c.renderProject(w, r, httpCode(status.Code(err)), map[string]string{settingsField(err): status.Convert(err).Message()})
		return
	}
	c.mutated(w, r, op, err, "settings", nil)
}

// settingsField places an UpdateSettings error: its messages name the
// setting ("set: hosts: ...", "set: environment variable ..."), not a
// request field of its own.
func settingsField(err error) string {
	msg := strings.TrimPrefix(strings.TrimPrefix(status.Convert(err).Message(), "set: "), "unset: ")
	switch {
	case strings.HasPrefix(msg, "hosts"):
		return "settings.hosts"
	case strings.HasPrefix(msg, "environment variable"), strings.HasPrefix(msg, "settings.env"):
		return "settings.env"
	}
	return "settings"
}

func (c *Console) destroy(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	name := r.PathValue("name")
	if r.PostForm.Get("confirm") != name {
		c.renderProject(w, r, http.StatusUnprocessableEntity, map[string]string{"destroy.confirm": fmt.Sprintf("type %q to confirm", name)})
		return
	}
	op, err := v.rpc.DeleteProject(r.Context(), &opusv1.DeleteProjectRequest{Name: name})
	c.mutated(w, r, op, err, "destroy", nil)
}

// operationPage shows an operation's steps; once it is final, the
// project's URLs. Without script it refreshes itself until final.
func (c *Console) operationPage(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	op, err := v.rpc.GetOperation(r.Context(), &opusv1.GetOperationRequest{Id: r.PathValue("id")})
	if err != nil {
		c.apiError(w, r, err)
		return
	}
	pg := &page{Title: "Operation " + op.GetId(), User: v, Op: op}
	if opFinal(op) {
		if p, err := v.rpc.GetProject(r.Context(), &opusv1.GetProjectRequest{Name: op.GetProject()}); err == nil {
			pg.Project = p
		}
	}
	c.render(w, http.StatusOK, "operation", pg)
}

// operationEvents streams the operation as server-sent events, one JSON
// Operation per change, ending when it is final.
func (c *Console) operationEvents(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	stream, err := v.rpc.WatchOperation(r.Context(), &opusv1.WatchOperationRequest{Id: r.PathValue("id")})
	if err != nil {
		c.apiError(w, r, err)
		return
	}
	first := true
	for {
		op, err := stream.Recv()
		if err != nil {
			if first {
				c.apiError(w, r, err)
			} else if !errors.Is(err, io.EOF) {
				fmt.Fprintf(w, "event: failure\ndata: %s\n\n", strings.ReplaceAll(status.Convert(err).Message(), "\n", " "))
				fl.Flush()
			}
			return
		}
		if first {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			first = false
		}
		data, err := protojson.Marshal(op)
		if err != nil {
			return
		}
		fmt.Fprintf(w, "data: %s\n\n", data)
		fl.Flush()
	}
}

// Template helpers.

func phaseName(p opusv1.Phase) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "PHASE_"))
}

func opKindName(k opusv1.OperationKind) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k.String(), "OPERATION_KIND_")), "_", " ")
}

func opStateName(s opusv1.OperationState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "OPERATION_STATE_"))
}

func stepStateName(s opusv1.StepState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STEP_STATE_"))
}

func opFinal(op *opusv1.Operation) bool {
	s := op.GetState()
	return s == opusv1.OperationState_OPERATION_STATE_SUCCEEDED || s == opusv1.OperationState_OPERATION_STATE_FAILED
}

func when(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format("2006-01-02 15:04:05 UTC")
}

// took is the duration between two times, for steps and operations.
func took(start, end *timestamppb.Timestamp) string {
	if start == nil || end == nil {
		return ""
	}
	d := end.AsTime().Sub(start.AsTime())
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

func shortCommit(s string) string {
	if len(s) > 12 && !strings.HasPrefix(s, "sha256:") {
		return s[:12]
	}
	if len(s) > 19 {
		return s[:19]
	}
	return s
}

func gitURL(a *opusv1.App) string { return a.GetSource().GetGit().GetUrl() }

func envText(s *opusv1.Settings) string {
	var keys []string
	for k := range s.GetEnv() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, s.GetEnv()[k])
	}
	return b.String()
}

func hostsText(s *opusv1.Settings) string { return strings.Join(s.GetHosts(), ", ") }
