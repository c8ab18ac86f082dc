package web

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opus-hosting/opus/internal/excerpt"
	"github.com/opus-hosting/opus/internal/gitsrc"
	opusv1 "github.com/opus-hosting/opus/proto/opus/v1"
	"github.com/opus-hosting/opus/unprivd/credential"
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
	Projects []*opusv1.Project
	Project  *opusv1.Project
	Ops      []*opusv1.Operation
	Op       *opusv1.Operation
	// Last is the project's newest operation: its last change.
	Last      *opusv1.Operation
	Logs      []string
	LogsError string
	Message   string
	// Notice is a word from notices, shown once on the project page.
	Notice string
	// Alert is the error of the action just tried, shown at the top of
	// the project page; AlertAt, when set, is the anchor of the field the
	// error is shown next to.
	Alert   string
	AlertAt string
	// Submitted names the project page's form that was sent and refused
	// ("settings", "add", "update-APP"): it shows what was typed, not the
	// project's values.
	Submitted string
	// App is the app a confirmation page is about.
	App     *opusv1.App
	AppRows []int
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
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// fieldOf maps the request field an API error is about (the path in its
// BadRequest detail: the message names it in words) to a form field,
// through m (request field prefix → form field); the whole form ("") when
// none matches.
func fieldOf(err error, m map[string]string) (string, string) {
	st := status.Convert(err)
	msg := st.Message()
	for _, d := range st.Details() {
		br, ok := d.(*errdetails.BadRequest)
		if !ok || len(br.GetFieldViolations()) == 0 {
			continue
		}
		f := br.GetFieldViolations()[0].GetField()
		// The longest matching prefix wins.
		best, bestLen := "", -1
		for prefix, field := range m {
			if (f == prefix || strings.HasPrefix(f, prefix+".") || strings.HasPrefix(f, prefix+"[")) && len(prefix) > bestLen {
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
	tok, err := credential.NewToken()
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

// maxSignInForm bounds the sign-in form.
const maxSignInForm = 16 << 10

// retryBusy is the Retry-After, in seconds, when the service is too busy
// to check a password: about what two checks take.
const retryBusy = "2"

// loginPassword signs in with a user name (or uid) and console password,
// through the service (ConsoleSessions), which limits and logs failures.
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
	formRead(w)
	field := strings.TrimSpace(r.PostForm.Get("user"))
	sc, err := c.conns.sessions()
	var res *opusv1.SignInWithPasswordResponse
	if err == nil {
		res, err = sc.SignInWithPassword(r.Context(), &opusv1.SignInWithPasswordRequest{User: field, Password: r.PostForm.Get("password"), RemoteAddr: remoteAddr(r)})
	}
	if err != nil {
		c.signInRefused(w, r, field, err)
		return
	}
	c.setSession(w, res.GetSessionId(), res.GetSession())
	http.SetCookie(w, &http.Cookie{Name: preCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// loginLink signs in with a one-time link from "opusctl web login",
// through the service, which limits unknown links per address.
func (c *Console) loginLink(w http.ResponseWriter, r *http.Request) {
	sc, err := c.conns.sessions()
	var res *opusv1.SignInWithLinkResponse
	if err == nil {
		res, err = sc.SignInWithLink(r.Context(), &opusv1.SignInWithLinkRequest{Token: r.URL.Query().Get("t"), RemoteAddr: remoteAddr(r)})
	}
	if err != nil {
		c.signInRefused(w, r, "", err)
		return
	}
	c.setSession(w, res.GetSessionId(), res.GetSession())
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// signInRefused shows the sign-in form again with the service's answer:
// its message, and its code as the HTTP status. The service logged the
// refusal; only a failure to reach it is logged here.
func (c *Console) signInRefused(w http.ResponseWriter, r *http.Request, field string, err error) {
	st := status.Convert(err)
	code := http.StatusInternalServerError
	switch st.Code() {
	case codes.Unauthenticated:
		code = http.StatusUnauthorized
	case codes.ResourceExhausted:
		code = http.StatusTooManyRequests
	case codes.PermissionDenied:
		code = http.StatusForbidden
	case codes.InvalidArgument:
		code = http.StatusBadRequest
	case codes.Unavailable:
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", retryBusy)
	default:
		c.log.Error("console: sign-in", "user", field, "err", st.Message())
	}
	c.renderLogin(w, r, code, field, st.Message())
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	sc, err := c.conns.sessions()
	if err == nil {
		_, err = sc.SignOut(r.Context(), &opusv1.SignOutRequest{SessionId: v.sessionID})
	}
	if err != nil {
		c.log.Error("console: sign out", "err", status.Convert(err).Message())
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
	// The form starts from the API's defaults (opusctl create's too): no
	// Django admin unless asked for.
	c.render(w, http.StatusOK, "new", &page{Title: "New project", User: viewerFrom(r), Form: map[string]string{}, AppRows: rows()})
}

func rows() []int {
	out := make([]int, newAppRows)
	for i := range out {
		out[i] = i
	}
	return out
}

// gitAppSpec makes an app from a form's git URL, ref and optional name;
// the name defaults as opusctl's does (gitsrc.DefaultAppName).
func gitAppSpec(rawURL, ref, name string) *opusv1.AppSpec {
	rawURL, ref, name = strings.TrimSpace(rawURL), strings.TrimSpace(ref), strings.TrimSpace(name)
	if name == "" {
		name = gitsrc.DefaultAppName(rawURL)
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
	// As opusctl create: a project with no apps is asked for, not what a
	// form left empty by mistake gives.
	var appsErr string
	switch empty := f.Get("empty") == "on"; {
	case len(req.Apps) == 0 && !empty:
		appsErr = `give at least one app's git URL, or tick "No apps yet" to create a project with no apps`
	case len(req.Apps) > 0 && empty:
		appsErr = `"No apps yet" creates a project with no apps; untick it to deploy the apps given`
	}
	if appsErr != "" {
		c.render(w, http.StatusUnprocessableEntity, "new", &page{Title: "New project", User: v, Form: formMap(r), AppRows: rows(),
			Errors: map[string]string{"apps": appsErr}})
		return
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

// notices are what the project page may say after a form that started
// nothing, by the word its query names (so that no text of the request
// is shown back).
var notices = map[string]string{
	"unchanged": "Nothing to change: the settings are already as given; nothing was restarted.",
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
	pg := &page{Title: p.GetName(), User: v, Project: p, Errors: map[string]string{}, Form: map[string]string{}, Notice: notices[r.URL.Query().Get("notice")]}
	if code != http.StatusOK {
		pg.Form = formMap(r)
	}
	// One message area at the top says what happened: a form's error in
	// full; a field's error next to its field, and at the top a line that
	// points to it.
	// In order, so that a form's own message ("add") comes before its
	// fields' ("add.url") and is the one at the top.
	for _, k := range slices.Sorted(maps.Keys(errs)) {
		msg := errs[k]
		form, field, isField := strings.Cut(k, ".")
		pg.Submitted = form
		if !isField {
			pg.Alert = msg
			continue
		}
		pg.Errors[k] = msg
		if pg.Alert == "" {
			pg.Alert = fmt.Sprintf("%s: %s.", formWords(form), fieldWords(field))
			pg.AlertAt = "#" + form + "-" + field
		}
	}
	if ops, err := v.rpc.ListOperations(r.Context(), &opusv1.ListOperationsRequest{Project: name, Limit: 10}); err == nil {
		pg.Ops = ops.GetOperations()
		if len(pg.Ops) > 0 {
			pg.Last = pg.Ops[0]
		}
	}
	logs, err := v.rpc.GetLogs(r.Context(), &opusv1.GetLogsRequest{Project: name, Lines: logLinesShown})
	if err != nil {
		pg.LogsError = status.Convert(err).Message()
	} else {
		pg.Logs = logs.GetLines()
	}
	c.render(w, code, "project", pg)
}

// formWords says, in a message, that a project page form was refused.
func formWords(form string) string {
	switch {
	case form == "destroy":
		return "Nothing was destroyed"
	case form == "settings":
		return "The settings form was not applied"
	case form == "add":
		return "Adding the app was not applied"
	case strings.HasPrefix(form, "update-"):
		return fmt.Sprintf("The update of app %q was not applied", strings.TrimPrefix(form, "update-"))
	}
	return "The form was not applied"
}

// fieldWords names a form field in a message.
func fieldWords(field string) string {
	switch field {
	case "hosts":
		return "see the error next to the extra host names"
	case "env":
		return "see the error next to the environment"
	case "url":
		return "see the error next to the git URL"
	case "ref":
		return "see the error next to the ref"
	case "app":
		return "see the error next to the app name"
	case "confirm":
		return "see the error next to the name to type"
	}
	return "see the error next to the field marked below"
}

// mutated follows up a project form: on success to the operation's live
// page (or, when the change asked for what the project has, back to the
// project page, saying so), on failure back to the project page with the
// API's message next to the field it concerns (form.field, through fields).
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
	if op.GetUnchanged() {
		http.Redirect(w, r, "/projects/"+url.PathEscape(op.GetProject())+"?notice=unchanged", http.StatusSeeOther)
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

// rollbackApp rolls an app back as "opusctl apps rollback" does: to the
// revision the form names (its number; none: the one before the running
// one), with its data snapshot when asked. The snapshot the page offered
// goes along, so that the API refuses if another one would be restored.
func (c *Console) rollbackApp(w http.ResponseWriter, r *http.Request) {
	v, f := viewerFrom(r), r.PostForm
	app := r.PathValue("app")
	req := &opusv1.RollbackAppRequest{Project: r.PathValue("name"), App: app, To: strings.TrimSpace(f.Get("to"))}
	if f.Get("with_data") == "on" {
		req.WithData, req.DataSnapshot = true, f.Get("data_snapshot")
	}
	op, err := v.rpc.RollbackApp(r.Context(), req)
	c.mutated(w, r, op, err, "update-"+app, nil)
}

// removePage asks to confirm the removal of an app: it names the app,
// says what is lost, and asks for its name typed.
func (c *Console) removePage(w http.ResponseWriter, r *http.Request) {
	c.renderRemove(w, r, http.StatusOK, r.URL.Query().Get("drop_data") == "on", "")
}

func (c *Console) renderRemove(w http.ResponseWriter, r *http.Request, code int, dropData bool, msg string) {
	v := viewerFrom(r)
	name, app := r.PathValue("name"), r.PathValue("app")
	p, err := v.rpc.GetProject(r.Context(), &opusv1.GetProjectRequest{Name: name})
	if err != nil {
		c.apiError(w, r, err)
		return
	}
	pg := &page{Title: "Remove app " + app + " of " + name, User: v, Project: p, Alert: msg, Form: map[string]string{}}
	for _, a := range p.GetApps() {
		if a.GetName() == app {
			pg.App = a
		}
	}
	if pg.App == nil {
		c.apiError(w, r, status.Errorf(codes.NotFound, "app %q of project %q not found", app, name))
		return
	}
	if dropData {
		pg.Form["drop_data"] = "on"
	}
	c.render(w, code, "remove", pg)
}

// removeApp removes an app once its name was typed on the confirmation
// page; a wrong or missing name shows that page again, saying so.
func (c *Console) removeApp(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	app := r.PathValue("app")
	dropData := r.PostForm.Get("drop_data") == "on"
	if r.PostForm.Get("confirm") != app {
		c.renderRemove(w, r, http.StatusUnprocessableEntity, dropData, fmt.Sprintf("Nothing was removed: type the app's name, %q, to confirm.", app))
		return
	}
	op, err := v.rpc.RemoveApp(r.Context(), &opusv1.RemoveAppRequest{Project: r.PathValue("name"), App: app, DropData: dropData})
	if err != nil && status.Code(err) != codes.NotFound {
		c.renderRemove(w, r, httpCode(status.Code(err)), dropData, status.Convert(err).Message())
		return
	}
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
	// The host list goes as typed: the API's rule (comma-separated, as
	// opusctl's hosts=) reads it, and its refusal lands next to the field.
	if hosts := strings.TrimSpace(f.Get("hosts")); hosts != "" {
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
	c.mutated(w, r, op, err, "settings", settingsFields)
}

// settingsFields places an UpdateSettings refusal by the setting its
// detail names (set.hosts, set.env.NAME, ...) next to that form field.
var settingsFields = map[string]string{
	"set.hosts": "hosts", "unset.hosts": "hosts",
	"set.env": "env", "unset.env": "env",
}

func (c *Console) destroy(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	name := r.PathValue("name")
	if got := r.PostForm.Get("confirm"); got != name {
		msg := fmt.Sprintf("type the project's name, %q, to confirm", name)
		if got != "" {
			msg = fmt.Sprintf("%q is not the project's name: type %q to confirm", excerpt.Short(got), name)
		}
		c.renderProject(w, r, http.StatusUnprocessableEntity, map[string]string{"destroy.confirm": msg})
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
	stream, err := v.rpc.WatchOperation(r.Context(), &opusv1.WatchOperationRequest{Id: r.PathValue("id")})
	relayEvents(c, w, r, stream, err, "", func(op *opusv1.Operation) ([]byte, error) { return protojson.Marshal(op) })
}

// relayEvents relays a server stream of the API as server-sent events,
// one per answer, its data encode's (one line: JSON). An error before the
// first answer is the API's error page (404 for another user's project,
// say), so the browser's EventSource does not retry; a later one is an
// event "failure" with the API's message. It returns when the stream ends
// or the request's context does (the client went away). The first event
// is called first ("" for a plain message).
func relayEvents[T any](c *Console, w http.ResponseWriter, r *http.Request, stream interface{ Recv() (T, error) }, err error,
	first string, encode func(T) ([]byte, error)) {
	if err != nil {
		c.apiError(w, r, err)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	started := false
	for {
		m, err := stream.Recv()
		if err != nil {
			switch {
			case !started:
				c.apiError(w, r, err)
			case errors.Is(err, io.EOF), r.Context().Err() != nil, status.Code(err) == codes.DeadlineExceeded:
				// Done, or nobody is listening.
			default:
				// One line: CR ends a line of an event stream as LF does.
				fmt.Fprintf(w, "event: failure\ndata: %s\n\n", excerpt.Line(status.Convert(err).Message(), maxFailure))
				fl.Flush()
			}
			return
		}
		data, err := encode(m)
		if err != nil {
			return
		}
		if !started {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			fmt.Fprintf(w, "retry: %d\n", eventsRetry)
			if first != "" {
				fmt.Fprintf(w, "event: %s\n", first)
			}
			started = true
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
			return
		}
		fl.Flush()
	}
}

// maxFailure bounds the message of an event stream's "failure" event, in
// bytes.
const maxFailure = 2000

// eventsRetry is the browser's wait before it opens an event stream
// again, in milliseconds.
const eventsRetry = 3000

// Bounds of the project page's logs.
const (
	// logLinesShown is how many of the last log lines the page shows,
	// and the live tail starts with.
	logLinesShown = 50
	// maxLogLine bounds one log line as the live tail relays it, in
	// bytes: a tenant writes these lines.
	maxLogLine = 2000
	// maxFollowTime ends a live tail, which the browser then opens again:
	// so the session is checked again (a signed-out or expired session
	// stops following), and a forgotten tab does not hold one of the
	// user's follows for good.
	maxFollowTime = 10 * time.Minute
)

// logEvent is one event of the live tail.
type logEvent struct {
	Lines []string `json:"lines"`
}

// logEvents relays the project's error log (FollowLogs) as server-sent
// events: first an event "start" with the last lines, which replace what
// the page shows, then one message per batch of new lines, each line cut
// to maxLogLine bytes. It ends when the client goes away or after
// maxFollowTime (the browser then opens it again). Lines are
// JSON-encoded, so no line can end an event or make another.
func (c *Console) logEvents(w http.ResponseWriter, r *http.Request) {
	v := viewerFrom(r)
	ctx, cancel := context.WithTimeout(r.Context(), maxFollowTime)
	defer cancel()
	stream, err := v.rpc.FollowLogs(ctx, &opusv1.FollowLogsRequest{Project: r.PathValue("name"), Lines: logLinesShown})
	relayEvents(c, w, r, stream, err, "start", func(res *opusv1.FollowLogsResponse) ([]byte, error) {
		ev := logEvent{Lines: make([]string, len(res.GetLines()))}
		for i, l := range res.GetLines() {
			ev.Lines[i] = excerpt.Cut(l, maxLogLine)
		}
		return json.Marshal(ev)
	})
}

// Template helpers.

// runningRevision is the revision app a runs, or nil before its first
// deploy.
func runningRevision(a *opusv1.App) *opusv1.Revision {
	for _, r := range a.GetRevisions() {
		if r.GetNumber() == a.GetRunningRevision() {
			return r
		}
	}
	return nil
}

// newestFirst is an app's revisions, newest first (the API lists them
// oldest first).
func newestFirst(revs []*opusv1.Revision) []*opusv1.Revision {
	out := slices.Clone(revs)
	slices.Reverse(out)
	return out
}

// snapshotFor is the data snapshot a rollback to revision rev with its
// data restores, as the API names it (the rule is snapshot.ForRollback,
// applied by the API); nil when none is kept.
func snapshotFor(p *opusv1.Project, rev *opusv1.Revision) *opusv1.DataSnapshot {
	if rev.GetDataSnapshot() == "" {
		return nil
	}
	for _, s := range p.GetDataSnapshots() {
		if s.GetId() == rev.GetDataSnapshot() {
			return s
		}
	}
	return nil
}

// maxFirstLine bounds firstLine.
const maxFirstLine = 300

// firstLine is the first non-empty line of an error, for a one-line
// summary (an operation's error leads with its exception line; the whole
// of it is on the operation's page).
func firstLine(s string) string {
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); l != "" {
			return excerpt.Cut(l, maxFirstLine)
		}
	}
	return ""
}

// opSummary says in one line how an operation went: how many steps, and
// which one failed.
func opSummary(op *opusv1.Operation) string {
	steps := op.GetSteps()
	if len(steps) == 0 {
		return ""
	}
	for i, s := range steps {
		if s.GetState() == opusv1.StepState_STEP_STATE_FAILED {
			return fmt.Sprintf("failed at %s (step %d of %d)", s.GetName(), i+1, len(steps))
		}
	}
	last := steps[len(steps)-1]
	if last.GetState() == opusv1.StepState_STEP_STATE_RUNNING {
		return fmt.Sprintf("at %s (step %d)", last.GetName(), len(steps))
	}
	if len(steps) == 1 {
		return "1 step"
	}
	return fmt.Sprintf("%d steps", len(steps))
}

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

// opDestroyed says op is a destroy that finished: its project is gone.
func opDestroyed(op *opusv1.Operation) bool {
	return op.GetKind() == opusv1.OperationKind_OPERATION_KIND_DELETE &&
		op.GetState() == opusv1.OperationState_OPERATION_STATE_SUCCEEDED
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

// runningRef is what the Ref box of an app's update form starts with:
// what was asked for when the revision it runs was first deployed (a
// rollback asks for that revision's commit; the owner asked for "v1"),
// or, before its first deploy, what its source asks for.
func runningRef(a *opusv1.App) string {
	revs := a.GetRevisions()
	byNumber := func(n int64) *opusv1.Revision {
		for _, r := range revs {
			if r.GetNumber() == n {
				return r
			}
		}
		return nil
	}
	rev := byNumber(a.GetRunningRevision())
	if rev == nil {
		return a.GetRequestedRef()
	}
	// A rollback's revision names the one it returned to, which may be
	// one too; the chain goes back, so it ends (len(revs) bounds it
	// against a record that says otherwise).
	for range revs {
		if rev.GetRollbackOf() == 0 || rev.GetRollbackOf() >= rev.GetNumber() {
			break
		}
		prev := byNumber(rev.GetRollbackOf())
		if prev == nil {
			break
		}
		rev = prev
	}
	return rev.GetRequestedRef()
}

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

// fieldError is a field's error as the "err" template shows it: the
// message and the id of the element that holds it.
type fieldError struct{ ID, Msg string }

// errorID is the id of the element that shows the error of form field
// key ("name", "settings.env", "update-shop.url"): "error-" and the key
// with dots as dashes. Keys are the console's own words and app names,
// which names.App keeps to letters, digits and underscores.
func errorID(key string) string { return "error-" + strings.ReplaceAll(key, ".", "-") }

// errorOf is key's error for the "err" template, nil when it has none.
func errorOf(errs map[string]string, key string) *fieldError {
	if msg := errs[key]; msg != "" {
		return &fieldError{ID: errorID(key), Msg: msg}
	}
	return nil
}

// invalid marks the field of key when its form was refused because of
// it: aria-invalid, and aria-describedby naming its error (errorOf), so
// that a screen reader says what is wrong when the field is focused.
func invalid(errs map[string]string, key string) template.HTMLAttr {
	if errs[key] == "" {
		return ""
	}
	return template.HTMLAttr(` aria-invalid="true" aria-describedby="` + template.HTMLEscapeString(errorID(key)) + `"`)
}
